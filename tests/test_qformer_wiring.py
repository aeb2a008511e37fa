"""kind="qformer" end to end: utterance windows from the manifest reach every stage's batches
(mask by hand, timestamps in the user turn at training, evaluation and chat alike, notes), a
tiny Stage 1 run trains the adapter alone, `load_run` rebuilds the same adapter, and Stage 2
trains and evaluates on top of it."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stage1_assets import config, make_assets, settings
from vaemotion_jax.data.manifest import read_manifest, write_manifest
from vaemotion_jax.data.pipeline import NOTES, ExampleFn, PipelineConfig, make_iterator
from vaemotion_jax.data.utterances import utterance_spec
from vaemotion_jax.processing.tokenizer import cached_tokenizer

# Tiny Q-Former: 4 queries of width 16, one layer, N_max 3, fixed windows of 1 s.
QFORMER = {"adapter.kind": "qformer", "adapter.queries": 4, "adapter.qformer_dim": 16,
           "adapter.qformer_heads": 2, "adapter.qformer_layers": 1, "adapter.max_utterances": 3,
           "adapter.window_seconds": 1.0}
TWO = [[0.5, 1.2], [1.8, 2.6]]                                  # -> time patches 5..11, 18..25
FOUR = [[0.1, 0.4], [0.6, 0.9], [1.1, 1.5], [2.0, 2.9]]         # one more than N_max
UTTERANCES = (TWO, None, FOUR)                                  # by clip index mod 3


def with_utterances(src: str, dst: str) -> str:
    """The manifest `src` with utterances on two of every three clips, written to `dst`."""
    records, problems = read_manifest(src)
    assert not problems
    for i, r in enumerate(records):
        r.utterances = UTTERANCES[i % 3]
    write_manifest(records, dst)
    return dst


def hand_mask(patches_per_window, n_max=3, freq=10, time=29) -> np.ndarray:
    """(n_max, 2 + freq * time): every frequency patch of each window's time patches."""
    m = np.zeros((n_max, 2 + freq * time), bool)
    for i, patches in enumerate(patches_per_window):
        for f in range(freq):
            m[i, [2 + f * time + t for t in patches]] = True
    return m


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-step Stage 1 run with the Q-Former on clips with utterances, then a 2-step Stage 2
    run (full: LoRA + EmoAdapter) from its adapter."""
    from vaemotion_jax.training.stage1_run import run as run1
    from vaemotion_jax.training.stage2_run import run as run2
    root = tmp_path_factory.mktemp("qformer_wiring")
    assets = make_assets(str(root / "assets"))
    s1_manifest = with_utterances(os.path.join(assets["world"], "stage1.jsonl"),
                                  str(root / "stage1.jsonl"))
    s2_manifest = with_utterances(os.path.join(assets["world"], "stage2.jsonl"),
                                  str(root / "stage2.jsonl"))
    s1 = str(root / "stage1")
    summary = run1(config(settings(assets, s1, steps=3, mesh=(1, 1, 1), eval_clips=2,
                                   **{"data.train_manifest": s1_manifest}, **QFORMER)))
    s2 = settings(assets, str(root / "stage2"), steps=2, stage1_dir=s1, mesh=(1, 1, 1),
                  eval_items=2, eval_mode="loglik", eval_chat_clips=0, eval_batch=4,
                  eval_stage1_baseline=False,
                  **{"data.train_manifest": s2_manifest, "data.general_fraction": 0.0})
    del s2["eval_clips"], s2["max_response_tokens"]
    report = run2(config(s2, "stage2"))
    return {"assets": assets, "stage1": s1, "stage2": str(root / "stage2"),
            "s1_manifest": s1_manifest, "summary": summary, "report": report}


def first_records(manifest: str):
    """(a record with TWO, one without utterances, one with FOUR), all training clips."""
    records, _ = read_manifest(manifest)
    train = [r for r in records if r.split != "heldout"]
    pick = lambda u: next(r for r in train if r.utterances == u)
    return pick(TWO), pick(None), pick(FOUR)


def test_stage1_run_trains_and_exports_the_qformer(runs):
    w = runs["stage1"]
    metrics = [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
    assert len(metrics) == 3 and all(np.isfinite(m["loss"]) and m["loss"] > 0 for m in metrics)
    assert np.isfinite(runs["summary"]["end"]["kl"])                 # the held-out clips too
    with open(os.path.join(w, "audio_adapter", "emotion_modules.json")) as f:
        exported = json.load(f)["modules"]["audio_adapter"]
    assert exported["kind"] == "qformer" and exported["queries"] == 4
    assert exported["max_utterances"] == 3 and exported["window_seconds"] == 1.0
    with open(os.path.join(w, "run.json")) as f:
        assert json.load(f)["config"]["adapter"]["kind"] == "qformer"
    # the teacher's responses are cached per timestamps settings
    assert os.listdir(os.path.join(w, "teacher_cache"))[0].endswith("-ts3-utterances-1s-fixed.jsonl")


def stage1_batch(run, records, c):
    """A Stage 1 batch of `records` made by the run's own host code, with a short response."""
    from vaemotion_jax.training import stage1
    from vaemotion_jax.training.stage1_run import example_fn, pipeline, resolve_assets
    qwen = run.model.config.qwen
    examples = example_fn(c, resolve_assets(c), qwen, run.spec.utterances)
    batch = next(iter(make_iterator(records, examples, pipeline(c, qwen, len(records), False))))
    full = stage1.attach_responses(batch, [[7, 8, qwen.eos_token_id]] * len(records), qwen,
                                   c.data.seq_buckets, c.data.target_buckets, qwen.pad_token_id)
    return batch, {k: jnp.asarray(v) for k, v in full.items()
                   if np.asarray(v).dtype.kind not in "USO"}


def test_stage1_batch_mask_gradients_and_load_run(runs):
    from vaemotion_jax.data.decode import decode_record
    from vaemotion_jax.inference import load_run
    from vaemotion_jax.training import stage1
    from vaemotion_jax.training.checkpoint import Checkpointer
    from vaemotion_jax.training.stage1_run import adapter_config
    from vaemotion_jax.training.state import create_state, make_optimizer
    run = load_run(runs["stage1"])
    c = run.config
    # load_run rebuilds the trained adapter's config from the export and the run's config
    assert run.model.config.adapter == adapter_config(c, run.model.config.qwen)
    assert run.model.config.adapter.kind == "qformer" and run.spec.utterances is not None
    two, none, four = first_records(runs["s1_manifest"])
    clip = decode_record(two, run.spec.media.decode_options())
    assert (clip.start, round(clip.end, 2)) == (0.0, 3.0)   # one 3 s AST window (10 x 29 patches)
    host, batch = stage1_batch(run, [two, none, four], c)
    assert host["utterance_mask"].shape == (3, 3, 292) and host["utterance_mask"].dtype == bool
    np.testing.assert_array_equal(host["utterance_mask"][0],
                                  hand_mask([range(5, 12), range(18, 26)]))
    np.testing.assert_array_equal(host["utterance_mask"][1],           # fixed 1 s windows
                                  hand_mask([range(0, 10), range(10, 20), range(20, 29)]))
    assert host["utterance_mask"][2].any(1).all()                      # the first 3 of FOUR

    # gradients reach the adapter (every Q-Former) and nothing else that is frozen
    teacher, z_v = stage1.teacher_logits(run.model, run.params, batch)
    grads = jax.grad(lambda p: stage1.stage1_loss(p, {}, batch, teacher, z_v, model=run.model,
                                                  tau=1.0, align="logits")[0])(run.params)
    total = lambda tree: float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(tree)))
    for part in ("global_qformer", "utterance_qformer", "token_fc", "proj"):
        assert total(grads["audio_adapter"][part]) > 0, part
    assert total(grads["audio_encoder"]) == 0 and total(grads["backbone"]["visual"]) == 0

    # the loaded adapter is the trained one: same audio tokens as the final checkpoint's
    trainable = {"audio_adapter": run.params["audio_adapter"]}
    tx = make_optimizer(c.optim.lr, c.optim.warmup_steps, c.steps)
    target = create_state(trainable, tx, jax.random.key_data(jax.random.key(c.seed)))
    ckpt = Checkpointer(os.path.join(runs["stage1"], "checkpoints"), c.checkpoint_every)
    trained, _, _ = ckpt.restore(c.steps, target)
    ckpt.close()
    tokens = jax.jit(functools.partial(stage1.audio_tokens, run.model))
    loaded = np.asarray(tokens(run.params, batch))
    np.testing.assert_array_equal(
        loaded, np.asarray(tokens({**run.params, **trained.params}, batch)))
    # and the windows matter: without them the utterance slots are empty
    empty = {**batch, "utterance_mask": jnp.zeros_like(batch["utterance_mask"])}
    assert not np.allclose(loaded, np.asarray(tokens(run.params, empty)))


def user_text(tokenizer_dir: str, ids) -> str:
    """The text of the user turn of chat ids (after the clip's placeholders)."""
    text = cached_tokenizer(tokenizer_dir).decode(np.asarray(ids), skip_special_tokens=False)
    return text.split("<|vision_end|>", 1)[1].split("<|im_end|>", 1)[0]


def test_user_turn_is_the_same_in_training_evaluation_and_chat(runs):
    from vaemotion_jax.evaluation import benchmark as eval_benchmark
    from vaemotion_jax.evaluation.replies import question_batches
    from vaemotion_jax.inference import load_run
    from vaemotion_jax.training import stage1, stage2
    run = load_run(runs["stage1"])
    qwen, spec = run.model.config.qwen, run.spec
    tok = spec.tokenizer_dir
    question = "What emotion does the music convey?"
    two, none, _ = first_records(runs["s1_manifest"])
    wants = {two.id: "Utterance 1: 0.5-1.2 s; Utterance 2: 1.8-2.6 s.\n" + question,
             none.id: "Segment 1: 0.0-1.0 s; Segment 2: 1.0-2.0 s; Segment 3: 2.0-3.0 s.\n"
                      + question}
    for record in (two, none):
        record.modality = "av"
        record.conversations = [{"role": "user", "content": question},
                                {"role": "assistant", "content": "Calm."}]
        trained = ExampleFn(media=spec.media, utterances=spec.utterances, format_fn=functools.partial(
            stage2.conversation_example, tokenizer_dir=tok, qwen=qwen,
            joint_layout=spec.joint_layout))(record)
        assert trained[NOTES] == (() if record is two else ("utterances_fallback",))
        asked = eval_benchmark.example_fn(spec, qwen, "artemo", "av", prompt=question)(record)
        prompted = ExampleFn(media=spec.media, utterances=spec.utterances,
                             format_fn=functools.partial(stage1.teacher_prompt_example, tokenizer_dir=tok,
                                                         qwen=qwen, prompts=(question,),
                                                         seed=0))(record)
        n = len(asked["prompt_ids"])
        np.testing.assert_array_equal(asked["prompt_ids"], trained["input_ids"][:n])
        for ids in (trained["input_ids"], asked["prompt_ids"], prompted["prompt_ids"]):
            assert user_text(tok, ids) == wants[record.id]
        for example in (asked, prompted):
            np.testing.assert_array_equal(example["utterance_mask"], trained["utterance_mask"])
    # chat asks about a file (no utterances): the fixed windows, as for a clip without them
    chatted = next(question_batches(spec, qwen, [none.media], "av", question))
    assert user_text(tok, chatted["prompt_ids"][0]) == wants[none.id]
    np.testing.assert_array_equal(chatted["utterance_mask"][0], trained["utterance_mask"])


def test_pipeline_counts_fallbacks_and_dropped_windows(runs):
    from vaemotion_jax.inference import load_run
    run = load_run(runs["stage1"])
    records = first_records(runs["s1_manifest"])
    it = make_iterator(records, ExampleFn(media=run.spec.media, utterances=run.spec.utterances),
                       PipelineConfig(batch_size=3, shuffle=False, num_epochs=1))
    batch = next(it)
    assert batch["utterance_mask"].shape == (3, 3, 292)
    assert dict(it.notes) == {"utterances_fallback": 1, "utterance_windows_dropped": 1}
    assert "1 utterances_fallback" in it.summary()
    # an adapter without the utterance Q-Former reads no windows
    global_only = run.model.config.adapter.replace(utterance_qformer=False)
    assert utterance_spec(global_only, run.model.config.ast) is None


def test_stage2_trains_and_evaluates_on_the_qformer(runs):
    from vaemotion_jax.inference import load_run
    w = runs["stage2"]
    metrics = [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
    assert len(metrics) == 2 and all(np.isfinite(m["loss"]) for m in metrics)
    rep = runs["report"]
    assert set(rep["benchmark"]) == {"Stage 2 (full)"}
    assert all(np.isfinite(rep["emotion"][f"mse_{p}"]) for p in ("a", "v", "av"))
    run = load_run(w)
    assert run.model.config.adapter == load_run(runs["stage1"]).model.config.adapter
    assert run.spec.utterances == load_run(runs["stage1"]).spec.utterances
    with open(os.path.join(w, "emoadapter", "emotion_modules.json")) as f:
        assert "qformer" in f.read()
    # chat: a reply and the supervisor's V-A through the Q-Former's audio tokens
    from vaemotion_jax.chat import respond
    _, none, _ = first_records(runs["s1_manifest"])
    reply, = respond(run, [none.media], "a", "How does it feel?", max_new_tokens=2)
    assert reply.problem is None and isinstance(reply.response, str)
    assert np.isfinite(reply.valence_arousal).all()
