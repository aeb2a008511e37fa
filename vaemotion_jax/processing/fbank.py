"""Kaldi-compatible log-mel filterbank features for AST, and resampling to 16 kHz mono (NumPy).

`fbank` reproduces transformers' `ASTFeatureExtractor` (its NumPy path, the one that runs
without torchaudio): frames of 25 ms every 10 ms with Kaldi's `snip_edges` (no padding at the
ends), per-frame DC removal, preemphasis 0.97, a symmetric Hann window, a 512-point power
spectrum, 128 triangular filters on Kaldi's mel scale from 20 Hz to Nyquist, natural log with
Kaldi's floor (float32 epsilon, which is what silence gets), zero padding or truncation to
`max_length` frames, then AST's AudioSet normalisation (x - mean) / (2 * std).

Everything is vectorised: frames are strided views of the signal, a clip's frames go through
one `rfft` and one matmul with a cached filterbank, and frames past `max_length` are never
computed. The computation runs in float64, as the reference does (a float32 FFT moves
low-energy bins by up to 1e-2 in log units), and returns float32.

At 16 kHz with a 512-point FFT, mel filter 3 (63 to 93 Hz) falls between FFT bins, so that
feature is always log(floor), in the reference (and torchaudio's Kaldi fbank) as here.
"""
from __future__ import annotations

from functools import lru_cache
from math import gcd
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16000
FRAME_LENGTH = 400       # 25 ms at 16 kHz
FRAME_SHIFT = 160        # 10 ms at 16 kHz
FFT_LENGTH = 512         # next power of two above FRAME_LENGTH
NUM_MEL_BINS = 128
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
LOG_FLOOR = float(np.finfo(np.float32).eps)  # Kaldi's epsilon: log(0 energy) -> log(1.19e-7)
AST_MEAN = -4.2677393    # AudioSet statistics of the released AST checkpoints
AST_STD = 4.5689974
MAX_CHANNELS = 8         # a 2-D array's axis of at most this size may be read as channels


# --- resampling and validation --------------------------------------------------------------

def _as_float(waveform, what: str) -> np.ndarray:
    """Any array-like of float or integer PCM -> float64 in [-1, 1] (integers are scaled)."""
    x = np.asarray(waveform)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2  # 0 for signed, 128 for uint8
        return (x.astype(np.float64) - mid) / (int(info.max) + 1 - mid)
    if x.dtype.kind != "f":
        raise ValueError(f"{what}: audio must be float or integer PCM, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def _check_samples(x: np.ndarray, what: str) -> None:
    if x.size == 0:
        raise ValueError(f"{what}: audio is empty (shape {x.shape})")
    bad = ~np.isfinite(x)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), x.shape)
        raise ValueError(f"{what}: audio has {int(bad.sum())} non-finite samples (NaN or inf), "
                         f"the first at index {tuple(int(i) for i in first)}")


def _channel_axis(shape: tuple[int, int], channel_axis: int | None, what: str) -> int:
    """Which axis of a 2-D array holds the channels (see `resample_audio`)."""
    if channel_axis is not None:
        if channel_axis not in (0, 1, -1, -2):
            raise ValueError(f"{what}: channel_axis must be 0 or 1 for 2-D audio, got {channel_axis}")
        return channel_axis % 2
    small = [ax for ax in (0, 1) if shape[ax] <= MAX_CHANNELS]
    if len(small) != 1:
        raise ValueError(
            f"{what}: cannot tell the channel axis of audio with shape {shape} (exactly one axis "
            f"must have at most {MAX_CHANNELS} entries); pass channel_axis=0 for (channels, "
            f"samples) or channel_axis=1 for (samples, channels)")
    return small[0]


def _sample_rate(rate, what: str) -> int:
    try:
        value = float(rate)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(rate, (bool, str)) or not (value > 0 and value.is_integer()):
        raise ValueError(f"{what}: sample rate must be a positive whole number of Hz, got {rate!r}")
    return int(value)


def resample_audio(waveform, sample_rate: int, target_rate: int = SAMPLE_RATE,
                   channel_axis: int | None = None) -> np.ndarray:
    """Any rate and channel layout -> mono float32 at `target_rate`, shape (n',).

    waveform: (n,) mono, or 2-D with channels on one axis: (n, channels) as soundfile returns
      it, or (channels, n) as PyAV returns it. Unless `channel_axis` says which, the channel axis
      is the one axis with at most 8 entries; when both or neither qualify it is an error.
      Float input is taken as is (nominally in [-1, 1]); integer PCM is scaled to [-1, 1].
    Channels are averaged; the rate is changed by polyphase filtering (scipy's `resample_poly`,
    Kaiser-windowed FIR) at the exact ratio target_rate / sample_rate.
    Raises ValueError for empty, non-finite or 3-D+ audio and for a non-integral sample rate.
    """
    what = "resample_audio"
    sample_rate, target_rate = _sample_rate(sample_rate, what), _sample_rate(target_rate, what)
    x = _as_float(waveform, what)
    if x.ndim not in (1, 2):
        raise ValueError(f"{what}: audio must be 1-D (samples) or 2-D (samples and channels), "
                         f"got shape {x.shape}")
    _check_samples(x, what)
    if x.ndim == 2:
        x = x.mean(axis=_channel_axis(x.shape, channel_axis, what))
    if sample_rate != target_rate:
        from scipy.signal import resample_poly  # imported here: only resampling needs scipy
        g = gcd(sample_rate, target_rate)
        x = resample_poly(x, target_rate // g, sample_rate // g)
    return x.astype(np.float32)


# --- filterbank -----------------------------------------------------------------------------

def _kaldi_mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq, np.float64) / 700.0)


@lru_cache(maxsize=8)
def mel_matrix(num_mel_bins: int = NUM_MEL_BINS, sample_rate: int = SAMPLE_RATE,
               fft_length: int = FFT_LENGTH, low_freq: float = LOW_FREQ) -> np.ndarray:
    """(fft_length // 2 + 1, num_mel_bins) float64 triangles, linear in Kaldi mel, up to Nyquist."""
    edges = np.linspace(_kaldi_mel(low_freq), _kaldi_mel(sample_rate / 2), num_mel_bins + 2)
    bins = _kaldi_mel(np.arange(fft_length // 2 + 1) * sample_rate / fft_length)[:, None]
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins - left) / (center - left)
    falling = (right - bins) / (right - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def _hann(length: int = FRAME_LENGTH) -> np.ndarray:
    """Kaldi's "hanning": the symmetric Hann window 0.5 - 0.5 cos(2 pi n / (N - 1))."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / (length - 1))
    w.setflags(write=False)
    return w


def num_frames(num_samples: int) -> int:
    """Frames Kaldi's snip_edges framing gets from `num_samples` at 16 kHz (before padding)."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def _windowed_frames(wave: np.ndarray, max_length: int) -> np.ndarray:
    """(n,) float64 -> (min(num_frames(n), max_length), 400): DC removed, preemphasized, windowed.

    Per frame, DC removal then preemphasis equals preemphasis of the raw signal minus
    (1 - 0.97) * the frame mean (the first sample: (1 - 0.97) * (x0 - mean)), so the signal is
    preemphasized once and framed as strided views; only the output is materialised.
    """
    count = min(num_frames(wave.shape[0]), max_length)
    used = wave[:FRAME_LENGTH + FRAME_SHIFT * (count - 1)]
    emphasized = np.empty_like(used)
    emphasized[1:] = used[1:] - PREEMPHASIS * used[:-1]
    emphasized[0] = 0.0  # overwritten below: each frame's first sample has no predecessor
    raw = sliding_window_view(used, FRAME_LENGTH)[::FRAME_SHIFT]
    mean = raw.mean(axis=-1, keepdims=True)
    out = sliding_window_view(emphasized, FRAME_LENGTH)[::FRAME_SHIFT] - (1.0 - PREEMPHASIS) * mean
    out[:, 0] = (1.0 - PREEMPHASIS) * (raw[:, 0] - mean[:, 0])
    out *= _hann()
    return out


def _log_mel(windowed: np.ndarray) -> np.ndarray:
    """(F, 400) float64 windowed frames -> (F, 128) float64 log mel energies."""
    spectrum = np.fft.rfft(windowed, n=FFT_LENGTH, axis=-1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    return np.log(np.maximum(power @ mel_matrix(), LOG_FLOOR))


def _mono_16k(waveform, sample_rate: int, what: str) -> np.ndarray:
    """Validated 16 kHz mono float64; resampled or downmixed only when needed."""
    x = np.asarray(waveform)
    if x.ndim != 1 or _sample_rate(sample_rate, what) != SAMPLE_RATE or x.dtype.kind != "f":
        x = resample_audio(x, sample_rate)
    else:
        _check_samples(x, what)
    x = x.astype(np.float32, copy=False)  # the reference rounds its input to float32
    if x.shape[0] < FRAME_LENGTH:
        raise ValueError(f"{what}: audio of {x.shape[0]} samples at 16 kHz is shorter than one "
                         f"25 ms window ({FRAME_LENGTH} samples)")
    return x.astype(np.float64)


def fbank_batch(waveforms: Sequence | np.ndarray, sample_rate: int, max_length: int = 1024,
                normalize: bool = True) -> np.ndarray:
    """Clips -> (B, max_length, 128) float32 AST input values.

    waveforms: a (B, n) array of mono clips, or a sequence of clips of any lengths, each
      accepted in any layout `resample_audio` takes. Each clip's frames go through one FFT
      (measured faster on CPU than one FFT over the whole batch, whose arrays leave the cache).
    """
    if max_length < 1:
        raise ValueError(f"fbank: max_length must be positive, got {max_length}")
    if isinstance(waveforms, np.ndarray) and waveforms.ndim != 2:
        raise ValueError(f"fbank_batch: an array batch must be (clips, samples), got shape "
                         f"{waveforms.shape}; use fbank for a single clip")
    if len(waveforms) == 0:
        raise ValueError("fbank_batch: the batch holds no clips")
    out = np.zeros((len(waveforms), max_length, NUM_MEL_BINS), np.float32)  # pad 0 before norm
    for i, waveform in enumerate(waveforms):
        clip = _mono_16k(waveform, sample_rate, f"fbank (clip {i})")
        log_mel = _log_mel(_windowed_frames(clip, max_length))
        out[i, :len(log_mel)] = log_mel
    if normalize:
        out = (out - np.float32(AST_MEAN)) / np.float32(2 * AST_STD)
    return out


def fbank(waveform, sample_rate: int, max_length: int = 1024, normalize: bool = True) -> np.ndarray:
    """One clip -> (max_length, 128) float32, equal to `ASTFeatureExtractor()(x).input_values[0]`.

    waveform: float audio (any rate, mono or 2-D multichannel; see `resample_audio`); it is
      resampled to 16 kHz mono first when it is not already. At least 25 ms long.
    max_length: frames kept; shorter clips are zero-padded (before normalisation), longer ones
      truncated. normalize=False returns the raw log mel energies.
    """
    return fbank_batch([waveform], sample_rate, max_length, normalize)[0]
