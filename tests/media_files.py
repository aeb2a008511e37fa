"""Real media files for data tests: good clips with known content, and broken ones.

Frame i of a clip made here is a flat grey of level `grey(i)`, so a test can tell which frames
the decoder picked; the soundtrack is a sine of `tone` Hz.
"""
from __future__ import annotations

import os

import av
import numpy as np
import soundfile


def grey(i: int) -> int:
    """Grey level of frame i (distinct for the first 19 frames, then repeating)."""
    return 20 + 12 * (i % 19)


def make_mp4(path: str, seconds: float = 2.0, fps: int = 8, size: tuple[int, int] = (48, 64),
             audio_rate: int | None = 16000, channels: int = 1, tone: float = 440.0,
             faststart: bool = False, keyframe_every: int | None = None,
             loud_from: float | None = None) -> str:
    """Writes an H.264 (+ AAC unless `audio_rate` is None) mp4; returns its path.

    The sine has amplitude 0.3, or 0.1 before and 0.5 from `loud_from` seconds on.
    """
    n = int(round(seconds * fps))
    options = {"movflags": "+faststart"} if faststart else {}
    codec = {"threads": "1"}
    if keyframe_every:
        codec.update(g=str(keyframe_every), keyint_min=str(keyframe_every), sc_threshold="0")
    with av.open(path, "w", format="mp4", options=options) as c:
        v = c.add_stream("libx264", rate=fps, options=codec)
        v.height, v.width = size
        v.pix_fmt = "yuv420p"
        a = None
        if audio_rate is not None:
            a = c.add_stream("aac", rate=audio_rate, layout="mono" if channels == 1 else "stereo")
        for i in range(n):
            frame = np.full((*size, 3), grey(i), np.uint8)
            c.mux(v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(v.encode())
        if a is not None:
            t = np.arange(int(round(seconds * audio_rate))) / audio_rate
            amplitude = 0.3 if loud_from is None else np.where(t < loud_from, 0.1, 0.5)
            wave = (amplitude * np.sin(2 * np.pi * tone * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([wave] * channels), format="fltp",
                                               layout="mono" if channels == 1 else "stereo")
            frame.sample_rate, frame.pts = audio_rate, 0
            c.mux(a.encode(frame))
            c.mux(a.encode())
    return path


def make_wav(path: str, seconds: float = 1.0, rate: int = 22050, tone: float = 330.0) -> str:
    """Writes a mono sine as .wav/.flac (soundfile) or .mp3 (PyAV's libmp3lame); returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32)
    if not path.endswith(".mp3"):
        soundfile.write(path, wave, rate)
        return path
    with av.open(path, "w") as c:
        stream = c.add_stream("libmp3lame", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        c.mux(stream.encode(frame))
        c.mux(stream.encode())
    return path


def truncate(src: str, dst: str, fraction: float) -> str:
    """Copies the first `fraction` of a file's bytes, as an interrupted download would."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return dst


def random_bytes(path: str, n: int = 4096, seed: int = 0) -> str:
    with open(path, "wb") as f:
        f.write(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * rate / len(wave))


def broken_set(folder: str) -> dict[str, str]:
    """One good clip and one file for each way a file can be bad, keyed by the expected kind."""
    good = make_mp4(os.path.join(folder, "good.mp4"))
    fast = make_mp4(os.path.join(folder, "faststart.mp4"), faststart=True)
    return {
        "good": good,
        "unreadable": random_bytes(os.path.join(folder, "noise.mp4")),
        "unreadable_cut": truncate(good, os.path.join(folder, "cut_index.mp4"), 0.6),
        "truncated": truncate(fast, os.path.join(folder, "cut_data.mp4"), 0.5),
        "no_audio": make_mp4(os.path.join(folder, "silent.mp4"), audio_rate=None),
        "missing": os.path.join(folder, "not_there.mp4"),
    }
