"""Declarative, strict, two-way maps between Hugging Face tensor keys and our Flax params.

A `Rule` ties one or more of our params (paths like "llm/layers/attn/q/kernel") to one or more
HF keys (templates with "{i}" for the layer index when our params are stacked over layers), with
a pair of small layout hooks (transpose a Linear, split a fused qkv, move a conv kernel's axes).
The same rules drive loading and exporting. Loading is strict: a missing, unexpected or
mis-shaped tensor is an error that names the key and the file.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import traverse_util

from vaemotion_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsDir

Hook = Callable[[list[np.ndarray]], list[np.ndarray]]


def identity(xs):
    return list(xs)


def linear_to_ours(xs):
    """torch Linear weight (out, in) -> Flax kernel (in, out)."""
    return [x.T for x in xs]


def linear_to_hf(xs):
    return [x.T for x in xs]


def split_to_ours(n: int, kernel: bool) -> Hook:
    """A fused (n*out, in) weight or (n*out,) bias -> n separate kernels (in, out) / biases."""
    def hook(xs):
        parts = np.split(xs[0], n, axis=0)
        return [p.T for p in parts] if kernel else parts
    return hook


def split_to_hf(kernel: bool) -> Hook:
    def hook(xs):
        return [np.concatenate([x.T for x in xs] if kernel else xs, axis=0)]
    return hook


def conv_to_ours(xs):
    """torch ConvNd weight (out, in, *k) -> Flax kernel (*k, in, out)."""
    x = xs[0]
    return [np.transpose(x, tuple(range(2, x.ndim)) + (1, 0))]


def conv_to_hf(xs):
    x = xs[0]
    return [np.transpose(x, (x.ndim - 1, x.ndim - 2) + tuple(range(x.ndim - 2)))]


@dataclass(frozen=True)
class Rule:
    """Our params `ours` <-> HF keys `hf`; `layers` > 0 stacks per-layer keys on a leading axis."""
    ours: tuple[str, ...]
    hf: tuple[str, ...]
    to_ours: Hook = identity
    to_hf: Hook = identity
    layers: int = 0

    def hf_keys(self, i: int | None = None) -> list[str]:
        return [k.format(i=i) for k in self.hf] if self.layers else list(self.hf)


def linear(ours_prefix: str, hf_prefix: str, bias: bool = True, layers: int = 0) -> list[Rule]:
    """Rules for a torch Linear (`.weight` [, `.bias`]) <-> Flax Dense (`kernel` [, `bias`])."""
    rules = [Rule((f"{ours_prefix}/kernel",), (f"{hf_prefix}.weight",), linear_to_ours,
                  linear_to_hf, layers)]
    if bias:
        rules.append(Rule((f"{ours_prefix}/bias",), (f"{hf_prefix}.bias",), layers=layers))
    return rules


def copy(ours: str, hf: str, layers: int = 0) -> Rule:
    return Rule((ours,), (hf,), layers=layers)


@dataclass
class KeyMap:
    """All rules of one model plus HF keys that may be present but are deliberately not loaded."""
    rules: list[Rule]
    ignore: Sequence[str] = field(default_factory=tuple)  # fnmatch patterns

    def ignored(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in self.ignore)


def flatten(params: Any) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


def unflatten(flat: dict[str, Any]) -> Any:
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def _check_coverage(keymap: KeyMap, expected: dict[str, Any]) -> None:
    owners: dict[str, Rule] = {}
    for rule in keymap.rules:
        for p in rule.ours:
            if p in owners:
                raise AssertionError(f"key map: param {p} is mapped twice")
            if p not in expected:
                raise AssertionError(f"key map: rule names param {p}, which the model does not have")
            owners[p] = rule
    unmapped = sorted(set(expected) - set(owners))
    if unmapped:
        raise AssertionError(f"key map: model params without a rule: {unmapped[:5]}")


def _layout_shapes(rule: Rule, shapes: list[tuple[int, ...]], dtypes: list[np.dtype]) -> list[tuple]:
    """Shapes the hook produces, computed on lazily allocated placeholders (no data read)."""
    outs = rule.to_ours([np.empty(s, d) for s, d in zip(shapes, dtypes)])
    return [o.shape for o in outs]


def load_params(path: str | SafetensorsDir, keymap: KeyMap, abstract: dict[str, Any],
                dtype: Any = None, shardings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Loads a HF safetensors directory (a path or an opened `SafetensorsDir`) into our flat
    param dict, strictly.

    abstract: our param path -> ShapeDtypeStruct (from `jax.eval_shape` of the model's init).
    dtype: cast every tensor to this dtype (None keeps the checkpoint's dtype).
    shardings: our param path -> jax.sharding.Sharding; tensors are then placed straight into
      their shards with `jax.make_array_from_callback`, one layer at a time, so the model never
      sits whole in host memory. Without it, arrays land on the default device.
    """
    ckpt = path if isinstance(path, SafetensorsDir) else SafetensorsDir(path)
    _check_coverage(keymap, abstract)

    consumed: set[str] = set()
    problems: list[str] = []
    for rule in keymap.rules:
        for i in (range(rule.layers) if rule.layers else [None]):
            keys = rule.hf_keys(i)
            absent = [k for k in keys if k not in ckpt]
            if absent:
                problems.append(f"missing tensor {absent[0]!r} in {ckpt.path}")
                continue
            consumed.update(keys)
            try:
                got = _layout_shapes(rule, [ckpt.shape(k) for k in keys],
                                     [ckpt.tensors[k].dtype for k in keys])
            except ValueError as e:
                problems.append(f"tensor {keys[0]!r} in {ckpt.file_of(keys[0])} has shape "
                                f"{ckpt.shape(keys[0])}, which does not fit {rule.ours[0]} ({e})")
                continue
            for p, shape in zip(rule.ours, got):
                want = abstract[p].shape[1:] if rule.layers else abstract[p].shape
                if rule.layers and abstract[p].shape[0] != rule.layers:
                    raise AssertionError(f"{p}: stacked over {abstract[p].shape[0]} layers, "
                                         f"rule says {rule.layers}")
                if tuple(shape) != tuple(want):
                    problems.append(
                        f"tensor {keys[0]!r} in {ckpt.file_of(keys[0])} has shape "
                        f"{ckpt.shape(keys[0])}; the model expects {tuple(want)} for {p} "
                        f"(after layout conversion)")
    unexpected = [k for k in ckpt.keys() if k not in consumed and not keymap.ignored(k)]
    problems += [f"unexpected tensor {k!r} in {ckpt.file_of(k)}" for k in sorted(unexpected)]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{ckpt.path} does not match the model: " + "; ".join(problems[:5])
                              + more)

    out: dict[str, Any] = {}
    for rule in keymap.rules:
        for j, p in enumerate(rule.ours):
            target = np.dtype(dtype) if dtype is not None else ckpt.tensors[rule.hf_keys(0)[0]].dtype
            layer = _layer_reader(ckpt, rule, j, target)
            shape = abstract[p].shape
            if shardings is None:
                arr = (np.stack([layer(i) for i in range(rule.layers)]) if rule.layers else layer(None))
                out[p] = jax.device_put(arr)
            else:
                out[p] = jax.make_array_from_callback(shape, shardings[p],
                                                      _shard_reader(rule, layer, shape, target))
    return out


def _layer_reader(ckpt: SafetensorsDir, rule: Rule, j: int, dtype: np.dtype):
    @lru_cache(maxsize=2)
    def read(i):
        xs = [np.asarray(ckpt.get(k)) for k in rule.hf_keys(i)]
        return np.ascontiguousarray(rule.to_ours(xs)[j]).astype(dtype, copy=False)
    return read


def _shard_reader(rule: Rule, layer, shape, dtype):
    def callback(index: tuple[slice, ...]) -> np.ndarray:
        if not rule.layers:
            return layer(None)[index]
        ids = range(*index[0].indices(shape[0]))
        out = np.empty((len(ids),) + tuple(len(range(*s.indices(n))) for s, n in
                                           zip(index[1:], shape[1:])), dtype)
        for o, i in enumerate(ids):
            out[o] = layer(i)[index[1:]]
        return out
    return callback


def export_params(flat: dict[str, Any], keymap: KeyMap) -> dict[str, np.ndarray]:
    """Our flat params -> HF key -> numpy array, by the same rules (arrays gathered to host)."""
    out = {}
    for rule in keymap.rules:
        arrays = [np.asarray(jax.device_get(flat[p])) for p in rule.ours]
        for i in (range(rule.layers) if rule.layers else [None]):
            per = [a[i] for a in arrays] if rule.layers else arrays
            for k, v in zip(rule.hf_keys(i), rule.to_hf(per)):
                out[k] = np.ascontiguousarray(v)
    return out

