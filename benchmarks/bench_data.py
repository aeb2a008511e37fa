"""Decoded and preprocessed clips per second per worker, on the synthetic world.

Stages, each timed in this process over the same clips (best of `--repeats` passes):
  naive decode   decode every frame to RGB, then pick the sampled ones (the reference)
  decode         ours: PyAV, only the sampled frames are converted, audio resampled to 16 kHz
  + preprocess   decode, Qwen2.5-VL video patches and the AST fbank, at the tiny preset's sizes
                 (112x112, 208 fbank frames) and at the paper's (512x512 -> 504x504, 1024 frames)
then the whole Grain pipeline with 0, 1 and 2 worker processes (clips/s and clips/s per worker).

    python benchmarks/bench_data.py [--world DIR] [--clips 48] [--repeats 2] [--workers 0,1,2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from vaemotion_jax.data import synth
from vaemotion_jax.data.decode import DecodeOptions, clip_window, decode_audio, decode_record, sample_times
from vaemotion_jax.data.manifest import read_manifest
from vaemotion_jax.data.media import MediaSpec
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


def clips_per_second(fn, records, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for r in records:
            fn(r)
        best = min(best, time.perf_counter() - started)
    return len(records) / best


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
    args = p.parse_args()
    world = args.world
    if world is None:
        world = tempfile.mkdtemp(prefix="bench_world_")
        synth.generate(world, synth.WorldConfig(num_clips=args.clips), workers=2)
    records = read_manifest(os.path.join(world, "stage1.jsonl"))[0] + \
        read_manifest(os.path.join(world, "captions.jsonl"))[0]
    records = records[: args.clips]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
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
