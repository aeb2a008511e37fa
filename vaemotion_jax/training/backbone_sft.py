"""The embedded default's backbone: a tiny Qwen2.5-VL taught to caption the synthetic world.

A random tiny VLM describes nothing, so VG-Align would have nothing to distil. Before Stage 1
the default therefore fine-tunes the whole tiny backbone (plain supervised LM loss) to answer
the Stage 1 prompts about a training clip with its caption ("a fast red circle on a bright
background"). The result is exported as an ordinary Hugging Face directory (config.json,
safetensors, tokenizer) in the cache, made once and reused; Stage 1 loads it like any real
checkpoint. Held-out clips are never shown.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from vaemotion_jax.checkpoints.qwen2_5_vl import export_qwen2_5_vl
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.manifest import read_manifest
from vaemotion_jax.data.pipeline import ExampleFn, Skipped
from vaemotion_jax.evaluation.prompts import as_instruction
from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL, causal_mask, init_params
from vaemotion_jax.processing.tokenizer import cached_tokenizer
from vaemotion_jax.training import losses
from vaemotion_jax.training.examples import chat_arrays, layout_arrays

log = logging.getLogger("vaemotion_jax.backbone_sft")

RECIPE = dict(steps=500, batch_size=16, lr=2e-3, warmup=30, seed=0, max_targets=16,
              num_frames=4, resized_hw=(112, 112), min_pixels=28 * 28, max_pixels=112 * 112,
              version=2)


def caption_example(record, features, *, tokenizer_dir, qwen, prompts, max_targets, questions):
    """The clip's chats, fixed shapes: (prompt -> caption) for every prompt of the pool, and
    its video multiple-choice questions answered with the letter (`questions`: clip file ->
    conversations)."""
    tok = cached_tokenizer(tokenizer_dir)
    grid = features["video_grid_thw"]
    rows = []
    chats = [[{"role": "user", "content": p}, {"role": "assistant", "content": record.caption}]
             for p in prompts] + list(questions.get(record.media, ()))
    for turns in chats:
        rows.append(chat_arrays(tok, qwen, turns, grid, features["second_per_grid_ts"], max_targets))
    return {"chats": rows, "pixel_values_videos": features["pixel_values_videos"],
            **layout_arrays(qwen, grid)}


def _load_examples(world_dir: str, tokenizer_dir: str, qwen, prompts, r) -> list[dict]:
    records, _ = read_manifest(os.path.join(world_dir, "captions.jsonl"))
    records = [x for x in records if x.split == "train"]
    fn = ExampleFn(media=MediaSpec(num_frames=r["num_frames"], resized_hw=r["resized_hw"],
                                   min_pixels=r["min_pixels"], max_pixels=r["max_pixels"]),
                   audio=False, format_fn=functools.partial(caption_example, tokenizer_dir=tokenizer_dir,
                                               qwen=qwen, prompts=tuple(prompts),
                                               max_targets=r["max_targets"],
                                               questions=video_questions(world_dir)))
    out, skipped = [], 0
    for i, rec in enumerate(records):
        ex = fn(rec)
        if isinstance(ex, Skipped):
            skipped += 1
            log.warning("skipped %s", ex.message)
            continue
        out.append(ex)
        if (i + 1) % 64 == 0:
            log.info("decoded %d/%d caption clips", i + 1, len(records))
    if not out:
        raise RuntimeError(f"{world_dir}/captions.jsonl: no usable training clips ({skipped} skipped)")
    return out


def video_questions(world_dir: str) -> dict[str, list]:
    """Clip file -> the training clips' video-only multiple-choice items as conversations: the
    instruction following a pretrained VLM brings (it sees only video, so only "v" items)."""
    path = os.path.join(world_dir, "mc_train.jsonl")
    if not os.path.exists(path):
        return {}
    items, _ = read_manifest(path)
    out: dict[str, list] = {}
    for item in items:
        if item.modality == "v" and item.split == "train":
            out.setdefault(item.media, []).append(as_instruction(item).conversations)
    return out


def _batch(examples: list[dict], rng: np.random.Generator, size: int, pad_id: int, s: int) -> dict:
    """A random batch, every sequence right-padded to the same static length `s`."""
    picks = rng.integers(0, len(examples), size)
    chats = [examples[i]["chats"][rng.integers(len(examples[i]["chats"]))] for i in picks]
    ids = np.full((size, s), pad_id, np.int32)
    pos = np.zeros((size, s, 3), np.int32)
    mask = np.zeros((size, s), bool)
    for b, c in enumerate(chats):
        n = len(c["input_ids"])
        ids[b, :n], pos[b, :n], mask[b, :n] = c["input_ids"], c["position_ids"], True
    stack = lambda k, src: np.stack([src[i][k] for i in range(size)])
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask,
            **{k: stack(k, chats) for k in ("target_index", "target_ids", "target_mask")},
            **{k: np.stack([examples[i][k] for i in picks])
               for k in ("pixel_values_videos", "patch_index", "patch_hw", "token_index")}}


def lm_loss(params, batch, model):
    def run(m):
        layout = {k: batch[k] for k in ("patch_index", "patch_hw", "token_index")}
        x = m.embed(batch["input_ids"], m.encode_video(batch["pixel_values_videos"], layout))
        h, _ = m.decode(x, jnp.moveaxis(batch["position_ids"], -1, 0),
                        causal_mask(batch["attention_mask"]))
        return m.logits(jnp.take_along_axis(h, batch["target_index"][..., None], 1))
    logits = model.apply({"params": params}, method=run)
    return jnp.mean(losses.token_cross_entropy(logits, batch["target_ids"], batch["target_mask"]))


def recipe_key(world_dir: str, tokenizer_dir: str, prompts: Sequence[str]) -> str:
    with open(os.path.join(world_dir, "world.json"), "rb") as f:
        world = f.read()
    with open(os.path.join(tokenizer_dir, "tokenizer.json"), "rb") as f:
        tok = f.read()
    blob = json.dumps({"recipe": RECIPE, "prompts": list(prompts)}, sort_keys=True).encode()
    return hashlib.sha256(world + tok + blob).hexdigest()[:12]


def train_captioner(out_dir: str, world_dir: str, tokenizer_dir: str, prompts: Sequence[str],
                    recipe: dict | None = None) -> str:
    """Fine-tunes a random tiny Qwen2.5-VL to caption the world; writes a HF dir to out_dir."""
    r = {**RECIPE, **(recipe or {})}
    qwen = qwen_config.tiny()
    examples = _load_examples(world_dir, tokenizer_dir, qwen, prompts, r)
    model = Qwen2_5_VL(qwen)
    params = nn.meta.unbox(init_params(qwen, jax.random.key(r["seed"])))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
        optax.warmup_cosine_decay_schedule(0.0, r["lr"], r["warmup"], r["steps"], r["lr"] * 0.05)))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch):
        loss, grads = jax.value_and_grad(lm_loss)(params, batch, model)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    rng = np.random.default_rng(r["seed"])
    length = max(len(c["input_ids"]) for ex in examples for c in ex["chats"])
    t0 = time.time()
    for i in range(r["steps"]):
        batch = _batch(examples, rng, r["batch_size"], qwen.pad_token_id, length)
        params, opt, loss = step(params, opt, batch)
        if (i + 1) % 50 == 0 or i == 0:
            log.info("captioner step %d/%d loss %.4f (%.0f s)", i + 1, r["steps"], float(loss),
                     time.time() - t0)
    tmp = f"{out_dir}.tmp{os.getpid()}"
    export_qwen2_5_vl(params, qwen, tmp)
    for name in os.listdir(tokenizer_dir):
        shutil.copy(os.path.join(tokenizer_dir, name), tmp)
    with open(os.path.join(tmp, "captioner.json"), "w") as f:
        json.dump({"recipe": r, "prompts": list(prompts), "final_loss": float(loss),
                   "world": world_dir}, f, indent=2)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    try:
        os.rename(tmp, out_dir)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
