"""AcoustEmo's Utterance-Aware Acoustic Q-Former (AcoustEmo, section 3) as an audio adapter:
AST features (B, T_a, d_a) and window masks (B, N_max, T_a) -> tokens (B, L_v, d_v).

Paper -> code
-------------
* Eq. (1), F_A^i = F_A[ceil(t_start^i f_s) : ceil(t_end^i f_s)]: static shapes rule out slices
  of varying length, so each window is a boolean mask over the T_a encoder tokens, built on the
  host from the timestamps (data/utterances.py: seconds -> AST time patches at f_s = 10 Hz ->
  every frequency patch of those time patches, frequency-major index 2 + f * T + t; the cls and
  distillation tokens are in no window). Masked cross-attention equals attention over the slice
  (tests/test_qformer.py checks it), because the Q-Former adds no positions of its own (the AST
  features carry theirs).
* Eq. (2), T_A^i = Softmax((Q W_Q)(F_A^i W_K)^T / sqrt(d_k)) (F_A^i W_V), with Q the K learnable
  queries (K = 32, d_model = 768): the cross-attention sub-layer of `AcousticQFormerLayer`
  (multi-head). The paper writes one cross-attention and cites BLIP-2 [15] for the Q-Former;
  we stack BLIP-2-style Q-Former layers, each: self-attention over the K queries (they share
  what they read), cross-attention from the queries to the masked frames (eq. 2, in every
  layer as in Video-LLaMA's video/audio Q-Formers, cross_attention_freq = 1), and an MLP.
  Default depth 2, the depth of Video-LLaMA's audio Q-Former [1], which AcoustEmo's pipeline
  (ImageBind audio -> Q-Former -> LLaMA) follows; the paper gives none. Pre-LayerNorm with a
  final LayerNorm instead of BERT's post-LN: the Q-Former here starts from scratch (no BERT
  weights to match), and pre-LN trains stably at the adapter's learning rate without
  warm-up tricks, as in the AST encoder it reads.
* Eq. (3), T_A = [T_A^global, T_A^1, ..., T_A^N]: `UtteranceAwareAdapter.acoustic_tokens`.
  Parameters: the global Q-Former and the utterance Q-Former are separate modules ("a parallel
  global Q-Former"; they read inputs of different scale: the whole clip vs. one utterance);
  one utterance Q-Former is shared by all N windows ("this process is repeated for all N
  segments"; N varies per clip, so per-slot weights would tie a slot's weights to an
  utterance's rank rather than its content).
* Absent slots (a clip with fewer than N_max windows): their mask row is all False. The
  cross-attention output of a query with no key is set to zero (never a uniform average of
  frames, never NaN), and the slot's K tokens are zeroed after the Q-Former, so they carry
  nothing into the LLM and no gradient reaches the features through them.

How the K x (G + N_max) tokens meet the L_v video placeholders (G = 1 with the global Q-Former)
-------------------------------------------------------------------------------------------------
VAEmotionLLM's VG-Align puts the audio tokens at the video placeholders and gives them the
video's M-RoPE grid, so the adapter must emit exactly L_v tokens; AcoustEmo instead
concatenates T_A into the LLM input ([T_V; T_A; T_Lq]) with as many tokens as it has. We keep
the adapter's contract (B, L_v, d_v), so nothing downstream changes: `token_fc`, a learned
linear map over the token axis K (G + N_max) -> L_v (as the MLP adapter's sequence FC,
VAEmotionLLM section 3.2), then `proj`, a linear map d_model -> d_v (the projection from
Q-Former to LLM width of BLIP-2 / Video-LLaMA). Zeroed absent slots add nothing to the map
(only its bias). The cost: the LLM does not see T_A^i as its own span of tokens; every
placeholder is a learned mixture of all slots, in slot order (global, utterance 1, 2, ...), and
the instruction-aware prompt's "Utterance i" names slot i of T_A through that map. Giving each
T_A^i its own placeholders would need L_v = K (G + N_max) (e.g. 32 x 9 = 288 for one 324-token
grid) and a placeholder grid of that size in the pipeline; not done here.

The call: `adapter(features, utterance_mask)`; `utterance_mask` (B, N_max, T_a) bool from
`data.utterances.utterance_inputs`. It may be None only while initialising (params are the
same) or without the utterance Q-Former.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaemotion_jax.models.layers import Dense, activation, attention

WINDOWS = ("utterances", "fixed")
NO_UTTERANCES = ("fixed", "global")
LAYER_NORM_EPS = 1e-12  # BERT's, as in BLIP-2's Q-Former


def check_qformer_config(c) -> None:
    """Raises ValueError naming every inconsistent qformer field of an AudioAdapterConfig."""
    problems = []
    sizes = dict(queries=c.queries, qformer_dim=c.qformer_dim, qformer_layers=c.qformer_layers,
                 qformer_heads=c.qformer_heads)
    problems += [f"{k} must be >= 1, got {v}" for k, v in sizes.items() if v < 1]
    if c.qformer_heads >= 1 and c.qformer_dim % c.qformer_heads:
        problems.append(f"qformer_dim {c.qformer_dim} is not a multiple of qformer_heads "
                        f"{c.qformer_heads}")
    if c.qformer_mlp is not None and c.qformer_mlp < 1:
        problems.append(f"qformer_mlp must be >= 1 or None, got {c.qformer_mlp}")
    if not (c.global_qformer or c.utterance_qformer):
        problems.append("global_qformer and utterance_qformer are both off: no audio tokens")
    if c.utterance_qformer and c.max_utterances < 1:
        problems.append(f"max_utterances must be >= 1, got {c.max_utterances}")
    if c.windows not in WINDOWS:
        problems.append(f"windows {c.windows!r} not one of {list(WINDOWS)}")
    if c.no_utterances not in NO_UTTERANCES:
        problems.append(f"no_utterances {c.no_utterances!r} not one of {list(NO_UTTERANCES)}")
    if not c.window_seconds > 0:
        problems.append(f"window_seconds must be > 0, got {c.window_seconds}")
    if (c.utterance_qformer and not c.global_qformer and c.windows == "utterances"
            and c.no_utterances == "global"):
        problems.append("no_utterances='global' without the global Q-Former: a clip without "
                        "utterances would give no audio tokens (use no_utterances='fixed')")
    if problems:
        raise ValueError("qformer audio adapter: " + "; ".join(problems))


def qformer_slots(c) -> int:
    """G + N_max: Q-Former outputs of K tokens each in T_A (G = 1 with the global Q-Former)."""
    return int(c.global_qformer) + (c.max_utterances if c.utterance_qformer else 0)


def _layer_norm(dtype: Any, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=dtype, use_fast_variance=False, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class QFormerAttention(nn.Module):
    """Multi-head attention of x (..., S, dim) on kv (..., T, d_kv) (leading dims broadcast);
    mask (..., S or 1, T) True = attend. A row with no key to attend gives exactly 0 before
    the output projection."""
    dim: int
    heads: int
    kv_axis: str = "qformer_embed"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, kv: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        head_dim = self.dim // self.heads

        def proj(src, axis, name):
            y = Dense(self.dim, (axis, "qformer_heads"), dtype=self.dtype, name=name)(src)
            return y.reshape(y.shape[:-1] + (self.heads, head_dim))

        out = attention(proj(x, "qformer_embed", "q"), proj(kv, self.kv_axis, "k"),
                        proj(kv, self.kv_axis, "v"), mask)
        out = out.reshape(out.shape[:-2] + (self.dim,))
        if mask is not None:
            out = out * jnp.any(mask, axis=-1, keepdims=True).astype(out.dtype)
        return Dense(self.dim, ("qformer_heads", "qformer_embed"), dtype=self.dtype, name="o")(out)


class AcousticQFormerLayer(nn.Module):
    """Pre-LN Q-Former layer on queries x (B, W, K, dim): self-attention over the K queries,
    cross-attention (eq. 2) to features (B, 1, T_a, d_a) under mask (B, W, 1, T_a), MLP."""
    dim: int
    heads: int
    mlp: int
    activation: str = "gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, features, mask):
        h = _layer_norm(self.dtype, "ln_self")(x)
        x = x + QFormerAttention(self.dim, self.heads, dtype=self.dtype, name="self_attn")(h, h)
        h = _layer_norm(self.dtype, "ln_cross")(x)
        x = x + QFormerAttention(self.dim, self.heads, "audio_embed", self.dtype,
                                 name="cross_attn")(h, features, mask)
        h = _layer_norm(self.dtype, "ln_mlp")(x)
        h = Dense(self.mlp, ("qformer_embed", "qformer_mlp"), dtype=self.dtype, name="fc1")(h)
        h = Dense(self.dim, ("qformer_mlp", "qformer_embed"), dtype=self.dtype,
                  name="fc2")(activation(self.activation)(h))
        return x + h


class LearnedQueries(nn.Module):
    """Q (K, dim), BLIP-2's query tokens (init normal 0.02). Stored as a Dense-style "kernel"
    so the adapter exports in the PyTorch Linear layout (checkpoints/emotion.py): there it is
    the weight (dim, K) of a bias-free Linear(K, dim) applied to the identity."""
    queries: int
    dim: int

    @nn.compact
    def __call__(self) -> jax.Array:
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                            ("queries", "qformer_embed"))
        return self.param("kernel", init, (self.queries, self.dim), jnp.float32)


class AcousticQFormer(nn.Module):
    """K learnable queries read each window of features (B, T_a, d_a): mask (B, W, T_a)
    True = frame in window (None: one window of all T_a tokens) -> (B, W, K, dim)."""
    queries: int = 32
    dim: int = 768
    layers: int = 2
    heads: int = 12
    mlp: int = 3072
    activation: str = "gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        b = features.shape[0]
        w = 1 if mask is None else mask.shape[1]
        q = LearnedQueries(self.queries, self.dim, name="query_tokens")().astype(self.dtype)
        x = jnp.broadcast_to(q, (b, w, self.queries, self.dim))
        kv = features.astype(self.dtype)[:, None]                      # (B, 1, T_a, d_a)
        m = None if mask is None else mask[:, :, None, :]              # (B, W, 1, T_a)
        for i in range(self.layers):
            x = AcousticQFormerLayer(self.dim, self.heads, self.mlp, self.activation, self.dtype,
                                     name=f"layer_{i}")(x, kv, m)
        return _layer_norm(self.dtype, "norm")(x)


class UtteranceAwareAdapter(nn.Module):
    """kind="qformer": (B, in_tokens, in_dim) features and (B, N_max, in_tokens) window masks
    -> (B, num_tokens, out_dim), through T_A = [T_global; T_1; ...; T_N_max] (eq. 3)."""
    config: Any          # AudioAdapterConfig (models/adapters.py)
    in_tokens: int
    in_dim: int
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        make = lambda: AcousticQFormer(c.queries, c.qformer_dim, c.qformer_layers, c.qformer_heads,
                                       c.qformer_mlp or 4 * c.qformer_dim, c.activation, self.dtype)
        if c.global_qformer:
            self.global_qformer = make()
        if c.utterance_qformer:
            self.utterance_qformer = make()
        lecun = nn.initializers.lecun_normal()
        self.token_fc = Dense(c.num_tokens, ("qformer_tokens", "tokens"), dtype=self.dtype,
                              kernel_init=lecun)
        self.proj = Dense(c.out_dim, ("qformer_embed", "embed"), dtype=self.dtype,
                          kernel_init=lecun)

    def _window_mask(self, utterance_mask: jax.Array | None, batch: int) -> jax.Array:
        c = self.config
        want = (batch, c.max_utterances, self.in_tokens)
        if utterance_mask is None:
            if not self.is_initializing():
                raise ValueError(
                    f"the qformer audio adapter needs utterance_mask {want} (bool, from "
                    f"data.utterances.utterance_inputs); only initialisation may omit it")
            return jnp.zeros(want, bool)
        if tuple(utterance_mask.shape) != want:
            raise ValueError(f"utterance_mask must be (batch, max_utterances, encoder tokens) = "
                             f"{want}, got {tuple(utterance_mask.shape)}")
        return utterance_mask.astype(bool)

    def acoustic_tokens(self, features: jax.Array, utterance_mask: jax.Array | None = None
                        ) -> tuple[jax.Array, jax.Array]:
        """(T_A (B, K * slots, qformer_dim), token mask (B, K * slots) bool), slots in the order
        global, utterance 1..N_max; the tokens of absent slots are 0 and masked False."""
        c = self.config
        if features.ndim != 3 or tuple(features.shape[1:]) != (self.in_tokens, self.in_dim):
            raise ValueError(f"audio adapter built for features (batch, {self.in_tokens}, "
                             f"{self.in_dim}), got {tuple(features.shape)}")
        b = features.shape[0]
        slots, present = [], []
        if c.global_qformer:
            slots.append(self.global_qformer(features))
            present.append(jnp.ones((b, 1), bool))
        if c.utterance_qformer:
            mask = self._window_mask(utterance_mask, b)
            has = jnp.any(mask, axis=-1)                                  # (B, N_max)
            local = self.utterance_qformer(features, mask)                # (B, N_max, K, d)
            slots.append(jnp.where(has[:, :, None, None], local, 0))
            present.append(has)
        tokens = jnp.concatenate(slots, axis=1)                           # (B, slots, K, d)
        mask = jnp.repeat(jnp.concatenate(present, axis=1), c.queries, axis=1)
        return tokens.reshape(b, -1, tokens.shape[-1]), mask

    def __call__(self, features: jax.Array, utterance_mask: jax.Array | None = None) -> jax.Array:
        tokens, _ = self.acoustic_tokens(features, utterance_mask)        # (B, K * slots, d)
        x = self.token_fc(jnp.swapaxes(tokens, 1, 2))                     # (B, d, L_v)
        return self.proj(jnp.swapaxes(x, 1, 2))                           # (B, L_v, d_v)
