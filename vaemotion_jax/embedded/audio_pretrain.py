"""The embedded default's audio encoder: a tiny AST pretrained to recognise the world's sounds.

The paper's AST comes pretrained on AudioSet, whose labels name sound sources and instruments.
The tiny stand-in gets the same kind of knowledge from the synthetic world: it is trained once to
classify each training clip's timbre, register, tempo and mode from its fbank (held-out clips
never shown), then frozen like the real encoder. It knows sounds, not pictures: what a sound
means visually is exactly what Stage 1 has to learn from the teacher.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.manifest import read_manifest
from vaemotion_jax.data.pipeline import ExampleFn, Skipped

log = logging.getLogger("vaemotion_jax.audio_pretrain")

RECIPE = dict(steps=300, batch_size=32, lr=1e-3, seed=0, version=1)


class SoundClassifier(nn.Module):
    """AST + one linear head per sound factor on the mean of all output tokens."""
    ast: nn.Module
    classes: tuple[int, ...]

    @nn.compact
    def __call__(self, fbank):
        h = self.ast(fbank).last_hidden_state.mean(1)
        return [nn.Dense(n, name=f"head_{i}")(h) for i, n in enumerate(self.classes)]


def _sound_labels(world_dir: str) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """clip id -> class index per sound factor (train split), and the factor vocabularies."""
    with open(os.path.join(world_dir, "world.json")) as f:
        factors = json.load(f)["factors"]
    labels = {}
    with open(os.path.join(world_dir, "stage1.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            if d.get("split") == "train":
                sound = d["meta"]["sound"]
                labels[d["id"]] = [factors[k].index(sound[k]) for k in factors]
    return labels, factors


def recipe_key(world_dir: str, ast_config) -> str:
    with open(os.path.join(world_dir, "world.json"), "rb") as f:
        world = f.read()
    blob = json.dumps({"recipe": RECIPE, "ast": ast_config.to_hf()}, sort_keys=True).encode()
    return hashlib.sha256(world + blob).hexdigest()[:12]


def pretrain_ast(out_dir: str, world_dir: str, ast_config) -> str:
    """Trains a tiny AST on the world's sound factors; writes a HF ASTModel dir to out_dir."""
    from vaemotion_jax.checkpoints.ast import export_ast
    from vaemotion_jax.models.ast import ASTModel

    r = RECIPE
    labels, factors = _sound_labels(world_dir)
    records, _ = read_manifest(os.path.join(world_dir, "stage1.jsonl"))
    fn = ExampleFn(media=MediaSpec(num_frames=1, audio_frames=ast_config.max_length), video=False)
    feats, ys = [], []
    for rec in records:
        if rec.id not in labels:
            continue
        ex = fn(rec)
        if isinstance(ex, Skipped):
            log.warning("skipped %s", ex.message)
            continue
        feats.append(ex["fbank"][0])  # the world's 3 s clips fit one AST window
        ys.append(labels[rec.id])
    if not feats:
        raise RuntimeError(f"{world_dir}/stage1.jsonl: no training clips with sound labels")
    feats, ys = np.stack(feats), np.asarray(ys, np.int32)
    model = SoundClassifier(ASTModel(ast_config), tuple(len(v) for v in factors.values()))
    params = model.init(jax.random.key(r["seed"]), feats[:1])["params"]
    tx = optax.adamw(optax.cosine_decay_schedule(r["lr"], r["steps"]), weight_decay=0.01)
    opt = tx.init(params)

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return sum(optax.softmax_cross_entropy_with_integer_labels(l, y[:, i]).mean()
                   for i, l in enumerate(logits)), logits

    @jax.jit
    def step(p, o, x, y):
        (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
        u, o = tx.update(g, o, p)
        acc = jnp.mean(jnp.stack([jnp.argmax(l, -1) == y[:, i] for i, l in enumerate(logits)]))
        return optax.apply_updates(p, u), o, loss, acc

    rng = np.random.default_rng(r["seed"])
    t0 = time.time()
    for i in range(r["steps"]):
        pick = rng.integers(0, len(feats), r["batch_size"])
        params, opt, loss, acc = step(params, opt, feats[pick], ys[pick])
        if (i + 1) % 100 == 0:
            log.info("audio encoder pretraining step %d/%d loss %.3f accuracy %.3f (%.0f s)",
                     i + 1, r["steps"], float(loss), float(acc), time.time() - t0)
    tmp = f"{out_dir}.tmp{os.getpid()}"
    export_ast(nn.meta.unbox(params["ast"]), ast_config, tmp)
    with open(os.path.join(tmp, "pretraining.json"), "w") as f:
        json.dump({"recipe": r, "factors": factors, "clips": len(feats),
                   "final_loss": float(loss), "final_accuracy": float(acc)}, f, indent=2)
    return tmp
