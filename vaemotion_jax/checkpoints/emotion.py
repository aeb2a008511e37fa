"""The small trained modules (audio adapter, Emotion Enhancer, Emotion Supervisor) <-> safetensors:
the one format of Stage 1's `audio_adapter/` and Stage 2's `emoadapter/`.

A directory holds `emotion_modules.safetensors` in the PyTorch layout, keyed
"<module>.<layer>.weight|bias" (a Dense kernel (in, out) is stored as a Linear weight (out, in),
a LayerNorm scale as its weight), so each module's tensors load into the matching torch.nn
Linear/LayerNorm stack, and `emotion_modules.json` with each module's config.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import linen as nn

from vaemotion_jax.checkpoints.mapping import flatten, unflatten
from vaemotion_jax.checkpoints.safetensors_io import (CheckpointError, SafetensorsDir,
                                                      save_safetensors_dir)

WEIGHTS = "emotion_modules.safetensors"
CONFIG = "emotion_modules.json"
FORMAT = "vaemotion_jax.emotion_modules/1"


def to_torch_layout(flat: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{"fc1/kernel" (in, out), "fc1/bias", "norm/scale"} -> {"fc1.weight" (out, in), "fc1.bias",
    "norm.weight"}; any other kind of param is an error."""
    out = {}
    for path, x in flat.items():
        *layer, leaf = path.split("/")
        x = np.asarray(jax.device_get(x))
        if leaf == "kernel" and x.ndim == 2:
            key, x = "weight", x.T
        elif leaf == "scale" and x.ndim == 1:
            key = "weight"
        elif leaf == "bias" and x.ndim == 1:
            key = "bias"
        else:
            raise ValueError(f"cannot export param {path} of shape {x.shape}: only Dense kernels "
                             f"(2-D), LayerNorm scales and biases have a PyTorch layout here")
        out[".".join(layer + [key])] = np.ascontiguousarray(x)
    return out


def from_torch_layout(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of `to_torch_layout`: a 2-D weight is a Dense kernel, a 1-D weight a norm scale."""
    out = {}
    for key, x in tensors.items():
        *layer, leaf = key.split(".")
        if leaf == "weight" and x.ndim in (1, 2):
            name, x = ("kernel", x.T) if x.ndim == 2 else ("scale", x)
        elif leaf == "bias" and x.ndim == 1:
            name = "bias"
        else:
            raise CheckpointError(f"tensor {key!r} of shape {x.shape} is not a Linear/LayerNorm "
                                  f"weight or bias")
        out["/".join(layer + [name])] = np.ascontiguousarray(x)
    return out


def _config_dict(name: str, config: Any) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config of module {name!r} must be a dataclass or a dict, got {type(config)}")


def export_emotion_modules(params: Mapping[str, Any], configs: Mapping[str, Any], path: str
                           ) -> list[str]:
    """Writes params[name] for every name in `configs` (e.g. "emotion_enhancer",
    "emotion_supervisor", "audio_adapter") with its config (dataclass or dict)."""
    missing = sorted(set(configs) - set(params))
    if missing:
        raise KeyError(f"export_emotion_modules: params have no module {missing} "
                       f"(they have {sorted(params)})")
    tensors = {}
    for name in configs:
        layers = to_torch_layout(flatten(nn.meta.unbox(params[name])))
        tensors.update({f"{name}.{k}": v for k, v in layers.items()})
    meta = {"format": FORMAT, "modules": {n: _config_dict(n, c) for n, c in configs.items()}}
    os.makedirs(path, exist_ok=True)
    names = save_safetensors_dir(tensors, path, filename=WEIGHTS, max_shard_bytes=2**62)
    with open(os.path.join(path, CONFIG), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return names + [CONFIG]


def load_emotion_modules(path: str) -> tuple[dict, dict]:
    """Reads an `export_emotion_modules` directory: ({name: params}, {name: config dict})."""
    file = os.path.join(path, CONFIG)
    try:
        with open(file) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: not found (not an emotion-modules directory)") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{file}: format {meta.get('format')!r}, expected {FORMAT!r}")
    ckpt = SafetensorsDir(path, filename=WEIGHTS)
    modules = meta["modules"]
    grouped: dict[str, dict[str, np.ndarray]] = {n: {} for n in modules}
    for key in ckpt.keys():
        name, _, rest = key.partition(".")
        if name not in grouped:
            raise CheckpointError(f"unexpected tensor {key!r} in {ckpt.file_of(key)}: no module "
                                  f"{name!r} in {CONFIG}")
        grouped[name][rest] = np.array(ckpt.get(key))
    empty = [n for n, t in grouped.items() if not t]
    if empty:
        raise CheckpointError(f"{ckpt.path}: no tensors for modules {empty} listed in {CONFIG}")
    params = {n: jax.device_put(unflatten(from_torch_layout(t))) for n, t in grouped.items()}
    return params, modules
