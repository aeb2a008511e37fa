"""Building blocks shared by the models: Dense/RMSNorm with logical axis names, attention core."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any
NEG_INF = -1e30  # finite, so a query whose keys are all masked gives a uniform (unused) row


def Dense(features: int, axes: Sequence[str], use_bias: bool = True, dtype: Dtype = jnp.float32,
          name: str | None = None, kernel_init=nn.initializers.normal(0.02)) -> nn.Dense:
    """nn.Dense whose kernel (in, out) carries logical `axes` and whose bias carries axes[-1]."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(kernel_init, tuple(axes)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[-1],)))


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back, as the reference does (weight init 1)."""
    eps: float = 1e-6
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                                 (self.axis_name,)),
                           (x.shape[-1],), jnp.float32)
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + self.eps)
        return jnp.asarray(scale, x.dtype) * xf.astype(x.dtype)


def activation(name: str):
    table = {"silu": nn.silu, "gelu": lambda x: nn.gelu(x, approximate=False),
             "gelu_new": lambda x: nn.gelu(x, approximate=True), "relu": nn.relu,
             "quick_gelu": lambda x: x * nn.sigmoid(1.702 * x)}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(table)}")
    return table[name]


def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray | None
              ) -> jnp.ndarray:
    """Scaled dot-product attention with grouped kv heads, softmax in float32.

    q: (..., S, H, D); k, v: (..., T, KV, D) with H a multiple of KV; mask broadcastable to
    (..., S, T) booleans (True = attend) or None. Returns (..., S, H, D).

    Heads-major: the G = H / KV query heads of a kv head are stacked along the query axis, so
    the scores are one (G*S, T) matmul per kv head, laid out the way the softmax reads them
    (no transposed copies of the (S, T) matrices). The probabilities are normalised before
    they meet V: dividing the (G*S, D) output instead saves a pass over (G*S, T), but XLA:CPU
    fuses the exponentials feeding both the row sum and the matmul into one kernel that ran
    the AST's attention (602 tokens) about 2x slower (benchmarks/bench_vs_torch.py).
    """
    *lead, s, h, d = q.shape
    t, kv = k.shape[-3:-1]
    g = h // kv
    qh = jnp.moveaxis(q.reshape(*lead, s, kv, g, d), -4, -2).reshape(*lead, kv, g * s, d)
    kh, vh = jnp.moveaxis(k, -2, -3), jnp.moveaxis(v, -2, -3)             # (..., KV, T, D)
    scores = jnp.einsum("...qd,...td->...qt", qh, kh,
                        preferred_element_type=jnp.float32) * (d ** -0.5)  # (..., KV, G*S, T)
    if mask is not None:
        scores = jnp.where(mask[..., None, None, :, :], scores.reshape(*lead, kv, g, s, t),
                           NEG_INF).reshape(*lead, kv, g * s, t)
    top = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    weights = jnp.exp(scores - top)
    probs = weights / jnp.sum(weights, -1, keepdims=True)
    out = jnp.einsum("...qt,...td->...qd", probs.astype(v.dtype), vh)
    out = jnp.moveaxis(out.reshape(*lead, kv, g, s, d), -2, -4)            # (..., S, KV, G, D)
    return out.reshape(*lead, s, h, d).astype(q.dtype)
