"""Decoding a record's time window with PyAV: sampled RGB frames and 16 kHz mono audio.

Frames are sampled evenly over [start, end] (at a configured rate or a fixed count): frame i is
the picture shown at start + (i + 0.5) * (end - start) / T. Audio is resampled to 16 kHz mono
float32 (channels averaged) and cut to exactly round((end - start) * 16000) samples of the same window.

Every failure raises `BadExample(path, reason, kind)` with a precise reason, so the pipeline can
skip and count it (or stop, in strict mode) instead of failing deep inside a stack:
  missing       the file does not exist
  unreadable    not a media file, or its header is corrupt (e.g. an mp4 cut before its index)
  no_video      the file has no video stream but the picture is needed
  no_audio      the file has no audio stream but the sound is needed
  too_short     the file is shorter than the requested window
  truncated     the header promises more than the file holds, or decoding stops early
  corrupt       the decoder failed inside the stream
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
DEFAULT_FPS = 2.0


class BadExample(Exception):
    """An example that cannot be used; `str()` is "path: reason"."""

    def __init__(self, path: str, reason: str, kind: str = "bad"):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.kind = path, reason, kind

    def __reduce__(self):  # keep the three fields when pickled across worker processes
        return (BadExample, (self.path, self.reason, self.kind))


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds; durations in seconds (None if the file does not say)."""

    path: str
    video_duration: float | None
    audio_duration: float | None
    has_video: bool
    has_audio: bool
    video_fps: float | None = None
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None


@dataclass(frozen=True)
class DecodeOptions:
    """Which streams to decode and how to sample frames: at `fps` (default 2, Qwen2.5-VL's rate,
    at most `max_frames` if given) or a fixed `num_frames`, not both.

    `tolerance` (seconds) is how far a stream may fall short of the window (encoder padding,
    rounding of the last frame) before the example is rejected; the gap is filled by repeating
    the last frame or with silence.
    """

    fps: float | None = None
    max_frames: int | None = None
    num_frames: int | None = None
    video: bool = True
    audio: bool = True
    tolerance: float = 0.1

    def __post_init__(self):
        if (self.fps is not None or self.max_frames is not None) and self.num_frames is not None:
            raise ValueError("DecodeOptions: give fps (and max_frames) or num_frames, not both")
        if self.fps is None and self.num_frames is None:
            object.__setattr__(self, "fps", DEFAULT_FPS)
        if not (self.video or self.audio):
            raise ValueError("DecodeOptions: decode at least one of video and audio")


@dataclass
class Clip:
    """A decoded window: frames (T, H, W, 3) uint8 at `fps`, audio (N,) float32 at 16 kHz."""

    frames: np.ndarray | None
    fps: float | None
    audio: np.ndarray | None
    start: float
    end: float


def _open(path: str):
    import av

    if not os.path.exists(path):
        raise BadExample(path, "file not found", "missing")
    try:
        return av.open(path)
    except av.error.FFmpegError as e:
        raise BadExample(path, f"unreadable: not a media file or its header is corrupt ({_msg(e)})",
                         "unreadable") from None


def _msg(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def _stream_duration(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return None


def probe(path: str) -> MediaInfo:
    """Stream layout and durations of a media file, from its header (no decoding)."""
    with _open(path) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        return MediaInfo(
            path=path,
            video_duration=_stream_duration(v, c) if v else None,
            audio_duration=_stream_duration(a, c) if a else None,
            has_video=v is not None,
            has_audio=a is not None,
            video_fps=float(v.average_rate) if v is not None and v.average_rate else None,
            width=v.codec_context.width if v is not None else None,
            height=v.codec_context.height if v is not None else None,
            sample_rate=a.codec_context.sample_rate if a is not None else None,
        )


def sample_times(start: float, end: float, fps: float | None = None,
                 num_frames: int | None = None, max_frames: int | None = None) -> np.ndarray:
    """Times (T,) at which to take frames: centres of T equal slices of [start, end].

    With `fps`, T = max(1, floor((end - start) * fps)), at most `max_frames`; with
    `num_frames`, T = num_frames.
    """
    span = end - start
    count = num_frames if num_frames is not None else max(1, int(math.floor(span * fps + 1e-6)))
    if num_frames is None and max_frames is not None:
        count = min(count, max_frames)
    return start + (np.arange(count) + 0.5) * (span / count)


def _seek(container, stream, seconds: float):
    if seconds > 0:
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True)


def _decoded(container, stream, path: str, what: str, keep: set[int] | None = None):
    """Yields the stream's frames; a decoding error becomes `BadExample`, "truncated" when the
    failing data reaches the end of the file, else "corrupt". With `keep` (presentation
    timestamps), a packet outside it is decoded only if other frames refer to it: skipping a
    non-reference frame leaves every other frame bit-identical."""
    import av

    size, data_end, t = os.path.getsize(path), 0, 0.0
    try:
        for packet in container.demux(stream):
            if packet.pos is not None and packet.pos >= 0:
                data_end = max(data_end, packet.pos + packet.size)
            if keep is not None:
                skip = packet.pts is not None and packet.pts not in keep
                stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            for frame in packet.decode():
                t = frame.time if frame.time is not None else t
                yield frame
    except av.error.FFmpegError as e:
        if data_end >= size:
            raise BadExample(path, f"truncated: the file ends inside the {what} data after {t:.2f} s "
                             f"({_msg(e)})", "truncated") from None
        raise BadExample(path, f"corrupt {what} data after {t:.2f} s ({_msg(e)})", "corrupt") from None


def shown_pts(container, stream, times: np.ndarray) -> set[int] | None:
    """Presentation timestamps of the frames on screen at `times` (the last frame at or before
    each, else the first), read from the packets without decoding; None when a packet has no
    timestamp or the demuxer fails (then every frame is decoded). Leaves the stream at its start."""
    import av

    try:
        pts = []
        for packet in container.demux(stream):
            if packet.size == 0:      # the demuxer's end-of-stream marker
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
    except av.error.FFmpegError:
        return None
    finally:
        container.seek(0, stream=stream, backward=True)
    if not pts:
        return None
    pts = np.sort(np.asarray(pts))
    ticks = np.floor(np.asarray(times) / stream.time_base + 1e-6 / stream.time_base)
    return {int(pts[max(i - 1, 0)]) for i in np.searchsorted(pts, ticks, side="right")}


def decode_frames(path: str, times: np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """The frames shown at `times` (seconds, ascending) -> (T, H, W, 3) uint8 RGB. Frames no
    sample shows and no other frame refers to are not decoded (`shown_pts`)."""
    with _open(path) as c:
        if not c.streams.video:
            raise BadExample(path, "no video stream", "no_video")
        stream = c.streams.video[0]
        frame_step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.04
        keep = shown_pts(c, stream, times)
        _seek(c, stream, float(times[0]))
        out: list[np.ndarray | None] = [None] * len(times)
        k, prev = 0, None
        for frame in _decoded(c, stream, path, "video", keep):
            if frame.time is None:
                continue
            if frame.time > times[k] + 1e-6:  # times[k] falls before this frame: `prev` was shown
                rgb = (prev if prev is not None else frame).to_ndarray(format="rgb24")
                while k < len(times) and frame.time > times[k] + 1e-6:
                    out[k] = rgb
                    k += 1
                if k == len(times):
                    break
            prev = frame
        if k < len(times):
            if prev is None:
                raise BadExample(path, "truncated: the video stream holds no decodable frame", "truncated")
            shown_until = prev.time + frame_step
            if times[-1] > shown_until + tolerance:
                raise BadExample(path, f"truncated: video frames end at {shown_until:.2f} s, "
                                 f"a frame is needed at {times[-1]:.2f} s", "truncated")
            rgb = prev.to_ndarray(format="rgb24")
            out[k:] = [rgb] * (len(times) - k)
    return np.stack(out)


def decode_audio(path: str, start: float, end: float, tolerance: float = 0.1) -> np.ndarray:
    """Audio of [start, end] resampled to 16 kHz mono -> (round((end - start) * 16000),) float32."""
    import av

    want = int(round((end - start) * SAMPLE_RATE))
    with _open(path) as c:
        if not c.streams.audio:
            raise BadExample(path, "no audio stream", "no_audio")
        stream = c.streams.audio[0]
        _seek(c, stream, start)
        # Keep the channels through resampling and average them afterwards (as torchaudio and
        # librosa make mono); FFmpeg's own downmix would raise a correlated stereo pair by 3 dB.
        resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        chunks, t0, got = [], None, 0
        for frame in _decoded(c, stream, path, "audio"):
            if t0 is None:
                t0 = frame.time if frame.time is not None else 0.0
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().mean(axis=0))
                got += out.samples
            if t0 + got / SAMPLE_RATE >= end + 0.05:
                break
        chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(None)]
    if t0 is None:
        raise BadExample(path, "truncated: the audio stream holds no decodable frame", "truncated")
    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    first = int(round((start - t0) * SAMPLE_RATE))
    if first < 0:  # the stream starts a little after the window: pad with silence
        if -first > tolerance * SAMPLE_RATE:
            raise BadExample(path, f"audio starts at {t0:.2f} s, after the window start {start:.2f} s",
                             "too_short")
        audio, first = np.concatenate([np.zeros(-first, np.float32), audio]), 0
    window = audio[first:first + want]
    missing = want - len(window)
    if missing > tolerance * SAMPLE_RATE:
        have_until = t0 + len(audio) / SAMPLE_RATE
        raise BadExample(path, f"truncated: audio ends at {have_until:.2f} s, the window ends at "
                         f"{end:.2f} s", "truncated")
    if missing > 0:
        window = np.concatenate([window, np.zeros(missing, np.float32)])
    return window


def _window(record, info_by_path: dict[str, MediaInfo], need: list[tuple[str, str]], tolerance: float,
            also: list[tuple[str, str]] = ()):
    """(start, end) of a record: its own or the whole file, checked against stream durations.

    `also`: streams not decoded but present in the record's files; they bound the window too,
    so decoding only the audio of a video file gives the same window as decoding both."""
    start = record.start or 0.0
    durations = []
    for path, kind in need:
        info = info_by_path[path]
        if kind == "video" and not info.has_video:
            raise BadExample(path, "no video stream", "no_video")
        if kind == "audio" and not info.has_audio:
            raise BadExample(path, "no audio stream", "no_audio")
    for path, kind in list(need) + list(also):
        info = info_by_path[path]
        d = info.video_duration if kind == "video" else info.audio_duration
        if d is not None and (info.has_video if kind == "video" else info.has_audio):
            durations.append((d, path, kind))
    end = record.end
    if end is None:
        if not durations:
            raise BadExample(need[0][0], "the file does not say how long it is; give `end`", "unreadable")
        end = min(d for d, _, _ in durations)
    for d, path, kind in durations:
        if (path, kind) in need and end > d + tolerance:
            raise BadExample(path, f"clip shorter than the window: {kind} lasts {d:.2f} s, the window "
                             f"is {start:.2f}-{end:.2f} s", "too_short")
    if end <= start:
        raise BadExample(need[0][0], f"empty window {start:.2f}-{end:.2f} s", "too_short")
    return start, end


def _needed(record, options: DecodeOptions) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(streams to decode, the record's other streams) as (path, kind) pairs."""
    need, also = [], []
    for kind, path, wanted in (("video", record.video_path, options.video),
                               ("audio", record.audio_path, options.audio)):
        if wanted and path is None:
            raise BadExample(record.where, f"no {kind} file in the record", "missing")
        if wanted:
            need.append((path, kind))
        elif path is not None:
            also.append((path, kind))
    return need, also


def clip_window(record, options: DecodeOptions) -> tuple[float, float]:
    """(start, end) seconds the record's clip covers, checked against its files' headers."""
    need, also = _needed(record, options)
    infos = {path: probe(path) for path in {p for p, _ in need}}
    for path, _ in also:  # a file that cannot be read only matters if it is decoded
        if path not in infos and os.path.exists(path):
            try:
                infos[path] = probe(path)
            except BadExample:
                pass
    also = [(p, k) for p, k in also if p in infos]
    return _window(record, infos, need, options.tolerance, also)


def decode_record(record, options: DecodeOptions) -> Clip:
    """Decodes the streams `options` asks for over the record's window (see module docstring)."""
    start, end = clip_window(record, options)
    frames = fps = audio = None
    if options.video:
        times = sample_times(start, end, options.fps, options.num_frames, options.max_frames)
        frames = decode_frames(record.video_path, times, options.tolerance)
        fps = len(times) / (end - start)
    if options.audio:
        audio = decode_audio(record.audio_path, start, end, options.tolerance)
    return Clip(frames=frames, fps=fps, audio=audio, start=start, end=end)
