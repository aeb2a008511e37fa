"""Importers that write our JSONL manifest from public dataset formats.

  vggsound      headerless CSV `youtube_id,start_seconds,label,split` + a folder of clips
                (Stage 1 pairs, no labels; the class label goes to `meta.label`). The CSV's
                `test` becomes the manifest split `heldout` (what the trainers hold out) and
                `train` stays `train`; the CSV's word is kept in `meta.csv_split`. `--split`
                takes the CSV's words (train/test)
  videoinstruct VideoInstruct-100K JSON list of {video_id, q, a} + a folder of videos
                (one user/assistant conversation per item, for Stage 2's general mix-in)
  airbench      AIR-Bench Foundation `Foundation_meta.json`; audio at
                `<root>/<task_name>_<dataset_name>/<path>`, Audio_Grounding's as `.flac`
                whatever `path` says (as AIR-Bench's own loader reads it); audio-only multiple
                choice, the answer letter is the choice whose text equals `answer_gt`;
                `category` is `<task_name>_<dataset_name>`, `meta` has the two apart

Media that cannot be found and malformed entries are counted and reported, never fatal:

  python -m vaemotion_jax.data.importers vggsound --csv vggsound.csv --clips DIR --out stage1.jsonl
  python -m vaemotion_jax.data.importers videoinstruct --json VideoInstruct100K.json --videos DIR \\
      --out mixin.jsonl [--min-seconds 10 --max-seconds 30]
  python -m vaemotion_jax.data.importers airbench --meta Foundation/Foundation_meta.json --out airbench.jsonl
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass, field

from vaemotion_jax.data.manifest import Record, write_manifest

MEDIA_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flac", ".wav", ".mp3", ".m4a", ".ogg")
VGGSOUND_SECONDS = 10.0
VGGSOUND_SPLITS = {"train": "train", "test": "heldout"}  # CSV word -> manifest split (trainers hold out "heldout")


@dataclass
class ImportResult:
    """Records made, plus what was left out: media not found, and malformed entries."""

    records: list[Record] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def report(self, name: str, limit: int = 10) -> str:
        lines = [f"{name}: {len(self.records)} records, {len(self.missing)} missing media, "
                 f"{len(self.problems)} malformed entries"]
        lines += [f"  missing: {m}" for m in self.missing[:limit]]
        lines += [f"  malformed: {p}" for p in self.problems[:limit]]
        if len(self.missing) > limit or len(self.problems) > limit:
            lines.append(f"  (first {limit} of each shown)")
        return "\n".join(lines)


def index_media(folder: str) -> dict[str, str]:
    """File stem -> path of every media file under `folder` (recursively)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: media folder not found")
    out = {}
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in MEDIA_EXTENSIONS:
                out.setdefault(stem, os.path.join(root, name))
    return out


def vggsound_candidates(youtube_id: str, start: int) -> list[tuple[str, bool]]:
    """File stems a VGGSound clip is commonly saved under, and whether the file is already cut."""
    return [(f"{youtube_id}_{start:06d}", True), (f"{youtube_id}_{start}", True),
            (f"{youtube_id}_{start * 1000}_{(start + 10) * 1000}", True), (youtube_id, False)]


def vggsound_split(word: str) -> str | None:
    """The manifest split of a VGGSound CSV split word (test -> heldout), or None if unknown."""
    return VGGSOUND_SPLITS.get(word)


def import_vggsound(csv_path: str, clips_dir: str, split: str | None = None) -> ImportResult:
    """VGGSound rows -> Stage 1 records (uncut full videos get a start/end window).

    `split` keeps only rows of that CSV split word (train/test); the CSV's test rows are written
    with split `heldout`, so the trainers never train on them.
    """
    if split is not None and split not in VGGSOUND_SPLITS:
        raise ValueError(f"VGGSound split {split!r}: expected a CSV split word, one of {list(VGGSOUND_SPLITS)}")
    media = index_media(clips_dir)
    result = ImportResult()
    with open(csv_path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            where = f"{csv_path}:{lineno}"
            if len(row) != 4:
                result.problems.append(f"{where}: expected 4 columns youtube_id,start_seconds,label,split, "
                                       f"got {len(row)}")
                continue
            youtube_id, start_text, label, row_split = (x.strip() for x in row)
            try:
                start = int(float(start_text))
            except ValueError:
                result.problems.append(f"{where}: start_seconds {start_text!r} is not a number")
                continue
            if vggsound_split(row_split) is None:
                result.problems.append(f"{where}: split {row_split!r} is not one of {list(VGGSOUND_SPLITS)}")
                continue
            if split is not None and row_split != split:
                continue
            found = next(((media[stem], cut) for stem, cut in vggsound_candidates(youtube_id, start)
                          if stem in media), None)
            clip_id = f"{youtube_id}_{start:06d}"
            if found is None:
                result.missing.append(f"{where}: no file for {clip_id} in {clips_dir}")
                continue
            path, cut = found
            window = {} if cut else {"start": float(start), "end": float(start + VGGSOUND_SECONDS)}
            result.records.append(Record(id=clip_id, media=path, split=vggsound_split(row_split),
                                         meta={"label": label, "csv_split": row_split}, **window))
    return result


def _duration(path: str) -> float | None:
    from vaemotion_jax.data.decode import BadExample, probe

    try:
        info = probe(path)
    except BadExample:
        return None
    return info.video_duration or info.audio_duration


def import_videoinstruct(json_path: str, videos_dir: str, min_seconds: float | None = None,
                         max_seconds: float | None = None) -> ImportResult:
    """VideoInstruct-100K items -> one-turn conversations; optionally only videos whose length
    is within [min_seconds, max_seconds] (each video is probed once, with progress output)."""
    with open(json_path, encoding="utf-8") as f:
        items = json.load(f)
    if not isinstance(items, list):
        raise ValueError(f"{json_path}: expected a JSON list of {{video_id, q, a}}")
    media = index_media(videos_dir)
    durations: dict[str, float | None] = {}
    filter_length = min_seconds is not None or max_seconds is not None
    result, per_video = ImportResult(), {}
    for i, item in enumerate(items):
        where = f"{json_path}[{i}]"
        if not (isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("video_id", "q", "a"))):
            result.problems.append(f"{where}: expected string fields video_id, q, a")
            continue
        vid = item["video_id"]
        if vid not in media:
            result.missing.append(f"{where}: no file for video {vid!r} in {videos_dir}")
            continue
        if filter_length:
            if vid not in durations:
                durations[vid] = _duration(media[vid])
                if len(durations) % 200 == 0:
                    print(f"videoinstruct: probed {len(durations)} videos", file=sys.stderr, flush=True)
            d = durations[vid]
            if d is None:
                result.problems.append(f"{where}: {media[vid]} is unreadable or has no duration")
                continue
            if (min_seconds is not None and d < min_seconds) or (max_seconds is not None and d > max_seconds):
                continue
        k = per_video[vid] = per_video.get(vid, -1) + 1
        result.records.append(Record(
            id=f"{vid}-{k}", media=media[vid],
            conversations=[{"role": "user", "content": item["q"]},
                           {"role": "assistant", "content": item["a"]}]))
    return result


AIRBENCH_CHOICES = ("choice_a", "choice_b", "choice_c", "choice_d")
AIRBENCH_FLAC_TASKS = ("Audio_Grounding",)  # read as .flac by AIR-Bench's Inference_Foundation.py


def airbench_audio_path(root: str, task_name: str, dataset_name: str, path: str) -> str:
    """Where AIR-Bench's official loader reads an item's audio: `<root>/<task>_<dataset>/<path>`,
    with the extension replaced by .flac for Audio_Grounding (the loader's `[:-3] + 'flac'`)."""
    full = os.path.join(root, f"{task_name}_{dataset_name}", path)
    if task_name in AIRBENCH_FLAC_TASKS:
        full = os.path.splitext(full)[0] + ".flac"
    return full


def import_airbench(meta_path: str, root: str | None = None) -> ImportResult:
    """AIR-Bench Foundation items -> audio-only multiple-choice records (category = task_dataset;
    meta.task_name and meta.dataset_name kept apart)."""
    root = root or os.path.dirname(os.path.abspath(meta_path))
    with open(meta_path, encoding="utf-8") as f:
        items = json.load(f)
    if not isinstance(items, list):
        raise ValueError(f"{meta_path}: expected a JSON list of items")
    result = ImportResult()
    for i, item in enumerate(items):
        where = f"{meta_path}[{i}]"
        needed = ("path", "question", "answer_gt", "task_name", "dataset_name", "uniq_id")
        if not isinstance(item, dict) or any(item.get(k) is None for k in needed):
            result.problems.append(f"{where}: expected fields {', '.join(needed)}")
            continue
        options = [item[c] for c in AIRBENCH_CHOICES if item.get(c) is not None]
        if len(options) < 2 or not all(isinstance(o, str) for o in options):
            result.problems.append(f"{where}: fewer than two text choices")
            continue
        if item["answer_gt"] not in options:
            result.problems.append(f"{where}: answer_gt {item['answer_gt']!r} equals none of the choices")
            continue
        task, dataset = item["task_name"], item["dataset_name"]
        path = airbench_audio_path(root, task, dataset, item["path"])
        if not os.path.exists(path):
            result.missing.append(f"{where}: {path} not found")
            continue
        result.records.append(Record(
            id=str(item["uniq_id"]), media=path, question=item["question"], options=options,
            answer=chr(ord("A") + options.index(item["answer_gt"])), category=f"{task}_{dataset}",
            modality="a", meta={"task_name": task, "dataset_name": dataset}))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.data.importers",
                                description="Write a vaemotion_jax manifest from a public dataset format.")
    sub = p.add_subparsers(dest="format", required=True)
    v = sub.add_parser("vggsound", help="VGGSound CSV + clips folder (Stage 1)",
                       description="VGGSound CSV + clips folder -> Stage 1 manifest. The CSV's test "
                                   "rows get split heldout (what the trainers hold out), train rows "
                                   "split train; the CSV's word is kept in meta.csv_split.")
    v.add_argument("--csv", required=True)
    v.add_argument("--clips", required=True, help="folder holding the clips (searched recursively)")
    v.add_argument("--split", choices=tuple(VGGSOUND_SPLITS),
                   help="keep only rows of this CSV split; the CSV's test rows are written with "
                        "split heldout (held out by the trainers), train rows with split train")
    vi = sub.add_parser("videoinstruct", help="VideoInstruct-100K JSON + videos folder (Stage 2 mix-in)")
    vi.add_argument("--json", required=True)
    vi.add_argument("--videos", required=True)
    vi.add_argument("--min-seconds", type=float)
    vi.add_argument("--max-seconds", type=float)
    a = sub.add_parser("airbench", help="AIR-Bench Foundation_meta.json (evaluation)")
    a.add_argument("--meta", required=True)
    a.add_argument("--root", help="folder holding <task>_<dataset>/ audio folders (default: the meta "
                                  "file's); Audio_Grounding audio is read as .flac, as AIR-Bench does")
    for sp in (v, vi, a):
        sp.add_argument("--out", required=True, help="manifest to write (.jsonl)")
    args = p.parse_args(argv)
    try:
        if args.format == "vggsound":
            result = import_vggsound(args.csv, args.clips, args.split)
        elif args.format == "videoinstruct":
            result = import_videoinstruct(args.json, args.videos, args.min_seconds, args.max_seconds)
        else:
            result = import_airbench(args.meta, args.root)
    except (OSError, ValueError) as e:  # unreadable input file: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_manifest(result.records, args.out)
    print(result.report(args.format))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
