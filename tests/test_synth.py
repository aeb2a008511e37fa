"""The synthetic audio-visual world: real mp4 clips, labels from factors, a valid benchmark."""
import json
import os

import av
import numpy as np
import pytest

from media_files import dominant_frequency
from vaemotion_jax.embedded import synth
from vaemotion_jax.data.decode import DecodeOptions, decode_record
from vaemotion_jax.data.manifest import read_manifest

CFG = synth.WorldConfig(num_clips=16, seed=3, mismatch=0.5, heldout=0.25, seconds=2.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    counts = synth.generate(out, CFG, workers=1)
    return out, counts


def load(world, name):
    records, problems = read_manifest(os.path.join(world[0], f"{name}.jsonl"))
    assert problems == []
    return records


def test_clips_are_h264_and_aac_of_the_configured_size(world):
    out, counts = world
    clips = sorted(os.listdir(os.path.join(out, "clips")))
    assert len(clips) == CFG.num_clips
    for name in clips[:4]:
        with av.open(os.path.join(out, "clips", name)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
            assert (v.codec_context.width, v.codec_context.height, v.average_rate) == (112, 112, 8)
            assert a.codec_context.sample_rate == 16000
            assert float(v.duration * v.time_base) == pytest.approx(2.0)
            assert float(a.duration * a.time_base) == pytest.approx(2.0, abs=0.07)
    assert counts["captions"] == CFG.num_clips and counts["stage2"] == 6 * CFG.num_clips
    assert counts["benchmark"] == 12 * round(CFG.heldout * CFG.num_clips)


def test_same_seed_same_bytes_with_any_worker_count(world, tmp_path):
    out, _ = world
    again = str(tmp_path / "again")
    assert synth.main(["--out", again, "--num-clips", "16", "--seed", "3", "--mismatch", "0.5",
                       "--heldout", "0.25", "--seconds", "2.0", "--workers", "2"]) == 0
    for name in ["world.json", "stage1.jsonl", "stage2.jsonl", "captions.jsonl", "benchmark.jsonl"] + \
            [f"clips/{c}" for c in sorted(os.listdir(os.path.join(out, "clips")))]:
        with open(os.path.join(out, name), "rb") as f, open(os.path.join(again, name), "rb") as g:
            assert f.read() == g.read(), name
    other = synth.sample_specs(synth.WorldConfig(num_clips=16, seed=4))
    assert [s.picture for s in other] != [s.picture for s in synth.sample_specs(CFG)]


def test_bytes_do_not_depend_on_what_was_encoded_before(tmp_path):
    """With x264's mbtree on, a clip's bytes changed with the encoder's history in the process."""
    cfg = synth.WorldConfig(num_clips=20, seconds=2.0)
    specs = synth.sample_specs(cfg)
    os.makedirs(tmp_path / "clips")
    outputs = {spec.index: set() for spec in specs}
    for order in (range(20), reversed(range(20)), np.random.default_rng(0).permutation(20)):
        for i in order:
            with open(synth.render_clip((specs[i], cfg, str(tmp_path))), "rb") as f:
                outputs[i].add(f.read())
    assert all(len(v) == 1 for v in outputs.values())


def test_labels_follow_the_documented_formulas(world):
    records = load(world, "stage2")
    seen_mismatch = seen_conflict = False
    for r in records:
        pic, snd = r.meta["picture"], r.meta["sound"]
        a, v = synth.pathway_label(snd, "a"), synth.pathway_label(pic, "v")
        assert r.labels["a"] == list(a) and r.labels["v"] == list(v)
        assert all(-1 <= x <= 1 for pair in r.labels.values() for x in pair)
        av_ = r.labels["av"]
        if a[0] * v[0] >= 0:
            expected = [np.clip(0.75 * (a[0] + v[0]), -1, 1), np.clip(0.75 * (a[1] + v[1]), -1, 1)]
        else:
            seen_conflict = True
            expected = [0.8 * a[0], np.clip(max(a[1], v[1]) + 0.3, -1, 1)]
        np.testing.assert_allclose(av_, expected, atol=1e-4)
        seen_mismatch |= not r.meta["matched"]
        assert r.meta["matched"] == (pic == snd)
    assert seen_mismatch and seen_conflict
    gaps = [abs(r.labels["av"][0] - (r.labels["a"][0] + r.labels["v"][0]) / 2) for r in records]
    assert max(gaps) > 0.1  # the joint label is not the average


def test_weights_keep_every_label_in_range():
    for pathway, (wv, wa) in synth.WEIGHTS.items():
        assert sum(wv) == pytest.approx(1.0) and sum(wa) == pytest.approx(1.0), pathway
    extreme = {"shape": "star", "colour": "yellow", "motion": "fast", "brightness": "bright"}
    assert synth.joint_label(synth.pathway_label(extreme, "a"), synth.pathway_label(extreme, "v")) == (1.0, 1.0)


def test_stage1_pairs_are_matched_and_unlabelled(world):
    for r in load(world, "stage1"):
        assert r.meta["matched"] and r.labels is None and r.conversations is None


def test_picture_and_sound_show_their_factors(world):
    out, _ = world
    for r in load(world, "captions")[:8]:
        pic = r.meta["picture"]
        assert r.caption == synth.caption(pic)
        clip = decode_record(r, DecodeOptions(fps=8.0))
        first = clip.frames[0].astype(float)
        background = np.median(first.reshape(-1, 3), axis=0)
        obj = np.abs(first - background).sum(-1) > 60
        dim = 0.75 if pic["brightness"] == "dark" else 1.0
        np.testing.assert_allclose(np.median(first[obj], axis=0), np.array(synth.RGB[pic["colour"]]) * dim, atol=30)
        assert (background.mean() > 150) == (pic["brightness"] == "bright")
        centres = [np.argwhere(np.abs(f.astype(float) - background).sum(-1) > 60).mean(0) for f in clip.frames]
        travel = np.linalg.norm(centres[-1] - centres[0]) + np.linalg.norm(centres[len(centres) // 2] - centres[0])
        assert (travel < 2.0) == (pic["motion"] == "still")
        snd = r.meta["sound"]
        rendered = synth.render_audio(synth.sample_specs(CFG)[int(r.id.split("-")[1])], CFG)
        assert np.abs(rendered).max() == pytest.approx(synth.PEAK[snd["brightness"]])  # loudness
        rms = lambda x: np.sqrt(np.mean(x.astype(float) ** 2))
        assert rms(clip.audio) == pytest.approx(rms(rendered), rel=0.1)  # AAC keeps the level
        f0 = dominant_frequency(clip.audio, 16000)
        tonic = synth.TONIC_HZ[snd["colour"]]
        assert tonic * 2 ** (-3 / 12) < f0 < tonic * 2 ** (15 / 12), (f0, snd)


def right_answer(item):
    """The correct option's text, recomputed from the clip's factors."""
    pic, snd, labels = item.meta["picture"], item.meta["sound"], item.labels
    q, m, c = item.question, item.modality, item.category
    if c == "OC":
        return synth.caption(pic) if m == "v" else synth.sound_description(snd)
    if c == "OE":
        return synth.emotion_word(labels[m])
    if c == "SE":
        idx = 0 if "positive" in q else 1
        return synth.level_bin(labels[m][idx], synth.VALENCE_BINS if idx == 0 else synth.AROUSAL_BINS)
    if c == "Sp-AV":
        return f"a {pic['colour']} {pic['shape']} with a {synth.TIMBRE[snd['shape']]} melody"
    factors, table = (snd, synth.SOUND_QUESTIONS) if (m == "a" or c == "Sp-A") else (pic, synth.PICTURE_QUESTIONS)
    name = next(k for k, (text, _, _) in table.items() if q.endswith(text))
    return table[name][1][factors[name]]


def test_benchmark_items_are_valid_and_held_out(world):
    items = load(world, "benchmark")
    heldout = {r.media for r in load(world, "captions") if r.split == "heldout"}
    train_media = {r.media for name in ("stage1", "stage2", "captions") for r in load(world, name)
                   if r.split == "train"}
    categories = {"a": {"OC", "OE", "SC", "SE"}, "v": {"OC", "OE", "SC", "SE"},
                  "av": {"Sp-A", "Sp-AV", "Sp-V", "OE"}}
    by_clip = {}
    for item in items:
        assert item.media in heldout and item.media not in train_media and item.split == "heldout"
        assert len(item.options) == 4 and len(set(item.options)) == 4
        assert item.options[item.answer_index()] == right_answer(item), item.id
        by_clip.setdefault(item.media, set()).add((item.modality, item.category))
    for pairs in by_clip.values():
        assert pairs == {(m, c) for m, cs in categories.items() for c in cs}
    letters = {item.answer for item in items}
    assert letters == {"A", "B", "C", "D"}  # the right answer is not always in one place


def test_conversations_answer_from_the_factors(world):
    for r in load(world, "stage2")[:12]:
        assert len(r.conversations) == 2
        user, answer = r.conversations[0]["content"], r.conversations[1]["content"]
        kind = r.id.rsplit("-", 1)[1]
        if kind == "content":
            assert answer == synth.content_answer(r.modality, r.meta["picture"], r.meta["sound"])
        else:
            assert kind == "emotion" and answer == synth.emotion_answer(r.modality, r.labels)
            assert synth.emotion_word(r.labels[r.modality]) in answer
        assert user.endswith("?") or user.endswith(".")


def test_world_json_documents_the_mapping(world):
    with open(os.path.join(world[0], "world.json")) as f:
        desc = json.load(f)
    assert desc["config"]["num_clips"] == CFG.num_clips and desc["version"] == synth.WORLD_VERSION
    assert desc["sound"]["timbre"]["circle"] == "sine" and "av_rule" in desc["labels"]


def test_default_world_dir_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEMOTION_CACHE", str(tmp_path / "cache"))
    cfg = synth.WorldConfig(num_clips=3, seconds=1.0)
    path = synth.default_world_dir(cfg, workers=1)
    assert path.startswith(str(tmp_path / "cache" / "synth"))
    stamp = os.path.getmtime(os.path.join(path, "world.json"))
    assert synth.default_world_dir(cfg, workers=1) == path
    assert os.path.getmtime(os.path.join(path, "world.json")) == stamp
    assert synth.default_world_dir(synth.WorldConfig(num_clips=3, seconds=1.5), workers=1) != path
    assert sorted(os.listdir(tmp_path / "cache" / "synth")) == sorted(
        os.path.basename(p) for p in (path, synth.default_world_dir(synth.WorldConfig(num_clips=3, seconds=1.5), workers=1)))
