"""Qwen2.5-VL configuration: presets, and conversion from/to Hugging Face config.json.

Architecture fields mirror the HF config. Runtime fields (dtype, scan, remat, rope index
semantics) are ours and are not written to config.json.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vaemotion_jax.models.lora import LoRASpec


@dataclass(frozen=True)
class VisionConfig:
    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    out_hidden_size: int = 3584
    tokens_per_second: float = 2
    rope_theta: float = 10000.0
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Values per patch row: channels * temporal_patch * patch * patch (1176)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @property
    def window_merged(self) -> int:
        """Window side in merged tokens (112 / 14 / 2 = 4)."""
        return self.window_size // self.spatial_merge_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    max_position_embeddings: int = 128000
    hidden_act: str = "silu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class Qwen2_5_VLConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    bos_token_id: int = 151643
    eos_token_id: int = 151645
    pad_token_id: int | None = None
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    image_token_id: int = 151655
    video_token_id: int = 151656
    # Runtime (not in config.json).
    dtype: str = "float32"           # activation / compute dtype
    scan_layers: bool = True         # scan over layers: compile time flat in depth
    remat: str = "none"              # none | full | dots (checkpoint policy inside each layer)
    rope_index: str = "qwen"         # "qwen": text after a video resumes at max position + 1
                                     # (the released model, transformers 4.5x); "transformers5":
                                     # resumes at start + max(H', W') (transformers 5.x)
    # LoRA on the decoder's attention projections (models/lora.py); rank 0 = no LoRA params.
    lora_rank: int = 0
    lora_alpha: float = 16.0         # the LoRA delta is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0        # on the LoRA input; active only with deterministic=False
    lora_targets: tuple[str, ...] = ("q", "k", "v", "o")

    def __post_init__(self):
        # a tuple keeps the config hashable (it is a static argument of jitted functions)
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        LoRASpec(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets)

    @property
    def lora(self) -> LoRASpec:
        return LoRASpec(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets)

    def replace(self, **kw) -> "Qwen2_5_VLConfig":
        return dataclasses.replace(self, **kw)


def qwen2_5_vl_7b(**runtime) -> Qwen2_5_VLConfig:
    """Exactly the released Qwen/Qwen2.5-VL-7B-Instruct architecture (about 8.29B parameters)."""
    return Qwen2_5_VLConfig(**runtime)


def tiny(**runtime) -> Qwen2_5_VLConfig:
    """Small widths, same code paths: GQA (4 heads over 2 kv heads), window attention with a
    full-attention block, windows of 2x2 merged tokens (several per frame), M-RoPE sections.
    Vocabulary and special ids match the project's tiny tokenizer (processing/tokenizer.py)."""
    return Qwen2_5_VLConfig(
        vision=VisionConfig(depth=3, hidden_size=64, intermediate_size=96, num_heads=2,
                            window_size=56, fullatt_block_indexes=(1,), out_hidden_size=128),
        text=TextConfig(vocab_size=1024, hidden_size=128, intermediate_size=256, num_layers=4,
                        num_heads=4, num_kv_heads=2, mrope_section=(4, 6, 6),
                        max_position_embeddings=4096),
        bos_token_id=1008, eos_token_id=1010, pad_token_id=1008, vision_start_token_id=1011,
        vision_end_token_id=1012, image_token_id=1014, video_token_id=1015, **runtime)


PRESETS = {"qwen2_5_vl_7b": qwen2_5_vl_7b, "tiny": tiny}


def preset(name: str, **runtime) -> Qwen2_5_VLConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown Qwen2.5-VL preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](**runtime)


# --- Hugging Face config.json -------------------------------------------------------------

def from_hf_dict(d: dict, **runtime) -> Qwen2_5_VLConfig:
    """Reads both layouts: transformers 4.x (text fields at top level, `rope_scaling`) and 5.x
    (`text_config`, `rope_parameters`)."""
    if d.get("model_type") not in ("qwen2_5_vl", None):
        raise ValueError(f"config.json has model_type {d.get('model_type')!r}, expected 'qwen2_5_vl'")
    t = dict(d.get("text_config") or {})
    for k, v in d.items():  # 4.x: text fields live at the top level
        t.setdefault(k, v)
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    v = d["vision_config"]
    vrope = v.get("rope_parameters") or {}
    vision = VisionConfig(
        depth=v["depth"], hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
        num_heads=v["num_heads"], in_channels=v.get("in_channels", v.get("in_chans", 3)),
        patch_size=v.get("patch_size", 14), temporal_patch_size=v.get("temporal_patch_size", 2),
        spatial_merge_size=v.get("spatial_merge_size", 2), window_size=v.get("window_size", 112),
        fullatt_block_indexes=tuple(v.get("fullatt_block_indexes", (7, 15, 23, 31))),
        out_hidden_size=v["out_hidden_size"], tokens_per_second=v.get("tokens_per_second", 4),
        rope_theta=vrope.get("rope_theta", 10000.0), hidden_act=v.get("hidden_act", "silu"))
    text = TextConfig(
        vocab_size=t["vocab_size"], hidden_size=t["hidden_size"],
        intermediate_size=t["intermediate_size"], num_layers=t["num_hidden_layers"],
        num_heads=t["num_attention_heads"],
        num_kv_heads=t.get("num_key_value_heads") or t["num_attention_heads"],
        rms_norm_eps=t.get("rms_norm_eps", 1e-6),
        rope_theta=rope.get("rope_theta", t.get("rope_theta", 1000000.0)),
        mrope_section=tuple(rope.get("mrope_section", (16, 24, 24))),
        max_position_embeddings=t.get("max_position_embeddings", 128000),
        hidden_act=t.get("hidden_act", "silu"))
    if d.get("tie_word_embeddings") or t.get("tie_word_embeddings", False):
        raise ValueError("tied word embeddings are not supported (Qwen2.5-VL-3B+ unties them)")
    if t.get("use_sliding_window"):
        raise ValueError("use_sliding_window=True is not supported (no released Qwen2.5-VL uses it)")
    eos = t.get("eos_token_id", 151645)
    return Qwen2_5_VLConfig(
        vision=vision, text=text, bos_token_id=t.get("bos_token_id", 151643),
        eos_token_id=eos[0] if isinstance(eos, list) else eos, pad_token_id=t.get("pad_token_id"),
        vision_start_token_id=d.get("vision_start_token_id", 151652),
        vision_end_token_id=d.get("vision_end_token_id", 151653),
        image_token_id=d.get("image_token_id", 151655),
        video_token_id=d.get("video_token_id", 151656), **runtime)


def to_hf_dict(c: Qwen2_5_VLConfig) -> dict:
    """config.json in the transformers 5.x layout (`text_config` / `vision_config`)."""
    v, t = c.vision, c.text
    text_config = {
        "model_type": "qwen2_5_vl_text", "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_layers,
        "num_attention_heads": t.num_heads, "num_key_value_heads": t.num_kv_heads,
        "rms_norm_eps": t.rms_norm_eps, "hidden_act": t.hidden_act,
        "max_position_embeddings": t.max_position_embeddings, "use_sliding_window": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta,
                            "mrope_section": list(t.mrope_section)},
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id,
        "pad_token_id": c.pad_token_id,
    }
    vision_config = {
        "model_type": "qwen2_5_vl_vision", "depth": v.depth, "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size, "num_heads": v.num_heads,
        "in_channels": v.in_channels, "patch_size": v.patch_size,
        "temporal_patch_size": v.temporal_patch_size, "spatial_merge_size": v.spatial_merge_size,
        "window_size": v.window_size, "fullatt_block_indexes": list(v.fullatt_block_indexes),
        "out_hidden_size": v.out_hidden_size, "tokens_per_second": v.tokens_per_second,
        "hidden_act": v.hidden_act, "rope_parameters": {"rope_type": "axial",
                                                        "rope_theta": v.rope_theta},
    }
    out = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
        "text_config": text_config, "vision_config": vision_config,
        "tie_word_embeddings": False, "image_token_id": c.image_token_id,
        "video_token_id": c.video_token_id, "vision_start_token_id": c.vision_start_token_id,
        "vision_end_token_id": c.vision_end_token_id,
    }
    return out
