"""Qwen2.5-VL <-> Hugging Face safetensors: the key map, `load_qwen2_5_vl`, `export_qwen2_5_vl`."""
from __future__ import annotations

import os
from typing import Any

import jax
from flax import linen as nn

from vaemotion_jax.checkpoints.mapping import (KeyMap, Rule, copy, export_params, flatten,
                                               linear, load_params, split_to_hf, split_to_ours,
                                               unflatten)
from vaemotion_jax.checkpoints.safetensors_io import SafetensorsDir, read_config_json, save_safetensors_dir
from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig, from_hf_dict, to_hf_dict
from vaemotion_jax.models.lora import split_lora
from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL, abstract_params, init_lora_params
from vaemotion_jax.sharding import param_shardings

# File-key prefixes: transformers writes the 4.x names; some tools keep the nested 5.x names.
NAMINGS = {
    "legacy": {"llm": "model.", "visual": "visual."},
    "nested": {"llm": "model.language_model.", "visual": "model.visual."},
}


def read_hf_config(path: str, **runtime) -> Qwen2_5_VLConfig:
    """The model config of a Hugging Face Qwen2.5-VL directory (its config.json)."""
    file, d = read_config_json(path)
    try:
        return from_hf_dict(d, **runtime)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{file}: not a usable Qwen2.5-VL config ({e!s})") from None


def keymap(cfg: Qwen2_5_VLConfig, naming: str = "legacy") -> KeyMap:
    llm, vis = NAMINGS[naming]["llm"], NAMINGS[naming]["visual"]
    v, t = cfg.vision, cfg.text
    nv, nt = v.depth, t.num_layers
    patch_shape = (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)

    def conv3d_to_ours(xs):  # Conv3d (D, C, T, P, P) == a matmul over rows ordered [C][T][P][P]
        return [xs[0].reshape(xs[0].shape[0], -1).T]

    def conv3d_to_hf(xs):
        return [xs[0].T.reshape(patch_shape)]

    rules = [
        Rule(("visual/patch_embed/kernel",), (f"{vis}patch_embed.proj.weight",), conv3d_to_ours,
             conv3d_to_hf),
        copy("visual/blocks/norm1/scale", f"{vis}blocks.{{i}}.norm1.weight", nv),
        copy("visual/blocks/norm2/scale", f"{vis}blocks.{{i}}.norm2.weight", nv),
        Rule(tuple(f"visual/blocks/attn/{n}/kernel" for n in "qkv"),
             (f"{vis}blocks.{{i}}.attn.qkv.weight",), split_to_ours(3, True), split_to_hf(True), nv),
        Rule(tuple(f"visual/blocks/attn/{n}/bias" for n in "qkv"),
             (f"{vis}blocks.{{i}}.attn.qkv.bias",), split_to_ours(3, False), split_to_hf(False), nv),
        *linear("visual/blocks/attn/proj", f"{vis}blocks.{{i}}.attn.proj", layers=nv),
        *[r for n in ("gate", "up", "down")
          for r in linear(f"visual/blocks/mlp/{n}", f"{vis}blocks.{{i}}.mlp.{n}_proj", layers=nv)],
        copy("visual/merger/ln_q/scale", f"{vis}merger.ln_q.weight"),
        *linear("visual/merger/fc1", f"{vis}merger.mlp.0"),
        *linear("visual/merger/fc2", f"{vis}merger.mlp.2"),
        copy("embed_tokens/embedding", f"{llm}embed_tokens.weight"),
        copy("llm/layers/input_norm/scale", f"{llm}layers.{{i}}.input_layernorm.weight", nt),
        copy("llm/layers/post_norm/scale", f"{llm}layers.{{i}}.post_attention_layernorm.weight", nt),
        *[r for n in "qkv" for r in linear(f"llm/layers/attn/{n}",
                                           f"{llm}layers.{{i}}.self_attn.{n}_proj", layers=nt)],
        *linear("llm/layers/attn/o", f"{llm}layers.{{i}}.self_attn.o_proj", bias=False, layers=nt),
        *[r for n in ("gate", "up", "down")
          for r in linear(f"llm/layers/mlp/{n}", f"{llm}layers.{{i}}.mlp.{n}_proj", bias=False,
                          layers=nt)],
        copy("llm/norm/scale", f"{llm}norm.weight"),
        *linear("lm_head", "lm_head", bias=False),
    ]
    return KeyMap(rules)


def _naming_of(ckpt: SafetensorsDir) -> str:
    return "nested" if "model.language_model.embed_tokens.weight" in ckpt else "legacy"


def load_qwen2_5_vl(path: str, dtype: Any = None, mesh: jax.sharding.Mesh | None = None,
                    lora_rng: jax.Array | None = None, **runtime) -> tuple[Qwen2_5_VL, dict]:
    """Loads a local Hugging Face Qwen2.5-VL directory (config.json + safetensors).

    dtype: cast the weights (e.g. jnp.bfloat16); None keeps the stored dtype.
    mesh: place each tensor straight into its shards by the logical rules (no whole-model copy
      on the host). runtime: Qwen2_5_VLConfig runtime fields (dtype of activations via
      `dtype=` is separate: pass e.g. `compute_dtype="bfloat16"`), scan_layers, remat, rope_index,
      lora_*. With lora_rank > 0 the base weights are loaded strictly as without LoRA and fresh
      LoRA params (float32, B = 0, A from `lora_rng`, default key 0) are added.
    Returns (model, params) with `model.apply({"params": params}, ...)`.
    """
    if "compute_dtype" in runtime:
        runtime["dtype"] = runtime.pop("compute_dtype")
    cfg = read_hf_config(path, **runtime)
    boxed = abstract_params(cfg.replace(lora_rank=0))
    abstract = flatten(nn.meta.unbox(boxed))
    shardings = flatten(param_shardings(boxed, mesh)) if mesh is not None else None
    naming = _naming_of(SafetensorsDir(path))
    flat = load_params(path, keymap(cfg, naming), abstract, dtype, shardings)
    if cfg.lora_rank:
        rng = jax.random.key(0) if lora_rng is None else lora_rng
        flat.update(flatten(init_lora_params(cfg, rng, mesh)))
    return Qwen2_5_VL(cfg), unflatten(flat)


def export_qwen2_5_vl(params: dict, config: Qwen2_5_VLConfig, path: str,
                      max_shard_bytes: int = 5 * 2**30) -> list[str]:
    """Writes params + config.json in the Hugging Face layout (loadable by transformers).
    LoRA weights are refused: merge them first (`models.lora.merge_lora`) or export them apart
    (`checkpoints.peft.export_lora_peft`)."""
    lora = sorted(flatten(split_lora(nn.meta.unbox(params))[1]))
    if lora:
        raise ValueError(f"params hold LoRA weights ({lora[0]}, ...), which a Hugging Face "
                         f"Qwen2.5-VL checkpoint has no place for: merge them into the kernels with "
                         f"merge_lora(params, config.lora) or export them with export_lora_peft")
    tensors = export_params(flatten(nn.meta.unbox(params)), keymap(config))
    os.makedirs(path, exist_ok=True)
    return save_safetensors_dir(tensors, path, to_hf_dict(config), max_shard_bytes)
