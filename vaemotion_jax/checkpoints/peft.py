"""LoRA weights <-> PEFT adapter directories (`adapter_config.json` + `adapter_model.safetensors`).

An exported directory loads with `PeftModel.from_pretrained(Qwen2_5_VLForConditionalGeneration
..., path)` and gives the logits of our model with the same LoRA weights. Keys follow what PEFT
writes for transformers 5.x (`base_model.model.model.language_model.layers.{i}.self_attn.
q_proj.lora_A.weight`, A (r, in), B (out, r)); loading also reads the 4.x names
(`base_model.model.model.layers...`). Loading is strict, and PEFT options that our LoRA does not
implement (DoRA, rsLoRA, per-module ranks, LoRA on other modules, ...) are errors.
"""
from __future__ import annotations

import json
import os
from typing import Any

from flax import linen as nn

from vaemotion_jax.checkpoints.mapping import (KeyMap, Rule, export_params, flatten, linear_to_hf,
                                               linear_to_ours, load_params, unflatten)
from vaemotion_jax.checkpoints.safetensors_io import (CheckpointError, SafetensorsDir,
                                                      save_safetensors_dir)
from vaemotion_jax.models.lora import TARGETS, LoRASpec, split_lora
from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig
from vaemotion_jax.models.qwen2_5_vl.model import abstract_params

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIXES = {"nested": "base_model.model.model.language_model.", "legacy": "base_model.model.model."}
# adapter_config.json fields that must be off (falsy) for our plain LoRA to be equivalent
UNSUPPORTED = ("use_dora", "use_rslora", "fan_in_fan_out", "rank_pattern", "alpha_pattern",
               "layers_to_transform", "layers_pattern", "modules_to_save", "layer_replication",
               "trainable_token_indices", "target_parameters", "lora_bias", "use_qalora",
               "use_bdlora", "alora_invocation_tokens")


def lora_keymap(spec: LoRASpec, num_layers: int, naming: str = "nested") -> KeyMap:
    """Our "llm/layers/attn/{t}/lora_{a,b}" (stacked) <-> PEFT's per-layer lora_A/lora_B keys."""
    prefix = PREFIXES[naming]
    return KeyMap([
        Rule((f"llm/layers/attn/{t}/lora_{ab}",),
             (f"{prefix}layers.{{i}}.self_attn.{t}_proj.lora_{ab.upper()}.weight",),
             linear_to_ours, linear_to_hf, num_layers)
        for t in spec.targets for ab in "ab"])


def adapter_config(spec: LoRASpec, base_model_name_or_path: str | None = None) -> dict:
    """adapter_config.json for plain LoRA on the decoder attention projections of `spec`."""
    return {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
        "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
        "target_modules": [f"{t}_proj" for t in spec.targets], "bias": "none",
        "init_lora_weights": True, "inference_mode": True, "use_dora": False,
        "use_rslora": False, "fan_in_fan_out": False, "rank_pattern": {}, "alpha_pattern": {},
        "layers_to_transform": None, "layers_pattern": None, "modules_to_save": None,
    }


def export_lora_peft(params: dict, config: Qwen2_5_VLConfig, path: str,
                     base_model_name_or_path: str | None = None) -> list[str]:
    """Writes the LoRA weights of Qwen2.5-VL `params` (the full tree or only its LoRA leaves) as
    a PEFT adapter directory. Returns the written file names."""
    spec = config.lora
    if spec.rank == 0:
        raise ValueError("export_lora_peft: the config has lora_rank 0 (no LoRA to export)")
    flat = flatten(nn.meta.unbox(split_lora(params)[1]))
    keymap = lora_keymap(spec, config.text.num_layers)
    want = {p for rule in keymap.rules for p in rule.ours}
    if set(flat) != want:
        raise ValueError(f"export_lora_peft: the params' LoRA leaves {sorted(flat)} do not match "
                         f"the config's targets {spec.targets} ({sorted(want)})")
    for p, x in flat.items():
        r_axis = 2 if p.endswith("lora_a") else 1
        if x.ndim != 3 or x.shape[0] != config.text.num_layers or x.shape[r_axis] != spec.rank:
            raise ValueError(f"export_lora_peft: {p} has shape {x.shape}; expected (layers "
                             f"{config.text.num_layers}, ...) with rank {spec.rank}")
    os.makedirs(path, exist_ok=True)
    names = save_safetensors_dir(export_params(flat, keymap), path, filename=ADAPTER_WEIGHTS,
                                 max_shard_bytes=2**62)  # PEFT reads one unsharded file
    with open(os.path.join(path, ADAPTER_CONFIG), "w") as f:
        json.dump(adapter_config(spec, base_model_name_or_path), f, indent=2, sort_keys=True)
    return names + [ADAPTER_CONFIG]


def read_adapter_config(path: str) -> dict:
    file = os.path.join(path, ADAPTER_CONFIG)
    try:
        with open(file) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: no {ADAPTER_CONFIG} (not a PEFT adapter directory)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None


def _spec_of(cfg: dict, file: str, targets: tuple[str, ...]) -> LoRASpec:
    if cfg.get("peft_type") != "LORA":
        raise CheckpointError(f"{file}: peft_type {cfg.get('peft_type')!r}; only 'LORA' is supported")
    on = [k for k in UNSUPPORTED if cfg.get(k)]
    if cfg.get("bias", "none") != "none":
        on.append(f"bias={cfg['bias']!r}")
    if on:
        raise CheckpointError(f"{file}: uses PEFT options our LoRA does not implement: {on}")
    modules = cfg.get("target_modules")
    if isinstance(modules, (list, tuple)):
        others = sorted(set(modules) - {f"{t}_proj" for t in TARGETS})
        if others:
            raise CheckpointError(f"{file}: target_modules {others} are not supported (only the "
                                  f"decoder attention projections {[f'{t}_proj' for t in TARGETS]})")
    return LoRASpec(int(cfg["r"]), float(cfg["lora_alpha"]), float(cfg.get("lora_dropout", 0.0)),
                    targets)


def load_lora_peft(path: str, config: Qwen2_5_VLConfig, dtype: Any = "float32"
                   ) -> tuple[Qwen2_5_VLConfig, dict]:
    """Reads a PEFT LoRA adapter for the Qwen2.5-VL of `config`.

    Returns (config with the adapter's lora_rank/alpha/dropout/targets, LoRA params
    {"llm": {"layers": {"attn": {t: {"lora_a" (L, in, r), "lora_b" (L, r, out)}}}}}) to merge
    into the base params; a missing layer, an extra tensor or a wrong shape is an error.
    """
    file = os.path.join(path, ADAPTER_CONFIG)
    cfg_json = read_adapter_config(path)
    ckpt = SafetensorsDir(path, filename=ADAPTER_WEIGHTS)
    naming = ("nested" if any(k.startswith(PREFIXES["nested"]) for k in ckpt.keys())
              else "legacy")
    targets = tuple(t for t in TARGETS
                    if any(f".self_attn.{t}_proj.lora_A." in k for k in ckpt.keys()))
    if not targets:
        raise CheckpointError(f"{ckpt.path}: {ADAPTER_WEIGHTS} holds no LoRA weights of the "
                              f"decoder attention projections")
    spec = _spec_of(cfg_json, file, targets)
    config = config.replace(lora_rank=spec.rank, lora_alpha=spec.alpha,
                            lora_dropout=spec.dropout, lora_targets=spec.targets)
    abstract = flatten(nn.meta.unbox(split_lora(abstract_params(config))[1]))
    flat = load_params(ckpt, lora_keymap(spec, config.text.num_layers, naming), abstract, dtype)
    return config, unflatten(flat)
