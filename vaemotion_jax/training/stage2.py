"""Stage 2, EmoAdapter (paper section 3.3, eqs. 2-6): LM loss on the conversation of the
example's pathway (audio, video or joint) plus lambda times the masked valence/arousal MSE of
the Emotion Supervisor over the three pathways; LoRA on q/k/v/o, Enhancer and Supervisor train.

Each example carries both streams. Its conversation is about one pathway (`modality` a | v |
av; general instruction data is video); the placeholders hold 2N slots so that the joint input
[z_a; z_v] fits, and a/v inputs use the first N. The supervisor predicts all three pathways
from the enhanced tokens of every example, and the labels the example has are supervised.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaemotion_jax.data.decode import BadExample
from vaemotion_jax.data.manifest import PATHWAYS
from vaemotion_jax.data.pipeline import NOTES, clip_text, label_arrays, utterance_arrays
from vaemotion_jax.examples import (audio_inputs, layout_arrays, pathway_positions, placeholder_count,
                                    batch_layout)
from vaemotion_jax.models.vaemotion import MODALITY_CODES, EmotionConfig
from vaemotion_jax.processing.chat import encode_chat
from vaemotion_jax.processing.tokenizer import cached_tokenizer
from vaemotion_jax.training import losses
from vaemotion_jax.training.state import TrainState, apply_gradients, merge_params


# Table 3 rows: which parts of the EmoAdapter (and LoRA) the run trains.
ABLATIONS = {
    "adapter_only": dict(lora=False, enhancer=False, supervisor=False),  # the Stage 1 model
    "lora": dict(lora=True, enhancer=False, supervisor=False),
    "lora_enhancer": dict(lora=True, enhancer=True, supervisor=False),
    "lora_supervisor": dict(lora=True, enhancer=False, supervisor=True),
    "full": dict(lora=True, enhancer=True, supervisor=True),
}

TARGET_FIELDS = ("target_index", "target_ids", "target_mask")


def trainable_patterns(emotion: EmotionConfig, lora: bool) -> tuple[str, ...]:
    """Param path regexes that train: LoRA A/B (if `lora`), the Enhancer, the Supervisor."""
    pats = []
    if lora:
        pats.append("backbone/.*/lora_[ab]")
    if emotion.enhancer:
        pats.append("emotion_enhancer/.*")
    if emotion.supervisor:
        pats.append("emotion_supervisor/.*")
    return tuple(pats)


def clip_turns(turns, features: dict) -> list[dict]:
    """The conversation with `clip_text` in its first user turn (the one the clip goes into):
    the clip's window timestamps for adapters that read utterance windows."""
    first = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
    return [{**t, "content": clip_text(t["content"], features)} if i == first else t
            for i, t in enumerate(turns)]


def conversation_example(record, features: dict, *, tokenizer_dir: str, qwen,
                         joint_layout: str, max_target_tokens: int = 0) -> dict:
    """Pipeline `format_fn`: tokens, positions and targets of the record's conversation with
    its pathway's placeholders, the media (with utterance_mask, and the timestamps in the first
    user turn, for adapters that read utterance windows), the layout, and the V-A labels.
    Every assistant token is a target (the pipeline pads S and A to buckets);
    `max_target_tokens` > 0 keeps only the first ones and notes the cut ("targets_truncated")."""
    if "pixel_values_videos" not in features or "fbank" not in features:
        raise BadExample(record.where, "stage 2 needs both a video and an audio stream", "missing_stream")
    if not record.conversations:
        raise BadExample(record.where, "no conversation", "missing_field")
    modality = record.modality or "v"
    grid = features["video_grid_thw"]
    sec = float(features["second_per_grid_ts"])
    n = placeholder_count(modality, grid, qwen.vision.spatial_merge_size)
    enc = encode_chat(cached_tokenizer(tokenizer_dir), clip_turns(record.conversations, features),
                      video_tokens=n)
    ids = enc["input_ids"].astype(np.int32)
    targets = np.flatnonzero(enc["assistant_mask"])
    if targets.size == 0:
        raise BadExample(record.where, "the conversation has no assistant turn", "missing_field")
    notes = ()
    if max_target_tokens and targets.size > max_target_tokens:
        targets, notes = targets[:max_target_tokens], ("targets_truncated",)
    return {
        "input_ids": ids,
        "position_ids": pathway_positions(ids, modality, grid, sec, qwen, joint_layout).T.astype(np.int32),
        "target_index": (targets - 1).astype(np.int32),
        "target_ids": ids[targets].astype(np.int32),
        "target_mask": np.ones(targets.size, bool),
        "modality": np.int32(MODALITY_CODES[modality]),
        "pixel_values_videos": features["pixel_values_videos"], "fbank": features["fbank"],
        "fbank_mask": features["fbank_mask"], **utterance_arrays(features),
        **layout_arrays(qwen, grid), **label_arrays(record), NOTES: notes,
    }


def key_mask(batch) -> jnp.ndarray:
    """(B, S) real tokens of right-padded ids (padding rows have none)."""
    s = batch["input_ids"].shape[1]
    return (jnp.arange(s)[None] < batch["input_ids_length"][:, None]) & batch["valid"][:, None]


def forward(model, params, batch, *, deterministic: bool = True, rngs=None):
    """LM logits at the targets (B, A, V) and V-A predictions (B, 3, 2) for (a, v, av), or None
    without the supervisor."""
    layout = batch_layout(batch)
    positions = jnp.moveaxis(batch["position_ids"], -1, 0)
    emotion = model.config.emotion

    def run(m):
        audio = audio_inputs(batch)
        e_a, e_v = m.enhanced_tokens(audio.pop("fbank"), audio.pop("fbank_mask"),
                                     batch["pixel_values_videos"], layout, **audio)
        tokens = m.pathway_tokens(e_a, e_v, batch["modality"])
        h = m.hidden(batch["input_ids"], positions, key_mask(batch), tokens, deterministic)
        logits = m.logits(jnp.take_along_axis(h, batch["target_index"][..., None], 1))
        va = m.emotions(e_a, e_v) if emotion is not None and emotion.supervisor else None
        return logits, va

    return model.apply({"params": params}, method=run, rngs=rngs)


def stage2_loss(trainable, frozen, batch, rng, *, model, lam: float, deterministic: bool):
    """Eq. (6) averaged over the batch's real rows; also its two parts."""
    rngs = None if deterministic else {"dropout": rng}
    logits, va = forward(model, merge_params(frozen, trainable), batch,
                         deterministic=deterministic, rngs=rngs)
    rows = batch["valid"].astype(jnp.float32)
    denom = jnp.maximum(rows.sum(), 1.0)
    lm = losses.token_cross_entropy(logits, batch["target_ids"], batch["target_mask"])
    emo = (losses.emotion_mse(va, batch["va"], batch["va_mask"]) if va is not None
           else jnp.zeros_like(lm))
    loss = jnp.sum((lm + lam * emo) * rows) / denom
    return loss, {"lm": jnp.sum(lm * rows) / denom, "emotion": jnp.sum(emo * rows) / denom}


def train_step(state: TrainState, frozen, batch, *, model, tx, lam: float, dropout: bool):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grad_fn = jax.value_and_grad(stage2_loss, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, frozen, batch, rng, model=model, lam=lam,
                                 deterministic=not dropout)
    state, finite = apply_gradients(state, grads, loss, tx)
    return state, {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads), "finite": finite}


# --- V-A metrics -------------------------------------------------------------------------------

def ccc(pred: np.ndarray, true: np.ndarray) -> float:
    """Lin's concordance correlation coefficient of two 1-D arrays."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.size < 2:
        return float("nan")
    mp, mt = pred.mean(), true.mean()
    cov = np.mean((pred - mp) * (true - mt))
    return float(2 * cov / (pred.var() + true.var() + (mp - mt) ** 2 + 1e-12))


def emotion_report(pred: np.ndarray, true: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """CCC and MSE per pathway and dimension: pred/true (N, 3, 2), mask (N, 3)."""
    out = {}
    for p, name in enumerate(PATHWAYS):
        m = mask[:, p]
        for d, dim in enumerate(("valence", "arousal")):
            out[f"ccc_{name}_{dim}"] = ccc(pred[m, p, d], true[m, p, d])
        out[f"mse_{name}"] = float(np.mean(np.sum((pred[m, p] - true[m, p]) ** 2, -1))) if m.any() else float("nan")
    return out
