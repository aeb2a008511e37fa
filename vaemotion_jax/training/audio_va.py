"""The audio pathway alone on valence/arousal: frozen AST features -> audio adapter (any `kind`)
-> Emotion Supervisor, trained on a manifest's `labels.a` and read out on held-out clips.

This is the protocol of benchmarks/bench_qformer.py (AcoustEmo's Table 2 on the utterance world,
embedded/synth/utterances.py). There is no LLM: the Supervisor (eqs. 3-4: the mean of the adapter's
tokens -> (valence, arousal)) is the only head, so adapters trained with the same data, steps and
rate differ only in what their tokens keep of the clip. The read-out is the emotion word of the
predicted V-A (synth.emotion_word: the quadrant, or neutral near the origin) against the label's,
and the V-A CCC. `readout="attention"` (AttentionPool) lets a learned query pick tokens before
the Supervisor, a one-layer stand-in for the LLM's attention over the adapter's tokens.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from vaemotion_jax.data.manifest import Record
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.pipeline import ExampleFn, Skipped
from vaemotion_jax.embedded.synth import emotion_word
from vaemotion_jax.data.utterances import UtteranceSpec
from vaemotion_jax.models.adapters import AudioAdapterConfig, make_audio_adapter
from vaemotion_jax.models.emotion import EmotionSupervisor
from vaemotion_jax.models.layers import Dense, attention
from vaemotion_jax.training.stage2 import ccc


def decode_clips(records: Sequence[Record], media: MediaSpec, spec: UtteranceSpec | None
                 ) -> dict[str, np.ndarray]:
    """The clips' audio through the pipeline's ExampleFn: {"fbank": (N, frames, 128) f32 (one
    AST window), "labels": (N, 2) f32 (labels.a), "utterance_mask": (N, N_max, T_a) bool when
    `spec` is given}. A clip that cannot be made is an error naming it."""
    fn = ExampleFn(media=media, video=False, utterances=spec, require=("labels.a",))
    out: dict[str, list] = {"fbank": [], "labels": []}
    for record in records:
        ex = fn(record)
        if isinstance(ex, Skipped):
            raise ValueError(f"cannot use clip {ex.id}: {ex.message}")
        if ex["fbank"].shape[0] != 1:
            raise ValueError(f"{record.where}: expected one AST window, got {ex['fbank'].shape[0]}")
        out["fbank"].append(ex["fbank"][0])
        out["labels"].append(record.labels["a"])
        if spec is not None:
            out.setdefault("utterance_mask", []).append(ex["utterance_mask"])
    return {k: np.asarray(v, np.float32 if k != "utterance_mask" else bool) for k, v in out.items()}


def ast_features(model: nn.Module, params: Any, fbank: np.ndarray, batch: int = 64) -> np.ndarray:
    """Frozen AST features (N, T_a, d_a) of fbank (N, frames, 128), `batch` clips at a time."""
    apply = jax.jit(lambda x: model.apply({"params": params}, x).last_hidden_state)
    return np.concatenate([np.asarray(apply(fbank[i:i + batch]))
                           for i in range(0, len(fbank), batch)])


READOUTS = ("mean", "attention")


class AttentionPool(nn.Module):
    """A learned query attends over tokens (B, L, D) -> (B, 1, D): a one-layer stand-in for
    the LLM reading the adapter's tokens (it can pick out the tokens that hold a cue, where a
    mean dilutes them)."""
    heads: int = 4

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        b, _, d = tokens.shape
        heads = (self.heads, d // self.heads)
        h = nn.LayerNorm(name="norm", scale_init=nn.with_logical_partitioning(
            nn.initializers.ones, ("norm",)), bias_init=nn.with_logical_partitioning(
            nn.initializers.zeros, ("norm",)))(tokens)
        q = self.param("query", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), (None, "heads", "head_dim")), (1, *heads))
        k = Dense(d, ("embed", "heads"), name="k")(h).reshape(b, -1, *heads)
        v = Dense(d, ("embed", "heads"), name="v")(h).reshape(b, -1, *heads)
        out = attention(jnp.broadcast_to(q, (b, 1, *heads)), k, v, None)   # (B, 1, H, D/H)
        return tokens.mean(1, keepdims=True) + Dense(d, ("heads", "embed"), name="o")(
            out.reshape(b, 1, d))


class AudioEmotion(nn.Module):
    """Features (B, T_a, d_a) [+ utterance_mask (B, N_max, T_a)] -> audio adapter tokens
    (B, L_v, d_v) -> readout -> Emotion Supervisor -> (B, 2) V-A in (-1, 1). Readout "mean":
    the Supervisor's own mean (eq. 3); "attention": `AttentionPool` first."""
    adapter: AudioAdapterConfig
    in_tokens: int
    in_dim: int
    supervisor_hidden: int
    readout: str = "mean"

    @nn.compact
    def __call__(self, features: jax.Array, utterance_mask: jax.Array | None = None) -> jax.Array:
        tokens = make_audio_adapter(self.adapter, self.in_tokens, self.in_dim)(features,
                                                                               utterance_mask)
        if self.readout == "attention":
            tokens = AttentionPool()(tokens)
        elif self.readout != "mean":
            raise ValueError(f"readout {self.readout!r} not one of {list(READOUTS)}")
        return EmotionSupervisor(self.adapter.out_dim, self.supervisor_hidden)(tokens)


def _optimizer(lr: float, steps: int) -> optax.GradientTransformation:
    return optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=0.01)


@functools.partial(jax.jit, static_argnames=("model", "lr", "steps"))
def _train_step(params, opt, x, m, y, *, model: AudioEmotion, lr: float, steps: int):
    """One AdamW step on the V-A MSE (compiled once per model and schedule, reused by seeds)."""
    loss_fn = lambda p: jnp.mean(jnp.sum((model.apply({"params": p}, x, m) - y) ** 2, -1))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = _optimizer(lr, steps).update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss


def train(model: AudioEmotion, features: np.ndarray, labels: np.ndarray,
          masks: np.ndarray | None, *, steps: int, batch_size: int, lr: float, seed: int) -> Any:
    """AdamW (cosine decay from lr) on the V-A MSE over random batches (seeded init and
    order); returns the params. features (N, T_a, d_a), labels (N, 2), masks (N, N_max, T_a)
    or None."""
    take = lambda idx: (features[idx], None if masks is None else masks[idx])
    params = nn.meta.unbox(model.init(jax.random.key(seed), *take(np.arange(1)))["params"])
    opt = _optimizer(lr, steps).init(params)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(features), batch_size)
        params, opt, _ = _train_step(params, opt, *take(idx), labels[idx], model=model, lr=lr,
                                     steps=steps)
    return params


@functools.partial(jax.jit, static_argnames=("model",))
def predict(model: AudioEmotion, params: Any, features: jax.Array, masks: jax.Array | None
            ) -> jax.Array:
    """(N, 2) predicted V-A of features (N, T_a, d_a) [masks (N, N_max, T_a)]."""
    return model.apply({"params": params}, features, masks)


def va_report(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """pred/true (N, 2) V-A -> emotion-word accuracy (synth.emotion_word of each), CCC of
    valence and of arousal."""
    words = [emotion_word(p) == emotion_word(t) for p, t in zip(pred, true)]
    return {"accuracy": float(np.mean(words)), "ccc_valence": ccc(pred[:, 0], true[:, 0]),
            "ccc_arousal": ccc(pred[:, 1], true[:, 1])}


def span_features(features: np.ndarray, spans: Sequence[tuple[float, float]], ast_config
                  ) -> np.ndarray:
    """features (N, T_a, d_a) of one AST window each, and a (start, end) seconds span per clip
    -> (N, f * d_a): the span's time patches (eq. 1's mapping) averaged, per frequency patch."""
    from vaemotion_jax.data.utterances import time_patches

    f, t = ast_config.grid
    grid = features[:, 2:].reshape(len(features), f, t, -1)      # frequency-major patch tokens
    return np.stack([g[:, time_patches(a, b, ast_config)].mean(1).ravel()
                     for g, (a, b) in zip(grid, spans)])


def linear_probe(x: np.ndarray, classes: np.ndarray, train: np.ndarray, ridge: float = 1.0
                 ) -> float:
    """Held-out accuracy of a ridge one-vs-rest linear classifier: x (N, D) standardised on the
    training rows, classes (N,) int, train (N,) bool (the rest is held out)."""
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    onehot = np.eye(classes.max() + 1)[classes]
    w = np.linalg.solve(z[train].T @ z[train] + ridge * np.eye(z.shape[1]),
                        z[train].T @ onehot[train])
    return float(np.mean(np.argmax(z[~train] @ w, 1) == classes[~train]))
