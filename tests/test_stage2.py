"""Stage 2 (EmoAdapter + LoRA): eq. (5) masking, gradient flow, an end-to-end run, and the
inference paths that read its outputs (evaluate, chat)."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stage1_assets import config, make_assets, settings
from vaemotion_jax.training import losses, stage2


def test_emotion_loss_masks_missing_labels():
    """Eq. (5): mean over the pathways that have labels; missing ones are not zero targets."""
    rng = np.random.default_rng(0)
    pred = rng.uniform(-1, 1, (4, 3, 2)).astype(np.float32)
    true = rng.uniform(-1, 1, (4, 3, 2)).astype(np.float32)
    has = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 0, 0]], bool)
    want = []
    for b in range(4):
        terms = [np.sum((pred[b, m] - true[b, m]) ** 2) for m in range(3) if has[b, m]]
        want.append(np.mean(terms) if terms else 0.0)
    got = losses.emotion_mse(jnp.asarray(pred), jnp.asarray(true), jnp.asarray(has))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    # a zero-filled missing label would change row 1; masking must ignore its target entirely
    true2 = true.copy()
    true2[1, 1] = 0.0
    np.testing.assert_allclose(np.asarray(losses.emotion_mse(jnp.asarray(pred), jnp.asarray(true2),
                                                             jnp.asarray(has))), want, rtol=1e-6)


def test_ccc_is_one_for_identical_and_penalises_bias():
    x = np.linspace(-1, 1, 50)
    assert stage2.ccc(x, x) == pytest.approx(1.0, abs=1e-9)
    assert stage2.ccc(x + 0.5, x) < 0.9
    assert stage2.ccc(-x, x) == pytest.approx(-1.0, abs=1e-9)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-step Stage 1 run, then a 3-step full Stage 2 run from its adapter."""
    from vaemotion_jax.training.stage1_run import run as run1
    from vaemotion_jax.training.stage2_run import run as run2
    root = tmp_path_factory.mktemp("stage2")
    assets = make_assets(str(root / "assets"))
    s1 = str(root / "stage1")
    run1(config(settings(assets, s1, steps=2, mesh=(1, 1, 1))))
    base = settings(assets, str(root / "stage2"), steps=3, eval_items=24, eval_batch=8,
                    stage1_dir=s1, mesh=(1, 1, 1), **{"lora.dropout": 0.1})
    del base["eval_clips"], base["max_response_tokens"]
    report = run2(config(base, "stage2"))
    return {"assets": assets, "stage1": s1, "stage2": str(root / "stage2"), "report": report}


def test_stage2_run_reports_and_exports(runs):
    rep = runs["report"]
    assert set(rep["benchmark"]) == {"Stage 1", "Stage 2 (full)"}
    for p in ("a", "v", "av"):
        assert np.isfinite(rep["emotion"][f"mse_{p}"])
    w = runs["stage2"]
    for f in ("lora_peft/adapter_config.json", "lora_peft/adapter_model.safetensors",
              "emoadapter/emotion_modules.json", "run.json", "summary.json", "metrics.jsonl"):
        assert os.path.exists(os.path.join(w, f)), f
    losses_ = [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
    assert len(losses_) == 3 and all(np.isfinite(m["loss"]) for m in losses_)


def test_gradients_reach_only_enhancer_supervisor_and_lora(runs):
    from vaemotion_jax.data.pipeline import PipelineConfig, make_iterator
    from vaemotion_jax.inference import load_run
    from vaemotion_jax.training.stage1_run import resolve_assets
    from vaemotion_jax.models.lora import split_lora
    from vaemotion_jax.training.stage2 import trainable_patterns
    from vaemotion_jax.training.stage2_run import example_fn, training_records
    from vaemotion_jax.training.state import create_state, make_optimizer, split_params
    run = load_run(runs["stage2"])
    c = run.config
    assets = resolve_assets(c)
    train, _ = training_records(c, assets)
    it = make_iterator([r for r in train if r.modality == "av"][:2], example_fn(c, assets, run.model.config.qwen),
                       PipelineConfig(batch_size=2, shuffle=False, num_epochs=1,
                                      buckets={"input_ids": (256, 512), "position_ids": (256, 512),
                                               **{k: (64, 128) for k in stage2.TARGET_FIELDS}}))
    batch = {k: jnp.asarray(v) for k, v in next(it).items() if np.asarray(v).dtype.kind not in "USO"}
    # move W2 of the enhancer and B of LoRA off zero so every trainable part has a gradient path
    params = jax.tree.map(lambda x: x, run.params)
    params["emotion_enhancer"]["fc2"]["kernel"] = params["emotion_enhancer"]["fc2"]["kernel"] + 0.01

    def loss(p):
        return stage2.stage2_loss(p, {}, batch, jax.random.key(0), model=run.model, lam=1.0,
                                  deterministic=True)[0]

    total = lambda tree: float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(tree)))
    grads = jax.grad(loss)(params)
    # frozen encoders and the Stage 1 adapter: exactly no gradient
    for frozen_part in (grads["audio_adapter"], grads["audio_encoder"], grads["backbone"]["visual"]):
        assert total(frozen_part) == 0
    assert total(grads["emotion_enhancer"]) > 0 and total(grads["emotion_supervisor"]) > 0
    lora, _ = split_lora(grads["backbone"])
    assert total(lora) > 0
    # a train step changes exactly the trainable parts and keeps optimizer state for them only
    patterns = trainable_patterns(run.model.config.emotion, True)
    trainable, frozen = split_params(params, patterns)
    tx = make_optimizer(1e-3, 0, 10)
    state = create_state(trainable, tx, jax.random.key_data(jax.random.key(0)))
    assert len([x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]) == 2 * len(jax.tree.leaves(trainable))
    before = jax.tree.map(np.asarray, frozen)
    new, metrics = stage2.train_step(state, frozen, batch, model=run.model, tx=tx, lam=1.0, dropout=False)
    assert bool(metrics["finite"])
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, frozen))
    assert any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                            new.params, trainable)))


def test_evaluate_generate_equals_the_generator(runs, tmp_path):
    """Greedy decoding in evaluation gives exactly `greedy_generate`'s tokens for video items."""
    from vaemotion_jax.data.decode import DecodeOptions, decode_record
    from vaemotion_jax.evaluate import main as evaluate
    from vaemotion_jax.evaluation.prompts import load_benchmark, record_prompt
    from vaemotion_jax.generate import greedy_generate
    from vaemotion_jax.inference import load_run
    from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL
    from vaemotion_jax.processing.chat import encode_chat
    from vaemotion_jax.processing.vision import preprocess_video
    out = str(tmp_path / "eval.json")
    assert evaluate(["--checkpoint", runs["stage1"], "--benchmark", "artemo", "--modality", "v",
                     "--limit", "3", "--out", out, "--max-new-tokens", "6"]) == 0
    results = json.load(open(out))
    run = load_run(runs["stage1"])
    world = json.load(open(os.path.join(runs["stage1"], "run.json")))["world_dir"]
    items = load_benchmark(os.path.join(world, "benchmark.jsonl"), "artemo", split="heldout",
                           modality="v")[:3]
    tok = run.tokenizer
    for item, pred in zip(items, results["predictions"]):
        media = run.spec.media
        clip = decode_record(item, DecodeOptions(num_frames=media.num_frames, audio=False))
        v = preprocess_video(clip.frames, clip.fps, resized_hw=media.resized_hw,
                             min_pixels=media.min_pixels, max_pixels=media.max_pixels)
        n = int(np.prod(v["video_grid_thw"])) // 4
        ids = encode_chat(tok, [{"role": "user", "content": record_prompt(item, "artemo")}],
                          video_tokens=n, add_generation_prompt=True)["input_ids"][None]
        toks = greedy_generate(Qwen2_5_VL(run.model.config.qwen), run.params["backbone"], ids, None,
                               v["pixel_values_videos"], v["video_grid_thw"][None],
                               np.array([v["second_per_grid_ts"]]), max_new_tokens=6)
        assert pred["id"] == item.id
        assert pred["response"] == tok.decode(toks[0], skip_special_tokens=True)


def test_evaluation_compiles_once_not_per_batch_or_call(runs):
    """A second pass of `run_items` over the same items (several batches) compiles nothing, in
    every mode: the programs are cached per shape, not per call or batch."""
    from vaemotion_jax.evaluation.prompts import load_benchmark
    from vaemotion_jax.evaluation.benchmark import run_items
    from vaemotion_jax.inference import load_run
    run = load_run(runs["stage1"])
    world = json.load(open(os.path.join(runs["stage1"], "run.json")))["world_dir"]
    items = load_benchmark(os.path.join(world, "benchmark.jsonl"), "artemo", split="heldout",
                           modality="a")[:6]
    compiles = []

    def listener(event, secs, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(secs)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for mode in ("generate", "loglik", "cloze"):
            go = lambda: run_items(run.model, run.params, items, run.spec, "artemo", mode=mode,
                                   batch_size=2, max_new_tokens=4)
            first = go()
            n = len(compiles)
            assert [p.predicted for p in go()] == [p.predicted for p in first]
            assert len(compiles) == n, f"{mode}: {len(compiles) - n} compilations on the second pass"
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_loglik_scores_every_batch_with_one_candidate_shape(runs, monkeypatch):
    """Items with fewer options than others do not make a new program: every batch scores the
    run's most letters (the candidates are an array argument of the jitted scorer)."""
    from vaemotion_jax.evaluation import benchmark
    from vaemotion_jax.evaluation.prompts import load_benchmark
    from vaemotion_jax.inference import load_run
    run = load_run(runs["stage1"])
    world = json.load(open(os.path.join(runs["stage1"], "run.json")))["world_dir"]
    items = load_benchmark(os.path.join(world, "benchmark.jsonl"), "artemo", split="heldout",
                           modality="a")[:4]
    fewer = [dataclasses.replace(r, options=r.options[:3], answer="A") for r in items[:2]]
    shapes, scorer = [], benchmark.last_logprobs
    monkeypatch.setattr(benchmark, "last_logprobs",
                        lambda *a: shapes.append(a[3].shape) or scorer(*a))
    preds = benchmark.run_items(run.model, run.params, fewer + items[2:], run.spec, "artemo",
                                mode="loglik", batch_size=2)
    assert shapes == [(4,), (4,)]
    assert [p.n_options for p in preds] == [3, 3, 4, 4] and len(preds[0].scores) == 3


def test_chat_answers_audio_file_and_video(runs, tmp_path):
    import soundfile as sf
    from vaemotion_jax.chat import respond
    from vaemotion_jax.inference import load_run
    run = load_run(runs["stage2"])
    world = json.load(open(os.path.join(runs["stage2"], "run.json")))["world_dir"]
    clip = sorted(os.listdir(os.path.join(world, "clips")))[0]
    wav = str(tmp_path / "tone.wav")
    t = np.arange(48000) / 16000
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    replies = respond(run, [wav], "a", "What do you hear?", max_new_tokens=4)
    assert len(replies) == 1 and replies[0].valence_arousal is not None
    assert all(-1 <= x <= 1 for x in replies[0].valence_arousal)
    both = respond(run, [os.path.join(world, "clips", clip)], "av", "Describe it.", max_new_tokens=4)
    assert both[0].modality == "av" and isinstance(both[0].response, str)


def test_chat_names_each_bad_file_and_answers_the_good_ones(runs, tmp_path, capsys):
    """A text file named .wav, an mp4 cut short and a missing file: one line each naming the
    file and the reason, no traceback; the good clip is answered; the exit status is non-zero
    only when nothing could be answered."""
    from media_files import make_mp4, truncate
    from vaemotion_jax.chat import main as chat
    world = json.load(open(os.path.join(runs["stage2"], "run.json")))["world_dir"]
    good = os.path.join(world, "clips", sorted(os.listdir(os.path.join(world, "clips")))[0])
    broken = tmp_path / "broken.wav"
    broken.write_text("this is not audio\n")
    cut = truncate(make_mp4(str(tmp_path / "full.mp4"), faststart=True), str(tmp_path / "cut.mp4"), 0.5)
    missing = str(tmp_path / "nowhere.mp4")
    args = ["--checkpoint", runs["stage2"], "--modality", "a", "--max-new-tokens", "3", "--media"]
    assert chat(args + [str(broken), good, cut, missing]) == 0
    out, err = capsys.readouterr()
    assert f"{good} [a]:" in out and "Traceback" not in out + err
    lines = [l for l in err.splitlines() if "cannot use this file" in l]
    assert len(lines) == 3
    for path, reason in ((str(broken), "unreadable"), (cut, "truncated"), (missing, "not found")):
        assert any(l.startswith(f"{path}: cannot use this file:") and reason in l for l in lines), (path, lines)
    assert chat(args + [str(broken), missing]) == 1
    assert chat(["--checkpoint", str(tmp_path / "no_run"), "--media", good]) == 2


def test_evaluate_counts_an_item_with_unreadable_media_as_a_failure(runs, tmp_path):
    from vaemotion_jax.data.manifest import Record, write_manifest
    from vaemotion_jax.evaluate import main as evaluate
    world = json.load(open(os.path.join(runs["stage2"], "run.json")))["world_dir"]
    good = os.path.join(world, "clips", sorted(os.listdir(os.path.join(world, "clips")))[0])
    item = dict(question="What do you hear?", options=["a", "b", "c", "d"], answer="B",
                category="OC", modality="a")
    manifest = str(tmp_path / "items.jsonl")
    write_manifest([Record(id="ok", media=good, **item),
                    Record(id="gone", media=str(tmp_path / "gone.wav"), **item)], manifest)
    out = str(tmp_path / "eval.json")
    assert evaluate(["--checkpoint", runs["stage2"], "--benchmark", "artemo", "--manifest", manifest,
                     "--out", out, "--max-new-tokens", "2"]) == 0
    result = json.load(open(out))
    by_id = {p["id"]: p for p in result["predictions"]}
    assert set(by_id) == {"ok", "gone"} and by_id["gone"]["predicted"] is None
    assert "file not found" in by_id["gone"]["problem"]
    assert result["summary"]["items"] == 2 and result["summary"]["unreadable_media"] == 1


def test_logits_notebook_runs_top_to_bottom(runs, tmp_path):
    """notebooks/logits_analysis.ipynb on the runs above (it cannot rot unnoticed)."""
    import nbformat
    from nbclient import NotebookClient
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nb = nbformat.read(os.path.join(root, "notebooks", "logits_analysis.ipynb"), as_version=4)
    env = {"STAGE1_RUN": runs["stage1"], "STAGE2_RUN": runs["stage2"], "N_CLIPS": "4",
           "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": root}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = "\n".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for o in cell.get("outputs", []))
    assert "mean KL per token" in text and "MSE per pathway" in text


def test_real_data_without_general_instructions_is_refused_unless_asked(tmp_path):
    """On real data (a train manifest, no world) the paper's general mix-in must be given or
    turned off on purpose; the error names the flag."""
    from vaemotion_jax.configs import stage2 as stage2_config
    from vaemotion_jax.configs.common import override
    from vaemotion_jax.embedded.assets import Assets
    from vaemotion_jax.training.stage2_run import training_records
    manifest = tmp_path / "emotion.jsonl"
    manifest.write_text(json.dumps({
        "id": "c1", "media": "c1.mp4", "modality": "av", "labels": {"av": [0.5, -0.2]},
        "conversations": [{"role": "user", "content": "How does it feel?"},
                          {"role": "assistant", "content": "Calm."}]}) + "\n")
    c = override(stage2_config.get_config(), {"data.train_manifest": str(manifest)})
    assets = Assets("", "", "", "")
    with pytest.raises(ValueError, match="general_manifest"):
        training_records(c, assets)
    train, _ = training_records(override(c, {"data.general_fraction": 0.0}), assets)
    assert [r.id for r in train] == ["c1"]


def test_training_mix_shares_are_shares_of_the_final_mix(tmp_path):
    """mc_fraction and general_fraction are shares of the whole mix; the emotion data is the
    rest, and a pool too small for its share gives all it has."""
    from vaemotion_jax.configs import stage2 as stage2_config
    from vaemotion_jax.configs.common import override
    from vaemotion_jax.embedded.assets import Assets
    from vaemotion_jax.training.stage2_run import training_records
    chat = [{"role": "user", "content": "How does it feel?"}, {"role": "assistant", "content": "Calm."}]
    lines = {
        "stage2": [{"id": f"e{i}", "media": "c.mp4", "modality": "a", "labels": {"a": [0.1, 0.2]},
                    "conversations": chat, "split": "train"} for i in range(6)],
        "mc_train": [{"id": f"m{i}", "media": "c.mp4", "question": "Which?", "options": list("wxyz"),
                      "answer": "B", "category": "OE", "modality": "a", "split": "train"}
                     for i in range(20)],
        "captions": [{"id": f"g{i}", "media": "c.mp4", "conversations": chat, "split": "train"}
                     for i in range(2)]}
    for name, records in lines.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assets = Assets(str(tmp_path), "", "", "")
    from vaemotion_jax.presets import check
    c = check(override(stage2_config.get_config(),
                         {"data.mc_fraction": 0.25, "data.general_fraction": 0.25}))
    train, _ = training_records(c, assets)
    kinds = [r.id[0] for r in train]
    # 6 emotion conversations are half of the mix: 3 multiple-choice items, and 3 general
    # instructions wanted of which only 2 exist
    assert (kinds.count("e"), kinds.count("m"), kinds.count("g")) == (6, 3, 2)
    train, _ = training_records(override(c, {"data.mc_fraction": 0.0, "data.general_fraction": 0.0}), assets)
    assert [r.id for r in train] == [f"e{i}" for i in range(6)]
    with pytest.raises(ValueError, match="mc_fraction"):
        training_records(override(c, {"data.mc_fraction": 0.6, "data.general_fraction": 0.4}), assets)


def test_stage1_adapter_from_other_weights_is_refused(runs, tmp_path):
    """A Stage 1 run over another backbone (e.g. an older embedded recipe) must not feed Stage 2."""
    import shutil
    from types import SimpleNamespace
    from vaemotion_jax.training.stage2_run import check_same_weights
    with open(os.path.join(runs["stage1"], "run.json")) as f:
        stage1 = json.load(f)
    same = SimpleNamespace(backbone_path=stage1["backbone_path"],
                           audio_encoder_path=stage1["audio_encoder_path"])
    check_same_weights(os.path.join(runs["stage1"], "run.json"), same)
    moved = str(tmp_path / "moved_backbone")           # same content elsewhere: accepted
    shutil.copytree(stage1["backbone_path"], moved)
    check_same_weights(os.path.join(runs["stage1"], "run.json"),
                       SimpleNamespace(backbone_path=moved, audio_encoder_path=same.audio_encoder_path))
    other = str(tmp_path / "other_backbone")           # other content: refused, naming both
    shutil.copytree(stage1["backbone_path"], other)
    with open(os.path.join(other, "config.json"), "a") as f:
        f.write("\n")
    with pytest.raises(ValueError, match="trained with backbone .* but this run uses .*other_backbone"):
        check_same_weights(os.path.join(runs["stage1"], "run.json"),
                           SimpleNamespace(backbone_path=other, audio_encoder_path=same.audio_encoder_path))
