"""Losses of both stages, computed in float32 on gathered positions only.

Stage 1, eq. (1): soft cross-entropy between the teacher's (video) and the student's (audio)
next-token distributions at temperature tau, over the assistant tokens.
Stage 2, eqs. (5)-(6): language-model loss plus lambda times the masked valence/arousal MSE.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_cross_entropy(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray,
                       mask: jnp.ndarray, tau: float = 1.0, teacher_index=None) -> jnp.ndarray:
    """Eq. (1) per example: (1/T) sum_t CE(softmax(l_v/tau), softmax(l_a/tau)).

    logits (B, T, V) at the positions that predict the assistant tokens; mask (B, T) marks real
    tokens. The teacher is under stop_gradient. With `teacher_index` (B, T, k), the teacher is
    its k largest logits (B, T, k) at those vocabulary ids, renormalised over them (the top-k
    cache). Returns (B,) (0 for rows without tokens).
    """
    p = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / tau, -1)
    ce = -jnp.sum(p * _student_log_q(student_logits, tau, teacher_index), -1)
    return masked_mean(ce, mask)


def kl_divergence(teacher_logits, student_logits, mask, tau: float = 1.0,
                  teacher_index=None) -> jnp.ndarray:
    """KL(teacher || student) per example, averaged over masked positions: (B,)."""
    log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / tau, -1)
    log_q = _student_log_q(student_logits, tau, teacher_index)
    return masked_mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1), mask)


def top1_agreement(teacher_logits, student_logits, mask, teacher_index=None) -> jnp.ndarray:
    """Fraction of masked positions where both argmaxes agree, per example: (B,)."""
    top = jnp.argmax(teacher_logits, -1)
    if teacher_index is not None:
        top = jnp.take_along_axis(teacher_index, top[..., None], -1)[..., 0]
    same = top == jnp.argmax(student_logits, -1)
    return masked_mean(same.astype(jnp.float32), mask)


def _student_log_q(student_logits, tau: float, index=None) -> jnp.ndarray:
    """log softmax(l_a / tau) over the vocabulary (B, T, V), or at `index` (B, T, k)."""
    log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / tau, -1)
    return log_q if index is None else jnp.take_along_axis(log_q, index, -1)


def token_cross_entropy(logits, targets, mask) -> jnp.ndarray:
    """Language-model loss per example: mean over masked positions of -log p(target): (B,)."""
    log_q = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    nll = -jnp.take_along_axis(log_q, targets[..., None], -1)[..., 0]
    return masked_mean(nll, mask)


def feature_alignment(z_audio, z_video, mask) -> jnp.ndarray:
    """The paper's ablation: squared L2 between audio and video tokens, mean over valid tokens
    and channels: (B,). z (B, L, D), mask (B, L)."""
    d = jnp.mean(jnp.square(z_audio.astype(jnp.float32) -
                            jax.lax.stop_gradient(z_video).astype(jnp.float32)), -1)
    return masked_mean(d, mask)


def emotion_mse(pred: jnp.ndarray, target: jnp.ndarray, has_label: jnp.ndarray) -> jnp.ndarray:
    """Eq. (5) per example: (1/|M|) sum_{m in M} ||y_hat_m - y_m||^2.

    pred, target (B, P, 2) valence/arousal for pathways P = (a, v, av); has_label (B, P) bool.
    Missing labels are masked out (not zero-filled); rows without any label give 0.
    """
    sq = jnp.sum(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), -1)
    return masked_mean(sq, has_label)


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean of x (B, T) over the last axis where mask; 0 where a row has no mask."""
    m = mask.astype(jnp.float32)
    return jnp.sum(x * m, -1) / jnp.maximum(jnp.sum(m, -1), 1.0)
