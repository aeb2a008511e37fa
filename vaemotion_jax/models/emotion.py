"""EmoAdapter (VAEmotionLLM, section 3.3): Emotion Enhancer (eq. 2) and Emotion Supervisor (eqs. 3-4).

Choices the paper leaves open, and ours:
- Enhancer: LayerNorm (eps 1e-5, as torch.nn.LayerNorm), exact GELU, biases on W1 and W2. W2
  starts at zero, so Enh is the identity at step 0 and Stage 2 starts from the Stage 1 model
  (W1 then gets gradients once W2 has moved, as with LoRA's B = 0).
- Supervisor: g(s) = tanh(W2 GELU(W1 LN(s))). The LayerNorm makes the head independent of the
  scale of the LLM's token space (video and audio tokens differ in norm); tanh matches the
  [-1, 1] range of valence/arousal labels.
- Pooling (eq. 3) averages only the valid tokens given by a (B, L) mask, in float32.
Both modules are position-wise/shared across pathways: Enh([z_a; z_v]) = [Enh(z_a); Enh(z_v)].
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaemotion_jax.models.layers import Dense

LN_EPS = 1e-5


def _layer_norm(dtype: Any, name: str) -> nn.LayerNorm:
    # two-pass variance, as torch computes it (the one-pass form loses digits on large means)
    return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, use_fast_variance=False, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


def _check_width(z: jax.Array, width: int, who: str) -> None:
    if z.shape[-1] != width:
        raise ValueError(f"{who} built for width {width}, got tokens of shape {tuple(z.shape)}")


class EmotionEnhancer(nn.Module):
    """Eq. (2): Enh(z) = z + W2 GELU(W1 LN(z)), position-wise. (..., D) -> (..., D)."""
    hidden_size: int
    mlp_hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        _check_width(z, self.hidden_size, "EmotionEnhancer")
        h = _layer_norm(self.dtype, "norm")(z)
        h = Dense(self.mlp_hidden, ("embed", "emotion"), dtype=self.dtype, name="fc1",
                  kernel_init=nn.initializers.lecun_normal())(h)
        h = Dense(self.hidden_size, ("emotion", "embed"), dtype=self.dtype, name="fc2",
                  kernel_init=nn.initializers.zeros)(nn.gelu(h, approximate=False))
        return z + h.astype(z.dtype)


def masked_mean(tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Eq. (3) over valid tokens: tokens (B, L, D), mask (B, L) (None = all valid) -> (B, D)
    float32. A row without valid tokens gives zeros (its label must then be masked)."""
    x = tokens.astype(jnp.float32)
    if mask is None:
        return jnp.mean(x, axis=1)
    m = mask.astype(jnp.float32)[..., None]
    return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


class EmotionSupervisor(nn.Module):
    """Eqs. (3)-(4): masked mean of (B, L, D) tokens -> shared head -> (B, 2) (valence, arousal)
    in (-1, 1), float32."""
    hidden_size: int
    mlp_hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        _check_width(tokens, self.hidden_size, "EmotionSupervisor")
        h = _layer_norm(self.dtype, "norm")(masked_mean(tokens, mask))
        h = Dense(self.mlp_hidden, ("embed", "emotion"), dtype=self.dtype, name="fc1",
                  kernel_init=nn.initializers.lecun_normal())(h)
        y = Dense(2, ("emotion", None), dtype=self.dtype, name="fc2",
                  kernel_init=nn.initializers.lecun_normal())(nn.gelu(h, approximate=False))
        return jnp.tanh(y.astype(jnp.float32))
