"""On-disk caches of frozen work (README "Caches of frozen work"), both off by default.

* AST features per clip (both stages, `cache.audio_features`): the frozen encoder's output
  averaged over the clip's windows, (T_a, d_a) in the encoder's dtype (1214 x 768 at the
  paper's sizes). The step then reads `audio_features` instead of running the AST on `fbank`.
* Teacher logits at the response positions (Stage 1, `cache.teacher_logits`): (R, V) for a
  response of R tokens in the backbone's dtype (exact); with `cache.teacher_topk=k`, the k
  largest logits and their vocabulary ids, (R, k) each. The step then skips the teacher.

What an entry depends on is its key: the directory carries everything its entries share (kind,
weights fingerprint, dtypes, media settings, form, the source of the code that computes it),
the file name the entry's own part (the clip: media file path, size and mtime, start, end; for
logits also the prompt + response tokens). Layout: <root>/<kind>-<16 hex>/spec.json and
<2 hex>/<32 hex>.safetensors, one file per entry, so every process of a multi-host run reads
and writes its own rows on a shared filesystem. An entry is written to a temporary name and
renamed, records its whole key, and is used only when key and shape match; a missing,
unreadable or mismatched entry is (re)built and logged.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaemotion_jax import sharding
from vaemotion_jax.checkpoints.safetensors_io import CheckpointError, read_file, write_file
from vaemotion_jax.data.pipeline import CLIP
from vaemotion_jax.examples import LAYOUT_KEYS

log = logging.getLogger("vaemotion_jax.cache")

VERSION = 1


def digest(obj) -> str:
    """sha256 hex of a JSON-able object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# The code an entry's values come from: an edit to any of it is a new key (never a stale read).
AST_CODE = ("vaemotion_jax.data.decode", "vaemotion_jax.data.media",
            "vaemotion_jax.processing.fbank", "vaemotion_jax.models.ast",
            "vaemotion_jax.models.layers")
TEACHER_CODE = ("vaemotion_jax.data.decode", "vaemotion_jax.data.media",
                "vaemotion_jax.processing.vision", "vaemotion_jax.models.layers",
                "vaemotion_jax.models.qwen2_5_vl", "vaemotion_jax.training.stage1")


def code_digest(modules: tuple[str, ...]) -> str:
    """sha256 hex of the source of `modules` (a package: every .py file in it)."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        files = ([os.path.join(d, f) for d in spec.submodule_search_locations
                  for f in sorted(os.listdir(d)) if f.endswith(".py")]
                 if spec.submodule_search_locations else [spec.origin])
        for file in files:
            with open(file, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def stream_key(clip: str, stream: str) -> dict:
    """The part of a clip's identity one stream ("audio" | "video") depends on."""
    d = json.loads(clip)
    return {stream: d[stream], "start": d["start"], "end": d["end"]}


class EntryCache:
    """One kind of cached tensors: `get(key)` / `put(key, arrays)` with per-entry files."""

    def __init__(self, root: str, kind: str, spec: dict):
        self.spec = {"kind": kind, "version": VERSION, **spec}
        self.directory = os.path.join(os.path.abspath(root), f"{kind}-{digest(self.spec)[:16]}")
        os.makedirs(self.directory, exist_ok=True)
        spec_file = os.path.join(self.directory, "spec.json")
        if not os.path.exists(spec_file):
            tmp = f"{spec_file}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(self.spec, f, indent=2, sort_keys=True)
            os.replace(tmp, spec_file)
        self.hits = self.built = self.rebuilt = 0

    def path(self, key: dict) -> str:
        h = digest(key)[:32]
        return os.path.join(self.directory, h[:2], f"{h}.safetensors")

    def get(self, key: dict,
            shapes: dict[str, tuple] | None = None) -> dict[str, np.ndarray] | None:
        """The entry's arrays, or None when it is missing, unreadable, of another key or (given
        `shapes`) of other shapes; a bad file is logged and counted for rebuilding."""
        path = self.path(key)
        if not os.path.exists(path):
            return None
        try:
            arrays, meta = read_file(path)
            problem = None
            if meta.get("key") != json.dumps(key, sort_keys=True):
                problem = "its key differs (hash collision or a foreign file)"
            elif shapes and any(arrays.get(k, np.empty(0)).shape != s for k, s in shapes.items()):
                problem = (f"shapes {({k: v.shape for k, v in arrays.items()})} instead of "
                           f"{shapes}")
        except (CheckpointError, OSError, ValueError) as e:
            problem = str(e)
        if problem:
            log.warning("cache: %s: %s; rebuilding it", path, problem)
            self.rebuilt += 1
            return None
        self.hits += 1
        return arrays

    def put(self, key: dict, arrays: dict[str, np.ndarray]) -> None:
        path = self.path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_file(path, sorted(arrays.items()), {"key": json.dumps(key, sort_keys=True)})
        self.built += 1

    def summary(self) -> str:
        return (f"{self.hits} read, {self.built} built ({self.rebuilt} of them replacing bad "
                f"entries) in {self.directory}")


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (all processes must then run the same jitted work)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def local_rows(fn: Callable, batch: dict, mesh) -> dict[str, np.ndarray]:
    """`fn(global batch)` -> {name: array (global B, ...)}, as NumPy rows of this process's part
    of the batch (process-local rows are consecutive blocks of the global batch)."""
    from vaemotion_jax.training.loop import global_batch
    out = fn(global_batch(batch, mesh))
    n = len(batch["valid"])
    start = jax.process_index() * n
    return {k: sharding.to_host(v)[start:start + n] for k, v in out.items()}


# --- AST features --------------------------------------------------------------------------------

AUDIO_INPUTS = ("fbank", "fbank_mask")


def audio_feature_cache(root: str, encoder_fingerprint: str, dtype, media) -> EntryCache:
    """The cache of AST features for an encoder (its fingerprint and compute dtype) and the
    run's audio windows (MediaSpec `audio_frames`, `audio_windows`)."""
    return EntryCache(root, "ast", {"encoder": encoder_fingerprint, "dtype": jnp.dtype(dtype).name,
                                    "code": code_digest(AST_CODE),
                                    "audio_frames": media.audio_frames,
                                    "audio_windows": media.audio_windows})


def attach_audio_features(batch: dict, cache: EntryCache, encode: Callable, mesh,
                          shape: tuple[int, int]) -> dict:
    """The batch with `audio_features` (B, T_a, d_a) in place of fbank and fbank_mask: read per
    clip, or (if any process misses one) encoded for the whole batch by `encode(global batch)
    -> {"features": (B, T_a, d_a)}` and written. Padding rows are zeros."""
    valid = np.asarray(batch["valid"])
    keys = [stream_key(c, "audio") if ok else None for c, ok in zip(batch[CLIP], valid)]
    found = [cache.get(k, {"features": shape}) if k else None for k in keys]
    missing = [b for b, k in enumerate(keys) if k and found[b] is None]
    if any_process(bool(missing)):
        feats = local_rows(encode, batch, mesh)["features"]
        for b in missing:
            cache.put(keys[b], {"features": feats[b]})
            found[b] = {"features": feats[b]}
    dtype = next((f["features"].dtype for f in found if f), np.float32)
    out = {k: v for k, v in batch.items() if k not in AUDIO_INPUTS}
    out["audio_features"] = np.stack([f["features"] if f else np.zeros(shape, dtype)
                                      for f in found])
    return out


# --- teacher logits ------------------------------------------------------------------------------

VIDEO_INPUTS = ("pixel_values_videos", *LAYOUT_KEYS)


def teacher_logit_cache(root: str, backbone_fingerprint: str, dtype, param_dtype, media,
                        topk: int) -> EntryCache:
    """The cache of teacher logits for a backbone (fingerprint, compute and weight dtypes), the
    run's frames and frame size (MediaSpec), and the form (topk 0: exact, k: the k largest)."""
    return EntryCache(root, "teacher", {
        "backbone": backbone_fingerprint, "dtype": jnp.dtype(dtype).name,
        "param_dtype": jnp.dtype(param_dtype).name, "topk": topk,
        "code": code_digest(TEACHER_CODE),
        "media": {k: getattr(media, k) for k in ("fps", "max_frames", "num_frames", "resized_hw",
                                                 "min_pixels", "max_pixels")}})


def response_key(batch: dict, b: int) -> dict:
    """Row b's entry key: its video and window, and its prompt + response tokens."""
    n = int(batch["attention_mask"][b].sum())
    tokens = np.asarray(batch["input_ids"][b, :n], np.int64)
    return {**stream_key(batch[CLIP][b], "video"),
            "tokens": hashlib.sha256(tokens.tobytes()).hexdigest()}


def attach_teacher_logits(batch: dict, cache: EntryCache, teacher: Callable, mesh,
                          width: int, topk: int) -> dict:
    """The batch (after `stage1.attach_responses`) with the teacher at its targets in place of
    the video inputs: `teacher_logits` (B, A, V) exact, or (B, A, k) with `teacher_index`
    (B, A, k) int32 for top-k. Read per (clip, tokens), or (if any process misses one) computed
    for the whole batch by `teacher(global batch) -> {"logits"[, "index"]}` and written; each
    entry holds its R response positions, each of `width` (V, or k for top-k)."""
    valid = np.asarray(batch["valid"])
    lengths = np.asarray(batch["target_mask"]).sum(1)
    keys = [response_key(batch, b) if ok else None for b, ok in enumerate(valid)]
    names = ("logits", "index") if topk else ("logits",)
    found = [cache.get(k, {n: (lengths[b], width) for n in names}) if k else None
             for b, k in enumerate(keys)]
    missing = [b for b, k in enumerate(keys) if k and found[b] is None]
    if any_process(bool(missing)):
        rows = local_rows(teacher, batch, mesh)
        for b in missing:
            found[b] = {k: v[b, :lengths[b]] for k, v in rows.items()}
            cache.put(keys[b], found[b])
    a = batch["target_mask"].shape[1]
    out = {k: v for k, v in batch.items() if k not in VIDEO_INPUTS}
    for name in names:
        like = next(f[name] for f in found if f)
        arr = np.zeros((len(found), a) + like.shape[1:], like.dtype)
        for b, f in enumerate(found):
            if f:
                arr[b, :f[name].shape[0]] = f[name]
        out[f"teacher_{name}"] = arr
    return out


# --- what the runs use ---------------------------------------------------------------------------

def cache_root(c, workdir: str) -> str:
    """`cache.dir`, or <workdir>/frozen_cache."""
    return c.cache.dir or os.path.join(workdir, "frozen_cache")


def audio_feature_transform(c, workdir: str, model, params, encoder_fingerprint: str, mesh):
    """(cache, batch -> batch with `audio_features`) for `cache.audio_features`, else None."""
    from vaemotion_jax.data.media import MediaSpec
    if not c.cache.audio_features:
        return None
    cfg = model.config
    cache = audio_feature_cache(cache_root(c, workdir), encoder_fingerprint, cfg.audio_dtype,
                                MediaSpec.from_config(c.data))
    log.info("cache: AST features per clip in %s (read when present, else built)", cache.directory)
    run = jax.jit(lambda p, fbank, mask: model.apply({"params": p}, fbank, mask,
                                                     method="audio_features"))
    encoder = {"audio_encoder": params["audio_encoder"]}
    encode = lambda g: {"features": run(encoder, g["fbank"], g["fbank_mask"])}
    shape = (cfg.ast.num_tokens, cfg.ast.hidden_size)
    return cache, lambda batch: attach_audio_features(batch, cache, encode, mesh, shape)
