"""A training workdir's `run.json`: the resolved config and the weights the run was trained from,
all that `vaemotion_jax.inference.load_run` needs to rebuild the trained model."""
from __future__ import annotations

import json
import os

import jax

RUN_FILE = "run.json"


def save_run(workdir: str, c, assets, adapter_dir: str) -> None:
    """Writes workdir/run.json (process 0 only)."""
    if jax.process_index() != 0:
        return
    with open(os.path.join(workdir, RUN_FILE), "w") as f:
        json.dump({"config": c.to_dict(), "backbone_path": assets.backbone_path,
                   "audio_encoder_path": assets.audio_encoder_path,
                   "tokenizer_dir": assets.tokenizer_dir, "world_dir": assets.world_dir,
                   "adapter_dir": adapter_dir}, f, indent=2, default=list)
