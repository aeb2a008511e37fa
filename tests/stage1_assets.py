"""Small, fast Stage 1 fixtures: a 16-clip world, a random tiny backbone and AST as HF dirs."""
from __future__ import annotations

import os
import shutil

import jax
from flax import linen as nn

from vaemotion_jax.checkpoints.ast import export_ast
from vaemotion_jax.checkpoints.qwen2_5_vl import export_qwen2_5_vl
from vaemotion_jax.embedded.synth import WorldConfig, generate
from vaemotion_jax.models import ast as ast_lib
from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
from vaemotion_jax.models.qwen2_5_vl.model import init_params
from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir

AUDIO_FRAMES = 300


def make_assets(root: str) -> dict[str, str]:
    world = os.path.join(root, "world")
    generate(world, WorldConfig(num_clips=20, mismatch=0.0, heldout=0.2), workers=1)
    backbone = os.path.join(root, "backbone")
    cfg = qwen_config.tiny()
    export_qwen2_5_vl(nn.meta.unbox(init_params(cfg, jax.random.key(0))), cfg, backbone)
    tok = default_tiny_tokenizer_dir()
    for name in os.listdir(tok):
        shutil.copy(os.path.join(tok, name), backbone)
    audio = os.path.join(root, "ast")
    acfg = ast_lib.tiny().replace(max_length=AUDIO_FRAMES)
    export_ast(nn.meta.unbox(ast_lib.init_params(acfg, jax.random.key(1))), acfg, audio)
    return {"world": world, "backbone": backbone, "audio": audio}


def settings(assets: dict, workdir: str, **extra) -> dict:
    """configs/stage1.py overrides for a few fast steps on the fixtures ("a.b" -> value)."""
    return {"backbone_path": assets["backbone"], "audio_encoder_path": assets["audio"],
            "data.world_dir": assets["world"], "workdir": workdir, "steps": 8,
            "data.batch_size": 4, "log_every": 1, "checkpoint_every": 2, "eval_clips": 0,
            "max_response_tokens": 6, "teacher_batch": 8, "optim.warmup_steps": 2,
            "data.audio_max_length": AUDIO_FRAMES, "compilation_cache": "", **extra}


def cli_args(values: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in values.items()]


def config(values: dict, stage: str = "stage1"):
    """configs/<stage>.get_config() with `values` applied."""
    import importlib
    from vaemotion_jax.configs.common import override
    return override(importlib.import_module(f"vaemotion_jax.configs.{stage}").get_config(), values)
