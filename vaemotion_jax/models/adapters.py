"""Audio adapters: audio-encoder features (B, T_a, d_a) -> tokens (B, L_v, d_v) in the LLM's
video-token space, standing in for the L_v video tokens they replace.

The interface is small on purpose: an `AudioAdapterConfig` (with `kind` choosing the design)
and `make_audio_adapter(config, in_tokens, in_dim)`, which returns a Flax module called as
`adapter(features, utterance_mask=None)`: features (B, in_tokens, in_dim) -> (B, num_tokens,
out_dim). `utterance_mask` (B, N_max, in_tokens) bool marks the encoder tokens of each local
window (data/utterances.py builds it on the host); designs without local windows ignore it.
The trainer only ever calls the factory, so a new design is one more entry in `ADAPTERS`:
"mlp" (below) and "qformer" (AcoustEmo's utterance-aware acoustic Q-Former, models/qformer.py).

`MLPAudioAdapter` is the paper's design (VAEmotionLLM, section 3.2): two fully connected
layers over the sequence axis (T_a -> seq_hidden -> L_v), then two over channels
(d_a -> channel_hidden -> d_v), with the activation after the first layer of each pair.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaemotion_jax.models.layers import Dense, activation
from vaemotion_jax.models.qformer import UtteranceAwareAdapter, check_qformer_config


@dataclass(frozen=True)
class AudioAdapterConfig:
    kind: str = "mlp"
    # L_v: 324 = the video tokens of one temporal group of 512x512 frames (grid 1 x 36 x 36,
    # merged 2x2), i.e. two frames; the stage config sets it with `video_tokens_for_grid`.
    num_tokens: int = 324
    # d_v: the LLM width (Qwen2.5-VL-7B's 3584), since the tokens go straight into its embeddings.
    out_dim: int = 3584
    # None -> num_tokens: like the LLaVA projector, whose hidden width equals its output width.
    seq_hidden: int | None = None
    # None -> out_dim: the same LLaVA-style choice for the channel pair.
    channel_hidden: int | None = None
    # GELU (exact): the activation of both AST and the Qwen2.5-VL merger the tokens stand in for.
    activation: str = "gelu"
    # --- kind="qformer" only (models/qformer.py; AcoustEmo section 3) ---
    # K learnable queries and the Q-Former width d_model (AcoustEmo: K = 32, d_model = 768).
    queries: int = 32
    qformer_dim: int = 768
    # Layers/heads/MLP width are not given by AcoustEmo; Video-LLaMA's audio Q-Former has 2
    # BERT-base layers (12 heads, MLP 4 x width). None -> 4 * qformer_dim.
    qformer_layers: int = 2
    qformer_heads: int = 12
    qformer_mlp: int | None = None
    # N_max: utterance windows per clip (static shape; absent slots are masked).
    max_utterances: int = 8
    # Table 2 ablations: global_qformer=False is "w/o Global Acoustic Q-Former",
    # utterance_qformer=False "w/o Utterance-Aware A-QF", windows="fixed" "w/ fixed-length
    # windows (2s)". `windows`, `window_seconds` and `no_utterances` act on the host, where the
    # window masks are built (data/utterances.py); the module itself is the same.
    global_qformer: bool = True
    utterance_qformer: bool = True
    windows: str = "utterances"          # "utterances" (timestamps) | "fixed"
    window_seconds: float = 2.0          # length of the fixed windows
    no_utterances: str = "fixed"         # a clip without utterances: "fixed" windows | "global" only

    def replace(self, **kw) -> "AudioAdapterConfig":
        return dataclasses.replace(self, **kw)


def video_tokens_for_grid(grid_thw: Sequence[int], spatial_merge_size: int = 2) -> int:
    """LLM tokens of one video of patch grid (t, h, w): t * h * w / merge^2, e.g. (1, 36, 36) -> 324."""
    t, h, w = (int(g) for g in grid_thw)
    if min(t, h, w) < 1 or h % spatial_merge_size or w % spatial_merge_size:
        raise ValueError(f"video grid {tuple(grid_thw)}: needs positive sizes and h, w divisible "
                         f"by the spatial merge size {spatial_merge_size}")
    return t * h * w // spatial_merge_size ** 2


class MLPAudioAdapter(nn.Module):
    """(B, in_tokens, in_dim) -> (B, num_tokens, out_dim) by two sequence FCs, then two channel FCs."""
    config: AudioAdapterConfig
    in_tokens: int
    in_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, utterance_mask: jax.Array | None = None) -> jax.Array:
        """`utterance_mask` is accepted for the common interface and ignored."""
        c = self.config
        _check_input(features, self.in_tokens, self.in_dim)
        act = activation(c.activation)
        dense = lambda n, axes, name: Dense(n, axes, dtype=self.dtype, name=name,
                                            kernel_init=nn.initializers.lecun_normal())
        x = jnp.swapaxes(features.astype(self.dtype), 1, 2)                  # (B, d_a, T_a)
        x = act(dense(c.seq_hidden or c.num_tokens, ("audio_length", "adapter_hidden"), "seq_fc1")(x))
        x = dense(c.num_tokens, ("adapter_hidden", "tokens"), "seq_fc2")(x)    # (B, d_a, L_v)
        x = jnp.swapaxes(x, 1, 2)                                             # (B, L_v, d_a)
        x = act(dense(c.channel_hidden or c.out_dim, ("audio_embed", "adapter_hidden"),
                      "channel_fc1")(x))
        return dense(c.out_dim, ("adapter_hidden", "embed"), "channel_fc2")(x)  # (B, L_v, d_v)


def _check_input(features: jax.Array, in_tokens: int, in_dim: int) -> None:
    if features.ndim != 3 or tuple(features.shape[1:]) != (in_tokens, in_dim):
        raise ValueError(f"audio adapter built for features (batch, {in_tokens}, {in_dim}), "
                         f"got {tuple(features.shape)}")


ADAPTERS = {"mlp": MLPAudioAdapter, "qformer": UtteranceAwareAdapter}
# Per-kind config checks (raise ValueError), run by the factory.
CONFIG_CHECKS = {"qformer": check_qformer_config}


def make_audio_adapter(config: AudioAdapterConfig, in_tokens: int, in_dim: int,
                       dtype: Any = jnp.float32) -> nn.Module:
    """The adapter of `config.kind` for encoder features (B, in_tokens, in_dim)."""
    if config.kind not in ADAPTERS:
        raise ValueError(f"unknown audio adapter kind {config.kind!r}; known: {sorted(ADAPTERS)}")
    if min(config.num_tokens, config.out_dim, in_tokens, in_dim) < 1:
        raise ValueError(f"audio adapter sizes must be positive: num_tokens {config.num_tokens}, "
                         f"out_dim {config.out_dim}, in_tokens {in_tokens}, in_dim {in_dim}")
    if config.kind in CONFIG_CHECKS:
        CONFIG_CHECKS[config.kind](config)
    return ADAPTERS[config.kind](config, in_tokens, in_dim, dtype)
