"""AST <-> Hugging Face safetensors: the key map, `load_ast`, `export_ast`.

Reads a bare `ASTModel` directory (keys `embeddings.*`, `encoder.layer.N.*`, `layernorm.*`) and an
`ASTForAudioClassification` directory (the same keys under `audio_spectrogram_transformer.`,
plus `classifier.*`, which is deliberately not loaded). Both the names transformers writes
(4.x names, also on the Hub) and transformers 5's in-memory module names are understood.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaemotion_jax.checkpoints.mapping import (KeyMap, Rule, conv_to_hf, conv_to_ours, copy,
                                               export_params, flatten, linear, load_params,
                                               unflatten)
from vaemotion_jax.checkpoints.safetensors_io import (CheckpointError, SafetensorsDir, read_config_json,
                                                      save_safetensors_dir)
from vaemotion_jax.models.ast import MODEL_TYPE, ASTConfig, ASTModel, abstract_params
from vaemotion_jax.sharding import param_shardings

CLASSIFIER_PREFIX = "audio_spectrogram_transformer."  # ASTForAudioClassification's backbone

# Per-layer HF names (templates over the layer index {i}).
NAMINGS = {
    "legacy": {  # what save_pretrained writes and the Hub checkpoints hold
        "q": "encoder.layer.{i}.attention.attention.query",
        "k": "encoder.layer.{i}.attention.attention.key",
        "v": "encoder.layer.{i}.attention.attention.value",
        "o": "encoder.layer.{i}.attention.output.dense",
        "fc1": "encoder.layer.{i}.intermediate.dense",
        "fc2": "encoder.layer.{i}.output.dense",
        "ln_before": "encoder.layer.{i}.layernorm_before",
        "ln_after": "encoder.layer.{i}.layernorm_after",
    },
    "transformers5": {  # transformers >= 5 module names, e.g. from a raw state_dict
        "q": "layers.{i}.attention.q_proj",
        "k": "layers.{i}.attention.k_proj",
        "v": "layers.{i}.attention.v_proj",
        "o": "layers.{i}.attention.o_proj",
        "fc1": "layers.{i}.mlp.fc1",
        "fc2": "layers.{i}.mlp.fc2",
        "ln_before": "layers.{i}.layernorm_before",
        "ln_after": "layers.{i}.layernorm_after",
    },
}


def _squeeze_leading(n: int):
    """Hooks between HF's (1, [1,] ...) parameters and ours without the leading unit axes."""
    def to_ours(xs):
        if xs[0].shape[:n] != (1,) * n:
            raise ValueError(f"expected {n} leading unit axes")
        return [xs[0].reshape(xs[0].shape[n:])]

    def to_hf(xs):
        return [xs[0].reshape((1,) * n + xs[0].shape)]
    return to_ours, to_hf


def keymap(cfg: ASTConfig, prefix: str = "", naming: str = "legacy") -> KeyMap:
    """Rules for our ASTModel params; `prefix` is "" (ASTModel) or CLASSIFIER_PREFIX."""
    n = {k: prefix + v for k, v in NAMINGS[naming].items()}
    layers = cfg.num_layers
    emb = f"{prefix}embeddings."
    rules = [
        Rule(("cls_token",), (f"{emb}cls_token",), *_squeeze_leading(2)),
        Rule(("distillation_token",), (f"{emb}distillation_token",), *_squeeze_leading(2)),
        Rule(("position_embeddings",), (f"{emb}position_embeddings",), *_squeeze_leading(1)),
        Rule(("patch_embed/kernel",), (f"{emb}patch_embeddings.projection.weight",),
             conv_to_ours, conv_to_hf),
        copy("patch_embed/bias", f"{emb}patch_embeddings.projection.bias"),
        *[r for p in "qkv" for r in linear(f"layers/attn/{p}", n[p], cfg.qkv_bias, layers)],
        *linear("layers/attn/o", n["o"], layers=layers),
        *linear("layers/mlp/fc1", n["fc1"], layers=layers),
        *linear("layers/mlp/fc2", n["fc2"], layers=layers),
        *[copy(f"layers/{ln}/{ours}", f"{n[ln]}.{hf}", layers)
          for ln in ("ln_before", "ln_after") for ours, hf in (("scale", "weight"), ("bias", "bias"))],
        copy("norm/scale", f"{prefix}layernorm.weight"),
        copy("norm/bias", f"{prefix}layernorm.bias"),
    ]
    return KeyMap(rules, ignore=("classifier.*",) if prefix else ())


def read_ast_config(path: str) -> ASTConfig:
    """The ASTConfig of a checkpoint directory; CheckpointError if it is not an AST checkpoint."""
    file, d = read_config_json(path)
    if d.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"{file}: model_type {d.get('model_type')!r} (architectures "
            f"{d.get('architectures')}) is not an AST checkpoint; load_ast expects "
            f"model_type {MODEL_TYPE!r} (ASTModel or ASTForAudioClassification)")
    try:
        return ASTConfig.from_hf(d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: not a usable AST config ({e})") from None


def _layout(ckpt: SafetensorsDir) -> tuple[str, str]:
    """(prefix, naming) of the checkpoint's keys."""
    prefix = CLASSIFIER_PREFIX if f"{CLASSIFIER_PREFIX}embeddings.cls_token" in ckpt else ""
    naming = "transformers5" if f"{prefix}layers.0.layernorm_before.weight" in ckpt else "legacy"
    return prefix, naming


def load_ast(path: str, dtype: Any = None, mesh: jax.sharding.Mesh | None = None
             ) -> tuple[ASTModel, dict]:
    """Loads a local Hugging Face AST directory (config.json + safetensors), strictly.

    dtype: cast the weights and compute in this dtype (e.g. jnp.bfloat16); None keeps the
      stored weights and computes in float32.
    mesh: place each tensor straight into its shards by the logical rules.
    Returns (model, params): `model.apply({"params": params}, input_values).last_hidden_state`.
    For a frozen encoder use `model.clone(frozen=True)`.
    """
    cfg = read_ast_config(path)
    prefix, naming = _layout(SafetensorsDir(path))
    boxed = abstract_params(cfg)
    abstract = flatten(nn.meta.unbox(boxed))
    shardings = flatten(param_shardings(boxed, mesh)) if mesh is not None else None
    flat = load_params(path, keymap(cfg, prefix, naming), abstract, dtype, shardings)
    model = ASTModel(cfg, dtype=jnp.float32 if dtype is None else dtype)
    return model, unflatten(flat)


def export_ast(params: dict, config: ASTConfig, path: str) -> list[str]:
    """Writes params + config.json as a bare transformers `ASTModel` directory."""
    tensors = export_params(flatten(nn.meta.unbox(params)), keymap(config))
    return save_safetensors_dir(tensors, path, config.to_hf())
