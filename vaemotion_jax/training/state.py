"""Train state of the trainable parameters only, the optimizer, and the non-finite-step guard.

Frozen weights (backbone, audio encoder, and in stage 2 the audio adapter) live outside the
state: they get no optimizer state and are never written into a checkpoint.
"""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from vaemotion_jax.checkpoints.mapping import flatten, unflatten


@struct.dataclass
class TrainState:
    step: jnp.ndarray            # int32 scalar: optimizer steps taken (skipped ones included)
    params: Any                  # trainable params only
    opt_state: Any
    rng: jax.Array               # base key; each step folds in its step number
    skipped: jnp.ndarray         # int32 scalar: steps whose loss or gradients were not finite


def schedule(lr: float, warmup_steps: int, total_steps: int, end_factor: float = 0.0):
    """Linear warmup from 0 to lr, then cosine decay to lr * end_factor at total_steps."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(total_steps, 1),
                                              end_value=lr * end_factor)


def make_optimizer(lr: float, warmup_steps: int, total_steps: int, weight_decay: float = 0.0,
                   grad_clip: float = 1.0, b1: float = 0.9, b2: float = 0.999,
                   end_factor: float = 0.0) -> optax.GradientTransformation:
    """AdamW with warmup + cosine decay and global-norm clipping."""
    return optax.chain(optax.clip_by_global_norm(grad_clip),
                       optax.adamw(schedule(lr, warmup_steps, total_steps, end_factor),
                                   b1=b1, b2=b2, weight_decay=weight_decay))


def create_state(params: Any, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    return TrainState(jnp.int32(0), params, tx.init(params), rng, jnp.int32(0))


def apply_gradients(state: TrainState, grads: Any, loss: jnp.ndarray,
                    tx: optax.GradientTransformation) -> tuple[TrainState, jnp.ndarray]:
    """One optimizer step, skipped (state kept, counter raised) when loss or grads are not
    finite. Returns (new state, finite flag)."""
    finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return TrainState(state.step + 1, keep(params, state.params), keep(opt_state, state.opt_state),
                      state.rng, state.skipped + (~finite).astype(jnp.int32)), finite


def split_params(params: dict, trainable: tuple[str, ...]) -> tuple[dict, dict]:
    """Params -> (trainable, frozen) by regexes over "/"-joined paths (e.g. "audio_adapter/.*",
    ".*/lora_.*"); the two trees have disjoint leaves and `merge_params` joins them."""
    flat = flatten(params)
    chosen = {k for k in flat if any(re.fullmatch(p, k) for p in trainable)}
    if not chosen:
        raise ValueError(f"no parameter matches the trainable patterns {list(trainable)}")
    return (unflatten({k: v for k, v in flat.items() if k in chosen}),
            unflatten({k: v for k, v in flat.items() if k not in chosen}))


def merge_params(*trees: dict) -> dict:
    merged: dict = {}
    for tree in trees:
        merged.update(flatten(tree))
    return unflatten(merged)
