"""Qwen2.5-VL for conditional generation: vision tower + Qwen2 decoder + lm_head.

`model.apply({"params": p}, input_ids=..., attention_mask=..., pixel_values_videos=...,
video_grid_thw=..., second_per_grid_ts=...)` works like transformers' forward when called
eagerly: position ids and the vision layout are then computed on the host from the concrete
inputs. Inside `jax.jit`, compute them first with `prepare_inputs` and pass `position_ids` and
`vision_layout`, so the compiled function only sees static shapes.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct

from vaemotion_jax.models.layers import Dense
from vaemotion_jax.models.lora import split_lora
from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig
from vaemotion_jax.models.qwen2_5_vl.rope import get_rope_index, mrope_cos_sin, videos_per_example
from vaemotion_jax.models.qwen2_5_vl.text import Decoder
from vaemotion_jax.models.qwen2_5_vl.vision import VisionTower
from vaemotion_jax.models.qwen2_5_vl.vision_layout import build_layout
from vaemotion_jax.sharding import param_shardings


@struct.dataclass
class Output:
    logits: jnp.ndarray | None          # (B, S, vocab)
    hidden_states: jnp.ndarray          # (B, S, D) after the final norm
    cache: Any = None                   # (k, v) each (L, B, T, KV, hd) when a cache was given


def prepare_inputs(cfg: Qwen2_5_VLConfig, input_ids, attention_mask=None, video_grid_thw=None,
                   second_per_grid_ts=None, vision_bucket: tuple[int, int, int] | None = None
                   ) -> dict[str, np.ndarray]:
    """Host-side index work for one batch: M-RoPE position ids, rope deltas, vision layout.

    vision_bucket: (groups, windows_per_group, tokens) to pad the layout to a static shape.
    """
    input_ids = np.asarray(input_ids)
    positions, deltas = get_rope_index(input_ids, cfg, video_grid_thw, second_per_grid_ts,
                                       attention_mask)
    out = {"position_ids": positions, "rope_deltas": deltas}
    if video_grid_thw is not None and len(video_grid_thw):
        grids = videos_per_example(input_ids, cfg, video_grid_thw, attention_mask)
        g, w, n = vision_bucket or (None, None, None)
        out["vision_layout"] = build_layout(grids, cfg.vision, g, w, n).arrays()
    return out


def causal_mask(attention_mask: jnp.ndarray) -> jnp.ndarray:
    """(B, S) key mask -> (B, S, S) causal attention mask."""
    s = attention_mask.shape[1]
    return jnp.tril(jnp.ones((s, s), bool))[None] & attention_mask[:, None, :].astype(bool)


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs if x is not None)


class Qwen2_5_VL(nn.Module):
    config: Qwen2_5_VLConfig

    def setup(self):
        c = self.config
        dt = jnp.dtype(c.dtype)
        self.visual = VisionTower(c.vision, dt, c.scan_layers, c.remat)
        self.embed_tokens = nn.Embed(
            c.text.vocab_size, c.text.hidden_size, dtype=dt,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                        ("vocab", "embed")))
        self.llm = Decoder(c.text, dt, c.scan_layers, c.remat, c.lora)
        self.lm_head = Dense(c.text.vocab_size, ("embed", "vocab"), use_bias=False, dtype=dt)

    # -- pieces (each usable on its own through `model.apply(..., method=...)`) ---------------

    def encode_video(self, pixel_values_videos, vision_layout: dict) -> jnp.ndarray:
        """Flat patch rows + layout -> visual tokens (B, N, D) in placeholder order."""
        return self.visual(pixel_values_videos, vision_layout["patch_index"],
                           vision_layout["patch_hw"], vision_layout["token_index"])

    def embed(self, input_ids, visual_tokens=None) -> jnp.ndarray:
        """Token embeddings with the n-th `<|video_pad|>` of each row replaced by
        visual_tokens[row, n] (video or audio tokens standing in for them)."""
        x = self.embed_tokens(input_ids)
        if visual_tokens is None:
            return x
        is_visual = input_ids == self.config.video_token_id
        n = jnp.clip(jnp.cumsum(is_visual, axis=1) - 1, 0, visual_tokens.shape[1] - 1)
        gathered = jnp.take_along_axis(visual_tokens.astype(x.dtype), n[..., None], axis=1)
        return jnp.where(is_visual[..., None], gathered, x)

    def decode(self, embeds, position_ids, mask, cache=None, cache_index=0,
               deterministic: bool = True):
        """embeds (B, S, D), position_ids (3, B, S), mask (B, S, T) -> (hidden, cache).
        deterministic=False: LoRA dropout on (pass rngs={"dropout": key} to apply)."""
        t = self.config.text
        cos, sin = mrope_cos_sin(position_ids, t.head_dim, t.rope_theta, t.mrope_section)
        return self.llm(embeds, cos, sin, mask, cache, cache_index, deterministic)

    def logits(self, hidden) -> jnp.ndarray:
        return self.lm_head(hidden)

    # -- transformers-style forward ------------------------------------------------------------

    def __call__(self, input_ids, attention_mask=None, pixel_values_videos=None,
                 video_grid_thw=None, second_per_grid_ts=None, position_ids=None,
                 vision_layout=None, visual_tokens=None, return_logits: bool = True,
                 deterministic: bool = True) -> Output:
        """input_ids (B, S). Visual input is either pixels (+ grid or precomputed layout) or
        ready `visual_tokens` (B, N, D) for the placeholders. Returns `Output`."""
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        needs_host = position_ids is None or (pixel_values_videos is not None
                                              and vision_layout is None)
        if needs_host:
            if not _is_concrete(input_ids, attention_mask, video_grid_thw, second_per_grid_ts):
                raise ValueError("inside jax.jit pass `position_ids` and `vision_layout` computed "
                                 "by `prepare_inputs` on the host")
            prep = prepare_inputs(self.config, np.asarray(input_ids), np.asarray(attention_mask),
                                  None if video_grid_thw is None else np.asarray(video_grid_thw),
                                  second_per_grid_ts)
            position_ids = prep["position_ids"] if position_ids is None else position_ids
            vision_layout = prep.get("vision_layout") if vision_layout is None else vision_layout
        if pixel_values_videos is not None and visual_tokens is None:
            visual_tokens = self.encode_video(pixel_values_videos, vision_layout)
        x = self.embed(input_ids, visual_tokens)
        hidden, _ = self.decode(x, jnp.asarray(position_ids), causal_mask(attention_mask),
                                deterministic=deterministic)
        return Output(self.logits(hidden) if return_logits else None, hidden)


def _touch_all(model: Qwen2_5_VL):
    """Runs every submodule once on minimal inputs (used to create or shape the params)."""
    c = model.config
    layout = build_layout([[(1, 2, 2)]], c.vision)
    pixels = jnp.zeros((4, c.vision.patch_dim), jnp.float32)
    tokens = model.encode_video(pixels, {k: jnp.asarray(v) for k, v in layout.arrays().items()})
    ids = jnp.full((1, 2), c.video_token_id, jnp.int32)
    hidden, _ = model.decode(model.embed(ids, tokens), jnp.zeros((3, 1, 2), jnp.int32),
                             causal_mask(jnp.ones((1, 2), bool)))
    return model.logits(hidden)


def init_params(config: Qwen2_5_VLConfig, rng: jax.Array) -> Any:
    """Random params, boxed with their logical axis names (`nn.meta.unbox` to strip)."""
    return Qwen2_5_VL(config).init(rng, method=_touch_all)["params"]


def abstract_params(config: Qwen2_5_VLConfig) -> Any:
    """Boxed ShapeDtypeStructs of every param, without allocating anything."""
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))


def init_lora_params(config: Qwen2_5_VLConfig, rng: jax.Array,
                     mesh: jax.sharding.Mesh | None = None) -> Any:
    """Fresh LoRA params only (A random, B zero), unboxed, e.g. to add to loaded base weights.

    The whole init is traced but only the LoRA leaves are returned, so XLA computes nothing
    else; with `mesh` they are created in their shards by the logical rules.
    """
    if config.lora_rank == 0:
        raise ValueError("init_lora_params: the config has lora_rank 0 (no LoRA params)")
    lora_of = lambda r: split_lora(init_params(config, r))[1]
    out_shardings = None
    if mesh is not None:
        out_shardings = param_shardings(jax.eval_shape(lora_of, rng), mesh)
    return jax.jit(lambda r: nn.meta.unbox(lora_of(r)), out_shardings=out_shardings)(rng)
