"""Check a manifest before training on it: `python -m vaemotion_jax.data.inspect MANIFEST`.

Validates every line, opens every file and decodes each record's window (so truncated and
corrupt files are found; `--quick` reads headers only), then prints counts, durations, label
coverage per pathway and every problem found. Exits 1 if there was any problem.

Which streams a record must have: `video`/`audio` fields name them; a `media` file must have
video and audio, except audio-only files (.wav, .flac, .mp3, ...) and records whose `modality`
is "a" (audio only) or "v" (picture only). `--streams` overrides this for every record.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from vaemotion_jax.data.decode import BadExample, DecodeOptions, clip_window, decode_record
from vaemotion_jax.data.manifest import PATHWAYS, Record, ManifestError, read_manifest

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")
CHECK_FPS = 1.0  # frames per second decoded when checking a window (decoding reads every frame anyway)


def streams_for(record: Record, override: str = "auto") -> tuple[bool, bool]:
    """(needs video, needs audio) of a record (see module docstring)."""
    if override != "auto":
        return override in ("video", "both"), override in ("audio", "both")
    if record.media is None:
        return record.video is not None, record.audio is not None
    if record.modality in ("a", "v"):
        return record.modality == "v", record.modality == "a"
    return not record.media.lower().endswith(AUDIO_EXTENSIONS), True


def check_record(record: Record, quick: bool = False, streams: str = "auto") -> float:
    """Opens (and unless `quick` decodes) a record's files; returns the window length in seconds.

    Raises `BadExample` with the reason if a file is missing, unreadable, truncated, too short or
    lacks a needed stream.
    """
    video, audio = streams_for(record, streams)
    options = DecodeOptions(fps=CHECK_FPS, video=video, audio=audio)
    if quick:
        start, end = clip_window(record, options)
    else:
        clip = decode_record(record, options)
        start, end = clip.start, clip.end
    return end - start


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="checking files", unit="record", file=sys.stderr)


def inspect_manifest(path: str, quick: bool = False, streams: str = "auto",
                     progress: bool = True) -> tuple[str, list[str]]:
    """(report text, problems) of a manifest; an empty problem list means it is clean."""
    try:
        records, problems = read_manifest(path)
    except ManifestError as e:
        return "", [str(e)]
    durations, kinds = [], Counter()
    for record in _progress(records, progress):
        try:
            durations.append(check_record(record, quick, streams))
        except BadExample as e:
            problems.append(f"{record.where}: {e} [{e.kind}]")
            kinds[e.kind] += 1
    return _report(path, records, durations, problems, kinds), problems


def _counts(label: str, values) -> str:
    c = Counter(v for v in values if v is not None)
    return f"{label}: " + (", ".join(f"{k} {n}" for k, n in sorted(c.items())) if c else "none")


def _report(path, records, durations, problems, kinds) -> str:
    n = len(records)
    lines = [f"manifest {path}: {n} valid records, {len(problems)} problems"]
    if records:
        lines.append(_counts("splits", (r.split for r in records)))
        lines.append(_counts("modality", (r.modality for r in records)))
        lines.append(_counts("category", (f"{r.modality}/{r.category}" if r.modality and r.category
                                          else r.category for r in records)))
        covered = {p: sum(bool(r.labels and p in r.labels) for r in records) for p in PATHWAYS}
        coverage = ", ".join(f"{p} {k}/{n}" for p, k in covered.items())
        lines.append(f"labels per pathway: {coverage}")
        lines.append(f"with conversations: {sum(r.conversations is not None for r in records)}, "
                     f"multiple choice: {sum(r.question is not None for r in records)}, "
                     f"captions: {sum(r.caption is not None for r in records)}")
    if durations:
        d = np.array(durations)
        lines.append(f"durations (s): total {d.sum():.1f} ({d.sum() / 3600:.2f} h), mean {d.mean():.2f}, "
                     f"min {d.min():.2f}, max {d.max():.2f}")
    if kinds:
        lines.append(_counts("file problems by kind", kinds.elements()))
    lines += [f"problem: {p}" for p in problems]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.data.inspect",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("manifest")
    p.add_argument("--quick", action="store_true", help="read file headers only, do not decode")
    p.add_argument("--streams", choices=("auto", "video", "audio", "both"), default="auto")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    report, problems = inspect_manifest(args.manifest, args.quick, args.streams, not args.no_progress)
    print(report or "\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
