"""Runs Stage 1 from a config: assets, weights, teacher responses, training, held-out report.

Order of work: resolve the weights (the embedded default builds its world, tokenizer, tiny AST
and captioning backbone once) -> load the frozen backbone and audio encoder onto the mesh ->
initialise the adapter -> cache the teacher's responses -> measure the held-out set -> train
(resuming from the newest checkpoint) -> measure again -> export the adapter.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaemotion_jax import sharding
from vaemotion_jax.data.manifest import Record, read_manifest
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.pipeline import ExampleFn, PipelineConfig, make_iterator
from vaemotion_jax.data.utterances import UtteranceSpec, utterance_spec
from vaemotion_jax.training.run_file import save_run
from vaemotion_jax.models.adapters import AudioAdapterConfig
from vaemotion_jax.models.vaemotion import VAEmotionConfig, VAEmotionLLM
from vaemotion_jax.processing.tokenizer import cached_tokenizer
from vaemotion_jax.presets import check
from vaemotion_jax.training import frozen_cache, loop, program, stage1, weights
from vaemotion_jax.embedded.assets import Assets, default_assets
from vaemotion_jax.training.checkpoint import fingerprint
from vaemotion_jax.training.state import (create_state, merge_params, schedule,
                                          split_params)

log = logging.getLogger("vaemotion_jax.stage1")


# --- what the run reads -------------------------------------------------------------------------

def resolve_assets(c) -> Assets:
    """Weights and data locations: the config's, or the embedded default's."""
    if c.model == "tiny" and not c.backbone_path:
        a = default_assets(tuple(c.get("prompts", stage1.STAGE1_PROMPTS)), c.data.audio_max_length)
    else:
        if not c.backbone_path or not c.audio_encoder_path:
            raise ValueError(f"model {c.model!r} needs --config.backbone_path and "
                             "--config.audio_encoder_path (local Hugging Face directories)")
        a = Assets("", c.backbone_path, c.backbone_path, c.audio_encoder_path)
    if c.audio_encoder_path:
        a = Assets(a.world_dir, a.tokenizer_dir, a.backbone_path, c.audio_encoder_path)
    world = c.data.world_dir or a.world_dir
    return Assets(world, a.tokenizer_dir, a.backbone_path, a.audio_encoder_path)


def split_records(c, assets: Assets, manifest_name: str) -> tuple[list[Record], list[Record]]:
    """(train, held-out) records: the held-out manifest if given, else the split field."""
    path = c.data.train_manifest or os.path.join(assets.world_dir, manifest_name)
    records, problems = read_manifest(path, strict=c.data.strict)
    for p in problems:
        log.warning("skipped %s", p)
    if c.data.heldout_manifest:
        heldout, more = read_manifest(c.data.heldout_manifest, strict=c.data.strict)
        for p in more:
            log.warning("skipped %s", p)
        return records, heldout
    return ([r for r in records if r.split != "heldout"], [r for r in records if r.split == "heldout"])


def video_grid(c) -> tuple[int, int, int]:
    """The one video grid every example has (fixed frame count and frame size)."""
    return MediaSpec.from_config(c.data).grid


# AudioAdapterConfig fields of kind="qformer" that come from `c.adapter`.
QFORMER_FIELDS = ("queries", "qformer_dim", "qformer_layers", "qformer_heads", "qformer_mlp",
                  "max_utterances", "global_qformer", "utterance_qformer", "windows",
                  "window_seconds", "no_utterances")


def adapter_config(c, qwen) -> AudioAdapterConfig:
    """The audio adapter of `c.adapter`: L_v tokens of the run's video grid, d_v the LLM width;
    the qformer fields only for kind="qformer" (other kinds keep the defaults, so their
    adapter_config.json does not depend on them)."""
    a = c.adapter
    qformer = {k: a[k] for k in QFORMER_FIELDS} if a.kind == "qformer" else {}
    return AudioAdapterConfig(
        kind=a.kind, num_tokens=int(np.prod(video_grid(c))) // qwen.vision.spatial_merge_size ** 2,
        out_dim=qwen.text.hidden_size, seq_hidden=a.seq_hidden, channel_hidden=a.channel_hidden,
        activation=a.activation, **qformer)


def example_fn(c, assets: Assets, qwen, utterances: UtteranceSpec | None = None) -> ExampleFn:
    return ExampleFn(
        media=MediaSpec.from_config(c.data), utterances=utterances,
        clip_keys=c.cache.audio_features or c.cache.teacher_logits,
        format_fn=functools.partial(stage1.teacher_prompt_example, tokenizer_dir=assets.tokenizer_dir,
                                    qwen=qwen, prompts=tuple(c.prompts), seed=c.seed))


def pipeline(c, qwen, batch_size: int, train: bool) -> PipelineConfig:
    return PipelineConfig(
        batch_size=batch_size, buckets={"prompt_ids": tuple(c.data.seq_buckets)},
        pad_values={"prompt_ids": qwen.pad_token_id}, seed=c.seed, shuffle=train,
        num_epochs=None if train else 1, shard_index=jax.process_index() if train else 0,
        shard_count=jax.process_count() if train else 1,
        shard_by="batch" if train else "records", drop_remainder=train,
        worker_count=c.data.num_workers if train else 0, strict=c.data.strict)


# --- the run ------------------------------------------------------------------------------------

def build(c, assets: Assets, mesh):
    """Loads the frozen weights onto the mesh and initialises the adapter."""
    qwen_model, qwen_params, ast_model, ast_params = weights.load_frozen(
        c, assets.backbone_path, assets.audio_encoder_path, mesh)
    qwen = qwen_model.config
    adapter_cfg = adapter_config(c, qwen)
    adapter_params = weights.init_adapter(adapter_cfg, ast_model.config, mesh,
                                          jax.random.key(c.seed))
    model = VAEmotionLLM(VAEmotionConfig(qwen, ast_model.config, adapter_cfg, ast_model.dtype))
    params = {"backbone": qwen_params, "audio_encoder": ast_params, "audio_adapter": adapter_params}
    return model, qwen_model, params, adapter_cfg


def epochs_needed(c, num_train: int) -> int:
    """Passes over the training clips a run of `c.steps` steps draws from (at least one)."""
    return max(1, -(-c.steps * c.data.batch_size // max(num_train, 1)))


def fill_teacher_cache(cache: stage1.ResponseCache, records: Sequence[Record], epochs: int, c,
                       examples: ExampleFn, qwen, qwen_model, backbone_params) -> None:
    """Generates (once) the teacher's response to every (clip, prompt) pair that `epochs`
    passes over `records` draw, and logs how many responses reached the generation cap."""
    seen, missing = set(), []
    for epoch in range(epochs):
        for r in records:
            prompt = stage1.prompt_for(r.id, c.prompts, c.seed, epoch)
            if (r.id, prompt) not in seen and cache.get(r.id, prompt) is None:
                seen.add((r.id, prompt))
                missing.append(dataclasses.replace(r, epoch=epoch))
    if missing:
        log.info("teacher: generating %d responses (%d clips x their prompts over %d epochs; "
                 "cached in %s)", len(missing), len(records), epochs, cache.path)
        it = make_iterator(missing, examples, pipeline(c, qwen, c.teacher_batch, False))
        done, t0 = 0, time.time()
        for batch in it:
            responses = stage1.teacher_responses(qwen_model, backbone_params, batch, qwen,
                                                 c.max_response_tokens)
            cache.add({cache.key(i, stage1.prompt_for(i, c.prompts, c.seed, int(e))): r
                       for i, e, r, ok in zip(batch["id"], batch["epoch"], responses,
                                              batch["valid"]) if ok})
            done += int(batch["valid"].sum())
            log.info("teacher: %d/%d responses (%.1f/s)", done, len(missing),
                     done / (time.time() - t0))
        log.info("%s", it.summary())
    cut = sum(stage1.is_truncated(r, qwen.eos_token_id) for r in cache.entries.values())
    if cut:
        log.warning("teacher: %d of %d cached responses stopped at max_response_tokens=%d before "
                    "their end token (truncated; raise --config.max_response_tokens)", cut,
                    len(cache.entries), c.max_response_tokens)


def responses_for(batch: dict, cache: stage1.ResponseCache, c) -> list[list[int]]:
    """The cached teacher responses of a batch's (clip, epoch) prompts."""
    out = []
    for clip, epoch, ok in zip(batch["id"], batch["epoch"], batch["valid"]):
        prompt = stage1.prompt_for(str(clip), c.prompts, c.seed, int(epoch))
        r = cache.get(str(clip), prompt) if ok else []
        if r is None:
            raise KeyError(f"no cached teacher response for clip {clip!r} and prompt {prompt!r}")
        out.append(r)
    return out


def teacher_logit_transform(c, workdir: str, model, params, backbone_fingerprint: str, mesh):
    """(cache, batch -> batch with the cached teacher) for `cache.teacher_logits`, else None."""
    if not c.cache.teacher_logits:
        return None
    if c.align != "logits":
        raise ValueError(f"cache.teacher_logits caches the teacher's logits; align={c.align!r} "
                         "reads z_v instead: turn the cache off for it")
    k = c.cache.teacher_topk
    qwen = model.config.qwen
    cache = frozen_cache.teacher_logit_cache(frozen_cache.cache_root(c, workdir),
                                             backbone_fingerprint, qwen.dtype, c.param_dtype,
                                             MediaSpec.from_config(c.data), k)
    log.info("cache: teacher logits at the response positions (%s) in %s (read when present, "
             "else built)", f"top {k}" if k else "exact", cache.directory)

    def targets(p, batch):
        logits, _ = stage1.teacher_logits(model, p, batch)
        if not k:
            return {"logits": logits}
        values, index = jax.lax.top_k(logits, k)
        return {"logits": values, "index": index.astype(jnp.int32)}

    run = jax.jit(targets)
    width = k or qwen.text.vocab_size
    return cache, lambda batch: frozen_cache.attach_teacher_logits(
        batch, cache, lambda g: run(params, g), mesh, width, k)


AUDIO_FIELDS = ("fbank", "fbank_mask", "utterance_mask")  # what `stage1.audio_tokens` reads


class HeldOut:
    """The held-out clips, prepared once: KL / top-1 of eq. (1)'s distributions, and how often
    the audio-only response names the attributes the video response names."""

    def __init__(self, c, batches: list[dict], model, qwen_model, mesh, vocabulary, tokenizer):
        self.c, self.batches, self.model, self.qwen_model = c, batches, model, qwen_model
        self.mesh, self.vocabulary, self.tok = mesh, vocabulary, tokenizer
        self.pads = loop.token_pad_values(qwen_model.config)
        self.step = jax.jit(functools.partial(stage1.eval_step, model=model, tau=c.tau))
        self.audio = jax.jit(functools.partial(stage1.audio_tokens, model))

    def distributions(self, params) -> dict[str, float]:
        sums, n = {}, 0.0
        for batch in self.batches:
            out = self.step(params, loop.global_batch(batch, self.mesh, self.pads))
            valid = batch["valid"].astype(np.float64)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(np.sum(sharding.to_host(v) * valid))
            n += valid.sum()
        return {k: v / max(n, 1.0) for k, v in sums.items()}

    def responses(self, params) -> tuple[list[str], list[str]]:
        """(teacher texts, student texts) for the held-out clips."""
        teacher, student = [], []
        for batch in self.batches:
            audio = {k: jnp.asarray(batch[k]) for k in AUDIO_FIELDS if k in batch}
            z_a = sharding.to_host(self.audio(params, audio))
            out = stage1.teacher_responses(self.qwen_model, params["backbone"], batch,
                                           self.qwen_model.config, self.c.max_response_tokens,
                                           visual_tokens=np.asarray(z_a))
            for b in np.flatnonzero(batch["valid"]):
                n = int(batch["prompt_ids_length"][b])
                t_ids = batch["input_ids"][b][n:][batch["attention_mask"][b][n:]]
                teacher.append(self.tok.decode(t_ids, skip_special_tokens=True))
                student.append(self.tok.decode(out[b], skip_special_tokens=True))
        return teacher, student

    def report(self, params) -> dict[str, float]:
        values = self.distributions(params)
        if self.vocabulary:
            t, s = self.responses(params)
            values["attribute_agreement"] = stage1.attribute_agreement(t, s, self.vocabulary)
            values["example_teacher"], values["example_student"] = t[0], s[0]
            for a, b in list(zip(t, s))[:4]:
                log.info("  video: %r | audio: %r", a, b)
        return values


def world_vocabulary(world_dir: str) -> dict[str, list[str]]:
    path = os.path.join(world_dir, "world.json")
    if not world_dir or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)["factors"]


def run(c) -> dict[str, Any]:
    """Stage 1 end to end; returns the held-out report (also written to workdir/summary.json)."""
    c = check(c)
    mesh, workdir = loop.start_run(c)
    assets = resolve_assets(c)
    save_run(workdir, c, assets, os.path.join(workdir, "audio_adapter"))
    log.info("backbone %s | audio encoder %s | data %s", assets.backbone_path,
             assets.audio_encoder_path, c.data.train_manifest or assets.world_dir)
    with jax.set_mesh(mesh):
        model, qwen_model, params, adapter_cfg = build(c, assets, mesh)
        qwen = qwen_model.config
        utterances = utterance_spec(adapter_cfg, model.config.ast)
        examples = example_fn(c, assets, qwen, utterances)
        backbone_fp = fingerprint(assets.backbone_path)
        meta = {"backbone": {"path": assets.backbone_path, "fingerprint": backbone_fp},
                "audio_encoder": {"path": assets.audio_encoder_path,
                                  "fingerprint": fingerprint(assets.audio_encoder_path)},
                "adapter": adapter_cfg.__dict__, "stage": "stage1", "align": c.align,
                "seed": c.seed, "batch_size": c.data.batch_size}
        train, heldout = split_records(c, assets, "stage1.jsonl")
        heldout = heldout[:c.eval_clips]
        cache = stage1.ResponseCache(os.path.join(workdir, "teacher_cache"), backbone_fp,
                                     c.max_response_tokens,
                                     utterances.timestamps_key if utterances else "")
        fill_teacher_cache(cache, heldout, 1, c, examples, qwen, qwen_model, params["backbone"])
        if c.teacher_responses == "cache":
            fill_teacher_cache(cache, train, epochs_needed(c, len(train)), c, examples, qwen,
                               qwen_model, params["backbone"])

        def complete(batch):
            if c.teacher_responses == "cache":
                responses = responses_for(batch, cache, c)
            else:
                responses = stage1.teacher_responses(qwen_model, params["backbone"], batch, qwen,
                                                     c.max_response_tokens)
            return stage1.attach_responses(batch, responses, qwen, c.data.seq_buckets,
                                           c.data.target_buckets, qwen.pad_token_id)

        caches = [t for t in (
            frozen_cache.audio_feature_transform(c, workdir, model, params,
                                                 meta["audio_encoder"]["fingerprint"], mesh),
            teacher_logit_transform(c, workdir, model, params, backbone_fp, mesh)) if t]

        def train_batch(batch):
            batch = complete(batch)
            for _, attach in caches:
                batch = attach(batch)
            return loop.global_batch(batch, mesh, loop.token_pad_values(qwen))

        held = None
        if heldout:
            eval_batches = [complete(b) for b in make_iterator(
                heldout, examples, pipeline(c, qwen, c.teacher_batch, False))]
            held = HeldOut(c, eval_batches, model, qwen_model, mesh,
                           world_vocabulary(assets.world_dir), cached_tokenizer(assets.tokenizer_dir))

        stage = program.stage_parts(c, model)
        trainable, frozen = split_params(params, stage.trainable)
        state = create_state(trainable, stage.tx, jax.random.key_data(jax.random.key(c.seed)))
        step_fn = program.jit_step(stage.step, state, frozen, mesh)
        start = held.report(params) if held else {}
        log.info("held-out before training: %s", _fmt(start))
        it = make_iterator(train, examples,
                           pipeline(c, qwen, c.data.batch_size // jax.process_count(), True))

        def eval_fn(state, step):
            values = held.distributions(merge_params(frozen, state.params))
            log.info("held-out at step %d: %s", step, _fmt(values))
            return values

        state = loop.train_loop(
            workdir=workdir, steps=c.steps, state=state, frozen=frozen, iterator=it,
            make_batch=train_batch, step_fn=step_fn,
            meta=meta, log_every=c.log_every, checkpoint_every=c.checkpoint_every,
            keep=c.keep_checkpoints, eval_every=c.eval_every, eval_fn=eval_fn if held else None,
            batch_size=c.data.batch_size,
            lr_schedule=schedule(c.optim.lr, c.optim.warmup_steps, c.steps))
        for cache, _ in caches:
            log.info("cache: %s", cache.summary())
        end = held.report(merge_params(frozen, state.params)) if held else {}
        log.info("held-out after training: %s", _fmt(end))
        weights.export_adapter(state.params["audio_adapter"], adapter_cfg,
                       os.path.join(workdir, "audio_adapter"))
    summary = {"start": start, "end": end, "steps": c.steps, "skipped_steps": int(state.skipped)}
    loop.write_json(os.path.join(workdir, "summary.json"), summary)
    print(report_table(summary))
    return summary


def _fmt(values: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v!r}" for k, v in values.items())


def report_table(summary: dict) -> str:
    s, e = summary["start"], summary["end"]
    lines = ["", "Stage 1 (VG-Align) on held-out clips        before     after"]
    for k, name in (("kl", "KL(teacher || student) per token"), ("top1", "top-1 agreement"),
                    ("attribute_agreement", "audio response names the video's attributes")):
        if k in s and k in e:
            lines.append(f"  {name:<42} {s[k]:8.4f}  {e[k]:8.4f}")
    if "example_teacher" in e:
        lines.append(f"  video response: {e['example_teacher']!r}")
        lines.append(f"  audio response: {e['example_student']!r}")
    return "\n".join(lines)
