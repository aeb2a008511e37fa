"""The JSONL manifest: one clip (or one question about a clip) per line, for every stage.

A line is a JSON object with these fields (only `id` and a media path are required):

  id             str, unique in the manifest
  media          path to a video with its audio track, or to an audio-only file (wav/flac/mp3/...)
  video, audio   separate paths instead of `media` (either or both); not together with `media`
  start, end     optional window in seconds (start >= 0, end > start); default: the whole file
  conversations  [{"role": "system"|"user"|"assistant", "content": str}, ...]
  labels         {"a": [valence, arousal], "v": [...], "av": [...]}; each pathway optional,
                 both numbers in [-1, 1] (a = audio only, v = picture only, av = both together)
  question, options, answer, category, modality
                 a multiple-choice item: `options` 2-26 strings, `answer` the right letter
                 ("A" is options[0]), `category` e.g. "OE" or "Sp-AV", `modality` a|v|av
                 (which inputs the model gets); question/options/answer come together
  utterances     [[start, end], ...] seconds, relative to the file, start < end (the local
                 windows of the kind="qformer" audio adapter, data/utterances.py)
  split          e.g. "train" | "heldout" | "test"
  caption        a short description of the clip
  meta           free-form object, ignored by the pipeline (e.g. a dataset's own label)

Paths are relative to the manifest's folder (absolute paths are kept as they are). In memory a
`Record` holds absolute paths; `write_manifest` makes them relative to the file it writes.
Unknown fields are problems, so a typo ("lables") is caught instead of silently ignored.
Every problem is one line naming the file, the line and the field:
  manifest.jsonl:17: labels.av: arousal 1.7 outside [-1, 1]
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Sequence

LABEL_RANGE = (-1.0, 1.0)
PATHWAYS = ("a", "v", "av")
ROLES = ("system", "user", "assistant")
MODALITIES = PATHWAYS   # the inputs a benchmark item gives: audio, video or both
PATH_FIELDS = ("media", "video", "audio")
BENCHMARK_FIELDS = ("question", "options", "answer")


class ManifestError(ValueError):
    """A manifest line is malformed (raised in strict mode with the problem's message)."""


@dataclass
class Record:
    """One manifest line. Paths are absolute in memory; `source` is "file:line" for messages."""

    id: str
    media: str | None = None
    video: str | None = None
    audio: str | None = None
    start: float | None = None
    end: float | None = None
    conversations: list[dict[str, str]] | None = None
    labels: dict[str, list[float]] | None = None
    question: str | None = None
    options: list[str] | None = None
    answer: str | None = None
    category: str | None = None
    modality: str | None = None
    utterances: list[list[float]] | None = None
    split: str | None = None
    caption: str | None = None
    meta: dict[str, Any] | None = None
    source: str = field(default="", compare=False)
    # The pass over the data this record is drawn in (set by the pipeline; 0 outside training):
    # lets a stage draw per-epoch choices (Stage 1's prompt) reproducibly.
    epoch: int = field(default=0, compare=False)

    @property
    def video_path(self) -> str | None:
        """The file holding the picture (`video`, else `media`)."""
        return self.video or self.media

    @property
    def audio_path(self) -> str | None:
        """The file holding the sound (`audio`, else `media`)."""
        return self.audio or self.media

    @property
    def where(self) -> str:
        """How messages name this record: its manifest line, else its media file."""
        return self.source or self.media or self.video or self.audio or self.id

    def answer_index(self) -> int:
        """Index of the right option (0 for "A")."""
        return ord(self.answer) - ord("A")


RECORD_FIELDS = tuple(f.name for f in fields(Record) if f.name not in ("source", "epoch"))


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_labels(labels) -> list[tuple[str, str]]:
    if not isinstance(labels, dict):
        return [("labels", f"expected an object with keys {list(PATHWAYS)}, got {type(labels).__name__}")]
    out = []
    lo, hi = LABEL_RANGE
    for key, value in labels.items():
        where = f"labels.{key}"
        if key not in PATHWAYS:
            out.append((where, f"unknown pathway {key!r} (expected one of {list(PATHWAYS)})"))
            continue
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            out.append((where, f"expected [valence, arousal], got {value!r}"))
            continue
        for name, x in zip(("valence", "arousal"), value):
            if not _is_number(x):
                out.append((where, f"{name} {x!r} is not a finite number"))
            elif not lo <= x <= hi:
                out.append((where, f"{name} {x:g} outside [{lo:g}, {hi:g}]"))
    return out


def _check_conversations(turns) -> list[tuple[str, str]]:
    if not isinstance(turns, list) or not turns:
        return [("conversations", "expected a non-empty list of {role, content} turns")]
    out = []
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            out.append((where, f"expected exactly {{role, content}}, got {turn!r}"))
        elif turn["role"] not in ROLES:
            out.append((where, f"role {turn['role']!r} not one of {list(ROLES)}"))
        elif not isinstance(turn["content"], str):
            out.append((where, "content is not a string"))
    return out


def _check_benchmark(d: dict) -> list[tuple[str, str]]:
    present = [k for k in BENCHMARK_FIELDS if d.get(k) is not None]
    if not present:
        return []
    missing = [k for k in BENCHMARK_FIELDS if d.get(k) is None]
    if missing:
        return [(missing[0], f"missing (a multiple-choice item needs {', '.join(BENCHMARK_FIELDS)})")]
    out = []
    options = d["options"]
    if not isinstance(d["question"], str) or not d["question"].strip():
        out.append(("question", "expected a non-empty string"))
    if not (isinstance(options, list) and 2 <= len(options) <= 26 and all(isinstance(o, str) for o in options)):
        out.append(("options", "expected a list of 2 to 26 strings"))
        return out
    letters = [chr(ord("A") + i) for i in range(len(options))]
    if d["answer"] not in letters:
        out.append(("answer", f"{d['answer']!r} is not one of {letters}"))
    return out


def validate_record_dict(d: dict) -> list[tuple[str, str]]:
    """All problems of one manifest object, as (field, message) pairs; [] if it is valid."""
    if not isinstance(d, dict):
        return [("", f"expected a JSON object, got {type(d).__name__}")]
    out = [(k, "unknown field (put extra information under `meta`)") for k in d if k not in RECORD_FIELDS]
    if not isinstance(d.get("id"), str) or not d.get("id"):
        out.append(("id", "missing or not a non-empty string"))
    paths = {k: d[k] for k in PATH_FIELDS if d.get(k) is not None}
    if not paths:
        out.append(("media", "missing (give `media`, or `video` and/or `audio`)"))
    elif "media" in paths and len(paths) > 1:
        out.append(("media", "give either `media` or `video`/`audio`, not both"))
    out += [(k, "expected a path string") for k, v in paths.items() if not isinstance(v, str) or not v]
    start, end = d.get("start"), d.get("end")
    if start is not None and (not _is_number(start) or start < 0):
        out.append(("start", f"{start!r} is not a number >= 0"))
    if end is not None and (not _is_number(end) or end <= (start if _is_number(start) else 0)):
        out.append(("end", f"{end!r} is not a number after start"))
    if d.get("conversations") is not None:
        out += _check_conversations(d["conversations"])
    if d.get("labels") is not None:
        out += _check_labels(d["labels"])
    out += _check_benchmark(d)
    if d.get("modality") is not None and d["modality"] not in MODALITIES:
        out.append(("modality", f"{d['modality']!r} not one of {list(MODALITIES)}"))
    for k in ("category", "split", "caption"):
        if d.get(k) is not None and not isinstance(d[k], str):
            out.append((k, "expected a string"))
    if d.get("meta") is not None and not isinstance(d["meta"], dict):
        out.append(("meta", "expected an object"))
    utts = d.get("utterances")
    if utts is not None:
        if not isinstance(utts, list):
            out.append(("utterances", "expected a list of [start, end]"))
        else:
            for i, u in enumerate(utts):
                ok = isinstance(u, (list, tuple)) and len(u) == 2 and all(map(_is_number, u))
                if not ok or not 0 <= u[0] < u[1]:
                    out.append((f"utterances[{i}]", f"{u!r} is not [start, end] with 0 <= start < end"))
    return out


def record_to_dict(record: Record, relative_to: str | None = None) -> dict:
    """The manifest object of a record, without None fields; paths relative to `relative_to`."""
    d = {}
    for k in RECORD_FIELDS:
        v = getattr(record, k)
        if v is None:
            continue
        if k in PATH_FIELDS and relative_to is not None:
            v = os.path.relpath(v, relative_to)
        d[k] = v
    return d


def validate_record(record: Record) -> list[tuple[str, str]]:
    """All problems of a `Record` built in code, as (field, message) pairs."""
    return validate_record_dict(record_to_dict(record))


def record_from_dict(d: dict, base_dir: str, source: str = "") -> Record:
    """A `Record` from a valid manifest object, with paths resolved against `base_dir`."""
    kwargs = dict(d)
    for k in PATH_FIELDS:
        if kwargs.get(k) is not None:
            kwargs[k] = os.path.normpath(os.path.join(base_dir, kwargs[k]))
    for k in ("start", "end"):
        if kwargs.get(k) is not None:
            kwargs[k] = float(kwargs[k])
    return Record(**kwargs, source=source)


def read_manifest(path: str, strict: bool = False) -> tuple[list[Record], list[str]]:
    """Reads a JSONL manifest -> (valid records, problem messages).

    A line with any problem is left out and each of its problems is reported as
    "path:line: field: message". With `strict`, the first problem raises `ManifestError`.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ManifestError(f"{path}: cannot read manifest ({e.strerror or e})") from e
    base_dir = os.path.dirname(os.path.abspath(path))
    records, problems, seen = [], [], {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            d = json.loads(line)
            found = validate_record_dict(d)
        except json.JSONDecodeError as e:
            found = [("", f"not valid JSON ({e.msg} at column {e.colno})")]
        if not found and d["id"] in seen:
            found = [("id", f"{d['id']!r} already used on line {seen[d['id']]}")]
        msgs = [f"{where}: {k}: {m}" if k else f"{where}: {m}" for k, m in found]
        if msgs and strict:
            raise ManifestError(msgs[0])
        problems += msgs
        if not found:
            seen[d["id"]] = lineno
            records.append(record_from_dict(d, base_dir, where))
    return records, problems


def write_manifest(records: Iterable[Record], path: str) -> int:
    """Writes records as JSONL with paths relative to the manifest's folder; returns the count.

    Each record is validated first; an invalid one raises `ManifestError` naming its id.
    """
    base_dir = os.path.dirname(os.path.abspath(path))
    lines = []
    for r in records:
        problems = validate_record(r)
        if problems:
            k, m = problems[0]
            raise ManifestError(f"record {r.id!r}: {k}: {m}")
        lines.append(json.dumps(record_to_dict(r, base_dir), ensure_ascii=False))
    os.makedirs(base_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)
    return len(lines)


def select(records: Sequence[Record], split: str | None = None, modality: str | None = None) -> list[Record]:
    """Records with the given `split` and/or `modality` (None matches all)."""
    return [r for r in records
            if (split is None or r.split == split) and (modality is None or r.modality == modality)]
