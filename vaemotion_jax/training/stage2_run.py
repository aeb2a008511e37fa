"""Runs Stage 2 from a config: Stage 1 adapter -> EmoAdapter + LoRA training -> held-out report.

The report compares the Stage 2 model with the Stage 1 model (same backbone and adapter, no
LoRA, no EmoAdapter) on held-out clips: valence/arousal CCC and MSE per pathway (Stage 2 only:
Stage 1 has no supervisor) and multiple-choice accuracy per category and modality in the
paper's Table 2 layout.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from vaemotion_jax.checkpoints.emotion import export_emotion_modules
from vaemotion_jax.data.manifest import PATHWAYS, Record, read_manifest
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.pipeline import ExampleFn, PipelineConfig, make_iterator
from vaemotion_jax.embedded import synth
from vaemotion_jax.data.utterances import UtteranceSpec, utterance_spec
from vaemotion_jax.evaluation import replies
from vaemotion_jax.evaluation import benchmark as eval_benchmark
from vaemotion_jax.evaluation.emotion_words import emotion_word_report
from vaemotion_jax.evaluation.emotion_words import format_report as format_words
from vaemotion_jax.evaluation.prompts import as_instruction, load_benchmark
from vaemotion_jax.training.run_file import RUN_FILE, save_run
from vaemotion_jax.evaluation.tables import artemo_row_from_predictions, format_artemo_table
from vaemotion_jax.models.lora import split_lora
from vaemotion_jax.models.vaemotion import EmotionConfig, VAEmotionConfig, VAEmotionLLM
from vaemotion_jax.presets import check
from vaemotion_jax.training import frozen_cache, loop, program, stage2, weights
from vaemotion_jax.training.checkpoint import fingerprint
from vaemotion_jax.training.stage1_run import resolve_assets
from vaemotion_jax.training.state import (create_state, merge_params, schedule,
                                          split_params)

log = logging.getLogger("vaemotion_jax.stage2")


def stage1_adapter_dir(c, assets) -> str:
    """The Stage 1 adapter export; the embedded default trains Stage 1 first if it is missing.
    An adapter trained over other frozen weights than `assets` (an older embedded backbone, a
    different checkpoint) is refused: its tokens would mean nothing to this backbone."""
    path = os.path.join(os.path.abspath(c.stage1_dir), "audio_adapter")
    if weights.is_adapter_dir(path):
        check_same_weights(os.path.join(c.stage1_dir, RUN_FILE), assets)
        return path
    if c.model != "tiny" or c.backbone_path:
        raise FileNotFoundError(f"{path}: no Stage 1 adapter; train Stage 1 first or set "
                                "--config.stage1_dir")
    log.info("no Stage 1 adapter in %s: running Stage 1 first (the embedded default)", path)
    from vaemotion_jax.training.stage1_run import run as run_stage1
    s1 = c.stage1.copy_and_resolve_references()
    with s1.unlocked():
        s1.workdir, s1.seed = c.stage1_dir, c.seed
        s1.data.world_dir = c.data.world_dir
        s1.adapter = c.adapter
    run_stage1(s1)
    return path


def check_same_weights(stage1_run_file: str, assets) -> None:
    """Raises if the Stage 1 run (its run.json) used another backbone or audio encoder than
    `assets`: same path, or same content fingerprint where a directory moved."""
    if not os.path.exists(stage1_run_file):
        log.warning("%s missing: cannot check that the Stage 1 adapter was trained on this "
                    "backbone", stage1_run_file)
        return
    with open(stage1_run_file) as f:
        stage1 = json.load(f)
    for key in ("backbone_path", "audio_encoder_path"):
        theirs, ours = stage1.get(key), getattr(assets, key)
        if not theirs or os.path.realpath(theirs) == os.path.realpath(ours):
            continue
        if os.path.isdir(theirs) and fingerprint(theirs) == fingerprint(ours):
            continue
        raise ValueError(
            f"{stage1_run_file}: the Stage 1 adapter was trained with {key.split('_path')[0]} "
            f"{theirs}, but this run uses {ours} (for the embedded default: a newer recipe). "
            f"Retrain Stage 1 (delete {os.path.dirname(stage1_run_file)} or set "
            "--config.stage1_dir to a new folder) or point Stage 2 at the same weights.")


def emotion_modules(c, hidden: int, mesh) -> tuple[EmotionConfig, dict]:
    """The ablation's EmoAdapter config and fresh params (enhancer W2 = 0: identity at start)."""
    cfg = program.emotion_config(c)
    return cfg, weights.init_emotion_params(cfg, hidden, mesh, jax.random.key(c.seed + 2))


def build(c, assets, adapter_dir: str, mesh):
    """Loads the frozen weights (with fresh LoRA params if the ablation has LoRA) and the Stage 1
    adapter onto the mesh and initialises the EmoAdapter: (model, backbone, AST, params)."""
    qwen_model, qwen_params, ast_model, ast_params = weights.load_frozen(
        c, assets.backbone_path, assets.audio_encoder_path, mesh, **program.lora_kwargs(c))
    qwen = qwen_model.config
    adapter_params, adapter_cfg = weights.load_adapter(adapter_dir, ast_model.config, mesh)
    emotion_cfg, emotion_params = emotion_modules(c, qwen.text.hidden_size, mesh)
    model = VAEmotionLLM(VAEmotionConfig(qwen, ast_model.config, adapter_cfg, ast_model.dtype,
                                         emotion_cfg))
    params = {"backbone": qwen_params, "audio_encoder": ast_params,
              "audio_adapter": adapter_params, **emotion_params}
    return model, qwen_model, ast_model, params


def training_records(c, assets) -> tuple[list[Record], list[Record]]:
    """(train records: the emotion conversations plus the multiple-choice and general shares,
    held-out emotion records). `data.mc_fraction` and `data.general_fraction` are shares of the
    final mix, drawn once (seeded) from their pools; the emotion conversations are the rest
    (multiple-choice items come from the synthetic world's mc_train.jsonl, when there is one)."""
    path = c.data.train_manifest or os.path.join(assets.world_dir, "stage2.jsonl")
    records, problems = read_manifest(path, strict=c.data.strict)
    train = [r for r in records if r.split != "heldout"]
    heldout = [r for r in records if r.split == "heldout"]
    shares = {"multiple-choice instructions": c.data.mc_fraction,
              "general instructions": c.data.general_fraction}
    if any(f < 0 for f in shares.values()) or sum(shares.values()) >= 1:
        raise ValueError(f"data.mc_fraction and data.general_fraction must be >= 0 and sum to "
                         f"less than 1 (the rest is the emotion data); got {shares}")
    mc_path = os.path.join(assets.world_dir, "mc_train.jsonl") if assets.world_dir else ""
    general_path = c.data.general_manifest or (os.path.join(assets.world_dir, "captions.jsonl")
                                               if assets.world_dir and not c.data.train_manifest
                                               else "")
    if not general_path and c.data.general_fraction > 0:
        raise ValueError(
            "stage 2 mixes general video instructions into the emotion data against forgetting "
            "(the paper adds 8,325 VideoInstruct-100K samples), but data.general_manifest is not "
            "set: import them (python -m vaemotion_jax.data.importers videoinstruct ...) and give "
            "--config.data.general_manifest=FILE, or set --config.data.general_fraction=0 to "
            "train on the emotion data alone")
    pools = {}
    if c.data.mc_fraction > 0 and mc_path and os.path.exists(mc_path):
        items, more = read_manifest(mc_path, strict=c.data.strict)
        problems += more
        pools["multiple-choice instructions"] = [
            as_instruction(r, style=c.data.mc_answer_style) for r in items if r.split != "heldout"]
    if c.data.general_fraction > 0 and general_path:
        general, more = read_manifest(general_path, strict=c.data.strict)
        problems += more
        pools["general instructions"] = [r for r in general
                                         if r.split != "heldout" and r.conversations]
    for p in problems:
        log.warning("skipped %s", p)
    n_emotion = len(train)
    mix = [f"{n_emotion} emotion conversations"]
    rng = np.random.default_rng(c.seed)
    rest = 1 - sum(shares[name] for name in pools)  # the emotion conversations' share
    for name, pool in pools.items():
        want = int(round(n_emotion * shares[name] / rest))
        pick = rng.choice(len(pool), min(want, len(pool)), replace=False)
        train += [pool[i] for i in sorted(pick)]
        mix.append(f"{len(pick)} {name}" + ("" if len(pick) == want else
                                            f" ({want} wanted, the pool has {len(pool)})"))
    log.info("stage 2 training mix: %s", ", ".join(mix))
    return train, heldout


def example_fn(c, assets, qwen, utterances: UtteranceSpec | None = None) -> ExampleFn:
    return ExampleFn(
        media=MediaSpec.from_config(c.data), utterances=utterances,
        clip_keys=c.cache.audio_features,
        format_fn=functools.partial(stage2.conversation_example, tokenizer_dir=assets.tokenizer_dir,
                                    qwen=qwen, joint_layout=c.joint_layout,
                                    max_target_tokens=c.max_target_tokens))


def input_spec(c, assets, model) -> eval_benchmark.InputSpec:
    """How the evaluation makes `model`'s inputs: the run's media, joint layout and the
    utterance windows of its audio adapter."""
    return eval_benchmark.InputSpec(assets.tokenizer_dir, MediaSpec.from_config(c.data),
                                 c.joint_layout,
                                 utterance_spec(model.config.adapter, model.config.ast))


def emotion_on_clips(c, assets, model, params, records) -> dict[str, float]:
    """CCC / MSE of the supervisor's V-A per pathway on one record per held-out clip."""
    pred, true, mask = eval_benchmark.valence_arousal(model, params, input_spec(c, assets, model),
                                                   records, c.eval_batch)
    return stage2.emotion_report(pred, true, mask)


def stage1_view(params: dict, qwen, ast_config, adapter_cfg, audio_dtype):
    """The Stage 1 model inside a Stage 2 run: no LoRA leaves, no EmoAdapter."""
    base, _ = split_lora(params["backbone"])
    model = VAEmotionLLM(VAEmotionConfig(qwen.replace(lora_rank=0), ast_config, adapter_cfg,
                                         audio_dtype))
    return model, {"backbone": base, "audio_encoder": params["audio_encoder"],
                   "audio_adapter": params["audio_adapter"]}


def run(c) -> dict[str, Any]:
    """Stage 2 end to end; returns the held-out report (also in workdir/summary.json)."""
    c = check(c)
    parts = program.ablation(c)
    mesh, workdir = loop.start_run(c)
    assets = resolve_assets(c)
    adapter_dir = stage1_adapter_dir(c, assets)
    save_run(workdir, c, assets, adapter_dir)
    with jax.set_mesh(mesh):
        model, qwen_model, ast_model, params = build(c, assets, adapter_dir, mesh)
        qwen = qwen_model.config
        adapter_cfg, emotion_cfg = model.config.adapter, model.config.emotion
        meta = {"backbone": {"path": assets.backbone_path,
                             "fingerprint": fingerprint(assets.backbone_path)},
                "audio_adapter": {"path": adapter_dir, "fingerprint": fingerprint(adapter_dir)},
                "stage": "stage2", "ablation": c.ablation, "seed": c.seed,
                "batch_size": c.data.batch_size}
        train, heldout = training_records(c, assets)
        benchmark = (os.path.join(assets.world_dir, "benchmark.jsonl") if assets.world_dir else "")
        stage = program.stage_parts(c, model)
        patterns = stage.trainable
        state = None
        if patterns and c.steps > 0:
            trainable, frozen = split_params(params, patterns)
            state = create_state(trainable, stage.tx, jax.random.key_data(jax.random.key(c.seed)))
            step_fn = program.jit_step(stage.step, state, frozen, mesh)
            utterances = utterance_spec(adapter_cfg, ast_model.config)
            it = make_iterator(train, example_fn(c, assets, qwen, utterances), PipelineConfig(
                batch_size=c.data.batch_size // jax.process_count(),
                buckets={"input_ids": tuple(c.data.seq_buckets),
                         "position_ids": tuple(c.data.seq_buckets),
                         **{k: tuple(c.data.target_buckets) for k in stage2.TARGET_FIELDS}},
                pad_values={"input_ids": qwen.pad_token_id}, seed=c.seed,
                shard_index=jax.process_index(), shard_count=jax.process_count(),
                shard_by="batch", worker_count=c.data.num_workers, strict=c.data.strict))
            log.info("stage 2 (%s): training %s on %d conversations", c.ablation,
                     ", ".join(patterns), len(train))
            features = frozen_cache.audio_feature_transform(
                c, workdir, model, params, fingerprint(assets.audio_encoder_path), mesh)
            attach = features[1] if features else (lambda b: b)
            pads = loop.token_pad_values(qwen)
            state = loop.train_loop(
                workdir=workdir, steps=c.steps, state=state, frozen=frozen, iterator=it,
                make_batch=lambda b: loop.global_batch(attach(b), mesh, pads),
                step_fn=step_fn, meta=meta,
                log_every=c.log_every, checkpoint_every=c.checkpoint_every,
                keep=c.keep_checkpoints, batch_size=c.data.batch_size,
                lr_schedule=schedule(c.optim.lr, c.optim.warmup_steps, c.steps))
            params = merge_params(frozen, state.params)
            if features:
                log.info("cache: %s", features[0].summary())
        report = held_out_report(c, assets, model, params, heldout, benchmark, mesh, qwen,
                                 ast_model, adapter_cfg)
        export(c, workdir, params, qwen, emotion_cfg, adapter_cfg, parts)
    report["ablation"] = c.ablation
    report["skipped_steps"] = int(state.skipped) if state is not None else 0
    loop.write_json(os.path.join(workdir, "summary.json"), report)
    print(report["table"])
    return report


def world_words(c, assets, heldout) -> list[tuple[str, dict]] | None:
    """(media, labels) of the held-out clips whose labels name a world emotion word (the
    synthetic world only: its labels have a word rule), at most `c.eval_chat_clips`."""
    if not assets.world_dir or c.data.train_manifest or not c.eval_chat_clips:
        return None
    clips, seen = [], set()
    for r in heldout:
        if r.media not in seen and r.labels and all(p in r.labels for p in PATHWAYS):
            seen.add(r.media)
            clips.append((r.media, r.labels))
    return clips[:c.eval_chat_clips]


def emotion_words(c, assets, model, params, clips) -> dict:
    """Held-out emotion-word accuracy of free replies (evaluation/emotion_words.py)."""
    spec = input_spec(c, assets, model)
    ask = lambda media, pathway, question: [
        a.response for a in replies.ask(model, params, spec, media, pathway, question,
                                        max_new_tokens=c.eval_chat_tokens, batch_size=c.eval_batch)]
    return emotion_word_report(ask, clips, {p: q[0] for p, q in synth.EMOTION_QUESTIONS.items()},
                               synth.emotion_word, synth.EMOTION_WORDS,
                               paraphrase=synth.HELDOUT_EMOTION_QUESTION)


def held_out_report(c, assets, model, params, heldout, benchmark, mesh, qwen, ast_model,
                    adapter_cfg) -> dict:
    out: dict[str, Any] = {}
    if model.config.emotion is not None and model.config.emotion.supervisor and heldout:
        out["emotion"] = emotion_on_clips(c, assets, model, params, heldout)
        log.info("held-out V-A: %s", ", ".join(f"{k} {v:.3f}" for k, v in out["emotion"].items()))
    s1_model, s1_params = stage1_view(params, qwen, ast_model.config, adapter_cfg, ast_model.dtype)
    models = ((("Stage 1", (s1_model, s1_params)),) if c.eval_stage1_baseline else ()) + (
        (f"Stage 2 ({c.ablation})", (model, params)),)
    clips = world_words(c, assets, heldout)
    words_text = ""
    if clips:
        out["emotion_words"] = {name: emotion_words(c, assets, m, p, clips) for name, (m, p) in models}
        for name, rep in out["emotion_words"].items():
            words_text += f"\n\n{name}: " + format_words(rep)
            log.info("%s: %s", name, format_words(rep))
    rows = {}
    if benchmark and os.path.exists(benchmark):
        items = load_benchmark(benchmark, "artemo", split="heldout")
        if c.eval_items:
            items = items[:c.eval_items]
        for name, (m, p) in models:
            preds = eval_benchmark.run_items(m, p, items, input_spec(c, assets, m), "artemo",
                                          mode=c.eval_mode,
                                          batch_size=c.eval_batch,
                                          max_new_tokens=c.eval_max_new_tokens)
            rows[name] = artemo_row_from_predictions(preds)
            out.setdefault("failures", {})[name] = sum(p_.failed for p_ in preds)
            if c.eval_mode == "generate":
                out.setdefault("named_right", {})[name] = {
                    m: float(np.mean([p_.named == p_.answer for p_ in preds if p_.modality == m]))
                    for m in PATHWAYS if any(p_.modality == m for p_ in preds)}
        out["benchmark"] = rows
    table = (f"ArtEmoBenchmark-style held-out items ({c.eval_mode} mode)\n" + format_artemo_table(rows)
             if rows else "")
    for name, shares in out.get("named_right", {}).items():
        table += (f"\n  {name}: the reply names the right option's text (letter aside) in "
                  + ", ".join(f"{m} {100 * v:.1f}%" for m, v in shares.items()))
    table += words_text
    if "emotion" in out:
        e = out["emotion"]
        table += "\n\nValence/arousal on held-out clips (Emotion Supervisor)\n" + "\n".join(
            f"  {p:>2}: CCC valence {e[f'ccc_{p}_valence']:.3f}  arousal {e[f'ccc_{p}_arousal']:.3f}"
            f"  MSE {e[f'mse_{p}']:.4f}" for p in PATHWAYS)
    out["table"] = table
    return out


def export(c, workdir, params, qwen, emotion_cfg, adapter_cfg, parts) -> None:
    if parts["lora"]:
        weights.export_lora(params["backbone"], qwen, os.path.join(workdir, "lora_peft"))
    configs_ = {"audio_adapter": adapter_cfg}
    if emotion_cfg.enhancer:
        configs_["emotion_enhancer"] = {"hidden_size": qwen.text.hidden_size,
                                        "mlp_hidden": emotion_cfg.enhancer_hidden}
    if emotion_cfg.supervisor:
        configs_["emotion_supervisor"] = {"hidden_size": qwen.text.hidden_size,
                                          "mlp_hidden": emotion_cfg.supervisor_hidden}
    # the EmoAdapter and the adapter are sharded by their logical axes: gather them first
    small = multihost_utils.process_allgather({k: params[k] for k in configs_}, tiled=True)
    if jax.process_index() == 0:
        export_emotion_modules(small, configs_, os.path.join(workdir, "emoadapter"))
