"""Our fbank against transformers' ASTFeatureExtractor, resampling, and bad-audio errors.

The reference is pinned to ASTFeatureExtractor's NumPy path (`audio_utils.spectrogram` with
Kaldi mel filters), the one it takes without torchaudio: `is_speech_available` is patched to
False, so the test means the same thing whether or not torchaudio is installed.
"""
import warnings

import numpy as np
import pytest
from transformers.models.audio_spectrogram_transformer import \
    feature_extraction_audio_spectrogram_transformer as ast_fe

from vaemotion_jax import fbank as public_fbank
from vaemotion_jax.processing.fbank import (FRAME_LENGTH, LOG_FLOOR, AST_MEAN, AST_STD, fbank,
                                            fbank_batch, mel_matrix, num_frames, resample_audio)

SR = 16000


@pytest.fixture
def reference(monkeypatch):
    """ASTFeatureExtractor(max_length) -> callable(waveform) -> (max_length, 128), NumPy path."""
    monkeypatch.setattr(ast_fe, "is_speech_available", lambda: False)

    def make(max_length=1024):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "one mel filter has all zero values": filter 3, as ours
            extractor = ast_fe.ASTFeatureExtractor(max_length=max_length)
        assert hasattr(extractor, "mel_filters")  # the NumPy path was taken
        return lambda x: extractor(x, sampling_rate=SR, return_tensors="np").input_values[0]
    return make


def signal(kind: str, seconds: float, rate: int = SR) -> np.ndarray:
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    if kind == "noise":
        return np.random.default_rng(int(seconds * 100)).normal(0, 0.1, n).astype(np.float32)
    if kind == "tone":
        return (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    if kind == "chirp":  # sweeps 100 Hz -> 4 kHz: exercises every filter, loud and quiet bins
        return (0.3 * np.sin(2 * np.pi * (100 + 390 * t / 2) * t)).astype(np.float32)
    assert kind == "silence"
    return np.zeros(n, np.float32)


@pytest.mark.parametrize("seconds", [0.5, 10.24, 15.0])
@pytest.mark.parametrize("kind", ["noise", "tone", "silence", "chirp"])
def test_matches_ast_feature_extractor(reference, kind, seconds):
    x = signal(kind, seconds)
    want = reference()(x)
    got = fbank(x, SR)
    assert got.shape == want.shape == (1024, 128) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4
    frames = num_frames(len(x))
    assert frames == {0.5: 48, 10.24: 1022, 15.0: 1498}[seconds]
    pad = (0 - AST_MEAN) / (2 * AST_STD)  # zero padding happens before normalisation
    np.testing.assert_allclose(got[frames:], pad, rtol=1e-6)


def test_silence_is_the_log_floor_not_minus_infinity(reference):
    got = fbank(np.zeros(SR, np.float32), SR, normalize=False)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[:num_frames(SR)], np.log(LOG_FLOOR), rtol=1e-6)


@pytest.mark.parametrize("max_length", [100, 998, 2000])
def test_non_default_max_length(reference, max_length):
    x = signal("noise", 10.0)
    got = fbank(x, SR, max_length=max_length)
    assert got.shape == (max_length, 128)
    assert np.abs(got - reference(max_length)(x)).max() <= 1e-4


def test_shortest_clip_is_one_frame(reference):
    x = signal("noise", 1.0)[:FRAME_LENGTH]
    got = fbank(x, SR, max_length=16)
    assert np.abs(got - reference(16)(x)).max() <= 1e-4


def test_batch_equals_single_clips():
    clips = [signal("noise", 0.5), signal("tone", 3.0), signal("silence", 0.03)]
    batch = fbank_batch(clips, SR, max_length=300)
    assert batch.shape == (3, 300, 128)
    for row, clip in zip(batch, clips):
        np.testing.assert_array_equal(row, fbank(clip, SR, max_length=300))
    equal = np.stack([signal("noise", 1.0), signal("tone", 1.0)])
    np.testing.assert_array_equal(fbank_batch(equal, SR, max_length=120),
                                  fbank_batch(list(equal), SR, max_length=120))


def test_public_api_is_this_fbank():
    assert public_fbank is fbank


def test_filterbank_is_kaldi_mel():
    m = mel_matrix()
    assert m.shape == (257, 128)
    assert (m >= 0).all() and m.max() <= 1.0
    assert np.flatnonzero(m.max(axis=0) == 0).tolist() == [3]  # between FFT bins, as in Kaldi
    peaks = np.argmax(np.delete(m, 3, axis=1), axis=0)
    assert (np.diff(peaks) >= 0).all()  # centres rise with frequency


# --- resampling and channel layouts -----------------------------------------------------------

@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_tone_to_16k(rate):
    seconds = 0.5
    got = resample_audio(signal("tone", seconds, rate), rate)
    assert got.dtype == np.float32 and got.shape == (int(seconds * SR),)
    want = signal("tone", seconds, SR)
    inner = slice(200, -200)  # the FIR filter's edges
    assert np.abs(got[inner] - want[inner]).max() < 2e-3


@pytest.mark.parametrize("layout", ["samples_channels", "channels_samples"])
def test_stereo_is_downmixed_not_misread(layout):
    left = signal("tone", 0.5)
    right = signal("noise", 0.5)
    stereo = np.stack([left, right], axis=1 if layout == "samples_channels" else 0)
    mono = resample_audio(stereo, SR)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)
    np.testing.assert_allclose(fbank(stereo, SR), fbank((left + right) / 2, SR), atol=1e-6)


def test_other_rate_and_stereo_fbank_is_resampled():
    rate = 44100
    tone = signal("tone", 1.0, rate)
    stereo = np.stack([tone, tone])  # (channels, samples), as PyAV gives it
    got = fbank(stereo, rate)
    np.testing.assert_array_equal(got, fbank(resample_audio(stereo, rate), SR))
    want = fbank(signal("tone", 1.0, SR), SR)
    frames = slice(2, num_frames(SR) - 2)
    # the 440 Hz peak lands in the same mel bin as a native 16 kHz tone (a misread rate would
    # put it at 440 * 44100 / 16000 = 1213 Hz), and the loud bins agree closely
    assert np.argmax(got[frames].mean(0)) == np.argmax(want[frames].mean(0))
    loud = want[frames] > 0.5
    assert loud.sum() > 100
    assert np.abs(got[frames][loud] - want[frames][loud]).max() < 0.01


def test_integer_pcm_is_scaled():
    x = signal("tone", 0.5)
    pcm = np.round(x * 32767).astype(np.int16)
    np.testing.assert_allclose(resample_audio(pcm, SR), x, atol=1e-4)
    np.testing.assert_array_equal(fbank(pcm, SR), fbank(pcm.astype(np.float32) / 32768, SR))
    np.testing.assert_array_equal(resample_audio(np.array([0, 128, 255], np.uint8), SR),
                                  np.array([-1, 0, 127 / 128], np.float32))


def test_channel_axis_detection_and_override():
    x = np.random.default_rng(0).normal(size=(6, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="cannot tell the channel axis.*channel_axis"):
        resample_audio(x, SR)
    np.testing.assert_allclose(resample_audio(x, SR, channel_axis=0), x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(resample_audio(x, SR, channel_axis=1), x.mean(1), rtol=1e-6)
    with pytest.raises(ValueError, match="cannot tell the channel axis"):
        resample_audio(np.zeros((1000, 900), np.float32), SR)


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (np.zeros(0, np.float32), "audio is empty"),
    (np.zeros((0, 2), np.float32), "audio is empty"),
    (np.array([0.0, np.nan] + [0.0] * 500, np.float32), "1 non-finite samples.*index \\(1,\\)"),
    (np.array([np.inf] * 3 + [0.0] * 500, np.float32), "3 non-finite samples"),
    (np.zeros((2, 2, 500), np.float32), "must be 1-D .* or 2-D"),
    (np.zeros(399, np.float32), "shorter than one 25 ms window"),
    (np.zeros(500, np.complex64), "float or integer PCM"),
])
def test_bad_audio_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        fbank(bad, SR)


def test_bad_arguments_are_clear_errors():
    x = signal("noise", 0.1)
    with pytest.raises(ValueError, match="positive whole number of Hz"):
        fbank(x, 0)
    for rate in (22050.5, float("inf"), float("nan"), "16000", True, None):
        with pytest.raises(ValueError, match="positive whole number of Hz"):
            resample_audio(x, rate)
    assert resample_audio(x, np.int64(32000)).shape == (len(x) // 2,)
    with pytest.raises(ValueError, match="max_length must be positive"):
        fbank(x, SR, max_length=0)
    with pytest.raises(ValueError, match="no clips"):
        fbank_batch([], SR)
    with pytest.raises(ValueError, match="clip 1.*non-finite"):
        fbank_batch([x, np.full(800, np.nan, np.float32)], SR)
    with pytest.raises(ValueError, match="must be \\(clips, samples\\)"):
        fbank_batch(x, SR)
