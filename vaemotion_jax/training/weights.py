"""Loading the frozen weights of a run onto its mesh, and the audio adapter's own files.

The adapter directory is in the one format of the project's small modules
(checkpoints/emotion.py: PyTorch-layout safetensors + a JSON of each module's config), the same
as Stage 2's `emoadapter/`: Stage 1 writes it, Stage 2 and inference read it.
"""
from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
from flax import linen as nn

from vaemotion_jax import sharding
from vaemotion_jax.checkpoints.ast import load_ast
from vaemotion_jax.checkpoints.emotion import (CONFIG as MODULES_CONFIG, export_emotion_modules,
                                               load_emotion_modules)
from vaemotion_jax.checkpoints.peft import export_lora_peft
from vaemotion_jax.checkpoints.mapping import flatten, unflatten
from vaemotion_jax.checkpoints.qwen2_5_vl import load_qwen2_5_vl
from vaemotion_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsDir
from vaemotion_jax.models.adapters import AudioAdapterConfig, make_audio_adapter
from vaemotion_jax.models.emotion import EmotionEnhancer, EmotionSupervisor
from vaemotion_jax.models.lora import split_lora
from vaemotion_jax.presets import preset_differences

log = logging.getLogger("vaemotion_jax.weights")

ADAPTER = "audio_adapter"            # the module's name in the directory
LEGACY_CONFIG = "adapter_config.json"  # Stage 1 exports from before the shared format (read)


def load_frozen(c, backbone_path: str, audio_path: str, mesh, **lora):
    """(qwen model, qwen params, AST model, AST params) in the run's dtypes, on the mesh.
    lora: lora_rank / lora_alpha / lora_dropout for a backbone with fresh LoRA params."""
    qwen_model, qwen_params = load_qwen2_5_vl(
        backbone_path, dtype=jnp.dtype(c.param_dtype), mesh=mesh, compute_dtype=c.dtype,
        scan_layers=c.scan_layers, remat=c.remat, lora_rng=jax.random.key(c.seed + 1), **lora)
    ast_model, ast_params = load_ast(audio_path, dtype=jnp.dtype(c.param_dtype), mesh=mesh)
    if ast_model.config.max_length != c.data.audio_max_length:
        raise ValueError(f"{audio_path}: the encoder takes {ast_model.config.max_length} fbank "
                         f"frames, data.audio_max_length is {c.data.audio_max_length}")
    differ = preset_differences(c, qwen_model.config, ast_model.config)
    if differ:
        more = f"; and {len(differ) - 6} more" if len(differ) > 6 else ""
        log.warning("the weights (%s, %s) are not the config's presets (%s / %s): %s. The run "
                    "uses the weights; `vaemotion_jax.plan` plans the presets, so its memory and "
                    "FLOPs describe another model (pick the matching preset: --config=<stage>:"
                    "<preset>)", backbone_path, audio_path, c.qwen_preset, c.ast_preset,
                    "; ".join(differ[:6]) + more)
    return qwen_model, qwen_params, ast_model, ast_params


def _boxed_adapter(cfg: AudioAdapterConfig, ast_config, rng=None):
    """(module, boxed abstract params) of an adapter for the encoder's features."""
    adapter = make_audio_adapter(cfg, ast_config.num_tokens, ast_config.hidden_size)
    feats = jnp.zeros((1, ast_config.num_tokens, ast_config.hidden_size))
    rng = jax.random.key(0) if rng is None else rng
    return adapter, feats, jax.eval_shape(lambda r: adapter.init(r, feats)["params"], rng)


def init_adapter(cfg: AudioAdapterConfig, ast_config, mesh, rng) -> dict:
    """Fresh adapter params, created sharded by their logical axes."""
    adapter, feats, boxed = _boxed_adapter(cfg, ast_config, rng)
    init = jax.jit(lambda r: nn.meta.unbox(adapter.init(r, feats)["params"]),
                   out_shardings=sharding.param_shardings(boxed, mesh))
    return init(rng)


def emotion_modules(cfg, hidden: int) -> dict[str, nn.Module]:
    """The EmoAdapter parts an `EmotionConfig` turns on, by their param-tree names."""
    parts = {}
    if cfg.enhancer:
        parts["emotion_enhancer"] = EmotionEnhancer(hidden, cfg.enhancer_hidden)
    if cfg.supervisor:
        parts["emotion_supervisor"] = EmotionSupervisor(hidden, cfg.supervisor_hidden)
    return parts


def _emotion_init(cfg, hidden: int):
    z = jnp.zeros((1, 2, hidden), jnp.float32)
    return lambda r: {name: m.init(r, z)["params"] for name, m in emotion_modules(cfg, hidden).items()}


def abstract_emotion_params(cfg, hidden: int) -> dict:
    """Boxed abstract params (logical axes) of the EmoAdapter parts `cfg` turns on."""
    return jax.eval_shape(_emotion_init(cfg, hidden), jax.random.key(0))


def init_emotion_params(cfg, hidden: int, mesh, rng) -> dict:
    """Fresh EmoAdapter params (enhancer W2 = 0: identity at start), created sharded by their
    logical axes, as the adapter's are."""
    init = jax.jit(lambda r: nn.meta.unbox(_emotion_init(cfg, hidden)(r)),
                   out_shardings=sharding.param_shardings(abstract_emotion_params(cfg, hidden), mesh))
    return init(rng)


def export_adapter(params: dict, cfg: AudioAdapterConfig, path: str) -> None:
    """Gathers the (possibly multi-host sharded) adapter; process 0 writes it."""
    host = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() == 0:
        export_emotion_modules({ADAPTER: host}, {ADAPTER: cfg}, path)


def is_adapter_dir(path: str) -> bool:
    """Whether `path` holds an exported adapter (this format or the one before it)."""
    return any(os.path.exists(os.path.join(path, f)) for f in (MODULES_CONFIG, LEGACY_CONFIG))


def export_lora(backbone: dict, qwen, path: str) -> None:
    """Gathers the backbone's (possibly multi-host sharded) LoRA leaves; process 0 writes them as
    a PEFT adapter directory."""
    host = multihost_utils.process_allgather(split_lora(backbone)[1], tiled=True)
    if jax.process_index() == 0:
        export_lora_peft(host, qwen, path)


def load_adapter(path: str, ast_config, mesh) -> tuple[dict, AudioAdapterConfig]:
    """An exported adapter (`export_adapter`, or the `audio_adapter` of a Stage 2 `emoadapter/`),
    strictly checked against the params its config implies."""
    if os.path.exists(os.path.join(path, MODULES_CONFIG)):
        modules, configs = load_emotion_modules(path)
        if ADAPTER not in modules:
            raise CheckpointError(f"{path}: no {ADAPTER!r} module (it has {sorted(modules)})")
        config, got = configs[ADAPTER], flatten(modules[ADAPTER])
    elif os.path.exists(os.path.join(path, LEGACY_CONFIG)):
        with open(os.path.join(path, LEGACY_CONFIG)) as f:
            config = json.load(f)
        ckpt = SafetensorsDir(path)
        got = {k.partition(".")[2].replace(".", "/"): ckpt.get(k) for k in ckpt.keys()}
    else:
        raise FileNotFoundError(f"{path}: no {MODULES_CONFIG}; is this a Stage 1 adapter export?")
    cfg = AudioAdapterConfig(**{k: tuple(v) if isinstance(v, list) else v   # JSON lists
                                for k, v in config.items()})
    _, _, boxed = _boxed_adapter(cfg, ast_config)
    want = flatten(nn.meta.unbox(boxed))
    if set(got) != set(want):
        raise CheckpointError(f"{path}: adapter tensors {sorted(got)} do not match the config's "
                              f"{sorted(want)}")
    flat = {}
    for k, spec in want.items():
        arr = np.asarray(got[k])
        if arr.shape != spec.shape:
            raise CheckpointError(f"{path}: {ADAPTER}/{k} has shape {arr.shape}, expected "
                                  f"{spec.shape}")
        flat[k] = arr
    shard = sharding.param_shardings(boxed, mesh)
    return jax.tree.map(lambda x, sh: jax.device_put(x, sh), unflatten(flat), shard), cfg
