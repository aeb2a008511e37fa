"""Host-side assembly of one example, for training, evaluation and the embedded backbone alike:
chat tokens, M-RoPE positions, loss targets and the vision layout, as fixed-shape NumPy arrays
(the pipeline pads and batches them).

Shapes per example (S = tokens, A = max loss targets, G/Q/N = the vision bucket):
  input_ids (S,) int32, position_ids (S, 3) int32 (t, h, w streams),
  target_index (A,) int32: the positions whose logits predict the targets, target_ids (A,),
  target_mask (A,) bool, patch_index (G, Q), patch_hw (G, Q, 2), token_index (N,).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig
from vaemotion_jax.models.qwen2_5_vl.rope import rope_index_one, video_block_positions
from vaemotion_jax.models.qwen2_5_vl.vision_layout import build_layout
from vaemotion_jax.processing.chat import encode_chat


def chat_arrays(tokenizer, qwen: Qwen2_5_VLConfig, turns: Sequence[dict], grid, second_per_grid: float,
                max_targets: int, add_generation_prompt: bool = False) -> dict[str, np.ndarray]:
    """Tokens of a conversation about one video, its positions, and the assistant targets."""
    n_video = int(np.prod(grid)) // qwen.vision.spatial_merge_size ** 2
    enc = encode_chat(tokenizer, turns, video_tokens=n_video,
                      add_generation_prompt=add_generation_prompt)
    ids = enc["input_ids"].astype(np.int32)
    positions = rope_index_one(ids, [tuple(int(g) for g in grid)], [second_per_grid], qwen)
    targets = np.flatnonzero(enc["assistant_mask"])[:max_targets]
    pad = max_targets - targets.size
    return {
        "input_ids": ids,
        "position_ids": positions.T.astype(np.int32),
        "target_index": np.pad(targets - 1, (0, pad)).astype(np.int32),
        "target_ids": np.pad(ids[targets], (0, pad)).astype(np.int32),
        "target_mask": np.pad(np.ones(targets.size, bool), (0, pad)),
    }


def layout_arrays(qwen: Qwen2_5_VLConfig, grid) -> dict[str, np.ndarray]:
    """The vision layout of a single-video example (its own pixel rows)."""
    lay = build_layout([[tuple(int(g) for g in grid)]], qwen.vision)
    return {"patch_index": lay.patch_index[0], "patch_hw": lay.patch_hw[0],
            "token_index": lay.token_index[0]}


LAYOUT_KEYS = ("patch_index", "patch_hw", "token_index")


def batch_layout(batch: dict) -> dict:
    """The vision layout fields of a batch, as the model's `vision_layout` argument."""
    return {k: batch[k] for k in LAYOUT_KEYS}


def placeholder_count(modality: str, grid, merge: int) -> int:
    """Placeholder tokens of one clip's pathway: the video's merged tokens, twice for [z_a; z_v]."""
    n = int(np.prod(grid)) // merge ** 2
    return 2 * n if modality == "av" else n


def left_pad_prompts(batch: dict, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A batch's prompts (prompt_ids (B, P), prompt_ids_length (B,)) left-padded for generation:
    ids (B, P), mask (B, P), and positions (3, B, P) when the batch has `position_ids` (else
    None). A row with an empty prompt keeps one token, so no row is all padding."""
    p = batch["prompt_ids"].shape[1]
    ids = np.full_like(batch["prompt_ids"], pad_id)
    mask = np.zeros_like(batch["prompt_ids"])
    pos = np.zeros((3,) + ids.shape, np.int32) if "position_ids" in batch else None
    for b in range(ids.shape[0]):
        n = max(int(batch["prompt_ids_length"][b]), 1)
        ids[b, p - n:] = batch["prompt_ids"][b, :n]
        mask[b, p - n:] = 1
        if pos is not None:
            pos[:, b, p - n:] = batch["position_ids"][b, :n].T
    return ids, mask, pos


JOINT_LAYOUTS = ("shared_grid", "sequential")


def joint_positions(ids: np.ndarray, grid, second_per_grid: float, qwen: Qwen2_5_VLConfig,
                    layout: str) -> np.ndarray:
    """(3, S) positions for a sequence whose one placeholder run holds [z_a; z_v] (2N tokens).

    layout "shared_grid": both blocks get the video's M-RoPE grid (audio stands where the
    video stands, as in Stage 1); "sequential": the video block follows the audio block like a
    second clip. Text resumes after the largest position, as in the released model.
    """
    if layout not in JOINT_LAYOUTS:
        raise ValueError(f"joint layout must be one of {JOINT_LAYOUTS}, got {layout!r}")
    grid = tuple(int(g) for g in grid)
    n = int(np.prod(grid)) // qwen.vision.spatial_merge_size ** 2
    where = np.flatnonzero(ids == qwen.video_token_id)
    if where.size != 2 * n or (where.size and where[-1] - where[0] != 2 * n - 1):
        raise ValueError(f"expected one run of {2 * n} placeholders for the joint input, "
                         f"found {where.size}")
    start = int(where[0])
    out = np.zeros((3, ids.size), np.int64)
    out[:, :start] = np.arange(start)
    audio = video_block_positions(start, grid, second_per_grid, qwen)
    video = audio if layout == "shared_grid" else video_block_positions(
        int(audio.max()) + 1, grid, second_per_grid, qwen)
    out[:, start:start + n], out[:, start + n:start + 2 * n] = audio, video
    rest = ids.size - start - 2 * n
    out[:, start + 2 * n:] = np.arange(rest) + max(int(audio.max()), int(video.max())) + 1
    return out


def pathway_positions(ids, modality: str, grid, second_per_grid: float, qwen: Qwen2_5_VLConfig,
                      joint_layout: str) -> np.ndarray:
    """(3, S) positions of an input whose placeholders carry the `modality` pathway."""
    if modality == "av":
        return joint_positions(ids, grid, second_per_grid, qwen, joint_layout)
    return rope_index_one(ids, [tuple(int(g) for g in grid)], [second_per_grid], qwen)


def audio_inputs(batch: dict) -> dict:
    """A batch's audio pathway inputs as `VAEmotionLLM.audio_tokens` keywords: fbank windows
    (B, K, F, 128) with their mask (B, K), or the cached `audio_features` (B, T_a, d_a); and
    utterance_mask (B, N_max, T_a) for adapters that read windows."""
    return {"fbank": batch.get("fbank"), "fbank_mask": batch.get("fbank_mask"),
            "utterance_mask": batch.get("utterance_mask"), "features": batch.get("audio_features")}
