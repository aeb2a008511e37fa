"""The Qwen2 decoder of Qwen2.5-VL: GQA with q/k/v bias, M-RoPE, RMSNorm, SwiGLU, KV cache.

The cache is explicit data, not a Flax collection: per layer k/v of shape (B, T, KV, hd),
stacked over layers, passed in and returned, so prefill and decode are pure functions.

LoRA (models/lora.py) wraps the q/k/v/o projections when `lora.rank` > 0. `deterministic`
(a call argument of `Decoder`, default True) turns LoRA dropout off; it becomes a static
attribute of the scanned layer, so train and eval steps compile separately.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaemotion_jax.models.layers import Dense, RMSNorm, activation, attention
from vaemotion_jax.models.lora import LoRADense, LoRASpec
from vaemotion_jax.models.qwen2_5_vl.config import TextConfig
from vaemotion_jax.models.qwen2_5_vl.rope import apply_rotary
from vaemotion_jax.models.remat import remat_policy
from vaemotion_jax.sharding import constrain


class Attention(nn.Module):
    cfg: TextConfig
    dtype: Any = jnp.float32
    lora: LoRASpec = LoRASpec()
    deterministic: bool = True

    def proj(self, name: str, features: int, axes: tuple[str, str], use_bias: bool = True):
        """The projection `name`, with a LoRA branch when the spec targets it."""
        rank = self.lora.rank if self.lora.on(name) else 0
        return LoRADense(features, axes, use_bias, self.dtype, rank, self.lora.alpha,
                         self.lora.dropout, self.deterministic, name=name)

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache, cache_index):
        """x (B, S, D); cos/sin (B, S, hd); mask (B, S, T) bool; cache None or (k, v) each
        (B, T, KV, hd) written at `cache_index`. Returns (out (B, S, D), new cache or None)."""
        c = self.cfg
        b, s, _ = x.shape
        q = self.proj("q", c.num_heads * c.head_dim, ("embed", "heads"))(x)
        k = self.proj("k", c.num_kv_heads * c.head_dim, ("embed", "kv_heads"))(x)
        v = self.proj("v", c.num_kv_heads * c.head_dim, ("embed", "kv_heads"))(x)
        A = ("batch", "length", "act_heads", None)
        q = constrain(apply_rotary(q.reshape(b, s, c.num_heads, c.head_dim), cos, sin), A)
        k = constrain(apply_rotary(k.reshape(b, s, c.num_kv_heads, c.head_dim), cos, sin), A)
        v = constrain(v.reshape(b, s, c.num_kv_heads, c.head_dim), A)
        if cache is not None:
            ck, cv = cache
            k = jax.lax.dynamic_update_slice_in_dim(ck, k.astype(ck.dtype), cache_index, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cv, v.astype(cv.dtype), cache_index, axis=1)
            cache = (k, v)
        out = attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
        out = self.proj("o", c.hidden_size, ("heads", "embed"), use_bias=False)(
            out.reshape(b, s, -1))
        return out, cache


class MLP(nn.Module):
    cfg: TextConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        gate = Dense(c.intermediate_size, ("embed", "mlp"), False, self.dtype, name="gate")(x)
        up = Dense(c.intermediate_size, ("embed", "mlp"), False, self.dtype, name="up")(x)
        h = constrain(activation(c.hidden_act)(gate) * up, ("batch", "length", "act_mlp"))
        return Dense(c.hidden_size, ("mlp", "embed"), False, self.dtype, name="down")(h)


class DecoderLayer(nn.Module):
    cfg: TextConfig
    dtype: Any = jnp.float32
    lora: LoRASpec = LoRASpec()
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, cache, cos, sin, mask, cache_index):
        c = self.cfg
        x = constrain(x, ("batch", "length", "act_embed"))
        h, cache = Attention(c, self.dtype, self.lora, self.deterministic, name="attn")(
            RMSNorm(c.rms_norm_eps, "embed", name="input_norm")(x), cos, sin, mask, cache,
            cache_index)
        x = x + h
        x = x + MLP(c, self.dtype, name="mlp")(RMSNorm(c.rms_norm_eps, "embed", name="post_norm")(x))
        x = constrain(x, ("batch", "length", "act_embed"))
        return x, cache


class Decoder(nn.Module):
    """Embeddings in, final-normed hidden states out (the lm_head lives in the model)."""
    cfg: TextConfig
    dtype: Any = jnp.float32
    scan_layers: bool = True
    remat: str = "none"
    lora: LoRASpec = LoRASpec()

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache=None, cache_index=0, deterministic: bool = True):
        """x (B, S, D); cache None or (k, v) of (L, B, T, KV, hd). deterministic=False turns on
        LoRA dropout (needs a "dropout" rng). Returns (hidden, cache)."""
        c = self.cfg
        layer = DecoderLayer
        if self.remat != "none":
            layer = nn.remat(DecoderLayer, policy=remat_policy(self.remat), prevent_cse=False)
        layers = nn.scan(layer, variable_axes={"params": 0},
                         split_rngs={"params": True, "dropout": True},
                         in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                         length=c.num_layers, unroll=1 if self.scan_layers else c.num_layers,
                         metadata_params={nn.PARTITION_NAME: "layers"})
        x, cache = layers(c, self.dtype, self.lora, deterministic, name="layers")(
            x, cache, cos, sin, mask, cache_index)
        return RMSNorm(c.rms_norm_eps, "embed", name="norm")(x), cache
