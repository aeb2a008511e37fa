"""Image/video preprocessing against transformers' Qwen2VLImageProcessorPil and the patch layout."""
import numpy as np
import pytest
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    Qwen2VLImageProcessorPil, smart_resize as reference_smart_resize)

from vaemotion_jax.processing import vision

ODD_SIZES = [(37, 91), (300, 211), (28, 28), (13, 9), (1000, 33), (97, 129)]


def _random_image(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_images_match_reference_pil_processor_bit_for_bit():
    # Same PIL bicubic call, and the normalisation table reproduces the reference's float64
    # rescale -> float32 subtract/divide, so the outputs are identical, not just close.
    rng = np.random.default_rng(0)
    images = [_random_image(rng, h, w) for h, w in ODD_SIZES]
    reference = Qwen2VLImageProcessorPil()(images=images, return_tensors="np")
    ours = vision.preprocess_images(images)
    np.testing.assert_array_equal(ours["image_grid_thw"], reference["image_grid_thw"])
    assert ours["pixel_values"].dtype == np.float32
    assert ours["pixel_values"].shape == reference["pixel_values"].shape
    assert np.abs(ours["pixel_values"] - reference["pixel_values"]).max() == 0.0


@pytest.mark.parametrize("min_pixels,max_pixels", [(128 * 28 * 28, 768 * 28 * 28),
                                                    (28 * 28, 8 * 28 * 28)])
def test_images_match_reference_with_pixel_bounds(min_pixels, max_pixels):
    rng = np.random.default_rng(1)
    images = [_random_image(rng, 150, 61), _random_image(rng, 40, 200)]
    reference = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)(
        images=images, return_tensors="np")
    ours = vision.preprocess_images(images, min_pixels=min_pixels, max_pixels=max_pixels)
    np.testing.assert_array_equal(ours["image_grid_thw"], reference["image_grid_thw"])
    np.testing.assert_array_equal(ours["pixel_values"], reference["pixel_values"])


def test_smart_resize_matches_reference_on_a_grid_of_sizes():
    bounds = [(56 * 56, 28 * 28 * 1280), (128 * 28 * 28, 768 * 28 * 28), (28 * 28, 4 * 28 * 28)]
    for height in (1, 14, 27, 28, 42, 55, 70, 333, 512, 1080, 4000):
        for width in (5, 28, 41, 64, 512, 640, 1920):
            if max(height, width) / min(height, width) > 200:
                continue
            for lo, hi in bounds:
                assert vision.smart_resize(height, width, 28, lo, hi) == reference_smart_resize(
                    height, width, 28, lo, hi), (height, width, lo, hi)


def test_smart_resize_known_values_and_aspect_error():
    assert vision.smart_resize(512, 512, min_pixels=vision.VIDEO_MIN_PIXELS,
                               max_pixels=vision.VIDEO_MAX_PIXELS) == (504, 504)
    assert vision.smart_resize(42, 42) == (56, 56)  # round(1.5) = 2 (half to even)
    assert vision.smart_resize(1, 200) == (28, 812)  # ratio exactly 200 is allowed, upscaled
    with pytest.raises(ValueError, match="aspect ratio"):
        vision.smart_resize(1, 201)


def test_paper_sizes_give_324_tokens_per_temporal_group():
    config = vision.VideoPreprocessConfig(resized_hw=(512, 512))
    assert config.grid_thw(2, 360, 640) == (1, 36, 36)
    for frames, tokens in [(2, 324), (4, 648), (8, 1296), (7, 1296)]:
        assert vision.num_video_tokens(config.grid_thw(frames, 720, 1280)) == tokens


def _decode_levels(pixel_values):
    """Invert the CLIP normalisation per channel block of columns -> uint8 levels (N, 3, 392)."""
    rows = pixel_values.reshape(len(pixel_values), 3, -1)
    mean = np.asarray(vision.CLIP_MEAN)[None, :, None]
    std = np.asarray(vision.CLIP_STD)[None, :, None]
    return np.rint((rows * std + mean) * 255).astype(np.int64)


@pytest.mark.parametrize("num_frames", [4, 3])
def test_video_patch_order_follows_merge_blocks(num_frames):
    # Pixel values encode (t, y, x); no resize happens (56x84 is already a multiple of 28).
    height, width, patch, merge, temporal = 56, 84, 14, 2, 2
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    frames = np.stack([t * 60, y, x], axis=-1).astype(np.uint8)
    out = vision.preprocess_video(frames, fps=2.0, min_pixels=28 * 28)
    grid_t, grid_h, grid_w = 2, height // patch, width // patch
    np.testing.assert_array_equal(out["video_grid_thw"], [grid_t, grid_h, grid_w])
    assert out["pixel_values_videos"].shape == (grid_t * grid_h * grid_w, 1176)
    levels = _decode_levels(out["pixel_values_videos"])

    row = 0
    for g in range(grid_t):
        for block_row in range(grid_h // merge):
            for block_col in range(grid_w // merge):
                for in_row in range(merge):
                    for in_col in range(merge):
                        column = 0
                        for tt in range(temporal):
                            frame = min(g * temporal + tt, num_frames - 1)  # odd T: last repeated
                            for py in range(patch):
                                for px in range(patch):
                                    yy = (block_row * merge + in_row) * patch + py
                                    xx = (block_col * merge + in_col) * patch + px
                                    assert levels[row, 0, column] == frame * 60
                                    assert levels[row, 1, column] == yy
                                    assert levels[row, 2, column] == xx
                                    column += 1
                        row += 1
    assert row == len(levels)


@pytest.mark.parametrize("fps,expected", [(2.0, 1.0), (4.0, 0.5), (25.0, 0.08)])
def test_second_per_grid_ts_is_temporal_patch_over_fps(fps, expected):
    frames = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    out = vision.preprocess_video(frames, fps=fps, min_pixels=28 * 28)
    assert out["second_per_grid_ts"] == pytest.approx(expected)


def test_odd_frame_count_is_padded_with_last_frame():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (3, 28, 56, 3), dtype=np.uint8)
    padded = np.concatenate([frames, frames[-1:]], axis=0)
    odd = vision.preprocess_video(frames, fps=1.0, min_pixels=28 * 28)
    even = vision.preprocess_video(padded, fps=1.0, min_pixels=28 * 28)
    np.testing.assert_array_equal(odd["video_grid_thw"], [2, 2, 4])
    np.testing.assert_array_equal(odd["pixel_values_videos"], even["pixel_values_videos"])


def test_still_video_equals_reference_image_processing():
    # A clip of two identical frames is the reference's image layout (frame repeated over t),
    # which checks the video path's resize, normalisation and layout against transformers.
    rng = np.random.default_rng(3)
    frame = _random_image(rng, 100, 130)
    out = vision.preprocess_video(np.stack([frame, frame]), fps=2.0)
    reference = Qwen2VLImageProcessorPil(min_pixels=vision.VIDEO_MIN_PIXELS,
                                         max_pixels=vision.VIDEO_MAX_PIXELS)(
        images=[frame], return_tensors="np")
    np.testing.assert_array_equal(out["video_grid_thw"], reference["image_grid_thw"][0])
    np.testing.assert_array_equal(out["pixel_values_videos"], reference["pixel_values"])


def test_fixed_resize_to_paper_size():
    frames = np.random.default_rng(4).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    out = vision.preprocess_video(frames, fps=2.0, resized_hw=(512, 512))
    np.testing.assert_array_equal(out["video_grid_thw"], [2, 36, 36])
    assert out["pixel_values_videos"].shape == (2 * 36 * 36, 1176)
    assert vision.num_video_tokens(out["video_grid_thw"]) == 648


@pytest.mark.parametrize("frames,match", [
    (np.zeros((2, 28, 28, 3), dtype=np.float32), "uint8"),
    (np.zeros((28, 28, 3), dtype=np.uint8), "shape"),
    (np.zeros((2, 28, 28, 4), dtype=np.uint8), "shape"),
    (np.zeros((0, 28, 28, 3), dtype=np.uint8), "shape"),
])
def test_bad_video_input_is_rejected(frames, match):
    with pytest.raises(ValueError, match=match):
        vision.preprocess_video(frames, fps=2.0)


def test_bad_fps_and_empty_image_list_are_rejected():
    with pytest.raises(ValueError, match="fps"):
        vision.preprocess_video(np.zeros((2, 28, 28, 3), dtype=np.uint8), fps=0.0)
    with pytest.raises(ValueError, match="at least one image"):
        vision.preprocess_images([])
    with pytest.raises(ValueError, match="image 1"):
        vision.preprocess_images([np.zeros((28, 28, 3), np.uint8), np.zeros((28, 28), np.uint8)])
