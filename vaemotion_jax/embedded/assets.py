"""The embedded default's assets, made on first use in the cache ($VAEMOTION_CACHE or
~/.cache/vaemotion_jax) and reused: the synthetic world, the tiny tokenizer, a tiny AST and the
tiny captioning backbone. Each is an ordinary directory (Hugging Face layout for weights), so
the stages load them exactly as they load real checkpoints.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

from vaemotion_jax.embedded.cache import cache_path, publish

log = logging.getLogger("vaemotion_jax.assets")


@dataclass(frozen=True)
class Assets:
    world_dir: str
    tokenizer_dir: str
    backbone_path: str
    audio_encoder_path: str


def tiny_audio_encoder(world_dir: str, max_length: int) -> str:
    """A tiny AST pretrained on the world's sounds (audio_pretrain.py), saved as a HF dir."""
    from vaemotion_jax.models.ast import tiny
    from vaemotion_jax.embedded.audio_pretrain import pretrain_ast, recipe_key

    cfg = tiny().replace(max_length=max_length)
    final = cache_path("tiny_ast", recipe_key(world_dir, cfg))
    if os.path.exists(os.path.join(final, "config.json")):
        return final
    log.info("pretraining the tiny audio encoder on the world's sounds (once; cached in %s)", final)
    publish(pretrain_ast(final, world_dir, cfg), final, "config.json")
    return final


def tiny_backbone(world_dir: str, tokenizer_dir: str, prompts: Sequence[str]) -> str:
    """The tiny Qwen2.5-VL taught to talk and to see the world (embedded/backbone.py; trained
    once, then cached)."""
    from vaemotion_jax.embedded.backbone import recipe_key, train_backbone

    final = cache_path("tiny_backbone", recipe_key(world_dir, tokenizer_dir, prompts))
    if os.path.exists(os.path.join(final, "config.json")):
        return final
    log.info("teaching the tiny backbone language and the world's videos (once; cached in %s)",
             final)
    return train_backbone(final, world_dir, tokenizer_dir, prompts)


def default_assets(prompts: Sequence[str], audio_max_length: int) -> Assets:
    from vaemotion_jax.embedded.synth import default_world_dir
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir

    world = default_world_dir()
    tokenizer = default_tiny_tokenizer_dir()
    return Assets(world, tokenizer, tiny_backbone(world, tokenizer, prompts),
                  tiny_audio_encoder(world, audio_max_length))
