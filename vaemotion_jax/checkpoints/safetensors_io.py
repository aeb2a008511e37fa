"""Reading and writing Hugging Face safetensors directories without torch.

A directory holds `model.safetensors`, or shards listed in `model.safetensors.index.json`.
Tensors are memory-mapped, so opening a 7B checkpoint reads only its headers, and a tensor's
bytes are read when (and as far as) they are used. bfloat16 is supported through ml_dtypes.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint directory or file is missing, malformed or does not fit the model."""


@dataclass(frozen=True)
class TensorInfo:
    file: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in `file`
    nbytes: int


def _header(path: str) -> tuple[int, dict]:
    """(header bytes, parsed header) of a safetensors file; CheckpointError names the problem."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: truncated safetensors file (no header)")
            (n,) = struct.unpack("<Q", head)
            if n > 100 * 2**20:
                raise CheckpointError(f"{path}: header of {n} bytes; not a safetensors file")
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    try:
        return n, json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: unreadable safetensors header ({e})") from None


def _read_header(path: str) -> dict[str, TensorInfo]:
    n, header = _header(path)
    size = os.path.getsize(path)
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        if meta["dtype"] not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {meta['dtype']}")
        start, end = meta["data_offsets"]
        info = TensorInfo(path, _DTYPES[meta["dtype"]], tuple(meta["shape"]), 8 + n + start,
                          end - start)
        if info.offset + info.nbytes > size:
            raise CheckpointError(f"{path}: tensor {key!r} extends past the end of the file "
                                  f"(truncated download?)")
        out[key] = info
    return out


def read_file(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors read into memory, metadata) of one safetensors file; CheckpointError if it is
    truncated or malformed."""
    infos = _read_header(path)
    with open(path, "rb") as f:
        raw = f.read()
    tensors = {k: np.frombuffer(raw, np.uint8, i.nbytes, i.offset).view(i.dtype).reshape(i.shape)
               for k, i in infos.items()}
    return tensors, _header(path)[1].get("__metadata__", {})


def read_config_json(path: str) -> tuple[str, dict]:
    """(file, parsed dict) of a checkpoint directory's config.json; CheckpointError if absent
    or not JSON."""
    file = os.path.join(path, "config.json")
    try:
        with open(file) as f:
            return file, json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: no config.json in the checkpoint directory") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None


class SafetensorsDir:
    """The tensors of a Hugging Face checkpoint directory, by key, memory-mapped on demand.
    `filename` names the unsharded file (e.g. PEFT's "adapter_model.safetensors")."""

    def __init__(self, path: str, filename: str = SINGLE_FILE):
        self.path = str(path)
        if not os.path.isdir(self.path):
            raise CheckpointError(f"{self.path}: not a directory")
        files = os.listdir(self.path)
        index = os.path.join(self.path, INDEX_FILE)
        if os.path.exists(index):
            with open(index) as f:
                weight_map: Mapping[str, str] = json.load(f)["weight_map"]
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not os.path.exists(os.path.join(self.path, s))]
            if missing:
                keys = [k for k, v in weight_map.items() if v == missing[0]]
                raise CheckpointError(
                    f"{index}: shard {missing[0]} is missing ({len(keys)} tensors, e.g. "
                    f"{keys[0]!r}); {len(missing)} of {len(shards)} shards absent")
            self.tensors: dict[str, TensorInfo] = {}
            for shard in shards:
                infos = _read_header(os.path.join(self.path, shard))
                for key in [k for k, v in weight_map.items() if v == shard]:
                    if key not in infos:
                        raise CheckpointError(f"{index}: lists {key!r} in {shard}, which does "
                                              f"not contain it")
                    self.tensors[key] = infos[key]
        elif filename in files:
            self.tensors = _read_header(os.path.join(self.path, filename))
        else:
            pickles = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
            if pickles:
                raise CheckpointError(
                    f"{self.path}: only PyTorch pickle weights found ({', '.join(sorted(pickles))}). "
                    "Pickle checkpoints can run arbitrary code and are refused; convert them with "
                    "transformers: `Model.from_pretrained(dir).save_pretrained(out, "
                    "safe_serialization=True)`.")
            raise CheckpointError(f"{self.path}: no {filename} or {INDEX_FILE}")
        self._maps: dict[str, np.memmap] = {}

    def keys(self) -> Iterable[str]:
        return self.tensors.keys()

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def file_of(self, key: str) -> str:
        return os.path.basename(self.tensors[key].file)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.tensors[key].shape

    def get(self, key: str) -> np.ndarray:
        """The tensor as a read-only memory-mapped array (no copy)."""
        info = self.tensors[key]
        mm = self._maps.get(info.file)
        if mm is None:
            mm = self._maps[info.file] = np.memmap(info.file, dtype=np.uint8, mode="r")
        raw = mm[info.offset:info.offset + info.nbytes]
        return raw.view(info.dtype).reshape(info.shape)


def save_safetensors_dir(tensors: Mapping[str, np.ndarray], path: str, config: dict | None = None,
                         max_shard_bytes: int = 5 * 2**30, metadata: dict | None = None,
                         filename: str = SINGLE_FILE) -> list[str]:
    """Writes `tensors` as `filename` (or shards plus an index) and optional config.json."""
    os.makedirs(path, exist_ok=True)
    items = sorted(tensors.items())
    shards: list[list[tuple[str, np.ndarray]]] = [[]]
    size = 0
    for key, arr in items:
        nbytes = np.asarray(arr).nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((key, arr))
        size += nbytes
    names = ([filename] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map = {}
    for name, shard in zip(names, shards):
        write_file(os.path.join(path, name), shard, metadata or {"format": "pt"})
        weight_map.update({k: name for k, _ in shard})
    if len(shards) > 1:
        total = sum(np.asarray(a).nbytes for _, a in items)
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    if config is not None:
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
    return names


def write_file(path: str, items: list[tuple[str, np.ndarray]], metadata: dict) -> None:
    """Writes one safetensors file atomically: to a temporary name of this process, then renamed."""
    header: dict = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    arrays = []
    for key, arr in items:
        arr = np.ascontiguousarray(np.asarray(arr))
        if arr.dtype not in _NAMES:
            raise CheckpointError(f"cannot write {key!r}: dtype {arr.dtype} has no safetensors name")
        header[key] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                       "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for arr in arrays:
            f.write(arr.tobytes())
    os.replace(tmp, path)
