"""Rotary position embeddings: the LLM's M-RoPE (t, h, w streams) and the vision tower's 2D rope.

`get_rope_index` runs on the host (NumPy) because it depends on where the video placeholders
sit; the device side only turns position ids into cos/sin.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig


def video_block_positions(start: int, grid: Sequence[int], second_per_grid: float,
                           cfg: Qwen2_5_VLConfig) -> np.ndarray:
    """(3, T'*H'*W') positions of one video's tokens starting at `start`."""
    m = cfg.vision.spatial_merge_size
    t, h, w = int(grid[0]), int(grid[1]) // m, int(grid[2]) // m
    # floor(arange(T') * seconds per grid * tokens per second): the temporal stream advances with
    # real time, not with the frame count.
    tpos = np.floor(np.arange(t) * float(second_per_grid) * cfg.vision.tokens_per_second
                    ).astype(np.int64)
    tt, hh, ww = np.meshgrid(tpos, np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)]) + start


def rope_index_one(ids: np.ndarray, grids: Sequence[Sequence[int]], seconds: Sequence[float],
                   cfg: Qwen2_5_VLConfig) -> np.ndarray:
    """(3, S) positions for one unpadded sequence whose video placeholders match `grids`."""
    is_video = ids == cfg.video_token_id
    m2 = cfg.vision.spatial_merge_size ** 2
    out = np.zeros((3, ids.size), np.int64)
    pos, i, v = 0, 0, 0   # next text position, token cursor, video cursor
    while i < ids.size:
        if not is_video[i]:
            j = i
            while j < ids.size and not is_video[j]:
                j += 1
            out[:, i:j] = np.arange(j - i) + pos
            pos += j - i
            i = j
            continue
        if v >= len(grids):
            raise ValueError(f"sequence has more video placeholder runs than the {len(grids)} "
                             f"video grids given")
        n = int(np.prod(grids[v])) // m2
        if not is_video[i:i + n].all() or (i + n < ids.size and is_video[i + n]):
            run = int(np.argmin(np.append(is_video[i:], False)))
            raise ValueError(f"video {v} has grid {tuple(int(x) for x in grids[v])} -> {n} tokens,"
                             f" but its placeholder run is {run} tokens long")
        block = video_block_positions(pos, grids[v], seconds[v], cfg)
        out[:, i:i + n] = block
        if cfg.rope_index == "qwen":
            pos = int(block.max()) + 1
        elif cfg.rope_index == "transformers5":
            g = grids[v]
            pos += max(int(g[1]), int(g[2])) // cfg.vision.spatial_merge_size
        else:
            raise ValueError(f"unknown rope_index mode {cfg.rope_index!r}")
        i += n
        v += 1
    if v != len(grids):
        raise ValueError(f"{len(grids)} video grids given, {v} placeholder runs found")
    return out


def get_rope_index(input_ids: np.ndarray, cfg: Qwen2_5_VLConfig,
                   video_grid_thw: np.ndarray | None = None,
                   second_per_grid_ts: np.ndarray | None = None,
                   attention_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """M-RoPE position ids for a batch, as the reference computes them.

    input_ids: (B, S); video_grid_thw: (n_videos, 3) for all examples in order of appearance;
    second_per_grid_ts: (n_videos,) (default 1.0); attention_mask: (B, S), 1 = real token.
    Text tokens get 1D positions equal in all three streams; a video's tokens get
    (t, h, w) = (floor(arange(T') * s * tokens_per_second), arange(H'), arange(W')) + start.
    Returns positions (3, B, S) int32 (0 at padding) and rope deltas (B,) int32 with
    delta = max position + 1 - number of real tokens (decoding continues from there).
    """
    input_ids = np.asarray(input_ids)
    b, s = input_ids.shape
    mask = np.ones((b, s), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    grids = [] if video_grid_thw is None else [tuple(int(x) for x in g) for g in np.asarray(video_grid_thw)]
    secs = (np.ones(len(grids)) if second_per_grid_ts is None
            else np.asarray(second_per_grid_ts, np.float64).reshape(-1))
    m2 = cfg.vision.spatial_merge_size ** 2
    positions = np.zeros((3, b, s), np.int32)
    deltas = np.zeros((b,), np.int32)
    v = 0
    for e in range(b):
        ids = input_ids[e][mask[e]]
        n_tokens = int((ids == cfg.video_token_id).sum())
        k, n = 0, 0
        while n < n_tokens and v + k < len(grids):
            n += int(np.prod(grids[v + k])) // m2
            k += 1
        if n != n_tokens:
            raise ValueError(f"example {e}: {n_tokens} video placeholder tokens do not match the "
                             f"video grids {grids[v:v + k]}")
        pos = rope_index_one(ids, grids[v:v + k], secs[v:v + k], cfg)
        positions[:, e, mask[e]] = pos
        deltas[e] = (pos.max() + 1 - ids.size) if ids.size else 0
        v += k
    if v != len(grids):
        raise ValueError(f"{len(grids)} video grids given but the batch has placeholders for {v}")
    return positions, deltas


def videos_per_example(input_ids: np.ndarray, cfg: Qwen2_5_VLConfig,
                       video_grid_thw: np.ndarray | None,
                       attention_mask: np.ndarray | None = None) -> list[list[tuple[int, int, int]]]:
    """Splits the flat list of video grids among the examples by their placeholder counts."""
    input_ids = np.asarray(input_ids)
    mask = (np.ones(input_ids.shape, bool) if attention_mask is None
            else np.asarray(attention_mask).astype(bool))
    grids = [] if video_grid_thw is None else [tuple(int(x) for x in g) for g in np.asarray(video_grid_thw)]
    m2 = cfg.vision.spatial_merge_size ** 2
    out, v = [], 0
    for e in range(input_ids.shape[0]):
        need = int(((input_ids[e] == cfg.video_token_id) & mask[e]).sum())
        mine = []
        while need > 0:
            if v >= len(grids):
                raise ValueError(f"example {e}: {need} video placeholder tokens have no video grid")
            mine.append(grids[v])
            need -= int(np.prod(grids[v])) // m2
            v += 1
        if need < 0:
            raise ValueError(f"example {e}: video placeholder count does not match grids {mine}")
        out.append(mine)
    if v != len(grids):
        raise ValueError(f"{len(grids)} video grids given, placeholders for only {v}")
    return out


# --- device side ----------------------------------------------------------------------------

def inv_frequencies(dim: int, theta: float) -> np.ndarray:
    """(dim // 2,) float32 inverse frequencies 1 / theta^(2i / dim)."""
    return (1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
            ).astype(np.float32)


def mrope_cos_sin(positions: jnp.ndarray, head_dim: int, theta: float,
                  mrope_section: Sequence[int]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """positions (3, B, S) -> cos, sin (B, S, head_dim) float32.

    Frequency chunk i of `mrope_section` takes its angle from stream i (t, h, w); the half is
    then duplicated to the full head dim (rotate-half convention).
    """
    inv = jnp.asarray(inv_frequencies(head_dim, theta))
    stream = np.repeat(np.arange(3), mrope_section)              # which stream feeds each freq
    pos = jnp.moveaxis(positions[stream], 0, -1).astype(jnp.float32)  # (B, S, hd/2)
    freqs = pos * inv
    emb = jnp.concatenate([freqs, freqs], -1)
    return jnp.cos(emb), jnp.sin(emb)


def vision_cos_sin(patch_hw: jnp.ndarray, head_dim: int, theta: float
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """patch_hw (..., 2) -> cos, sin (..., head_dim) float32 for the vision tower's 2D rope.

    head_dim/4 frequencies per axis: [h freqs, w freqs] then duplicated (rotate-half).
    """
    inv = jnp.asarray(inv_frequencies(head_dim // 2, theta))
    f = patch_hw.astype(jnp.float32)[..., None] * inv            # (..., 2, hd/4)
    f = jnp.concatenate([f[..., 0, :], f[..., 1, :]], -1)
    emb = jnp.concatenate([f, f], -1)
    return jnp.cos(emb), jnp.sin(emb)


def rotate_half(x: jnp.ndarray) -> jnp.ndarray:
    h = x.shape[-1] // 2
    return jnp.concatenate([-x[..., h:], x[..., :h]], -1)


def apply_rotary(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """x (..., heads, hd) with cos/sin (..., hd): rotation in float32, cast back to x's dtype."""
    xf = x.astype(jnp.float32)
    out = xf * cos[..., None, :] + rotate_half(xf) * sin[..., None, :]
    return out.astype(x.dtype)
