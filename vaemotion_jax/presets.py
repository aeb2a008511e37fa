"""Model presets: the sizes of the inputs that follow from a backbone and its audio encoder.
`fill` writes one into a config when the config is made (`--config=stage1:qwen2_5_vl_7b`);
`check` refuses a config whose sizes and model disagree."""
from __future__ import annotations

import dataclasses

import ml_collections

from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.models import ast as ast_lib
from vaemotion_jax.models.qwen2_5_vl import config as qwen_config

# Model presets: sizes of the inputs that follow from the backbone and the audio encoder.
PRESETS = {
    # The embedded default: a tiny Qwen2.5-VL taught to caption the synthetic world, a tiny AST.
    # Frames: a fixed 4 per 3 s world clip (2 temporal groups of 8x8 patches -> 32 tokens per
    # clip): 2 fps would give 6 frames and 48 tokens for the same picture, 1.5x the cost of
    # every step on a 2-core CPU, and the world's objects move slowly enough for 4.
    "tiny": dict(
        qwen="tiny", ast="tiny", resized_hw=(112, 112), fps=None, max_frames=None, num_frames=4,
        audio_max_length=300, audio_windows=1, adapter_seq_hidden=64, adapter_channel_hidden=128,
        # kind="qformer": a Q-Former as narrow as the tiny AST (32) and LLM (128) it sits between
        adapter_queries=8, adapter_qformer_dim=64, adapter_qformer_heads=4,
        min_pixels=28 * 28, max_pixels=112 * 112, dtype="float32", param_dtype="float32",
        mesh=(1, -1, 1), remat="none",
        # layers unrolled: scanning keeps compile time flat in depth, but the scan's backward
        # zero-fills and copies stacked activation buffers (about 8% of a small model's step)
        scan_layers=False,
        # stage 2: a tiny model trained for minutes needs a larger rate than the paper's 1e-5
        stage2_lr=3e-3, enhancer_hidden=256, supervisor_hidden=64,
        # how the backbone answers multiple choice (evaluation/prompts.py `choice_answer`): the
        # tiny stand-in names the option, then its letter; generation needs room for that
        mc_answer_style="named", answer_tokens=32),
    # The paper's setting: 512x512 video (-> 504x504, 324 tokens per 2 frames), 16 kHz audio.
    # Frames: Qwen2.5-VL's native 2 fps, capped at 8 frames (4 temporal groups -> 1296 tokens
    # per clip, 2592 for the joint input): a 10 s VGGSound clip gets 8 frames at 0.8 fps, a 30 s
    # movie clip 8 frames at 0.27 fps. Uncapped 2 fps would be 3240 tokens per 10 s clip and
    # 9720 per 30 s clip (19440 joint), beyond a 24 GB GPU. AST: 1024 fbank frames (10.24 s)
    # per window, up to 3 windows averaged so that a 30 s clip's audio spans its frames.
    "qwen2_5_vl_7b": dict(
        qwen="qwen2_5_vl_7b", ast="ast_audioset", resized_hw=(512, 512), fps=2.0, max_frames=8,
        num_frames=None, audio_max_length=1024, audio_windows=3, adapter_seq_hidden=1024,
        adapter_channel_hidden=3584,
        # kind="qformer": AcoustEmo's K = 32 queries, d_model = 768 (BERT-base heads: 12)
        adapter_queries=32, adapter_qformer_dim=768, adapter_qformer_heads=12,
        min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28, dtype="bfloat16",
        param_dtype="bfloat16", mesh=(1, -1, 1), remat="full", scan_layers=True,
        stage2_lr=1e-5, enhancer_hidden=1024, supervisor_hidden=256,
        mc_answer_style="letter", answer_tokens=8),
}


def fill(c: ml_collections.ConfigDict, model: str) -> ml_collections.ConfigDict:
    """Writes `model`'s preset into config `c` (configs call it in get_config, so a config
    printed before the run already holds every value the run uses)."""
    if model not in PRESETS:
        raise ValueError(f"unknown model preset {model!r}; known: {sorted(PRESETS)}")
    p = PRESETS[model]
    with c.unlocked():
        c.model, c.qwen_preset, c.ast_preset = model, p["qwen"], p["ast"]
        # frame sampling: `sampling` picks the fields that apply (the other mode's values are
        # kept, unused, so that switching mode on the command line needs no None)
        c.data.sampling = "fps" if p["fps"] else "num_frames"
        c.data.fps = float(p["fps"] or 2.0)
        c.data.max_frames = p["max_frames"] or 8
        c.data.num_frames = p["num_frames"] or 16
        for field in ("resized_hw", "min_pixels", "max_pixels", "audio_max_length", "audio_windows",
                      "mc_answer_style"):
            c.data[field] = p[field]
        c.eval_max_new_tokens = p["answer_tokens"]
        c.adapter.seq_hidden = p["adapter_seq_hidden"]
        c.adapter.channel_hidden = p["adapter_channel_hidden"]
        for field in ("queries", "qformer_dim", "qformer_heads"):
            c.adapter[field] = p[f"adapter_{field}"]
        for field in ("mesh", "dtype", "param_dtype", "remat", "scan_layers"):
            c[field] = p[field]
        if c.stage == "stage2":
            c.optim.lr = p["stage2_lr"]
            for field in ("enhancer_hidden", "supervisor_hidden"):
                c.emotion[field] = p[field]
    return c


def check(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Refuses a config whose `model` no longer matches the preset its sizes came from (set the
    model with `--config=stage1:<preset>`, not `--config.model`) or whose media settings are
    inconsistent; returns `c`."""
    if c.model not in PRESETS:
        raise ValueError(f"unknown model preset {c.model!r}; known: {sorted(PRESETS)}")
    if PRESETS[c.model]["qwen"] != c.get("qwen_preset"):
        raise ValueError(
            f"config.model is {c.model!r} but the config's sizes are the {c.get('qwen_preset')!r} "
            f"preset's: choose the model with the config argument (--config=stage1:{c.model}), "
            "which fills every size from its preset")
    MediaSpec.from_config(c.data)
    return c


def _fields_differ(name: str, want, got, skip=()) -> list[str]:
    return [f"{name}.{f.name} {getattr(got, f.name)!r} (preset {getattr(want, f.name)!r})"
            for f in dataclasses.fields(want)
            if f.name not in skip and getattr(want, f.name) != getattr(got, f.name)]


# Runtime fields of Qwen2_5_VLConfig (not in config.json): not part of a checkpoint's identity.
_QWEN_RUNTIME = ("vision", "text", "dtype", "scan_layers", "remat", "rope_index", "lora_rank",
                 "lora_alpha", "lora_dropout", "lora_targets")


def preset_differences(c: ml_collections.ConfigDict, qwen, ast) -> list[str]:
    """Where loaded weights' architectures (Qwen2_5_VLConfig, ASTConfig) differ from the config's
    presets, which are what `vaemotion_jax.plan` compiles: [] when the plan describes the run."""
    want_q = qwen_config.preset(c.qwen_preset)
    want_a = ast_lib.preset(c.ast_preset).replace(max_length=c.data.audio_max_length)
    return (_fields_differ("backbone.vision", want_q.vision, qwen.vision)
            + _fields_differ("backbone.text", want_q.text, qwen.text)
            + _fields_differ("backbone", want_q, qwen, skip=_QWEN_RUNTIME)
            + _fields_differ("audio_encoder", want_a, ast))
