"""Frames per second of our fbank (one clip, and a batch) against transformers' ASTFeatureExtractor.

The reference runs its NumPy path (torchaudio is not used, as in our tests). Both run in this
process on the same clips; the ratio is ours / reference.

    python benchmarks/bench_fbank.py [--seconds 10] [--batch 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import time
import warnings
from unittest import mock

import numpy as np

from vaemotion_jax.processing.fbank import fbank, fbank_batch, num_frames


def best_time(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls (after one warm-up call), in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def reference_extractor():
    """transformers' ASTFeatureExtractor pinned to its NumPy path."""
    from transformers.models.audio_spectrogram_transformer import \
        feature_extraction_audio_spectrogram_transformer as module
    with mock.patch.object(module, "is_speech_available", lambda: False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its filterbank warns that one filter is empty (as ours is)
        extractor = module.ASTFeatureExtractor()
    def run(clips):
        with mock.patch.object(module, "is_speech_available", lambda: False):
            return extractor(clips, sampling_rate=16000, return_tensors="np").input_values
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    n = int(args.seconds * 16000)
    clips = np.random.default_rng(0).normal(0, 0.1, (args.batch, n)).astype(np.float32)
    frames = min(num_frames(n), 1024)
    reference = reference_extractor()

    rows = [
        ("reference, 1 clip", best_time(lambda: reference(clips[0]), args.repeats), frames),
        ("ours fbank, 1 clip", best_time(lambda: fbank(clips[0], 16000), args.repeats), frames),
        (f"reference, batch {args.batch}", best_time(lambda: reference(list(clips)), args.repeats),
         frames * args.batch),
        (f"ours fbank_batch, batch {args.batch}",
         best_time(lambda: fbank_batch(clips, 16000), args.repeats), frames * args.batch),
    ]
    print(f"{args.seconds:g} s clips at 16 kHz ({frames} frames each), best of {args.repeats}")
    for name, seconds, count in rows:
        print(f"  {name:32s} {seconds * 1e3:8.2f} ms  {count / seconds:12,.0f} frames/s")
    print(f"speed-up, 1 clip: {rows[0][1] / rows[1][1]:.1f}x; batch: {rows[2][1] / rows[3][1]:.1f}x")


if __name__ == "__main__":
    main()
