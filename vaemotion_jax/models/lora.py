"""LoRA (Hu et al. 2021) for the decoder's attention projections, laid out like PEFT.

A target projection y = x W + b becomes y = x W + b + dropout(x) A B * (alpha / r), with
A (in, r) drawn like PEFT's default (kaiming-uniform, bound 1/sqrt(in)) and B (r, out) zero,
so a fresh adapter leaves the model unchanged. A and B sit next to the base kernel:

    llm/layers/attn/{q,k,v,o}/{kernel, bias, lora_a, lora_b}

(stacked over layers on the leading axis), so ".*/lora_[ab]" selects every LoRA weight and
the base weights keep their paths and their Hugging Face key map. Rank 0 adds nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import traverse_util

TARGETS = ("q", "k", "v", "o")
LORA_PARAMS = ("lora_a", "lora_b")
# PEFT's default A init: kaiming_uniform(a=sqrt(5)) on (r, in) = U(-1/sqrt(in), 1/sqrt(in)).
peft_a_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@dataclass(frozen=True)
class LoRASpec:
    """Rank r (0 = off), scale alpha / r, dropout on the adapter input, targeted projections."""
    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = TARGETS

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.dropout}")
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"lora_targets {tuple(self.targets)}: must be distinct names among "
                             f"{TARGETS}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def on(self, target: str) -> bool:
        return self.rank > 0 and target in self.targets


class LoRADense(nn.Module):
    """`layers.Dense` (kernel (in, out) with logical `axes`, same init and arithmetic) plus a
    LoRA branch of rank `rank` whose params sit beside the kernel (rank 0: a plain Dense)."""
    features: int
    axes: Sequence[str]
    use_bias: bool = True
    dtype: Any = jnp.float32
    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x (..., in) -> (..., features)."""
        n_in, axes = x.shape[-1], tuple(self.axes)
        param = lambda name, init, names, shape: self.param(
            name, nn.with_logical_partitioning(init, names), shape, jnp.float32)
        kernel = param("kernel", nn.initializers.normal(0.02), axes, (n_in, self.features))
        bias = (param("bias", nn.initializers.zeros, axes[-1:], (self.features,))
                if self.use_bias else None)
        h, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jax.lax.dot_general(h, kernel, (((h.ndim - 1,), (0,)), ((), ())))
        if bias is not None:
            y = y + bias
        if self.rank == 0:
            return y
        a = param("lora_a", peft_a_init, (axes[0], "lora_rank"), (n_in, self.rank))
        b = param("lora_b", nn.initializers.zeros, ("lora_rank", axes[-1]),
                  (self.rank, self.features))
        if self.dropout > 0:
            h = nn.Dropout(self.dropout, name="lora_dropout")(h, deterministic=self.deterministic)
        h, a, b = nn.dtypes.promote_dtype(h, a, b, dtype=self.dtype)
        return y + (h @ a @ b) * jnp.asarray(self.alpha / self.rank, y.dtype)


# --- pure helpers on param trees ------------------------------------------------------------

def _is_lora(path: Sequence[str]) -> bool:
    return path[-1] in LORA_PARAMS


def split_lora(params: dict) -> tuple[dict, dict]:
    """params -> (base params, LoRA params): two disjoint trees with the original paths."""
    flat = traverse_util.flatten_dict(params)
    base = {k: v for k, v in flat.items() if not _is_lora(k)}
    lora = {k: v for k, v in flat.items() if _is_lora(k)}
    return traverse_util.unflatten_dict(base), traverse_util.unflatten_dict(lora)


def count_lora_params(params: dict) -> int:
    return sum(int(v.size) for v in jax.tree.leaves(split_lora(params)[1]))


def merge_lora(params: dict, spec: LoRASpec) -> dict:
    """Folds every A B * (alpha / r) into its kernel (W + A B s) and drops the LoRA leaves, giving
    plain base params (e.g. to export a merged model). Unboxed params; kernels keep their dtype."""
    base, lora = split_lora(params)
    flat, flat_lora = traverse_util.flatten_dict(base), traverse_util.flatten_dict(lora)
    for path, a in flat_lora.items():
        if path[-1] != "lora_a":
            continue
        kernel_path = path[:-1] + ("kernel",)
        b = flat_lora[path[:-1] + ("lora_b",)]
        delta = jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32),
                           precision=jax.lax.Precision.HIGHEST) * spec.scale
        kernel = flat[kernel_path]
        flat[kernel_path] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat)
