"""Audio Spectrogram Transformer (AST) encoder in Flax, and its configuration.

input_values (B, max_length frames, num_mel_bins) -> Conv2d(1 -> D, 16x16, strides (frequency,
time)) over the (mel, frame) plane -> F x T patch grid flattened frequency-major (f * T + t)
-> [cls, distillation, patches] + learned position embeddings -> pre-LN encoder layers
(scanned) -> final LayerNorm -> last_hidden_state (B, 2 + F * T, D): (B, 1214, 768) for the
released MIT/ast-finetuned-audioset-10-10-0.4593.

The encoder is frozen in this project, so it has no dropout. `frozen=True` makes the module
return stop_gradient outputs: no gradient reaches its params and XLA drops its backward pass.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax import linen as nn

from vaemotion_jax.models.layers import Dense, activation, attention
from vaemotion_jax.sharding import constrain

MODEL_TYPE = "audio-spectrogram-transformer"


@dataclass(frozen=True)
class ASTConfig:
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    max_length: int = 1024      # frames of input_values (the position embeddings depend on it)
    num_mel_bins: int = 128
    qkv_bias: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"AST hidden_size {self.hidden_size} is not a multiple of "
                             f"num_heads {self.num_heads}")
        if min(self.max_length, self.num_mel_bins) < self.patch_size:
            raise ValueError(f"AST input of {self.max_length} frames x {self.num_mel_bins} mel "
                             f"bins is smaller than one {self.patch_size}x{self.patch_size} patch")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency, time) patches: (12, 101) for the released model."""
        return ((self.num_mel_bins - self.patch_size) // self.frequency_stride + 1,
                (self.max_length - self.patch_size) // self.time_stride + 1)

    @property
    def num_tokens(self) -> int:
        """Output sequence length: cls + distillation + patches (1214 for the released model)."""
        f, t = self.grid
        return 2 + f * t

    def replace(self, **kw) -> "ASTConfig":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_hf(cls, d: dict) -> "ASTConfig":
        """From a transformers config.json dict (ASTModel or ASTForAudioClassification)."""
        if d.get("model_type") != MODEL_TYPE:
            raise ValueError(f"model_type is {d.get('model_type')!r}, expected {MODEL_TYPE!r}")
        if not isinstance(d.get("patch_size", 16), int):
            raise ValueError(f"patch_size must be one int (square patches), got {d['patch_size']!r}")
        defaults = cls()
        return cls(
            hidden_size=d.get("hidden_size", defaults.hidden_size),
            num_layers=d.get("num_hidden_layers", defaults.num_layers),
            num_heads=d.get("num_attention_heads", defaults.num_heads),
            intermediate_size=d.get("intermediate_size", defaults.intermediate_size),
            hidden_act=d.get("hidden_act", defaults.hidden_act),
            layer_norm_eps=d.get("layer_norm_eps", defaults.layer_norm_eps),
            patch_size=d.get("patch_size", defaults.patch_size),
            frequency_stride=d.get("frequency_stride", defaults.frequency_stride),
            time_stride=d.get("time_stride", defaults.time_stride),
            max_length=d.get("max_length", defaults.max_length),
            num_mel_bins=d.get("num_mel_bins", defaults.num_mel_bins),
            qkv_bias=d.get("qkv_bias", defaults.qkv_bias))

    def to_hf(self) -> dict:
        """config.json of a bare transformers `ASTModel`."""
        return {
            "architectures": ["ASTModel"], "model_type": MODEL_TYPE,
            "hidden_size": self.hidden_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act, "layer_norm_eps": self.layer_norm_eps,
            "patch_size": self.patch_size, "frequency_stride": self.frequency_stride,
            "time_stride": self.time_stride, "max_length": self.max_length,
            "num_mel_bins": self.num_mel_bins, "qkv_bias": self.qkv_bias,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        }


def ast_audioset() -> ASTConfig:
    """MIT/ast-finetuned-audioset-10-10-0.4593: 12 x 768, 12 x 101 patches, 1214 tokens."""
    return ASTConfig()


def tiny() -> ASTConfig:
    """Small widths, same code paths; unequal strides so a frequency/time mix-up shows."""
    return ASTConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                     frequency_stride=12, time_stride=10, max_length=64)


PRESETS = {"ast_audioset": ast_audioset, "tiny": tiny}


def preset(name: str) -> ASTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown AST preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]()


# --- modules --------------------------------------------------------------------------------

@flax.struct.dataclass
class ASTOutput:
    last_hidden_state: jax.Array  # (B, num_tokens, hidden)

    @property
    def pooler_output(self) -> jax.Array:
        """(B, hidden): mean of the cls and distillation tokens, as transformers pools."""
        return (self.last_hidden_state[:, 0] + self.last_hidden_state[:, 1]) / 2


def _layer_norm(eps: float, dtype: Any, name: str) -> nn.LayerNorm:
    """torch-style LayerNorm (two-pass variance), params named by logical axis "norm"."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class ASTAttention(nn.Module):
    cfg: ASTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x (B, S, D) -> (B, S, D), bidirectional."""
        c = self.cfg
        b, s, _ = x.shape
        def proj(name):
            return Dense(c.hidden_size, ("audio_embed", "audio_heads"), use_bias=c.qkv_bias,
                         dtype=self.dtype, name=name)(x).reshape(b, s, c.num_heads, c.head_dim)
        A = ("batch", "length", "act_heads", None)
        out = attention(*(constrain(proj(n), A) for n in "qkv"), None)
        return Dense(c.hidden_size, ("audio_heads", "audio_embed"), dtype=self.dtype,
                     name="o")(out.reshape(b, s, c.hidden_size))


class ASTMLP(nn.Module):
    cfg: ASTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        h = Dense(c.intermediate_size, ("audio_embed", "audio_mlp"), dtype=self.dtype,
                  name="fc1")(x)
        h = constrain(activation(c.hidden_act)(h), ("batch", "length", "act_mlp"))
        return Dense(c.hidden_size, ("audio_mlp", "audio_embed"), dtype=self.dtype,
                     name="fc2")(h)


class ASTLayer(nn.Module):
    """Pre-LN transformer layer; (carry, None) in and out so `nn.scan` can stack it."""
    cfg: ASTConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        x = constrain(x, ("batch", "length", "act_embed"))
        x = x + ASTAttention(c, self.dtype, name="attn")(
            _layer_norm(c.layer_norm_eps, self.dtype, "ln_before")(x))
        x = x + ASTMLP(c, self.dtype, name="mlp")(
            _layer_norm(c.layer_norm_eps, self.dtype, "ln_after")(x))
        return x, None


class ASTModel(nn.Module):
    """AST encoder: `apply({"params": p}, input_values (B, max_length, mel))` -> ASTOutput."""
    config: ASTConfig
    dtype: Any = jnp.float32
    frozen: bool = False

    @nn.compact
    def __call__(self, input_values: jax.Array) -> ASTOutput:
        c = self.config
        if tuple(input_values.shape[1:]) != (c.max_length, c.num_mel_bins):
            raise ValueError(f"AST expects input_values (batch, {c.max_length}, {c.num_mel_bins}), "
                             f"got {tuple(input_values.shape)}; compute them with "
                             f"fbank(..., max_length={c.max_length})")
        b, d = input_values.shape[0], c.hidden_size
        plane = jnp.swapaxes(input_values.astype(self.dtype), 1, 2)[..., None]  # (B, mel, T, 1)
        patches = nn.Conv(
            d, (c.patch_size, c.patch_size), strides=(c.frequency_stride, c.time_stride),
            padding="VALID", dtype=self.dtype, name="patch_embed",
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                     ("patch", "patch", "patch", "audio_embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("audio_embed",)),
        )(plane).reshape(b, -1, d)                                            # f-major
        token = lambda name: self.param(
            name, nn.with_logical_partitioning(nn.initializers.normal(0.02), ("audio_embed",)),
            (d,), jnp.float32)
        position = self.param(
            "position_embeddings",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("audio_length", "audio_embed")),
            (c.num_tokens, d), jnp.float32)
        specials = jnp.stack([token("cls_token"), token("distillation_token")])
        x = jnp.concatenate([jnp.broadcast_to(specials.astype(self.dtype), (b, 2, d)), patches], 1)
        x = x + position.astype(self.dtype)
        layers = nn.scan(ASTLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                         length=c.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = layers(c, self.dtype, name="layers")(x)
        x = _layer_norm(c.layer_norm_eps, self.dtype, "norm")(x)
        if self.frozen:
            x = jax.lax.stop_gradient(x)
        return ASTOutput(last_hidden_state=x)


@partial(jax.jit, static_argnums=0)
def init_params(config: ASTConfig, rng: jax.Array) -> Any:
    """Random params, boxed with their logical axis names (`nn.meta.unbox` to strip).
    Jitted: op-by-op initialisation of the scanned layers takes seconds even for `tiny`."""
    dummy = jnp.zeros((1, config.max_length, config.num_mel_bins), jnp.float32)
    return ASTModel(config).init(rng, dummy)["params"]


def abstract_params(config: ASTConfig) -> Any:
    """Boxed ShapeDtypeStructs of every param, without allocating anything."""
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))
