"""The Grain input pipeline: records -> decoded, preprocessed, formatted, bucket-padded batches.

    records --shard--> this process's records --shuffle (seeded, new order each epoch)--> repeat
      --map(ExampleFn: validate -> decode -> features -> format_fn)--> [worker processes]
      --> BatchIterator (main process): skip and count bad examples, pad to buckets, batch

* Sharding, `shard_by="batch"` (training): every process walks the same shuffled sequence of
  all records, cut into global batches of `batch_size * shard_count`, and makes only its slice
  of each global batch. A run on P processes then trains on exactly the global batches a
  1-process run with the same global batch size sees, and the state (a position in that one
  sequence) is the same on every process.
* Sharding, `shard_by="records"`: process `shard_index` of `shard_count` reads
  records[shard_index::shard_count]; with `even_shards` every shard gets the same number of
  records (the remainder is left out), so all hosts of a multi-host run agree on the epoch
  length. With finite epochs a host that skips more
  bad examples makes fewer batches: check the manifest first (`python -m
  vaemotion_jax.data.inspect`) or evaluate on one host.
* Bad input: the example function never raises on a bad record or file; it returns `Skipped`
  (file, reason, kind), and the main process logs "skipped FILE: REASON", counts it by kind,
  and moves on (`summary()` on demand, logged at the end). `strict=True` raises `BadExample`
  with the same message at the first one.
* Static shapes: each field named in `buckets` is padded along axis 0 to the smallest bucket
  that fits the longest example of the batch (a longer example is skipped as "too_long"); the
  other fields must have equal shapes and are stacked. A batch also holds `id` (B,) str,
  `valid` (B,) bool (False only for rows filling a last partial batch) and `<field>_length` (B,)
  int32 for each bucketed field.
* Exact resume: the state is a small JSON dict; its `position` counts the records consumed
  (good or skipped) in this shard's endless shuffled sequence, with `epoch` and
  `index_in_epoch` derived from it. Restoring rebuilds the Grain pipeline from that position,
  so a resumed run sees exactly the examples an uninterrupted run would, with any number of
  workers. Save it with Orbax: `grain.checkpoint.CheckpointSave(it)` writes one small JSON file
  per process (needed in multi-host runs, where each process reads its own shard);
  `ocp.args.JsonSave(it.get_state())` is enough on one host.

Worker processes (`worker_count > 0`) are started with "spawn": the calling script needs an
`if __name__ == "__main__":` guard, and `format_fn` must be picklable (a module-level function or
a functools.partial of one). Grain reads absl flags when it starts workers: parse them first
(`app.run(main)` does it); if they are not parsed, the pipeline marks them parsed with their
defaults.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

from vaemotion_jax.data.decode import SAMPLE_RATE, BadExample, Clip, decode_record
from vaemotion_jax.data.manifest import PATHWAYS, Record, read_manifest, validate_record
from vaemotion_jax.data.media import MediaSpec, clip_inputs
from vaemotion_jax.data.utterances import UtteranceSpec, prompt_with

log = logging.getLogger("vaemotion_jax.data")

STATE_VERSION = 1
NOTES = "_notes"  # an example's notes: counted by the iterator, never batched


@dataclass(frozen=True)
class Skipped:
    """Stands in for an example that could not be made (passes through worker processes)."""

    path: str
    reason: str
    kind: str
    id: str = ""   # the record's id

    @property
    def message(self) -> str:
        return f"{self.path}: {self.reason}"


def label_arrays(record: Record) -> dict[str, np.ndarray]:
    """V-A targets of the three pathways: {"va": (3, 2) f32, "va_mask": (3,) bool} in a, v, av order."""
    labels = record.labels or {}
    va = np.array([labels.get(p, (0.0, 0.0)) for p in PATHWAYS], np.float32)
    return {"va": va, "va_mask": np.array([p in labels for p in PATHWAYS])}


def clip_features(clip: Clip, features: str, media: MediaSpec, where: str) -> dict:
    """Model inputs of a decoded clip.

    "qwen": `media.clip_inputs`: pixel_values_videos (N, 1176) f32, video_grid_thw (3,),
            fbank (K, F, 128) f32 and fbank_mask (K,) for the decoded streams, and
            second_per_grid_ts (float64, also for audio only), notes (things to count).
    "raw":  frames (T, H, W, 3) uint8, fps, audio (S,) f32 at 16 kHz.
    """
    if features == "raw":
        out = {}
        if clip.frames is not None:
            out.update(frames=clip.frames, fps=np.float32(clip.fps))
        if clip.audio is not None:
            out["audio"] = clip.audio
        return out
    if features != "qwen":
        raise ValueError(f"features must be 'qwen' or 'raw', got {features!r}")
    return clip_inputs(clip, media, where)


def utterance_features(spec: UtteranceSpec, utterances, clip: Clip, features: dict,
                       media: MediaSpec) -> dict:
    """The clip's `utterance_mask` (N_max, T_a) bool and `timestamps` text over the AST windows
    its features average (data/utterances.py), with their notes added to the features' notes;
    a clip without decoded audio gets an all-False mask and no timestamps."""
    if "fbank_mask" not in features:
        return {"utterance_mask": np.zeros(spec.mask_shape, bool)}
    starts, _ = media.audio_window_starts(len(clip.audio))
    averaged = starts[:int(features["fbank_mask"].sum())] / SAMPLE_RATE
    out = spec.clip_inputs(utterances, clip.start, clip.end, averaged)
    return {**out, "notes": tuple(features.get("notes", ())) + out["notes"]}


def clip_text(question: str, features: dict) -> str:
    """The text of the user turn that carries the clip: the clip's window timestamps first when
    the run's adapter reads utterance windows (the instruction-aware prompt), else `question`."""
    return prompt_with(features.get("timestamps", ""), question)


def utterance_arrays(features: dict) -> dict[str, np.ndarray]:
    """{"utterance_mask": (N_max, T_a) bool} for adapters that read utterance windows, else {}."""
    return {"utterance_mask": features["utterance_mask"]} if "utterance_mask" in features else {}


CLIP = "clip"  # the example field `ExampleFn(clip_keys=True)` adds


def file_identity(path: str | None) -> list | None:
    """[path, size, mtime_ns] of a media file (None without one): a replaced file is a new key."""
    if not path:
        return None
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def clip_identity(record: Record) -> str:
    """A record's media as a JSON string: its audio and video files' identities and window."""
    return json.dumps({"audio": file_identity(record.audio_path),
                       "video": file_identity(record.video_path),
                       "start": record.start, "end": record.end}, sort_keys=True)


def _missing(record: Record, name: str) -> bool:
    if name.startswith("labels."):
        return not record.labels or name.split(".", 1)[1] not in record.labels
    return getattr(record, name) in (None, [], "")


@dataclass(frozen=True)
class ExampleFn:
    """record -> example dict (or `Skipped`): validate, decode, compute features, format.

    `media` says how frames are sampled and sized and how the audio is windowed; `video` /
    `audio` which streams to decode. `format_fn(record, features) -> dict` is the stage's own
    step (tokenize the conversation, build position ids, pick labels); it may raise
    `BadExample` to skip a record. `require` names record fields an example must have
    ("conversations", "labels", "labels.av", ...). Runs inside worker processes, so everything
    here must pickle. An example's `notes` (from the features) reach the iterator's counts.
    `utterances` (runs whose audio adapter reads utterance windows, data/utterances.py) adds
    the clip's `utterance_mask` and `timestamps` to the features (`utterance_features`).
    """

    media: MediaSpec
    format_fn: Callable[[Record, dict], dict] | None = None
    features: str = "qwen"
    video: bool = True
    audio: bool = True
    require: tuple[str, ...] = ()
    utterances: UtteranceSpec | None = None
    # Keep each clip's features after its first use (evaluation: many questions share a clip).
    # Per process; memory grows with the number of distinct clips.
    reuse_clips: bool = False
    # Add each example's media identity as the string field `clip` (`clip_identity`), by which
    # the caches of frozen work key their entries (training/frozen_cache.py).
    clip_keys: bool = False
    _clips: dict = field(default_factory=dict, compare=False, repr=False)

    def _features(self, record: Record) -> dict:
        key = (record.media, record.video, record.audio, record.start, record.end,
               tuple(map(tuple, record.utterances or ())))
        if self.reuse_clips and key in self._clips:
            return self._clips[key]
        clip = decode_record(record, self.media.decode_options(self.video, self.audio))
        features = clip_features(clip, self.features, self.media, record.where)
        if self.utterances is not None:
            features.update(utterance_features(self.utterances, record.utterances, clip, features,
                                               self.media))
        if self.reuse_clips:
            self._clips[key] = features
        return features

    def __call__(self, record: Record) -> dict | Skipped:
        problems = validate_record(record)
        if problems:
            name, msg = problems[0]
            return Skipped(record.where, f"{name}: {msg}", "bad_record", record.id)
        for name in self.require:
            if _missing(record, name):
                return Skipped(record.where, f"missing field {name!r}", "missing_field", record.id)
        try:
            features = self._features(record)
            notes = features.get("notes", ())
            features = {k: v for k, v in features.items() if k != "notes"}
            example = dict(self.format_fn(record, features) if self.format_fn else features)
            notes = tuple(notes) + tuple(example.pop(NOTES, ()))
        except BadExample as e:
            return Skipped(e.path, e.reason, e.kind, record.id)
        except Exception as e:  # a bug, not bad input: stop, but name the record that hit it
            raise RuntimeError(f"{record.where} (id {record.id!r}): {type(e).__name__}: {e}") from e
        if self.clip_keys:
            example[CLIP] = clip_identity(record)
        return {**example, "id": record.id, NOTES: tuple(notes)}


NOTE_TEXT = {
    "audio_windows": "audio longer than one AST window: its windows' features are averaged "
                     "(data.audio_windows)",
    "audio_gaps": "audio longer than data.audio_windows AST windows: the windows are spread "
                  "over the clip with gaps; raise data.audio_windows to cover it",
    "targets_truncated": "assistant tokens beyond the configured cap are left out of the loss "
                         "(max_target_tokens)",
    "utterances_fallback": "no utterance in the clip: adapter.no_utterances decides its windows "
                           "(fixed windows, or the global Q-Former alone)",
    "utterance_windows_dropped": "more windows in the clip than adapter.max_utterances: the "
                                 "later ones are left out",
}


# ---------------------------------------------------------------- batching

def pick_bucket(length: int, buckets: Sequence[int]) -> int | None:
    """Smallest bucket >= length, or None if none fits."""
    return next((b for b in sorted(buckets) if b >= length), None)


def _pad_rows(x: np.ndarray, rows: int, value) -> np.ndarray:
    pad = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, pad, constant_values=value)


def collate(examples: list[dict], batch_size: int, buckets: Mapping[str, Sequence[int]],
            pad_values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Stacks examples into a batch of `batch_size` rows, padding bucketed fields (see module doc)."""
    n = len(examples)
    batch = {"valid": np.arange(batch_size) < n}
    for name in examples[0]:
        values = [ex[name] for ex in examples]
        if name == "id":
            batch["id"] = np.array(values + [""] * (batch_size - n))
            continue
        arrays = [np.asarray(v) for v in values]
        if name in buckets:
            lengths = [a.shape[0] for a in arrays]
            rows = pick_bucket(max(lengths), buckets[name])
            arrays = [_pad_rows(a, rows, pad_values.get(name, 0)) for a in arrays]
            batch[f"{name}_length"] = np.array(lengths + [0] * (batch_size - n), np.int32)
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"field {name!r} has different shapes across examples {sorted(shapes)}; "
                             "give it buckets or make format_fn return a fixed shape")
        arrays += [np.zeros_like(arrays[0])] * (batch_size - n)
        batch[name] = np.stack(arrays)
    return batch


def _too_long(example: dict, limits: Mapping[str, int]) -> str | None:
    for name, limit in limits.items():
        if name not in example:
            raise ValueError(f"bucketed field {name!r} is not in the example (fields: {sorted(example)})")
        length = np.shape(example[name])[0]
        if length > limit:
            return f"{name} has {length} rows, more than the largest bucket {limit}"
    return None


def _with_epoch(epoch_length: int, index: int, record: Record) -> Record:
    """The record tagged with the pass over the data its position `index` falls in (added to
    the record's own `epoch`, so records made for one given epoch keep it in a single pass)."""
    return dataclasses.replace(record, epoch=record.epoch + index // epoch_length)


def _make_example(example_fn: ExampleFn, limits: Mapping[str, int], record: Record) -> dict | Skipped:
    """`example_fn(record)`, skipping an example too long for the largest bucket of a field."""
    example = example_fn(record)
    if isinstance(example, Skipped):
        return example
    reason = _too_long(example, limits)
    return example if reason is None else Skipped(record.where, reason, "too_long", record.id)


# ---------------------------------------------------------------- the pipeline

@dataclass(frozen=True)
class PipelineConfig:
    """How records become batches. `num_epochs=None` repeats forever (training)."""

    batch_size: int
    buckets: Mapping[str, Sequence[int]] = field(default_factory=dict)
    pad_values: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None
    shard_index: int = 0
    shard_count: int = 1
    even_shards: bool = True
    shard_by: str = "records"  # "records" | "batch" (see the module docstring)
    drop_remainder: bool = True
    worker_count: int = 0
    worker_buffer_size: int = 4
    read_threads: int = 1
    strict: bool = False
    keep_skipped: bool = False  # keep every `Skipped` in `BatchIterator.skipped_examples`
                                # (evaluation and chat name each bad item; training only counts)


def shard_records(records: Sequence[Record], index: int, count: int, even: bool) -> list[Record]:
    """This process's records: records[index::count], cut to len(records) // count if `even`."""
    if not 0 <= index < count:
        raise ValueError(f"shard_index {index} is not in [0, {count})")
    mine = list(records[index::count])
    return mine[: len(records) // count] if even else mine


class BatchSlice(grain.MapDataset):
    """Process `index` of `count`'s part of every global batch of `local * count` elements:
    local element k is parent element (k // local) * local * count + index * local + k % local."""

    def __init__(self, parent: grain.MapDataset, index: int, count: int, local: int):
        super().__init__(parent)
        self._index, self._count, self._local = index, count, local
        self._length = len(parent) // (local * count) * local

    def __len__(self) -> int:
        return self._length

    def _parent_index(self, k: int) -> int:
        batch, offset = divmod(k, self._local)
        return (batch * self._count + self._index) * self._local + offset

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._parent_index(index)]

    def __str__(self) -> str:
        return f"BatchSlice(process {self._index} of {self._count}, {self._local} per batch)"


def _ensure_flags_parsed() -> None:
    """Grain reads absl flags when it starts workers; a caller without absl gets their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class BatchIterator(grain.DatasetIterator):
    """Iterates batches; `get_state()` / `set_state()` give an exact, worker-count-free resume.

    A Grain `DatasetIterator`, so `grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)`
    save one state file per process in multi-host runs (Orbax's JsonSave writes only process 0's).
    """

    def __init__(self, records: Sequence[Record], example_fn: ExampleFn, config: PipelineConfig,
                 manifest_problems: Sequence[str] = ()):
        super().__init__()
        self.config = config
        if config.shard_by not in ("records", "batch"):
            raise ValueError(f"shard_by must be 'records' or 'batch', got {config.shard_by!r}")
        self.records = (list(records) if config.shard_by == "batch" else
                        shard_records(records, config.shard_index, config.shard_count,
                                      config.even_shards))
        if not self.records:
            raise ValueError(f"shard {config.shard_index}/{config.shard_count} has no records "
                             f"(of {len(records)})")
        self.example_fn = example_fn
        self.manifest_problems = list(manifest_problems)
        self.position = 0
        self.skipped: Counter = Counter()
        self.notes: Counter = Counter()
        self.skipped_examples: list[Skipped] = []
        self.examples = 0
        self._source = None
        self._dataset = self._build_dataset()

    @property
    def epoch_length(self) -> int:
        """Examples this process makes per epoch (its share of the records)."""
        if self.config.shard_by == "batch":
            return max(1, len(self.records) // self.config.shard_count)
        return len(self.records)

    @property
    def epoch(self) -> int:
        return self.position // self.epoch_length

    def _build_dataset(self):
        ds = grain.MapDataset.source(self.records)
        if self.config.shuffle:
            ds = ds.shuffle(seed=self.config.seed)
        ds = ds.repeat(self.config.num_epochs)
        ds = ds.map_with_index(functools.partial(_with_epoch, len(self.records)))
        if self.config.shard_by == "batch":
            ds = BatchSlice(ds, self.config.shard_index, self.config.shard_count,
                            self.config.batch_size)
        limits = {name: max(sizes) for name, sizes in self.config.buckets.items()}
        return ds.map(functools.partial(_make_example, self.example_fn, limits))

    def _open(self):
        cfg = self.config
        read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=max(1, 2 * cfg.read_threads))
        ds = self._dataset[self.position:].to_iter_dataset(read)
        if cfg.worker_count > 0:
            _ensure_flags_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=cfg.worker_count, per_worker_buffer_size=cfg.worker_buffer_size))
        return iter(ds)

    def _next_example(self) -> dict | None:
        """The next good example, or None at the end of the data; skips (and counts) bad ones."""
        self.start_prefetch()
        bad_in_a_row = 0
        for element in self._source:
            self.position += 1
            if not isinstance(element, Skipped):
                self.examples += 1
                element = dict(element)
                for note in element.pop(NOTES, ()):
                    if not self.notes[note]:
                        log.info("%s: %s (counted in the data summary)", element.get("id"),
                                 NOTE_TEXT.get(note, note))
                    self.notes[note] += 1
                return element
            if self.config.strict:
                raise BadExample(element.path, element.reason, element.kind)
            self.skipped[element.kind] += 1
            if self.config.keep_skipped:
                self.skipped_examples.append(element)
            log.warning("skipped %s", element.message)
            bad_in_a_row += 1
            if bad_in_a_row >= self.epoch_length and self.config.num_epochs is None:
                # an endless run would spin forever; a finite one just ends
                raise RuntimeError(f"no usable example in a whole epoch of {self.epoch_length} records; "
                                   f"{self.summary()} (see the warnings above)")
        return None

    def __next__(self) -> dict[str, np.ndarray]:
        cfg = self.config
        examples = []
        while len(examples) < cfg.batch_size:
            example = self._next_example()
            if example is None:
                break
            examples.append(example)
        if not examples or (len(examples) < cfg.batch_size and cfg.drop_remainder):
            log.info("%s", self.summary())
            raise StopIteration
        return collate(examples, cfg.batch_size, cfg.buckets, cfg.pad_values)

    def summary(self) -> str:
        """One line: examples made, skipped by kind, manifest problems."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items())) or "none"
        text = (f"data shard {self.config.shard_index}/{self.config.shard_count}: {self.examples} examples, "
                f"epoch {self.epoch}, skipped {sum(self.skipped.values())} ({kinds})")
        if self.notes:
            text += ", " + ", ".join(f"{n} {kind}" for kind, n in sorted(self.notes.items()))
        if self.manifest_problems:
            text += f", {len(self.manifest_problems)} manifest lines left out"
        return text

    def get_state(self) -> dict:
        """A small JSON-able dict: where this shard's sequence stands, plus the skip counts."""
        cfg = self.config
        return {"version": STATE_VERSION, "position": self.position, "epoch": self.epoch,
                "index_in_epoch": self.position % self.epoch_length, "epoch_length": self.epoch_length,
                "seed": cfg.seed, "shuffle": cfg.shuffle, "shard_index": cfg.shard_index,
                "shard_count": cfg.shard_count, "shard_by": cfg.shard_by, "examples": self.examples,
                "skipped": dict(self.skipped), "notes": dict(self.notes)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continues from a state of an iterator over the same records and config."""
        mine = self.get_state()
        keys = ["version", "epoch_length", "seed", "shuffle", "shard_by", "shard_count"]
        if self.config.shard_by == "records":  # in "batch" mode every process has one position
            keys.append("shard_index")
        for key in keys:
            if state.get(key) != mine[key]:
                raise ValueError(f"data iterator state does not fit this pipeline: {key} is {state.get(key)!r} "
                                 f"in the state but {mine[key]!r} here (same records, seed and sharding needed)")
        self.close()
        self.position = int(state["position"])
        self.examples = int(state["examples"])
        self.skipped = Counter({k: int(v) for k, v in state["skipped"].items()})
        self.notes = Counter({k: int(v) for k, v in state.get("notes", {}).items()})

    def start_prefetch(self) -> None:
        """Starts reading (and the worker processes) before the first batch is asked for."""
        if self._source is None:
            self._source = self._open()

    def close(self) -> None:
        """Stops worker processes; unlike other Grain iterators, the next batch reopens them at
        the current position."""
        if self._source is not None and hasattr(self._source, "close"):
            self._source.close()
        self._source = None


def make_iterator(source: str | Sequence[Record], example_fn: ExampleFn, config: PipelineConfig,
                  split: str | None = None) -> BatchIterator:
    """A `BatchIterator` over a manifest path or records, optionally only one `split`.

    From a path, manifest lines with problems are logged and left out (strict: the first raises
    `ManifestError` with its message).
    """
    problems: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        records, problems = read_manifest(os.fspath(source), strict=config.strict)
        for p in problems:
            log.warning("skipped %s", p)
    else:
        records = list(source)
    if split is not None:
        records = [r for r in records if r.split == split]
    return BatchIterator(records, example_fn, config, problems)

