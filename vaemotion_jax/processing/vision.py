"""Qwen2.5-VL image and video preprocessing in NumPy (host side).

Behaviour follows transformers' Qwen2-VL processors: `smart_resize` to multiples of 28 within
[min_pixels, max_pixels], bicubic resampling, rescale by 1/255, CLIP normalisation, an odd frame
count padded with the last frame, and patches flattened so every 2x2 merge block is contiguous.

Resampling is PIL bicubic for images AND video frames. For images this is exactly what
`Qwen2VLImageProcessorPil` does (results are bit-identical). transformers' video processor
resizes with torchvision (antialiased bicubic on tensors), which is not available here, so video
frames are resized with PIL bicubic too; the two resamplers differ by a grey level or so on
downscaled frames. Patch layout, grids and normalisation are identical.

Layout of one flattened patch row (length C * temporal_patch_size * patch * patch = 1176):
    [channel][t][py][px]
Order of the rows of one video: temporal group, merge-block row, merge-block column,
row inside the block, column inside the block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
RESIZE_FACTOR = PATCH_SIZE * MERGE_SIZE  # 28
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESCALE_FACTOR = 1 / 255
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 28 * 28 * 1280
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
MAX_ASPECT_RATIO = 200
PATCH_DIM = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE  # 1176


def smart_resize(height: int, width: int, factor: int = RESIZE_FACTOR,
                 min_pixels: int = IMAGE_MIN_PIXELS,
                 max_pixels: int = IMAGE_MAX_PIXELS) -> tuple[int, int]:
    """Target (h, w): multiples of `factor`, area within [min_pixels, max_pixels], aspect kept.

    Same arithmetic as the reference (Python `round`, i.e. round-half-to-even, then floor/ceil
    after rescaling); raises ValueError if the aspect ratio exceeds 200.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"smart_resize needs positive sizes, got height={height}, width={width}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {ratio}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class VideoPreprocessConfig:
    """How video frames are sized. `resized_hw` fixes the size before `smart_resize` (the paper
    uses (512, 512) -> 504x504); otherwise each clip's own size is used."""
    resized_hw: tuple[int, int] | None = None
    min_pixels: int = VIDEO_MIN_PIXELS
    max_pixels: int = VIDEO_MAX_PIXELS

    def target_hw(self, height: int, width: int) -> tuple[int, int]:
        """Output frame size for an input of (height, width)."""
        h, w = self.resized_hw if self.resized_hw is not None else (height, width)
        return smart_resize(h, w, RESIZE_FACTOR, self.min_pixels, self.max_pixels)

    def grid_thw(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(grid_t, grid_h, grid_w) of a clip of `num_frames` frames of (height, width)."""
        h, w = self.target_hw(height, width)
        grid_t = -(-num_frames // TEMPORAL_PATCH_SIZE)
        return grid_t, h // PATCH_SIZE, w // PATCH_SIZE


def num_video_tokens(grid_thw, merge: int = MERGE_SIZE) -> int:
    """LLM placeholder tokens for one video (or image): prod(grid_thw) // merge**2."""
    return int(np.prod(np.asarray(grid_thw, dtype=np.int64))) // (merge * merge)


def _normalisation_table() -> np.ndarray:
    """(3, 256) float32: normalised value of every uint8 level per channel.

    Computed with the reference's dtypes (rescale in float64 then cast to float32; subtract and
    divide in float32), so the lookup is bit-identical to the reference arithmetic.
    """
    levels = (np.arange(256, dtype=np.float64) * RESCALE_FACTOR).astype(np.float32)
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)[:, None]
    std = np.asarray(CLIP_STD, dtype=np.float32)[:, None]
    return (levels[None, :] - mean) / std


_NORMALISATION_TABLE = _normalisation_table()


def _check_frames(frames: np.ndarray, what: str) -> None:
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{what} must have shape (T>0, H, W, 3), got {frames.shape}")


def _resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, height, width, 3) uint8 with PIL bicubic (no-op if same size)."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        pil = Image.fromarray(np.ascontiguousarray(frame))
        out[i] = np.asarray(pil.resize((width, height), resample=Image.Resampling.BICUBIC))
    return out


def _patchify(frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(T, h, w, 3) uint8 sized to multiples of 28 -> (N, 1176) float32 normalised rows, grid.

    An odd T is padded by repeating the last frame. The permutation runs on uint8 (4x less
    memory traffic) and normalisation is one table lookup per channel block of columns.
    """
    pad = -frames.shape[0] % TEMPORAL_PATCH_SIZE
    if pad:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
    t, h, w, c = frames.shape
    gt, gh, gw = t // TEMPORAL_PATCH_SIZE, h // PATCH_SIZE, w // PATCH_SIZE
    m, p = MERGE_SIZE, PATCH_SIZE
    blocks = frames.reshape(gt, TEMPORAL_PATCH_SIZE, gh // m, m, p, gw // m, m, p, c)
    # -> (gt, block_row, block_col, row_in_block, col_in_block, channel, t, py, px)
    rows = blocks.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7).reshape(gt * gh * gw, c, -1)
    pixel_values = np.empty(rows.shape, dtype=np.float32)
    for channel in range(c):
        np.take(_NORMALISATION_TABLE[channel], rows[:, channel], out=pixel_values[:, channel])
    return pixel_values.reshape(gt * gh * gw, PATCH_DIM), (gt, gh, gw)


def preprocess_video(frames: np.ndarray, fps: float, resized_hw: tuple[int, int] | None = None,
                     min_pixels: int = VIDEO_MIN_PIXELS,
                     max_pixels: int = VIDEO_MAX_PIXELS) -> dict:
    """One clip of sampled frames -> Qwen2.5-VL vision inputs.

    frames: (T, H, W, 3) uint8 RGB; fps: rate of the SAMPLED frames.
    Returns pixel_values_videos (N, 1176) float32 with N = prod(video_grid_thw),
    video_grid_thw (3,) int64, second_per_grid_ts = temporal_patch_size / fps (float).
    """
    frames = np.asarray(frames)
    _check_frames(frames, "video frames")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    config = VideoPreprocessConfig(resized_hw, min_pixels, max_pixels)
    height, width = config.target_hw(frames.shape[1], frames.shape[2])
    pixel_values, grid = _patchify(_resize_frames(frames, height, width))
    return {"pixel_values_videos": pixel_values,
            "video_grid_thw": np.asarray(grid, dtype=np.int64),
            "second_per_grid_ts": TEMPORAL_PATCH_SIZE / float(fps)}


def preprocess_images(images: list[np.ndarray], min_pixels: int = IMAGE_MIN_PIXELS,
                      max_pixels: int = IMAGE_MAX_PIXELS) -> dict:
    """Images (each (H, W, 3) uint8 RGB, sizes may differ) -> Qwen2.5-VL image inputs.

    Each image becomes one temporal group (the frame repeated over temporal_patch_size).
    Returns pixel_values (sum_i prod(grid_i), 1176) float32, image_grid_thw (n, 3) int64.
    """
    if len(images) == 0:
        raise ValueError("preprocess_images needs at least one image")
    all_values, all_grids = [], []
    for i, image in enumerate(images):
        image = np.asarray(image)
        _check_frames(image[None], f"image {i}")
        height, width = smart_resize(image.shape[0], image.shape[1], RESIZE_FACTOR,
                                     min_pixels, max_pixels)
        values, grid = _patchify(_resize_frames(image[None], height, width))
        all_values.append(values)
        all_grids.append(grid)
    return {"pixel_values": np.concatenate(all_values, axis=0),
            "image_grid_thw": np.asarray(all_grids, dtype=np.int64)}
