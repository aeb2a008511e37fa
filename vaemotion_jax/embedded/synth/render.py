"""Rendering a clip spec: frames (an object over a background), the melody, the mp4 file."""
from __future__ import annotations

import os

import numpy as np

from vaemotion_jax.embedded.synth.factors import (MODE, NOTES_PER_SECOND, PEAK, RGB, SCALE,
                                                  SPEED_PX_PER_S, TIMBRE, TONIC_HZ, ClipSpec,
                                                  WorldConfig)


# ---------------------------------------------------------------- rendering

def _bounce(x0: float, velocity: float, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions (T,) of a point moving at `velocity` between walls lo and hi, reflecting."""
    span = hi - lo
    u = np.mod(x0 - lo + velocity * t, 2 * span)
    return lo + np.where(u <= span, u, 2 * span - u)


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # a little larger than r: its area is the smallest of the four
        angles = np.deg2rad([-90, 30, 150])
        return [(cx + 1.15 * r * np.cos(a), cy + 1.15 * r * np.sin(a)) for a in angles]
    if shape == "star":
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return [(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles)]
    raise ValueError(f"unknown shape {shape!r}")


def render_frames(spec: ClipSpec, cfg: WorldConfig) -> np.ndarray:
    """The clip's pictures -> (fps * seconds, height, width, 3) uint8."""
    from PIL import Image, ImageDraw

    n = int(round(cfg.fps * cfg.seconds))
    t = np.arange(n) / cfg.fps
    speed = SPEED_PX_PER_S[spec.picture["motion"]]
    r = spec.radius
    xs = _bounce(spec.position[0], speed * np.cos(spec.angle), t, r, cfg.width - r)
    ys = _bounce(spec.position[1], speed * np.sin(spec.angle), t, r, cfg.height - r)
    background = tuple(int(np.clip(spec.grey + d, 0, 255)) for d in spec.tint)
    dim = 0.75 if spec.picture["brightness"] == "dark" else 1.0
    colour = tuple(int(c * dim) for c in RGB[spec.picture["colour"]])
    frames = np.empty((n, cfg.height, cfg.width, 3), np.uint8)
    for k in range(n):
        image = Image.new("RGB", (cfg.width, cfg.height), background)
        draw = ImageDraw.Draw(image)
        if spec.picture["shape"] == "circle":
            draw.ellipse([xs[k] - r, ys[k] - r, xs[k] + r, ys[k] + r], fill=colour)
        else:
            draw.polygon(_shape_points(spec.picture["shape"], xs[k], ys[k], r), fill=colour)
        frames[k] = np.asarray(image)
    return frames


def tone(timbre: str, freq: float, t: np.ndarray, nyquist: float) -> np.ndarray:
    """One note's waveform (len(t),) with unit-ish peak, band-limited below `nyquist`."""
    if timbre == "bell":
        partials = ((1.0, 1.0, 3.0), (2.76, 0.6, 5.0), (5.40, 0.4, 8.0), (8.93, 0.25, 12.0))
        return sum(a * np.exp(-d * t) * np.sin(2 * np.pi * m * freq * t)
                   for m, a, d in partials if m * freq < nyquist) / 2.25
    if timbre == "sine":
        harmonics = [(1, 1.0)]
    else:
        step = 2 if timbre == "square" else 1
        harmonics = [(h, 1.0 / h) for h in range(1, int(nyquist / freq) + 1, step)]
    wave = sum(a * np.sin(2 * np.pi * h * freq * t) for h, a in harmonics)
    return wave / sum(a for _, a in harmonics[:3])


def render_audio(spec: ClipSpec, cfg: WorldConfig) -> np.ndarray:
    """The clip's soundtrack -> (seconds * sample_rate,) float32 mono in [-1, 1]."""
    sr = cfg.sample_rate
    total = int(round(cfg.seconds * sr))
    sound = spec.sound
    rng = np.random.default_rng(spec.melody_seed)
    scale = SCALE[MODE[sound["brightness"]]]
    tonic = TONIC_HZ[sound["colour"]] * 2 ** (spec.tonic_shift / 12)
    note_len = int(round(sr / NOTES_PER_SECOND[sound["motion"]]))
    triad = (0, 2, 4)  # scale positions of root, third and fifth: they make the mode audible
    out = np.zeros(total, np.float64)
    for start in range(0, total, note_len):
        n = min(note_len, total - start)
        degree = triad[rng.integers(3)] if rng.random() < 0.7 else int(rng.integers(len(scale)))
        t = np.arange(n) / sr
        attack, release = np.minimum(1.0, t / 0.01), np.minimum(1.0, (n - 1 - np.arange(n)) / (0.02 * sr))
        envelope = attack * np.exp(-1.5 * t) * release
        pitch = tonic * 2 ** (scale[degree] / 12)
        out[start:start + n] += envelope * tone(TIMBRE[sound["shape"]], pitch, t, sr / 2)
    t = np.arange(total) / sr
    chord = sum(np.sin(2 * np.pi * tonic * 2 ** (scale[d] / 12) * t) for d in triad) / 3
    out = 0.75 * out + 0.25 * chord * np.minimum(1.0, t / 0.05)
    out *= PEAK[sound["brightness"]] / max(1e-9, np.abs(out).max())
    return out.astype(np.float32)


def write_mp4(path: str, frames: np.ndarray, fps: int, audio: np.ndarray, sample_rate: int) -> None:
    """Writes frames (T, H, W, 3) uint8 and audio (N,) float32 as H.264 + AAC, bit-exactly."""
    import av

    tmp = f"{path}.tmp{os.getpid()}"
    with av.open(tmp, "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        # x264's macroblock-tree rate control (mbtree) made the bytes depend on what the process
        # had encoded before (an uninitialised read, we believe); without it they are reproducible.
        video = container.add_stream("libx264", rate=fps, options={
            "crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"})
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        chunk = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, 0
        container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    os.replace(tmp, path)


def render_clip(args: tuple[ClipSpec, WorldConfig, str]) -> str:
    """Renders and writes one clip under `out_dir`; returns its path (a worker task)."""
    spec, cfg, out_dir = args
    path = os.path.join(out_dir, spec.file)
    write_mp4(path, render_frames(spec, cfg), cfg.fps, render_audio(spec, cfg), cfg.sample_rate)
    return path
