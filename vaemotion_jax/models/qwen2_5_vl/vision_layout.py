"""Host-side index work for the vision tower, so the device graph has static shapes.

The reference permutes patches into 4x4-merged-token windows (partial windows at frame edges)
and attends within variable-length windows (cu_seqlens), or within whole temporal groups in the
full-attention blocks. We lay every temporal group out as `windows_per_group` windows of
`window_merged**2` merged tokens (4 patches each), padding partial windows and missing windows
with invalid slots:

    slots (B, groups, windows_per_group, window_merged**2 * 4)

Window attention is then attention within the last axis, full attention within a group
(the last two axes flattened), and attention never crosses temporal groups. Padding slots are
masked as keys and their outputs are never gathered. All of it is computed here, in NumPy, from
the grids; the device only gathers and reshapes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaemotion_jax.models.qwen2_5_vl.config import VisionConfig


@dataclass
class VisionLayout:
    """Static-shape index arrays for one batch (all NumPy; pass them to the model as arrays).

    patch_index: (B, G, Q) int32 row of each slot in the flat `pixel_values` (-1: padding slot).
    patch_hw:    (B, G, Q, 2) int32 (row, col) patch coordinates of each slot (2D rotary).
    token_index: (B, N) int32 merged-slot index (into G * Q // 4) of the n-th visual token of
                 each example, in the reference's token order (video by video, raster order).
    token_valid: (B, N) bool.
    where G = temporal groups and Q = windows_per_group * window_merged**2 * 4 slots per group.
    """
    patch_index: np.ndarray
    patch_hw: np.ndarray
    token_index: np.ndarray
    token_valid: np.ndarray
    groups: int
    windows_per_group: int

    def arrays(self) -> dict[str, np.ndarray]:
        return {"patch_index": self.patch_index, "patch_hw": self.patch_hw,
                "token_index": self.token_index, "token_valid": self.token_valid}


def windows_in_group(h: int, w: int, cfg: VisionConfig) -> int:
    """Number of attention windows in one temporal group of an (h, w)-patch grid."""
    m, ws = cfg.spatial_merge_size, cfg.window_merged
    return -(-(h // m) // ws) * -(-(w // m) // ws)


def layout_shape(grids_per_example: list[list[tuple[int, int, int]]], cfg: VisionConfig
                 ) -> tuple[int, int, int]:
    """(groups, windows_per_group, tokens) needed by a batch: the bucket it must fit."""
    groups = max([sum(g[0] for g in grids) for grids in grids_per_example] + [1])
    windows = max([windows_in_group(g[1], g[2], cfg) for grids in grids_per_example for g in grids]
                  + [1])
    m2 = cfg.spatial_merge_size ** 2
    tokens = max([sum(int(np.prod(g)) // m2 for g in grids) for grids in grids_per_example] + [1])
    return groups, windows, tokens


def _group_slots(h: int, w: int, cfg: VisionConfig, windows_per_group: int):
    """For one temporal group: per slot, the patch's index within the group (or -1) and (r, c).

    Returns (patch_in_group (S,), rows (S,), cols (S,), merged_slot_of_token (h*w/4,)).
    """
    m, ws = cfg.spatial_merge_size, cfg.window_merged
    mh, mw = h // m, w // m
    nwh, nww = -(-mh // ws), -(-mw // ws)
    unit = ws * ws  # merged tokens per window
    slots = windows_per_group * unit * m * m
    patch = np.full(slots, -1, np.int64)
    rows = np.zeros(slots, np.int64)
    cols = np.zeros(slots, np.int64)
    token_slot = np.empty(mh * mw, np.int64)
    # merged token (i, j) -> window (i // ws, j // ws), position (i % ws, j % ws) in that window
    i, j = np.meshgrid(np.arange(mh), np.arange(mw), indexing="ij")
    window = (i // ws) * nww + (j // ws)
    merged_slot = window * unit + (i % ws) * ws + (j % ws)          # (mh, mw)
    token_slot[:] = merged_slot.reshape(-1)
    # patches of merged token (i, j): rows i*m+di, cols j*m+dj, stored in 2x2-block order
    di, dj = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    slot = merged_slot[..., None] * m * m + (di * m + dj).reshape(-1)  # (mh, mw, m*m)
    src = (i * mw + j)[..., None] * m * m + (di * m + dj).reshape(-1)  # reference row order
    patch[slot.reshape(-1)] = src.reshape(-1)
    rows[slot.reshape(-1)] = (i[..., None] * m + di.reshape(-1)).reshape(-1)
    cols[slot.reshape(-1)] = (j[..., None] * m + dj.reshape(-1)).reshape(-1)
    assert nwh * nww <= windows_per_group
    return patch, rows, cols, token_slot


def build_layout(grids_per_example: list[list[tuple[int, int, int]]], cfg: VisionConfig,
                 groups: int | None = None, windows_per_group: int | None = None,
                 tokens: int | None = None) -> VisionLayout:
    """Layout for a batch; each example holds zero or more videos (grids in patches, (t, h, w)).

    The flat `pixel_values` rows are the examples' videos concatenated in order, each video's
    rows in the reference's order. `groups`, `windows_per_group`, `tokens` fix the static shape
    (a bucket); by default the batch's own maxima are used.
    """
    need_g, need_w, need_n = layout_shape(grids_per_example, cfg)
    groups = need_g if groups is None else groups
    windows_per_group = need_w if windows_per_group is None else windows_per_group
    tokens = need_n if tokens is None else tokens
    if need_g > groups or need_w > windows_per_group or need_n > tokens:
        raise ValueError(f"vision inputs need (groups, windows, tokens) = {(need_g, need_w, need_n)},"
                         f" more than the bucket {(groups, windows_per_group, tokens)}")
    m2 = cfg.spatial_merge_size ** 2
    group_slots = windows_per_group * cfg.window_merged ** 2 * m2
    b = len(grids_per_example)
    patch_index = np.full((b, groups * group_slots), -1, np.int32)
    patch_hw = np.zeros((b, groups * group_slots, 2), np.int32)  # reshaped to (B, G, Q) below
    token_index = np.zeros((b, tokens), np.int32)
    token_valid = np.zeros((b, tokens), bool)
    row0 = 0  # first row of the current video in the flat pixel_values
    for e, grids in enumerate(grids_per_example):
        g0, n0 = 0, 0
        for t, h, w in grids:
            if h % cfg.spatial_merge_size or w % cfg.spatial_merge_size:
                raise ValueError(f"grid {(t, h, w)}: h and w must be multiples of "
                                 f"spatial_merge_size={cfg.spatial_merge_size}")
            patch, rows, cols, token_slot = _group_slots(h, w, cfg, windows_per_group)
            for k in range(t):
                s0 = (g0 + k) * group_slots
                valid = patch >= 0
                patch_index[e, s0:s0 + group_slots] = np.where(valid, row0 + k * h * w + patch, -1)
                patch_hw[e, s0:s0 + group_slots, 0] = rows
                patch_hw[e, s0:s0 + group_slots, 1] = cols
                n = token_slot.size
                token_index[e, n0:n0 + n] = s0 // m2 + token_slot
                token_valid[e, n0:n0 + n] = True
                n0 += n
            g0 += t
            row0 += t * h * w
    return VisionLayout(patch_index.reshape(b, groups, group_slots),
                        patch_hw.reshape(b, groups, group_slots, 2), token_index, token_valid,
                        groups, windows_per_group)
