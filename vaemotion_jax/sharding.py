"""Device mesh and the one table that maps logical axis names to mesh axes.

Modules name the axes of every parameter ("embed", "mlp", "heads", ...) and never name the mesh.
This file is the only place that decides how those names land on the (data, fsdp, tensor) mesh,
so changing the parallelism is a config change, not a code change.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger("vaemotion_jax.sharding")

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or tuple of mesh axes, or None for replicated).
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    # parameters
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("norm", None),
    ("vision_embed", "fsdp"),
    ("vision_mlp", "tensor"),
    ("vision_heads", "tensor"),
    ("patch", None),
    ("audio_embed", "fsdp"),
    ("audio_mlp", "tensor"),
    ("audio_heads", "tensor"),
    ("audio_length", None),
    ("adapter_hidden", "tensor"),
    ("tokens", None),
    ("qformer_embed", "fsdp"),
    ("qformer_heads", "tensor"),
    ("qformer_mlp", "tensor"),
    ("queries", None),
    ("qformer_tokens", None),
    ("lora_rank", None),
    ("emotion", None),
)


def make_mesh(shape: Sequence[int] = (1, -1, 1), axis_names: Sequence[str] = MESH_AXES,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a mesh of `shape` over `devices` (all by default); one -1 entry takes the rest.
    A fully given shape smaller than the device count uses the first devices (one process)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if len(devices) % known:
            raise ValueError(f"mesh shape {shape} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    need = int(np.prod(shape))
    if need > len(devices):
        raise ValueError(f"mesh shape {tuple(shape)} needs {need} devices, "
                         f"{len(devices)} are available")
    if need < len(devices) and jax.process_count() > 1:
        raise ValueError(f"mesh shape {tuple(shape)} uses {need} of {len(devices)} devices; a "
                         "multi-process run must use them all (put -1 on one axis)")
    devices = devices[:need]
    auto = (jax.sharding.AxisType.Auto,) * len(shape)
    return jax.make_mesh(tuple(shape), tuple(axis_names), axis_types=auto, devices=devices)


def _mesh_axis_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        return mesh.shape[axes]
    return int(np.prod([mesh.shape[a] for a in axes]))


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None, rules=LOGICAL_RULES) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec. Each mesh axis is used at most once per array
    (the first logical axis that claims it wins). A dimension the mesh axes do not divide keeps
    the longest prefix of them that does (possibly none: replicated), and says so once in the log
    (e.g. 2 kv heads on a tensor axis of 4): a plan's memory figures assume the sharded layout.
    """
    table = dict(rules)
    used: set[str] = set()
    out = []
    for i, name in enumerate(logical_axes):
        axes = table.get(name) if name is not None else None
        flat = (axes,) if isinstance(axes, str) else tuple(axes or ())
        flat = tuple(a for a in flat if a not in used and (mesh is None or a in mesh.shape))
        if mesh is not None and shape is not None:
            # keep the longest prefix of mesh axes whose product divides the dimension
            wanted = flat
            while flat and shape[i] % _mesh_axis_size(mesh, flat):
                flat = flat[:-1]
            if flat != wanted:
                _note_fallback(name, shape, i, wanted, flat, mesh)
        used.update(flat)
        out.append(None if not flat else (flat[0] if len(flat) == 1 else flat))
    return PartitionSpec(*out)


_FALLBACKS_SEEN: set = set()


def _note_fallback(name, shape, i, wanted, kept, mesh) -> None:
    key = (name, tuple(shape), wanted, kept, tuple(mesh.shape.items()))
    if key not in _FALLBACKS_SEEN:
        _FALLBACKS_SEEN.add(key)
        log.warning("sharding: logical axis %r (dim %d = %d of shape %s) is not divisible by mesh axes "
                    "%s (size %d); using %s", name, i, shape[i], tuple(shape), wanted,
                    _mesh_axis_size(mesh, wanted), kept or "none (replicated)")


def param_shardings(abstract_params: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """NamedShardings for a tree of (possibly boxed) abstract params from `jax.eval_shape(init)`."""
    def one(leaf):
        if isinstance(leaf, nn.LogicallyPartitioned):
            names, value = leaf.names, leaf.value
        else:
            names, value = (None,) * len(leaf.shape), leaf
        return NamedSharding(mesh, logical_to_spec(names, value.shape, mesh, rules))
    return jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def logical_names(abstract_params: Any) -> Any:
    """The tree of logical axis-name tuples of boxed params (None for unboxed leaves)."""
    return jax.tree.map(lambda x: tuple(x.names) if isinstance(x, nn.LogicallyPartitioned) else None,
                        abstract_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def batch_sharding(mesh: Mesh, ndim: int, batch: int | None = None) -> NamedSharding:
    """Shards the leading (batch) axis over data and fsdp, the rest replicated; with the global
    `batch` size given, over as many of them as divide it."""
    shape = None if batch is None else (batch,) + (1,) * (ndim - 1)
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), shape, mesh))


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op outside a mesh context."""
    return nn.with_logical_constraint(x, tuple(logical_axes), rules=LOGICAL_RULES)


def to_host(x) -> np.ndarray:
    """A (possibly multi-host sharded) array as NumPy on every process."""
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
