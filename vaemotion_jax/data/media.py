"""How a run turns a clip into model inputs: frame sampling, frame size, AST windows.

One `MediaSpec` per run, built from the config's `data` fields and saved with the run, so that
training, evaluation and chat make the same inputs from the same file:

* Frames: `fps` (Qwen2.5-VL's native rate, 2) with a `max_frames` cap, or a fixed `num_frames`;
  exactly one of the two modes. Frames always cover the clip's whole window (centres of equal
  slices). The audio adapter emits a fixed number of tokens, so every clip of a run must give
  the run's frame count: in fps mode a clip shorter than max_frames / fps seconds gives fewer
  frames and is skipped as "too_short" (named and counted by the pipeline).
* `second_per_grid_ts` = temporal_patch_size * span / frames for every clip, with or without a
  decoded video: an audio-only file stands in for the training grid spread over its own
  duration, exactly as its video would have been.
* Audio: the AST sees windows of `audio_frames` fbank frames (10 ms each; 1024 = 10.24 s).
  A clip longer than one window is covered by up to `audio_windows` consecutive windows whose
  AST features the model averages (the adapter then maps them as for one window), so audio and
  frames span the same seconds. A clip longer than all windows together gets `audio_windows`
  windows spread evenly over it (gaps between them); such clips are counted ("audio_gaps").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vaemotion_jax.data.decode import BadExample, DecodeOptions, SAMPLE_RATE
from vaemotion_jax.processing.fbank import FRAME_LENGTH, FRAME_SHIFT, fbank_batch, num_frames
from vaemotion_jax.processing.vision import (TEMPORAL_PATCH_SIZE, VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS,
                                             VideoPreprocessConfig, num_video_tokens)


def window_samples(frames: int) -> int:
    """Samples at 16 kHz that give exactly `frames` fbank frames."""
    return FRAME_LENGTH + FRAME_SHIFT * (frames - 1)


@dataclass(frozen=True)
class MediaSpec:
    """Frame sampling, frame size and audio windows of a run (see the module docstring)."""
    fps: float | None = None
    max_frames: int | None = None
    num_frames: int | None = None
    resized_hw: tuple[int, int] | None = None
    min_pixels: int = VIDEO_MIN_PIXELS
    max_pixels: int = VIDEO_MAX_PIXELS
    audio_frames: int = 1024
    audio_windows: int = 1

    def __post_init__(self):
        by_rate = self.fps is not None or self.max_frames is not None
        if by_rate == (self.num_frames is not None):
            raise ValueError(
                "frame sampling: set data.fps with data.max_frames (Qwen2.5-VL's rate, capped) "
                "or data.num_frames (a fixed count), exactly one of the two; got "
                f"fps={self.fps}, max_frames={self.max_frames}, num_frames={self.num_frames}")
        if by_rate and (self.fps is None or not self.fps > 0 or not self.max_frames
                        or self.max_frames < 1):
            raise ValueError(f"frame sampling by rate needs fps > 0 and max_frames >= 1, got "
                             f"fps={self.fps}, max_frames={self.max_frames}")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.audio_frames < 1 or self.audio_windows < 1:
            raise ValueError(f"audio_frames and audio_windows must be >= 1, got "
                             f"{self.audio_frames}, {self.audio_windows}")
        if self.resized_hw is not None:
            object.__setattr__(self, "resized_hw", tuple(int(x) for x in self.resized_hw))

    @classmethod
    def from_config(cls, data) -> "MediaSpec":
        """From a config's `data` block (fields sampling, fps, max_frames, num_frames,
        resized_hw, min_pixels, max_pixels, audio_max_length, audio_windows)."""
        get = lambda k, d=None: data.get(k, d) if hasattr(data, "get") else getattr(data, k, d)
        fps, max_frames, num_frames = get("fps"), get("max_frames"), get("num_frames")
        sampling = get("sampling")  # absent in runs from before it: the set fields decide
        if sampling == "fps":
            num_frames = None
        elif sampling == "num_frames":
            fps = max_frames = None
        elif sampling is not None:
            raise ValueError(f"data.sampling must be 'fps' or 'num_frames', got {sampling!r}")
        return cls(fps=fps, max_frames=max_frames, num_frames=num_frames,
                   resized_hw=get("resized_hw"), min_pixels=get("min_pixels", VIDEO_MIN_PIXELS),
                   max_pixels=get("max_pixels", VIDEO_MAX_PIXELS),
                   audio_frames=get("audio_max_length", 1024), audio_windows=get("audio_windows", 1))

    # -- frames ------------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        """The run's frame count (every clip of the run has it)."""
        return self.num_frames if self.num_frames is not None else self.max_frames

    def frame_count(self, span: float) -> int:
        """Frames a window of `span` seconds gets: num_frames, or min(max_frames, floor(span * fps))."""
        if self.num_frames is not None:
            return self.num_frames
        return max(1, min(self.max_frames, int(math.floor(span * self.fps + 1e-6))))

    def frame_times(self, start: float, end: float) -> np.ndarray:
        """Times (T,) of the sampled frames: centres of T equal slices of [start, end]."""
        count = self.frame_count(end - start)
        return start + (np.arange(count) + 0.5) * ((end - start) / count)

    def min_span(self) -> float:
        """The shortest window that gives the run's frame count (0 with num_frames)."""
        return 0.0 if self.num_frames is not None else self.max_frames / self.fps

    def second_per_grid(self, span: float) -> float:
        """Seconds per temporal patch of a `span`-second window sampled with the run's frames."""
        return TEMPORAL_PATCH_SIZE * span / self.frames

    @property
    def video_config(self) -> VideoPreprocessConfig:
        return VideoPreprocessConfig(self.resized_hw, self.min_pixels, self.max_pixels)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(t, h, w) patch grid of every clip of the run (needs a fixed `resized_hw`)."""
        if self.resized_hw is None:
            raise ValueError("a run needs data.resized_hw: the audio adapter emits a fixed number "
                             "of tokens, so every clip must have one grid")
        return self.video_config.grid_thw(self.frames, *self.resized_hw)

    def video_tokens(self, merge: int) -> int:
        """Placeholder tokens of one clip (L_v)."""
        return num_video_tokens(self.grid, merge)

    def decode_options(self, video: bool = True, audio: bool = True) -> DecodeOptions:
        return DecodeOptions(fps=self.fps, max_frames=self.max_frames, num_frames=self.num_frames,
                             video=video, audio=audio)

    def check_frames(self, where: str, span: float) -> None:
        """Raises BadExample when a window gives fewer frames than the run's grid needs."""
        if self.frame_count(span) != self.frames:
            raise BadExample(where, f"clip of {span:.2f} s gives {self.frame_count(span)} frames at "
                             f"{self.fps:g} fps; this run's grid needs {self.frames} "
                             f"(clips of at least {self.min_span():.2f} s)", "too_short")

    # -- audio -------------------------------------------------------------------------------

    def audio_window_starts(self, samples: int) -> tuple[np.ndarray, bool]:
        """Start samples of the AST windows over a clip of `samples` (16 kHz), and whether they
        leave gaps (the clip is longer than `audio_windows` windows)."""
        step = self.audio_frames * FRAME_SHIFT
        needed = max(1, math.ceil(num_frames(samples) / self.audio_frames))
        if needed <= self.audio_windows:
            return np.arange(needed) * step, False
        length = window_samples(self.audio_frames)
        centres = (np.arange(self.audio_windows) + 0.5) * samples / self.audio_windows
        starts = np.clip(np.round(centres - length / 2), 0, samples - length).astype(np.int64)
        return starts, True

    def fbank(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """16 kHz mono audio -> (fbank (K, audio_frames, 128) f32, window mask (K,) bool,
        gaps) with K = audio_windows; windows beyond the clip are zeros and masked."""
        starts, gaps = self.audio_window_starts(audio.shape[0])
        length = window_samples(self.audio_frames)
        pieces = [audio[s:s + length] for s in starts]
        pieces = [p for p in pieces if p.shape[0] >= FRAME_LENGTH] or pieces[:1]
        out = np.zeros((self.audio_windows, self.audio_frames, 128), np.float32)
        out[:len(pieces)] = fbank_batch(pieces, SAMPLE_RATE, self.audio_frames)
        return out, np.arange(self.audio_windows) < len(pieces), gaps


def clip_inputs(clip, spec: MediaSpec, where: str) -> dict:
    """Model inputs of a decoded clip: pixel_values_videos (N, 1176), video_grid_thw (3,) and
    second_per_grid_ts for a decoded video; fbank (K, F, 128) and fbank_mask (K,) for decoded
    audio; `second_per_grid_ts` also for audio only (from the window, as for its video);
    `notes` names what the pipeline should count ("audio_windows", "audio_gaps")."""
    from vaemotion_jax.processing.vision import preprocess_video

    span = clip.end - clip.start
    out: dict = {"second_per_grid_ts": np.float32(spec.second_per_grid(span)), "notes": ()}
    if clip.frames is not None:
        spec.check_frames(where, span)
        try:
            video = preprocess_video(clip.frames, len(clip.frames) / span,
                                     tuple(spec.resized_hw) if spec.resized_hw else None,
                                     spec.min_pixels, spec.max_pixels)
        except ValueError as e:
            raise BadExample(where, f"preprocessing failed: {e}", "preprocess") from None
        out.update(pixel_values_videos=video["pixel_values_videos"],
                   video_grid_thw=video["video_grid_thw"])
    if clip.audio is not None:
        try:
            bank, mask, gaps = spec.fbank(clip.audio)
        except ValueError as e:
            raise BadExample(where, f"preprocessing failed: {e}", "preprocess") from None
        out.update(fbank=bank, fbank_mask=mask)
        out["notes"] = (("audio_windows",) if mask.sum() > 1 else ()) + (("audio_gaps",) if gaps else ())
    return out
