"""Padded lengths for static shapes: every length used compiles once, every pad token is work."""
from __future__ import annotations


def length_buckets(smallest: int, largest: int, per_octave: int = 8) -> tuple[int, ...]:
    """Lengths from `smallest` to `largest`, `per_octave` evenly spaced ones in each doubling:
    a sequence padded to the next one grows by less than 1/per_octave.
    length_buckets(64, 256) = (64, 72, ..., 120, 128, 144, ..., 240, 256)."""
    out, low = [], smallest
    while low < largest:
        out += range(low, min(2 * low, largest), max(low // per_octave, 1))
        low *= 2
    return tuple(out) + (largest,)
