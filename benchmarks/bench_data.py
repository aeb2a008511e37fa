"""Decoded and preprocessed clips per second per worker, on the synthetic world and on a clip
of the paper's size.

Stages, each timed in this process over the same clips (best of `--repeats` passes):
  naive decode   decode every frame to RGB, then pick the sampled ones (the reference)
  decode         ours: PyAV, only the sampled frames are converted (frames nothing refers to
                 are not decoded), audio resampled to 16 kHz
  + preprocess   decode, Qwen2.5-VL video patches and the AST fbank, at the tiny preset's sizes
                 (112x112, 208 fbank frames) and at the paper's (512x512 -> 504x504, 1024 frames)
then the whole Grain pipeline with 0, 1 and 2 worker processes (clips/s and clips/s per worker).

Real size: a 10 s 512x512 clip at 25 fps with 16 kHz audio (x264 as the synthetic world
encodes it: B-frames, one keyframe), made here, read with the 7B preset's media settings (8
frames at 2 fps, 3 AST windows): the naive path (every frame to RGB, then the same
preprocessing: PIL bicubic, patches, fbank) against ours, in clips per CPU-second (= clips/s per
core: decoder threads are counted), and the cores that feed 8 GPUs at `--step_seconds` per
32-clip step (the planner's estimate for stage1_7b:gpu8x24).

    python benchmarks/bench_data.py [--world DIR] [--clips 48] [--repeats 2] [--workers 0,1,2]
        [--step_seconds 9.65]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from vaemotion_jax.embedded import synth
from vaemotion_jax.data.decode import (Clip, DecodeOptions, clip_window, decode_audio,
                                      decode_record, sample_times)
from vaemotion_jax.data.manifest import read_manifest
from vaemotion_jax.data.media import MediaSpec, clip_inputs
from vaemotion_jax.data.pipeline import BatchIterator, ExampleFn, PipelineConfig

SIZES = {
    "tiny": MediaSpec(num_frames=4, resized_hw=(112, 112), min_pixels=28 * 28,
                      max_pixels=112 * 112, audio_frames=208),
    # the paper's frame size and 2 fps (the world's 3 s clips give 6 frames)
    "paper": MediaSpec(fps=2.0, max_frames=6, resized_hw=(512, 512), audio_frames=1024),
}


def naive_decode(record, options: DecodeOptions):
    """Every frame to RGB, then the ones nearest the sample times; audio as ours."""
    import av

    start, end = clip_window(record, options)
    times = sample_times(start, end, options.fps, options.num_frames, options.max_frames)
    with av.open(record.video_path) as c:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    stamps = np.array([t for t, _ in decoded])
    frames = np.stack([decoded[int(np.searchsorted(stamps, t, side="right")) - 1][1] for t in times])
    return frames, decode_audio(record.audio_path, start, end)


# The 7B presets' media: 8 frames at 2 fps of 512x512 (-> 504x504), 3 AST windows of 1024 frames.
PAPER_MEDIA = MediaSpec(fps=2.0, max_frames=8, resized_hw=(512, 512), audio_frames=1024,
                        audio_windows=3)


def real_size_clip(folder: str, seconds: int = 10, fps: int = 25, size: int = 512) -> str:
    """Writes a `seconds` s clip of `size` x `size` at `fps` with 16 kHz audio: a textured,
    moving picture with sensor noise (so the encoder's work is a real video's, not a flat
    cartoon's) and a tone in noise; returns its manifest."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    texture = np.kron(rng.integers(0, 256, (size // 8, size // 8, 3)), np.ones((8, 8, 1)))
    frames = np.empty((seconds * fps, size, size, 3), np.uint8)
    for i in range(len(frames)):
        t = i / fps
        f = np.roll(texture, (int(20 * t), int(35 * t)), (0, 1))
        f[..., 0] += 60 * np.sin(x / 37 + 2 * t)
        f[..., 1] += 60 * np.cos(y / 23 - 3 * t)
        cx, cy = size / 2 + 150 * np.cos(t), size / 2 + 150 * np.sin(1.3 * t)
        f[(x - cx) ** 2 + (y - cy) ** 2 < 60 ** 2] = (250, 240, 30)
        frames[i] = np.clip(f + rng.normal(0, 6, f.shape), 0, 255)
    rate = 16000
    t = np.arange(seconds * rate) / rate
    audio = (0.15 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(np.pi * t))
             + rng.normal(0, 0.02, t.shape)).astype(np.float32)
    path = os.path.join(folder, "real_size.mp4")
    synth.write_mp4(path, frames, fps, audio, rate)
    manifest = os.path.join(folder, "real_size.jsonl")
    with open(manifest, "w") as f:
        f.write(json.dumps({"id": "real_size", "media": path}) + "\n")
    return manifest


def frames_decoded(record, media: MediaSpec) -> tuple[int, int]:
    """(frames the exact decode must decode, frames in the file): every reference frame up to
    the last sampled one, plus the sampled ones (`decode_frames` skips only the rest)."""
    import av
    from vaemotion_jax.data.decode import shown_pts

    options = media.decode_options()
    start, end = clip_window(record, options)
    times = sample_times(start, end, options.fps, options.num_frames, options.max_frames)
    with av.open(record.video_path) as c:
        stream = c.streams.video[0]
        keep = shown_pts(c, stream, times)
        shown, total = [], 0
        for packet in c.demux(stream):
            total += packet.size > 0
            stream.codec_context.skip_frame = "DEFAULT" if packet.pts in keep else "NONREF"
            shown += [f.pts for f in packet.decode()]   # a skipped frame is never output
    return sum(p <= max(keep) for p in shown), total


def naive_example(record, media: MediaSpec) -> dict:
    """The naive path: every frame to RGB, then the same preprocessing as ours."""
    options = media.decode_options()
    frames, audio = naive_decode(record, options)
    start, end = clip_window(record, options)
    clip = Clip(frames=frames, fps=len(frames) / (end - start), audio=audio, start=start, end=end)
    return clip_inputs(clip, media, record.where)


def clips_per_second(fn, records, repeats: int, clock=time.perf_counter) -> float:
    """Clips per second of `clock` (wall by default; `time.process_time`: per CPU-second of
    this process, all its threads), best of `repeats` passes."""
    best = float("inf")
    for _ in range(repeats):
        started = clock()
        for r in records:
            fn(r)
        best = min(best, clock() - started)
    return len(records) / best


def clips_per_cpu_second(fn, records, repeats: int) -> float:
    return clips_per_second(fn, records, repeats, clock=time.process_time)


def real_size(folder: str, repeats: int, step_seconds: float) -> None:
    records = read_manifest(real_size_clip(folder))[0] * 4
    ours = ExampleFn(media=PAPER_MEDIA)
    for a, b in zip(naive_example(records[0], PAPER_MEDIA)["pixel_values_videos"],
                    ours(records[0])["pixel_values_videos"]):
        np.testing.assert_array_equal(a, b)   # the same inputs, whichever path made them
    naive = clips_per_cpu_second(lambda r: naive_example(r, PAPER_MEDIA), records, repeats)
    decode = clips_per_cpu_second(lambda r: decode_record(r, PAPER_MEDIA.decode_options()),
                                  records, repeats)
    full = clips_per_cpu_second(ours, records, repeats)
    need = 32 / step_seconds
    decoded, total = frames_decoded(records[0], PAPER_MEDIA)
    print(f"real size: 10 s 512x512 at 25 fps + 16 kHz audio -> 8 frames at 504x504, 3 AST "
          f"windows; clips per CPU-second (= per core), best of {repeats} passes over "
          f"{len(records)} reads")
    print(f"  naive (every frame to RGB, PIL bicubic, patches, fbank) {naive:6.2f} | ours: "
          f"decode {decode:6.2f}, decode + preprocess {full:6.2f} clips/s per core "
          f"({naive / full:.2f} of the naive time... i.e. {full / naive:.2f}x the naive rate)")
    print(f"  decoding alone takes {naive / decode:.2f} of the naive time: exact frames need "
          f"~{decoded} of the {total} frames decoded (every reference frame up to the last "
          f"sample; x264's B-pyramid frames are references), so no exact decoder reaches 1/3 here")
    print(f"  8 GPUs at {step_seconds:g} s per 32-clip step need {need:.2f} clips/s: "
          f"{need / full:.1f} cores (naive: {need / naive:.1f})")


def pipeline_rate(records, workers: int, size: str) -> float:
    example = ExampleFn(media=SIZES[size])
    config = PipelineConfig(batch_size=4, num_epochs=1, shuffle=False, worker_count=workers)
    it = BatchIterator(records, example, config)
    next(it)  # start-up (worker processes, imports) is not part of the rate
    started, seen = time.perf_counter(), 0
    for batch in it:
        seen += len(batch["id"])
    it.close()
    return seen / (time.perf_counter() - started)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", help="a synthetic world folder (default: a small one made in a temp folder)")
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--step_seconds", type=float, default=9.65,
                   help="7B step time per 32 clips (vaemotion_jax.plan, stage1_7b:gpu8x24)")
    p.add_argument("--only_real_size", action="store_true")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    real_size(tempfile.mkdtemp(prefix="bench_real_"), args.repeats, args.step_seconds)
    if args.only_real_size:
        return
    world = args.world
    if world is None:
        world = tempfile.mkdtemp(prefix="bench_world_")
        synth.generate(world, synth.WorldConfig(num_clips=args.clips), workers=2)
    records = read_manifest(os.path.join(world, "stage1.jsonl"))[0] + \
        read_manifest(os.path.join(world, "captions.jsonl"))[0]
    records = records[: args.clips]
    print(f"{len(records)} clips of {synth.WorldConfig.seconds:g} s, {synth.WorldConfig.width}x"
          f"{synth.WorldConfig.height} at {synth.WorldConfig.fps} fps, best of {args.repeats} passes, 1 process")
    rows = []
    for size, media in SIZES.items():
        options = media.decode_options()
        naive = clips_per_second(lambda r: naive_decode(r, options), records, args.repeats)
        ours = clips_per_second(lambda r: decode_record(r, options), records, args.repeats)
        full = clips_per_second(ExampleFn(media=media), records, args.repeats)
        rows.append((size, naive, ours, full))
        print(f"  {size:5s} naive decode {naive:7.1f} clips/s | decode {ours:7.1f} clips/s "
              f"({ours / naive:.2f}x naive) | decode + preprocess {full:7.1f} clips/s")
    print("Grain pipeline, whole epoch (clips/s, clips/s per worker):")
    for size in SIZES:
        for workers in (int(w) for w in args.workers.split(",")):
            rate = pipeline_rate(records, workers, size)
            per = rate / max(workers, 1)
            print(f"  {size:5s} workers={workers}: {rate:7.1f} clips/s, {per:7.1f} per worker")
    print(f"load average after: {os.getloadavg()[0]:.1f} (numbers from a shared machine vary with it)")


if __name__ == "__main__":
    main()
