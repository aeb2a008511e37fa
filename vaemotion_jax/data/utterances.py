"""Host-side inputs of the utterance-aware acoustic Q-Former (models/qformer.py; AcoustEmo
section 3): a clip's local windows, their masks over the AST's tokens, and the timestamps text
of the instruction-aware prompt. Pure NumPy / Python.

Windows are (start, end) seconds from the clip's start, in time order, at most N_max:
* windows="utterances": the record's `utterances` (seconds in the file) cut to the clip;
  a clip with none gets fixed windows or none (global tokens only) by `no_utterances`;
* windows="fixed" (AcoustEmo Table 2's ablation): consecutive `window_seconds` windows from
  the clip's start. Windows beyond N_max are dropped (the pipeline may count them).

Eq. (1) on the AST's grid: time patch i covers fbank frames [10 i, 10 i + 16) (10 ms each), so
f_s = 10 patches/s and a window [a, b) takes patches ceil(a f_s) .. ceil(b f_s) - 1 (at least
the patch it starts in), clipped to the grid; its tokens are 2 + f * T + i for every frequency
patch f (frequency-major; 0 and 1, the cls and distillation tokens, are in no window).

A clip covered by several AST windows (MediaSpec.audio_windows > 1) gives features averaged
over them (VAEmotionLLM.audio_features), so the token of time patch i mixes offset i of every
window: a local window then marks, in each AST window it overlaps, the patches of its overlap.
That is the best the averaged features allow; the exact AcoustEmo setting is one AST window
(clips up to 10.24 s).

Wiring (kind="qformer" with the utterance Q-Former; `utterance_spec` gives the `UtteranceSpec`):
the pipeline's `ExampleFn(utterances=spec)` adds per clip `utterance_mask` (N_max, T_a) bool
(batched (B, N_max, T_a), sharded on the batch axis like fbank_mask) and the `timestamps` text,
from the record's `utterances` over the clip's window in file seconds and the starts of the
AST windows its features average (`UtteranceSpec.clip_inputs`). Every stage's format_fn (and
the evaluation's) puts the timestamps before the text of the user turn that carries the clip
(`pipeline.clip_text`), so training, evaluation and chat read the same text. The model then
takes `audio_tokens(fbank, fbank_mask, utterance_mask)` (and `enhanced_tokens(...,
utterance_mask=...)`). Without the utterance Q-Former the spec is None: no mask, no timestamps.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vaemotion_jax.processing.fbank import FRAME_SHIFT, SAMPLE_RATE

Window = tuple[float, float]


def _fix(x: float) -> float:
    """Rounds away float noise before ceil/floor (0.3 * 10 = 3.0000000000000004)."""
    return round(x, 6)


def fixed_windows(span: float, seconds: float, n_max: int) -> list[Window]:
    """Consecutive windows of `seconds` over [0, span), the last one cut at span; at most n_max."""
    count = min(n_max, max(0, math.ceil(_fix(span / seconds))))
    return [(i * seconds, min((i + 1) * seconds, span)) for i in range(count)]


def clip_windows(utterances: Sequence[Sequence[float]] | None, clip_start: float,
                 clip_end: float, n_max: int, windows: str = "utterances",
                 window_seconds: float = 2.0, no_utterances: str = "fixed") -> list[Window]:
    """The clip's local windows, seconds from clip_start (see the module docstring)."""
    span = clip_end - clip_start
    if windows not in ("utterances", "fixed") or no_utterances not in ("fixed", "global"):
        raise ValueError(f"windows {windows!r} / no_utterances {no_utterances!r}: expected "
                         f"'utterances'|'fixed' / 'fixed'|'global'")
    if windows == "utterances":
        cut = [(max(s, clip_start) - clip_start, min(e, clip_end) - clip_start)
               for s, e in (utterances or ())]
        cut = sorted((a, b) for a, b in cut if b > a)
        if cut or no_utterances == "global":
            return cut[:n_max]
    return fixed_windows(span, window_seconds, n_max)


def patch_rate(ast_config) -> float:
    """f_s: AST time patches per second (10 for a time stride of 10 fbank frames)."""
    return SAMPLE_RATE / (FRAME_SHIFT * ast_config.time_stride)


def time_patches(start: float, end: float, ast_config) -> np.ndarray:
    """Eq. (1): time-patch indices of [start, end) seconds from an AST window's start."""
    fs, t = patch_rate(ast_config), ast_config.grid[1]
    lo, hi = math.ceil(_fix(start * fs)), math.ceil(_fix(end * fs))
    if hi <= lo:  # shorter than a patch step: the patch it starts in
        lo = math.floor(_fix(start * fs))
        hi = lo + 1
    return np.arange(max(lo, 0), min(hi, t))


def window_token_mask(windows: Sequence[Window], n_max: int, ast_config,
                      window_starts: Sequence[float] = (0.0,)) -> np.ndarray:
    """(n_max, num_tokens) bool: row i marks the AST tokens of windows[i]; rows past the
    windows are all False. window_starts: starts (seconds from the clip's start) of the AST
    windows whose features are averaged (one window from 0 by default)."""
    f, t = ast_config.grid
    length = ast_config.max_length * FRAME_SHIFT / SAMPLE_RATE   # seconds one AST window sees
    time = np.zeros((n_max, t), bool)
    for i, (a, b) in enumerate(list(windows)[:n_max]):
        for s in window_starts:
            lo, hi = max(a, s), min(b, s + length)
            if hi > lo:
                time[i, time_patches(lo - s, hi - s, ast_config)] = True
    out = np.zeros((n_max, ast_config.num_tokens), bool)
    out[:, 2:] = np.broadcast_to(time[:, None, :], (n_max, f, t)).reshape(n_max, f * t)
    return out


def utterance_frame_mask(utterances: Sequence[Sequence[float]] | None, clip_start: float,
                         clip_end: float, n_max: int, ast_config, *, windows: str = "utterances",
                         window_seconds: float = 2.0, no_utterances: str = "fixed",
                         window_starts: Sequence[float] = (0.0,)) -> np.ndarray:
    """(n_max, num_tokens) bool window masks of a clip [clip_start, clip_end) (file seconds)
    from its utterances ([[start, end], ...] file seconds)."""
    local = clip_windows(utterances, clip_start, clip_end, n_max, windows, window_seconds,
                         no_utterances)
    return window_token_mask(local, n_max, ast_config, window_starts)


def timestamps_text(windows: Sequence[Window], label: str = "Utterance") -> str:
    """'Utterance 1: 0.0-2.3 s; Utterance 2: 2.8-5.1 s.' ('' without windows)."""
    if not windows:
        return ""
    return "; ".join(f"{label} {i + 1}: {a:.1f}-{b:.1f} s" for i, (a, b) in enumerate(windows)) + "."


def with_timestamps(question: str, windows: Sequence[Window], label: str = "Utterance") -> str:
    """The instruction-aware prompt (AcoustEmo 3.4): the windows' timestamps, then the question."""
    return prompt_with(timestamps_text(windows, label), question)


def prompt_with(timestamps: str, question: str) -> str:
    """`timestamps` (a `timestamps_text`) on its own line before the question ('' adds nothing)."""
    return f"{timestamps}\n{question}" if timestamps else question


def utterance_inputs(config, utterances: Sequence[Sequence[float]] | None, clip_start: float,
                     clip_end: float, ast_config, window_starts: Sequence[float] = (0.0,)
                     ) -> tuple[np.ndarray | None, list[Window], str]:
    """For a kind="qformer" AudioAdapterConfig: (utterance_mask (N_max, T_a) bool or None
    without the utterance Q-Former, the windows, their prompt label "Utterance"|"Segment")."""
    if not config.utterance_qformer:
        return None, [], "Utterance"
    local = clip_windows(utterances, clip_start, clip_end, config.max_utterances,
                         config.windows, config.window_seconds, config.no_utterances)
    fixed = config.windows == "fixed" or not utterances_inside(utterances, clip_start, clip_end)
    mask = window_token_mask(local, config.max_utterances, ast_config, window_starts)
    return mask, local, "Segment" if fixed else "Utterance"


def utterances_inside(utterances: Sequence[Sequence[float]] | None, clip_start: float,
                      clip_end: float) -> int:
    """How many utterances overlap the clip [clip_start, clip_end)."""
    return sum(1 for s, e in (utterances or ()) if min(e, clip_end) > max(s, clip_start))


def window_notes(config, utterances: Sequence[Sequence[float]] | None, clip_start: float,
                 clip_end: float) -> tuple[str, ...]:
    """What the pipeline counts about a clip's windows: "utterances_fallback" (windows=
    "utterances" but none in the clip: `no_utterances` decides), "utterance_windows_dropped"
    (more windows than N_max)."""
    fallback = config.windows == "utterances" and not utterances_inside(utterances, clip_start,
                                                                       clip_end)
    every = clip_windows(utterances, clip_start, clip_end, sys.maxsize, config.windows,
                         config.window_seconds, config.no_utterances)
    return (("utterances_fallback",) if fallback else ()) + (
        ("utterance_windows_dropped",) if len(every) > config.max_utterances else ())


@dataclass(frozen=True)
class UtteranceSpec:
    """The host side of a kind="qformer" adapter with the utterance Q-Former: its config
    (N_max, windows, ...) and the AST's (grid, strides). Frozen and picklable, for the
    pipeline's worker processes."""
    adapter: Any     # AudioAdapterConfig (models/adapters.py)
    ast: Any         # ASTConfig (models/ast.py)

    @property
    def mask_shape(self) -> tuple[int, int]:
        """(N_max, T_a) of one clip's utterance_mask."""
        return self.adapter.max_utterances, self.ast.num_tokens

    @property
    def timestamps_key(self) -> str:
        """Names the settings that decide a clip's timestamps text (for caches of responses
        to prompts that carry it)."""
        a = self.adapter
        return f"ts{a.max_utterances}-{a.windows}-{a.window_seconds:g}s-{a.no_utterances}"

    def clip_inputs(self, utterances: Sequence[Sequence[float]] | None, clip_start: float,
                    clip_end: float, window_starts: Sequence[float] = (0.0,)) -> dict:
        """A clip [clip_start, clip_end) (file seconds) whose features average the AST windows
        starting at `window_starts` (seconds from clip_start): {"utterance_mask": (N_max, T_a)
        bool, "timestamps": the prompt's timestamps text ('' without windows), "notes": ...}."""
        mask, windows, label = utterance_inputs(self.adapter, utterances, clip_start, clip_end,
                                                self.ast, window_starts)
        return {"utterance_mask": mask, "timestamps": timestamps_text(windows, label),
                "notes": window_notes(self.adapter, utterances, clip_start, clip_end)}


def utterance_spec(adapter, ast) -> UtteranceSpec | None:
    """The `UtteranceSpec` of an adapter that reads utterance windows (kind="qformer" with the
    utterance Q-Former), else None (no utterance_mask, no timestamps)."""
    if adapter.kind == "qformer" and adapter.utterance_qformer:
        return UtteranceSpec(adapter, ast)
    return None
