"""Batched greedy decoding with a KV cache: one jitted prefill, a jitted decode loop.

Prompts are left-padded to a common length S; the cache holds S + max_new_tokens positions.
Shapes depend only on (B, S, max_new_tokens, vision bucket), so a bucketed caller compiles once
per bucket and never per generated token. Decoding stops when every row has produced an end
token (`<|im_end|>` by default) or after max_new_tokens.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL, prepare_inputs
from vaemotion_jax.models.qwen2_5_vl.rope import videos_per_example
from vaemotion_jax.models.qwen2_5_vl.vision_layout import build_layout
from vaemotion_jax.sharding import to_host


def init_cache(model: Qwen2_5_VL, batch: int, length: int, dtype=None):
    """Zero (k, v) caches of shape (layers, B, length, kv_heads, head_dim)."""
    t = model.config.text
    shape = (t.num_layers, batch, length, t.num_kv_heads, t.head_dim)
    dtype = dtype or jnp.dtype(model.config.dtype)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def prefill(model: Qwen2_5_VL, params, input_ids, attention_mask, position_ids, visual_tokens,
            cache_length: int):
    """Runs the prompt (B, S) through the model into a fresh cache.

    Returns (logits of the last position (B, V), cache, key_mask (B, cache_length))."""
    b, s = input_ids.shape
    cache = init_cache(model, b, cache_length)
    key_mask = jnp.zeros((b, cache_length), bool).at[:, :s].set(attention_mask.astype(bool))
    mask = jnp.tril(jnp.ones((s, cache_length), bool))[None] & key_mask[:, None, :]

    def run(m):
        hidden, new_cache = m.decode(m.embed(input_ids, visual_tokens), position_ids, mask, cache, 0)
        return m.logits(hidden[:, -1]), new_cache

    logits, cache = model.apply({"params": params}, method=run)
    return logits, cache, key_mask


def decode_step(model: Qwen2_5_VL, params, token, cache, key_mask, index, position):
    """One token per row at cache slot `index` with M-RoPE position `position` (B,)."""
    key_mask = key_mask.at[:, index].set(True)
    mask = (key_mask & (jnp.arange(key_mask.shape[1]) <= index))[:, None, :]
    pos = jnp.broadcast_to(position[None, :, None], (3, token.shape[0], 1))

    def run(m):
        hidden, new_cache = m.decode(m.embed(token[:, None]), pos, mask, cache, index)
        return m.logits(hidden[:, 0]), new_cache

    logits, cache = model.apply({"params": params}, method=run)
    return logits, cache, key_mask


@partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def _generate(model, params, input_ids, attention_mask, position_ids, start_positions,
              pixel_values, vision_layout, visual_tokens, eos_ids, pad_id, max_new_tokens):
    b, s = input_ids.shape
    if visual_tokens is None and pixel_values is not None:
        visual_tokens = model.apply({"params": params}, pixel_values, vision_layout,
                                    method=Qwen2_5_VL.encode_video)
    logits, cache, key_mask = prefill(model, params, input_ids, attention_mask, position_ids,
                                      visual_tokens, s + max_new_tokens)
    first = jnp.argmax(logits, -1).astype(jnp.int32)
    out = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, eos_ids)

    def cond(state):
        step, _, _, _, done, _ = state
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(state):
        step, token, cache, key_mask, done, out = state
        logits, cache, key_mask = decode_step(model, params, token, cache, key_mask,
                                              s + step - 1, start_positions + step - 1)
        nxt = jnp.where(done, pad_id, jnp.argmax(logits, -1).astype(jnp.int32))
        out = out.at[:, step].set(nxt)
        return step + 1, nxt, cache, key_mask, done | jnp.isin(nxt, eos_ids), out

    state = (jnp.int32(1), first, cache, key_mask, done, out)
    step, _, _, _, done, out = jax.lax.while_loop(cond, body, state)
    return out


def greedy_generate(model: Qwen2_5_VL, params: Any, input_ids, attention_mask=None,
                    pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None,
                    visual_tokens=None, max_new_tokens: int = 64, eos_token_ids=None,
                    pad_token_id: int | None = None, vision_bucket=None,
                    position_ids=None) -> np.ndarray:
    """Greedy continuation of left-padded prompts.

    input_ids/attention_mask (B, S) NumPy; video inputs as for the model's forward, or ready
    `visual_tokens` (B, N, D) for the placeholders (the audio pathway uses this).
    position_ids (3, B, S): positions computed elsewhere (e.g. the joint audio+video layout);
    by default they follow the video grids.
    Returns new tokens (B, max_new_tokens) int32, `pad_token_id` after each row's end token.
    """
    cfg = model.config
    input_ids = np.asarray(input_ids, np.int32)
    attention_mask = (np.ones_like(input_ids) if attention_mask is None
                      else np.asarray(attention_mask, np.int32))
    if not attention_mask[:, -1].all():
        raise ValueError("greedy_generate needs left-padded prompts (last column all real tokens)")
    grids = None if video_grid_thw is None else np.asarray(video_grid_thw)
    use_pixels = visual_tokens is None and pixel_values_videos is not None
    if position_ids is None:
        # positions follow the video grid even when other tokens (audio) stand in for the video
        prep = prepare_inputs(cfg, input_ids, attention_mask, grids, second_per_grid_ts,
                              vision_bucket)
    else:
        pos = np.asarray(position_ids, np.int32)
        last = np.where(attention_mask[None].astype(bool), pos, -1).max((0, 2))
        prep = {"position_ids": pos, "rope_deltas": last + 1 - attention_mask.sum(1)}
        if use_pixels:
            per_example = videos_per_example(input_ids, cfg, grids, attention_mask)
            prep["vision_layout"] = build_layout(per_example, cfg.vision,
                                                 *(vision_bucket or (None,) * 3)).arrays()
    start = attention_mask.sum(1) + prep["rope_deltas"]        # first generated token's position
    eos = np.atleast_1d(np.asarray(cfg.eos_token_id if eos_token_ids is None else eos_token_ids,
                                   np.int32))
    pad = cfg.pad_token_id if pad_token_id is None else pad_token_id
    layout = prep.get("vision_layout") if use_pixels else None
    out = _generate(model, params, jnp.asarray(input_ids), jnp.asarray(attention_mask),
                    jnp.asarray(prep["position_ids"]), jnp.asarray(start, jnp.int32),
                    jnp.asarray(pixel_values_videos) if use_pixels else None,
                    None if layout is None else {k: jnp.asarray(v) for k, v in layout.items()},
                    None if visual_tokens is None else jnp.asarray(visual_tokens),
                    jnp.asarray(eos), jnp.int32(0 if pad is None else pad), max_new_tokens)
    return to_host(out)
