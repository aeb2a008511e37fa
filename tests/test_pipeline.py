"""The Grain pipeline: seeded shuffle, sharding, bucket padding and exact resume."""
import json

import numpy as np
import pytest

from vaemotion_jax.embedded import synth
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.manifest import read_manifest
from vaemotion_jax.data.pipeline import (BatchIterator, ExampleFn, PipelineConfig, collate, label_arrays,
                                         make_iterator, pick_bucket, shard_records)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    synth.generate(out, synth.WorldConfig(num_clips=12, seconds=1.0), workers=1)
    return out


@pytest.fixture(scope="module")
def records(world):
    return read_manifest(f"{world}/captions.jsonl")[0]


def caption_tokens(record, features):
    """Bytes of the caption as a variable-length token row, plus one decoded frame."""
    tokens = np.frombuffer(record.caption.encode(), np.uint8).astype(np.int32)
    return {"tokens": tokens, "frame": features["frames"][0]}


EXAMPLE = ExampleFn(media=MediaSpec(num_frames=1), audio=False, features="raw", format_fn=caption_tokens)
BUCKETS = {"tokens": (40, 48, 64)}


def iterator(records, **kw):
    kw = {"batch_size": 3, "buckets": BUCKETS, "pad_values": {"tokens": -1}, **kw}
    return BatchIterator(records, EXAMPLE, PipelineConfig(**kw))


def take(it, n):
    return [next(it) for _ in range(n)]


def ids(batches):
    return [list(b["id"]) for b in batches]


def test_shuffle_is_seeded_and_changes_every_epoch(records):
    a = sum(ids(take(iterator(records, seed=1), 8)), [])
    b = sum(ids(take(iterator(records, seed=1), 8)), [])
    c = sum(ids(take(iterator(records, seed=2), 8)), [])
    assert a == b and a != c
    everyone = sorted(r.id for r in records)
    first, second = a[:12], a[12:]
    assert sorted(first) == everyone and sorted(second) == everyone  # each epoch: each clip once
    assert first != second


@pytest.mark.parametrize("n, count", [(12, 3), (11, 3), (7, 2)])
def test_shards_are_disjoint_and_complete(records, n, count):
    subset = records[:n]
    shards = [shard_records(subset, i, count, even=False) for i in range(count)]
    flat = [r.id for s in shards for r in s]
    assert sorted(flat) == sorted(r.id for r in subset) and len(set(flat)) == n
    even = [shard_records(subset, i, count, even=True) for i in range(count)]
    assert {len(s) for s in even} == {n // count}
    assert len({r.id for s in even for r in s}) == n // count * count


def test_sharded_iterators_read_disjoint_records(records):
    seen = [set(sum(ids(take(iterator(records, shard_index=i, shard_count=2, batch_size=2), 3)), []))
            for i in range(2)]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 12


def test_bucket_padding_gives_static_shapes(records):
    batches = take(iterator(records, num_epochs=1, shuffle=False), 4)
    for b in batches:
        lengths = b["tokens_length"]
        assert b["tokens"].shape[1] == pick_bucket(lengths.max(), BUCKETS["tokens"])
        for row, n in zip(b["tokens"], lengths):
            assert (row[n:] == -1).all() and (row[:n] >= 0).all()
        assert b["frame"].shape == (3, 112, 112, 3) and b["valid"].all()
    assert {b["tokens"].shape[1] for b in batches} <= set(BUCKETS["tokens"])


def test_too_long_examples_are_skipped_and_counted(records):
    it = iterator(records, num_epochs=1, buckets={"tokens": (40,)}, batch_size=1)
    kept = sum(ids(it), [])
    too_long = [r.id for r in records if len(r.caption) > 40]
    assert too_long and it.skipped["too_long"] == len(too_long)
    assert sorted(kept) == sorted(set(r.id for r in records) - set(too_long))


def test_last_partial_batch_is_padded_and_marked(records):
    it = iterator(records[:7], num_epochs=1, shuffle=False, drop_remainder=False)
    batches = list(it)
    assert len(batches) == 3 and batches[-1]["valid"].tolist() == [True, False, False]
    assert batches[-1]["id"].tolist()[1:] == ["", ""] and batches[-1]["tokens_length"][1] == 0
    assert len(list(iterator(records[:7], num_epochs=1, shuffle=False))) == 2


def assert_same_batches(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_exact_resume_from_a_json_state(records):
    full = take(iterator(records, seed=5), 7)  # crosses the epoch boundary (4 batches per epoch)
    first = iterator(records, seed=5)
    head = take(first, 3)
    state = json.loads(json.dumps(first.get_state()))
    assert state["position"] == 9 and state["epoch"] == 0 and state["index_in_epoch"] == 9
    resumed = iterator(records, seed=5)
    resumed.set_state(state)
    assert_same_batches(head + take(resumed, 4), full)
    assert resumed.get_state()["epoch"] == 1 and resumed.get_state()["index_in_epoch"] == 9


def test_resume_through_orbax_with_worker_processes(records, tmp_path):
    import orbax.checkpoint as ocp

    full = take(iterator(records, seed=7), 6)
    first = iterator(records, seed=7)
    head = take(first, 2)
    with ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",)) as manager:
        manager.save(2, args=ocp.args.Composite(data=ocp.args.JsonSave(first.get_state())))
        manager.wait_until_finished()
        state = manager.restore(2, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
    resumed = iterator(records, seed=7, worker_count=2)
    resumed.set_state(state)
    try:
        tail = take(resumed, 4)
    finally:
        resumed.close()
    assert_same_batches(head + tail, full)


def test_grain_checkpoint_handler_saves_one_state_per_process(records, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    full = take(iterator(records, seed=9), 5)
    first = iterator(records, seed=9)
    head = take(first, 2)
    with ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",)) as manager:
        manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(first)))
        manager.wait_until_finished()
        assert (tmp_path / "ckpt" / "2" / "data" / "process_0-of-1.json").exists()
        resumed = iterator(records, seed=9)
        manager.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
    assert_same_batches(head + take(resumed, 3), full)


def test_state_of_another_pipeline_is_refused(records):
    state = iterator(records, seed=1).get_state()
    with pytest.raises(ValueError, match="seed is 1 in the state but 2 here"):
        iterator(records, seed=2).set_state(state)
    with pytest.raises(ValueError, match="shard_index"):
        iterator(records, seed=1, shard_index=1, shard_count=2).set_state(
            iterator(records, seed=1, shard_index=0, shard_count=2).get_state())


def test_make_iterator_selects_a_split(world):
    it = make_iterator(f"{world}/captions.jsonl", EXAMPLE, PipelineConfig(batch_size=1, num_epochs=1),
                       split="heldout")
    heldout = [r.id for r in read_manifest(f"{world}/captions.jsonl")[0] if r.split == "heldout"]
    assert sorted(sum(ids(it), [])) == sorted(heldout) and heldout


def test_qwen_features_and_labels(world):
    from vaemotion_jax.processing.vision import PATCH_DIM

    def va_format(record, features):
        return {**label_arrays(record), "pixels": features["pixel_values_videos"], "fbank": features["fbank"]}

    example = ExampleFn(media=MediaSpec(num_frames=2, resized_hw=(56, 56), min_pixels=28 * 28,
                                        max_pixels=56 * 56, audio_frames=96), format_fn=va_format)
    record = read_manifest(f"{world}/stage2.jsonl")[0][0]
    out = example(record)
    assert out["pixels"].shape == (16, PATCH_DIM) and out["fbank"].shape == (1, 96, 128)
    np.testing.assert_allclose(out["va"], [record.labels[p] for p in ("a", "v", "av")])
    assert out["va_mask"].all()


def test_collate_refuses_unequal_unbucketed_fields():
    examples = [{"x": np.zeros(3), "id": "a"}, {"x": np.zeros(4), "id": "b"}]
    with pytest.raises(ValueError, match="field 'x' has different shapes"):
        collate(examples, 2, {}, {})


def test_batch_sharding_splits_each_global_batch(tmp_path):
    """Two processes in "batch" mode make exactly the halves of a 1-process run's batches."""
    from vaemotion_jax.data.manifest import Record
    from vaemotion_jax.data.pipeline import BatchIterator, PipelineConfig

    records = [Record(id=f"r{i}", media=str(tmp_path / f"r{i}.mp4")) for i in range(22)]
    fn = lambda r: {"x": np.array([int(r.id[1:])])}  # noqa: E731
    one = BatchIterator(records, fn, PipelineConfig(batch_size=4, seed=3, shard_by="batch"))
    halves = [BatchIterator(records, fn, PipelineConfig(batch_size=2, seed=3, shard_by="batch",
                                                        shard_index=i, shard_count=2))
              for i in range(2)]
    for _ in range(12):  # several epochs
        want = next(one)["x"][:, 0]
        got = np.concatenate([next(h)["x"][:, 0] for h in halves])
        np.testing.assert_array_equal(got, want)
    state = halves[0].get_state()
    assert state == {**halves[1].get_state(), "shard_index": 0}
    again = BatchIterator(records, fn, PipelineConfig(batch_size=2, seed=3, shard_by="batch",
                                                      shard_index=1, shard_count=2))
    again.set_state(state)  # process 1 may resume from process 0's state
    np.testing.assert_array_equal(next(again)["x"], next(halves[1])["x"])
