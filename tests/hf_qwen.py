"""Builds tiny random transformers Qwen2.5-VL references (test helper; torch lives only in tests)."""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig, to_hf_dict


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.08) -> None:
    """Larger-than-init random weights (and norms != 1) so that parity tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or "ln_q" in name):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def make_hf_qwen(path: str, cfg: Qwen2_5_VLConfig, seed: int = 0, **save_kw):
    """Saves a random transformers model with our config's architecture to `path`."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(to_hf_dict(cfg), f)
    hf_cfg = AutoConfig.from_pretrained(path)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(hf_cfg).eval()
    randomize_(model, seed)
    model.save_pretrained(path, **save_kw)
    return model


def video_inputs(cfg: Qwen2_5_VLConfig, grids, seed: int = 0):
    """Random patch rows for videos with `grids` (t, h, w) and their placeholder counts."""
    rng = np.random.default_rng(seed)
    rows = sum(int(np.prod(g)) for g in grids)
    pixels = rng.standard_normal((rows, cfg.vision.patch_dim)).astype(np.float32)
    return pixels, np.asarray(grids, np.int64)


def build_ids(cfg: Qwen2_5_VLConfig, segments, rng):
    """segments: list of ints (random text of that length) or ('video', n_tokens)."""
    ids = []
    for s in segments:
        if isinstance(s, tuple):
            ids += [cfg.vision_start_token_id] + [cfg.video_token_id] * s[1] + [cfg.vision_end_token_id]
        else:
            ids += list(rng.integers(0, 1000, s))
    return ids
