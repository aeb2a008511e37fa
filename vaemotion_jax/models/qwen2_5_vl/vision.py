"""Qwen2.5-VL vision tower: patch embed, 2D-rope window/full attention blocks, patch merger.

Inputs arrive in the static slot layout of `vision_layout.py`: (B, P, ...) with
P = groups * windows_per_group * slots_per_window. A window block attends within each window,
a full block within each temporal group; padding slots are masked as keys.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaemotion_jax.models.layers import Dense, RMSNorm, activation, attention
from vaemotion_jax.models.qwen2_5_vl.config import VisionConfig
from vaemotion_jax.models.qwen2_5_vl.rope import apply_rotary, vision_cos_sin
from vaemotion_jax.models.remat import remat_policy
from vaemotion_jax.sharding import constrain


def gather_patches(pixel_values, patch_index):
    """Rows for each slot (zeros where patch_index is -1): (B, P, C*T*14*14).

    pixel_values (N, F) is indexed by every example; (B, R, F) by its own example."""
    zero = jnp.zeros(pixel_values.shape[:-2] + (1, pixel_values.shape[-1]), pixel_values.dtype)
    rows = jnp.concatenate([pixel_values, zero], axis=-2)
    index = jnp.where(patch_index >= 0, patch_index, rows.shape[-2] - 1)
    if rows.ndim == 2:
        return jnp.take(rows, index, axis=0)
    return jnp.take_along_axis(rows, index[..., None], axis=1)


class VisionAttention(nn.Module):
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin, valid, is_full, groups: int):
        """x (B, P, D); cos/sin (B, P, hd); valid (B, P); is_full: traced bool scalar."""
        c = self.cfg
        b, p, _ = x.shape
        heads = (b, p, c.num_heads, c.head_dim)
        proj = lambda n: Dense(c.hidden_size, ("vision_embed", "vision_heads"), dtype=self.dtype,
                               name=n)(x).reshape(heads)
        A = ("batch", "length", "act_heads", None)
        q, k, v = (constrain(proj(n), A) for n in "qkv")
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        def within(size):
            def attend(q, k, v):
                split = lambda t: t.reshape(b, p // size, size, *t.shape[2:])
                mask = valid.reshape(b, p // size, 1, size)
                return attention(split(q), split(k), split(v), mask).reshape(q.shape)
            return attend

        window = c.window_merged ** 2 * c.spatial_merge_size ** 2
        out = jax.lax.cond(is_full, within(p // groups), within(window), q, k, v)
        return Dense(c.hidden_size, ("vision_heads", "vision_embed"), dtype=self.dtype,
                     name="proj")(out.reshape(b, p, -1))


class VisionMLP(nn.Module):
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        gate = Dense(c.intermediate_size, ("vision_embed", "vision_mlp"), dtype=self.dtype,
                     name="gate")(x)
        up = Dense(c.intermediate_size, ("vision_embed", "vision_mlp"), dtype=self.dtype,
                   name="up")(x)
        h = constrain(activation(c.hidden_act)(gate) * up, ("batch", "length", "act_mlp"))
        return Dense(c.hidden_size, ("vision_mlp", "vision_embed"), dtype=self.dtype,
                     name="down")(h)


class VisionBlock(nn.Module):
    """Pre-norm block; `is_full` (scanned per layer) picks full or window attention."""
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32
    groups: int = 1

    @nn.compact
    def __call__(self, x, is_full, cos, sin, valid):
        c = self.cfg
        x = constrain(x, ("batch", "length", "act_embed"))
        x = x + VisionAttention(c, self.dtype, name="attn")(
            RMSNorm(c.rms_norm_eps, "vision_embed", name="norm1")(x), cos, sin, valid, is_full,
            self.groups)
        x = x + VisionMLP(c, self.dtype, name="mlp")(
            RMSNorm(c.rms_norm_eps, "vision_embed", name="norm2")(x))
        return x, None


class PatchMerger(nn.Module):
    """RMSNorm, then each 2x2 group of patches (4*D) -> Linear -> GELU -> Linear(out)."""
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        m2 = c.spatial_merge_size ** 2
        x = RMSNorm(c.rms_norm_eps, "vision_embed", name="ln_q")(x)
        x = x.reshape(x.shape[0], x.shape[1] // m2, m2 * c.hidden_size)
        x = Dense(m2 * c.hidden_size, ("vision_mlp", "vision_embed"), dtype=self.dtype,
                  name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        return Dense(c.out_hidden_size, ("vision_embed", "embed"), dtype=self.dtype, name="fc2")(x)


class VisionTower(nn.Module):
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32
    scan_layers: bool = True
    remat: str = "none"

    @nn.compact
    def __call__(self, pixel_values, patch_index, patch_hw, token_index):
        """pixel_values (N_rows, C*T*14*14) shared by the batch, or (B, R, C*T*14*14) per example,
        rows in the reference's order; layout arrays from `build_layout` (patch_index (B, G, Q)
        indexing those rows, patch_hw (B, G, Q, 2), token_index (B, N)).
        Returns visual tokens (B, N, out_hidden_size)."""
        c = self.cfg
        b, groups, q = patch_index.shape
        patch_index, patch_hw = patch_index.reshape(b, groups * q), patch_hw.reshape(b, groups * q, 2)
        valid = patch_index >= 0
        x = gather_patches(pixel_values.astype(self.dtype), patch_index)
        x = Dense(c.hidden_size, ("patch", "vision_embed"), use_bias=False, dtype=self.dtype,
                  name="patch_embed")(x)
        cos, sin = vision_cos_sin(patch_hw, c.head_dim, c.rope_theta)
        is_full = jnp.asarray([i in c.fullatt_block_indexes for i in range(c.depth)])
        block = nn.remat(VisionBlock, policy=remat_policy(self.remat), prevent_cse=False) \
            if self.remat != "none" else VisionBlock
        blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                         in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=c.depth,
                         unroll=1 if self.scan_layers else c.depth,
                         metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = blocks(c, self.dtype, groups, name="blocks")(x, is_full, cos, sin, valid)
        merged = PatchMerger(c, self.dtype, name="merger")(x)                  # (B, P/4, out)
        return jnp.take_along_axis(merged, token_index[..., None], axis=1)
