"""Stage 1, VG-Align (paper section 3.2, eq. 1): the audio pathway learns to make the frozen LLM
respond to a clip's sound as its visual pathway responds to its picture.

Per clip and epoch: a prompt drawn (seeded by clip and epoch, so a resumed run draws the same)
from the pool, as the paper samples one; the teacher's greedy response to (video, prompt) is
generated once with the KV-cache generator and cached on disk, keyed by backbone fingerprint,
clip and prompt. Teacher and student then read the same token sequence (prompt + teacher
response) with the same M-RoPE grid; only the placeholder tokens differ (z_v or z_a). The loss
is the soft cross-entropy of eq. (1) over every response token (target lengths are bucketed;
a response that hits the generation cap is counted as truncated).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaemotion_jax.data.decode import BadExample
from vaemotion_jax.data.pipeline import clip_text, utterance_arrays
from vaemotion_jax.examples import audio_inputs, batch_layout, layout_arrays, left_pad_prompts
from vaemotion_jax.generate import greedy_generate
from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig
from vaemotion_jax.models.qwen2_5_vl.rope import rope_index_one
from vaemotion_jax.processing.chat import encode_chat
from vaemotion_jax.processing.tokenizer import cached_tokenizer
from vaemotion_jax.training import losses
from vaemotion_jax.training.state import TrainState, apply_gradients, merge_params

log = logging.getLogger("vaemotion_jax.stage1")


# Stage 1 prompt pool (the paper samples a prompt per clip from "a predefined pool" it does not
# publish). These ask for a description, which is what the teacher can answer from video alone.
STAGE1_PROMPTS = (
    "Describe what you perceive in this clip.",
    "What is happening in this clip?",
    "Describe the clip in one sentence.",
    "Tell me what this clip shows.",
)


def prompt_for(clip_id: str, prompts: Sequence[str], seed: int, epoch: int = 0) -> str:
    """The clip's prompt in `epoch`, drawn from the pool by a hash of (seed, clip id, epoch)."""
    h = hashlib.sha256(f"{seed}:{clip_id}:{epoch}".encode()).digest()
    return prompts[int.from_bytes(h[:4], "little") % len(prompts)]


# --- host side: examples ----------------------------------------------------------------------

def teacher_prompt_example(record, features: dict, *, tokenizer_dir: str, qwen: Qwen2_5_VLConfig,
                   prompts: Sequence[str], seed: int) -> dict:
    """Pipeline `format_fn`: prompt tokens (ending in the generation prompt) + media + layout;
    the prompt follows the clip's window timestamps, and utterance_mask is added, when the
    adapter reads utterance windows (data/utterances.py)."""
    if "pixel_values_videos" not in features or "fbank" not in features:
        raise BadExample(record.where, "stage 1 needs both a video and an audio stream", "missing_stream")
    grid = features["video_grid_thw"]
    n_video = int(np.prod(grid)) // qwen.vision.spatial_merge_size ** 2
    prompt = prompt_for(record.id, prompts, seed, record.epoch)
    ids = encode_chat(cached_tokenizer(tokenizer_dir),
                      [{"role": "user", "content": clip_text(prompt, features)}],
                      video_tokens=n_video, add_generation_prompt=True)["input_ids"]
    return {"prompt_ids": ids.astype(np.int32), "video_grid_thw": np.asarray(grid, np.int32),
            "second_per_grid_ts": np.float64(features["second_per_grid_ts"]),
            "epoch": np.int32(record.epoch),
            "pixel_values_videos": features["pixel_values_videos"], "fbank": features["fbank"],
            "fbank_mask": features["fbank_mask"], **utterance_arrays(features),
            **layout_arrays(qwen, grid)}


def attach_responses(batch: dict, responses: Sequence[Sequence[int]], qwen: Qwen2_5_VLConfig,
                     seq_buckets: Sequence[int], target_buckets: Sequence[int], pad_id: int) -> dict:
    """Completes a prompt batch with response tokens: right-padded input_ids (B, S), positions
    (B, S, 3), every response token as a loss target (B, A) and the key mask (B, S); S and A
    are the smallest buckets that fit."""
    rows = []
    for b, resp in enumerate(responses):
        n = int(batch["prompt_ids_length"][b])
        rows.append(np.concatenate([batch["prompt_ids"][b, :n], np.asarray(resp, np.int32)]))
    longest = max(len(r) for r in rows)
    s = next((x for x in sorted(seq_buckets) if x >= longest), None)
    if s is None:
        raise ValueError(f"a prompt + response of {longest} tokens exceeds the largest sequence "
                         f"bucket {max(seq_buckets)}")
    longest_response = max(len(r) for r in responses)
    max_targets = next((x for x in sorted(target_buckets) if x >= longest_response), None)
    if max_targets is None:
        raise ValueError(f"a response of {longest_response} tokens exceeds the largest target "
                         f"bucket {max(target_buckets)}")
    bsz = len(rows)
    ids = np.full((bsz, s), pad_id, np.int32)
    pos = np.zeros((bsz, s, 3), np.int32)
    mask = np.zeros((bsz, s), bool)
    t_index = np.zeros((bsz, max_targets), np.int32)
    t_ids = np.zeros((bsz, max_targets), np.int32)
    t_mask = np.zeros((bsz, max_targets), bool)
    for b, row in enumerate(rows):
        if not batch["valid"][b]:  # a padding row: no tokens, nothing to predict
            continue
        ids[b, :len(row)] = row
        mask[b, :len(row)] = True
        grid = tuple(int(g) for g in batch["video_grid_thw"][b])
        pos[b, :len(row)] = rope_index_one(row, [grid], [float(batch["second_per_grid_ts"][b])],
                                           qwen).T
        n_prompt = int(batch["prompt_ids_length"][b])
        k = len(row) - n_prompt
        t_index[b, :k] = np.arange(n_prompt - 1, n_prompt - 1 + k)
        t_ids[b, :k] = row[n_prompt:n_prompt + k]
        t_mask[b, :k] = True
    out = dict(batch)
    out.update(input_ids=ids, position_ids=pos, attention_mask=mask, target_index=t_index,
               target_ids=t_ids, target_mask=t_mask)
    return out


def trim_response(tokens: np.ndarray, eos_id: int) -> list[int]:
    """Generated tokens up to and including the first end token (all of them if none: a
    response cut by the generation cap, see `is_truncated`)."""
    tokens = [int(t) for t in tokens]
    return tokens[:tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def is_truncated(response: Sequence[int], eos_id: int) -> bool:
    """Whether a (non-empty) response stopped at the generation cap before its end token."""
    return bool(response) and int(response[-1]) != eos_id


def fill_padding_rows(batch: dict) -> dict:
    """The batch with its padding rows (valid False) replaced by copies of its first real row,
    so that every row is a well-formed input; their outputs are ignored."""
    valid = np.asarray(batch["valid"])
    if valid.all() or not valid.any():
        return batch
    first = int(np.flatnonzero(valid)[0])
    out = {}
    for k, v in batch.items():
        v = np.array(v)
        if v.ndim and v.shape[0] == valid.size and k != "valid":
            v[~valid] = v[first]
        out[k] = v
    return out


def teacher_responses(model, params, batch: dict, qwen: Qwen2_5_VLConfig, max_new_tokens: int,
                      visual_tokens=None) -> list[list[int]]:
    """Greedy responses for a prompt batch: from its video (teacher), or from `visual_tokens`.
    Padding rows get an empty response."""
    valid = np.asarray(batch["valid"])
    batch = fill_padding_rows(batch)
    ids, mask, _ = left_pad_prompts({k: batch[k] for k in ("prompt_ids", "prompt_ids_length")},
                                    qwen.pad_token_id)
    rows = [batch["pixel_values_videos"][b] for b in range(ids.shape[0])]
    grids = np.asarray(batch["video_grid_thw"])
    out = greedy_generate(model, params, ids, mask,
                          None if visual_tokens is not None else np.concatenate(rows),
                          grids, np.asarray(batch["second_per_grid_ts"], np.float64),
                          visual_tokens=visual_tokens, max_new_tokens=max_new_tokens,
                          eos_token_ids=[qwen.eos_token_id])
    return [trim_response(o, qwen.eos_token_id) if ok else [] for o, ok in zip(out, valid)]


class ResponseCache:
    """Teacher responses on disk: one JSON file per (backbone fingerprint, generation settings,
    `timestamps` settings: UtteranceSpec.timestamps_key of runs whose prompts carry window
    timestamps, else ""), mapping "clip id\\tprompt" to token ids. Appended batch by batch, so
    nothing is lost."""

    def __init__(self, directory: str, backbone_fingerprint: str, max_new_tokens: int,
                 timestamps: str = ""):
        os.makedirs(directory, exist_ok=True)
        suffix = f"-{timestamps}" if timestamps else ""
        self.path = os.path.join(directory, f"teacher-{backbone_fingerprint[:16]}-n"
                                            f"{max_new_tokens}{suffix}.jsonl")
        self.entries: dict[str, list[int]] = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                lines = f.read().split("\n")
            for n, line in enumerate(lines):
                try:
                    d = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:  # a line cut short by a crash: regenerate it
                    log.warning("%s:%d: unreadable cache line ignored", self.path, n + 1)
                    continue
                if d is not None:
                    self.entries[d["key"]] = d["ids"]

    @staticmethod
    def key(clip_id: str, prompt: str) -> str:
        return f"{clip_id}\t{prompt}"

    def get(self, clip_id: str, prompt: str) -> list[int] | None:
        return self.entries.get(self.key(clip_id, prompt))

    def add(self, items: dict[str, list[int]]) -> None:
        with open(self.path, "a") as f:
            for k, ids in items.items():
                f.write(json.dumps({"key": k, "ids": ids}) + "\n")
        self.entries.update(items)


# --- device side: the step ----------------------------------------------------------------------

def _gather(hidden, index):
    return jnp.take_along_axis(hidden, index[..., None], axis=1)


def teacher_logits(model, params, batch):
    """Teacher (video pathway) logits at the target positions, (B, A, V), no gradient."""
    pos = jnp.moveaxis(batch["position_ids"], -1, 0)

    def run(m):
        z_v = m.video_tokens(batch["pixel_values_videos"], batch_layout(batch))
        h = m.hidden(batch["input_ids"], pos, batch["attention_mask"], z_v)
        return m.logits(_gather(h, batch["target_index"])), z_v

    logits, z_v = model.apply({"params": params}, method=run)
    return jax.lax.stop_gradient(logits), jax.lax.stop_gradient(z_v)


def student_logits(model, params, batch):
    """Student (audio pathway) logits at the target positions (B, A, V) and z_a (B, L, D)."""
    pos = jnp.moveaxis(batch["position_ids"], -1, 0)

    def run(m):
        z_a = m.audio_tokens(**audio_inputs(batch))
        h = m.hidden(batch["input_ids"], pos, batch["attention_mask"], z_a)
        return m.logits(_gather(h, batch["target_index"])), z_a

    return model.apply({"params": params}, method=run)


def audio_tokens(model, params, batch):
    """z_a (B, L_v, D) of a batch's audio (and utterance windows, for adapters that read them)."""
    return model.apply({"params": params}, **audio_inputs(batch), method="audio_tokens")


def stage1_loss(trainable, frozen, batch, teacher, z_v, *, model, tau: float, align: str):
    """Mean over the batch of eq. (1) (or the feature-alignment ablation); also KL and top-1.
    A top-k cached teacher (B, A, k) comes with `teacher_index` in the batch."""
    logits, z_a = student_logits(model, merge_params(frozen, trainable), batch)
    rows = batch["valid"].astype(jnp.float32)
    mask = batch["target_mask"]
    index = batch.get("teacher_index")
    if align == "logits":
        per = losses.soft_cross_entropy(teacher, logits, mask, tau, index)
    elif align == "features":
        token_mask = jnp.broadcast_to(batch["valid"][:, None], z_a.shape[:2])
        per = losses.feature_alignment(z_a, z_v, token_mask)
    else:
        raise ValueError(f"align must be 'logits' or 'features', got {align!r}")
    denom = jnp.maximum(rows.sum(), 1.0)
    loss = jnp.sum(per * rows) / denom
    kl = jnp.sum(losses.kl_divergence(teacher, logits, mask, tau, index) * rows) / denom
    top1 = jnp.sum(losses.top1_agreement(teacher, logits, mask, index) * rows) / denom
    return loss, {"kl": kl, "top1": top1}


def train_step(state: TrainState, frozen, batch, *, model, tx, tau: float, align: str):
    """One VG-Align step on the trainable params (the audio adapter). A batch with
    `teacher_logits` (the teacher cache, training/frozen_cache.py) skips the teacher."""
    if "teacher_logits" in batch:
        teacher, z_v = batch["teacher_logits"], None
    else:
        teacher, z_v = teacher_logits(model, merge_params(frozen, state.params), batch)
    grad_fn = jax.value_and_grad(stage1_loss, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, frozen, batch, teacher, z_v, model=model, tau=tau,
                                 align=align)
    state, finite = apply_gradients(state, grads, loss, tx)
    return state, {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads), "finite": finite}


def eval_step(params, batch, *, model, tau: float):
    """Held-out KL(teacher || student) and top-1 agreement, per example: dict of (B,)."""
    teacher, _ = teacher_logits(model, params, batch)
    logits, _ = student_logits(model, params, batch)
    mask = batch["target_mask"]
    return {"kl": losses.kl_divergence(teacher, logits, mask, tau),
            "top1": losses.top1_agreement(teacher, logits, mask),
            "ce": losses.soft_cross_entropy(teacher, logits, mask, tau)}


# --- attribute agreement of responses -------------------------------------------------------------

def named_attributes(text: str, vocabulary: dict[str, Sequence[str]]) -> dict[str, str]:
    """factor -> the value a response names (the first one mentioned), for each factor named."""
    words = text.lower().replace(",", " ").replace(".", " ").split()
    out = {}
    for factor, values in vocabulary.items():
        hits = [(words.index(v), v) for v in values if v in words]
        if hits:
            out[factor] = min(hits)[1]
    return out


def attribute_agreement(teacher_texts: Sequence[str], student_texts: Sequence[str],
                        vocabulary: dict[str, Sequence[str]]) -> float:
    """How often the student's response names the same value as the teacher's, over all
    (clip, factor) pairs the teacher names."""
    same = total = 0
    for t, s in zip(teacher_texts, student_texts):
        ta, sa = named_attributes(t, vocabulary), named_attributes(s, vocabulary)
        total += len(ta)
        same += sum(sa.get(f) == v for f, v in ta.items())
    return same / max(total, 1)

