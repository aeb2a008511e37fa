"""Each stage's train step, defined once: what the trainers run and what `vaemotion_jax.plan`
compiles for its memory and FLOPs report.

    parts = stage_parts(c, model)          # model, trainable paths, optimizer, step function
    step = jit_step(parts.step, state, frozen, mesh)

`jit_step` takes the shardings from its example arguments, concrete arrays in a run and
ShapeDtypeStructs carrying shardings in the planner, so both compile the same program: state
and frozen weights pinned to their shardings (state donated), the batch as sharded by the
pipeline, the new state back in its own shardings and the metrics replicated.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import jax
import optax
from jax.sharding import NamedSharding, PartitionSpec

from vaemotion_jax.models.vaemotion import EmotionConfig, VAEmotionLLM
from vaemotion_jax.training import stage1, stage2
from vaemotion_jax.training.state import make_optimizer


@dataclass(frozen=True)
class StageParts:
    model: VAEmotionLLM
    trainable: tuple[str, ...]     # regexes over param paths ("audio_adapter/.*")
    tx: optax.GradientTransformation
    step: Callable                 # step(state, frozen, batch) -> (state, metrics)


def optimizer(c) -> optax.GradientTransformation:
    """AdamW with warmup and cosine decay over `c.steps`, global-norm clipping (c.optim)."""
    o = c.optim
    return make_optimizer(o.lr, o.warmup_steps, c.steps, o.weight_decay, o.grad_clip, o.b1, o.b2)


def ablation(c) -> dict[str, bool]:
    """The Stage 2 component set of `c.ablation` (Table 3 rows, training/stage2.py)."""
    if c.ablation not in stage2.ABLATIONS:
        raise ValueError(f"unknown ablation {c.ablation!r}; known: {sorted(stage2.ABLATIONS)}")
    return stage2.ABLATIONS[c.ablation]


def lora_kwargs(c) -> dict:
    """Backbone runtime options that add LoRA (rank, alpha, dropout), or none."""
    if c.stage != "stage2" or not ablation(c)["lora"]:
        return {}
    return dict(lora_rank=c.lora.rank, lora_alpha=c.lora.alpha, lora_dropout=c.lora.dropout)


def emotion_config(c) -> EmotionConfig:
    parts = ablation(c)
    return EmotionConfig(parts["enhancer"], parts["supervisor"], c.emotion.enhancer_hidden,
                         c.emotion.supervisor_hidden)


def stage_parts(c, model: VAEmotionLLM) -> StageParts:
    """The config's stage: which params train and the step function over them."""
    tx = optimizer(c)
    if c.stage == "stage1":
        return StageParts(model, tuple(c.trainable), tx, functools.partial(
            stage1.train_step, model=model, tx=tx, tau=c.tau, align=c.align))
    if c.stage == "stage2":
        lora = bool(lora_kwargs(c))
        return StageParts(model, stage2.trainable_patterns(model.config.emotion, lora), tx,
                          functools.partial(stage2.train_step, model=model, tx=tx, lam=c.lam,
                                            dropout=lora and c.lora.dropout > 0))
    raise ValueError(f"unknown stage {c.stage!r} (expected stage1 or stage2)")


def _on_mesh(x, mesh) -> NamedSharding:
    s = getattr(x, "sharding", None)
    return s if isinstance(s, NamedSharding) else NamedSharding(mesh, PartitionSpec())


def jit_step(step: Callable, state, frozen, mesh):
    """`step` jitted with the shardings of the example `state` and `frozen` trees (arrays or
    ShapeDtypeStructs; leaves without a mesh sharding, e.g. a fresh step counter, replicated)."""
    state_sh = jax.tree.map(lambda x: _on_mesh(x, mesh), state)
    frozen_sh = jax.tree.map(lambda x: _on_mesh(x, mesh), frozen)
    return jax.jit(step, in_shardings=(state_sh, frozen_sh, None),
                   out_shardings=(state_sh, NamedSharding(mesh, PartitionSpec())),
                   donate_argnums=(0,))
