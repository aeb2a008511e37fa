"""Running a model on multiple-choice items: batched, jitted, in three modes: "generate" (greedy
decoding + letter extraction, the paper's protocol), "loglik" (log-probability of each option
letter as the reply) and "cloze" (the question alone as the prompt, each option's text as the
reply, mean log-probability per token: for models never taught to answer with letters, such
as the embedded tiny backbone).

Every item gets the same prompt text whatever its modality; the modality only decides which
tokens fill the placeholders (audio z_a, video z_v, or joint [z_a; z_v], enhanced when the
model has an Emotion Enhancer). Audio-only inputs (AIR-Bench, plain wav/flac/mp3, or the audio
of a clip asked about its sound) get the positions they were trained with: the training video
grid spread over their own window (data/media.py), as their video would have been.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vaemotion_jax.data.buckets import length_buckets
from vaemotion_jax.data.decode import BadExample
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.manifest import Record
from vaemotion_jax.data.pipeline import (ExampleFn, PipelineConfig, clip_text, make_iterator,
                                         utterance_arrays)
from vaemotion_jax.data.utterances import UtteranceSpec
from vaemotion_jax.evaluation.prompts import option_letters, record_prompt
from vaemotion_jax.evaluation.scoring import Prediction, make_prediction, unanswered_prediction
from vaemotion_jax.generate import greedy_generate
from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL
from vaemotion_jax.models.vaemotion import MODALITY_CODES, VAEmotionLLM
from vaemotion_jax.processing.chat import encode_chat
from vaemotion_jax.processing.tokenizer import cached_tokenizer
from vaemotion_jax.examples import (batch_layout, layout_arrays, left_pad_prompts, pathway_positions,
                                    placeholder_count)

log = logging.getLogger("vaemotion_jax.evaluate")
# Prompt lengths, 2 per doubling: evaluation runs each shape for few batches, so a new shape's
# compilation costs more than its padding saves (finer buckets were slower cold on the tiny model).
_LENGTHS = length_buckets(64, 4096, per_octave=2)
PROMPT_BUCKETS = {"prompt_ids": _LENGTHS, "position_ids": _LENGTHS}
_SMALL = length_buckets(8, 4096)  # cloze rows (items x options) and option lengths


@dataclass(frozen=True)
class InputSpec:
    """How media and text become model inputs (the run's own settings, as in training);
    `utterances` for audio adapters that read utterance windows (data/utterances.py)."""
    tokenizer_dir: str
    media: MediaSpec
    joint_layout: str = "shared_grid"
    utterances: UtteranceSpec | None = None

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.media.grid


def item_example(record: Record, features: dict, *, spec: InputSpec, qwen, benchmark: str,
                   pad_absent: bool = False, prompt: str | None = None,
                   question_only: bool = False) -> dict:
    """Pipeline `format_fn`: the item's prompt (ending in the generation prompt) with its
    pathway's placeholders, right-padded later; media (zeros for a stream the item lacks). The
    prompt follows the clip's window timestamps, as in training, for adapters that read
    utterance windows."""
    modality = record.modality or "a"
    if modality in ("v", "av") and "pixel_values_videos" not in features:
        raise BadExample(record.where, f"modality {modality} needs a video stream", "no_video")
    if modality in ("a", "av") and "fbank" not in features:
        raise BadExample(record.where, f"modality {modality} needs an audio stream", "no_audio")
    grid = spec.grid
    if "video_grid_thw" in features and tuple(int(g) for g in features["video_grid_thw"]) != grid:
        raise BadExample(record.where, f"video grid {tuple(features['video_grid_thw'])} differs from "
                         f"the model's {grid}", "preprocess")
    sec = float(features["second_per_grid_ts"])
    text = (prompt if prompt is not None else record.question if question_only
            else record_prompt(record, benchmark, pad_absent))
    n = placeholder_count(modality, grid, qwen.vision.spatial_merge_size)
    ids = encode_chat(cached_tokenizer(spec.tokenizer_dir),
                      [{"role": "user", "content": clip_text(text, features)}],
                      video_tokens=n, add_generation_prompt=True)["input_ids"].astype(np.int32)
    rows, media = int(np.prod(grid)), spec.media
    return {"prompt_ids": ids,
            "position_ids": pathway_positions(ids, modality, grid, sec, qwen, spec.joint_layout).T.astype(np.int32),
            "modality": np.int32(MODALITY_CODES[modality]),
            "pixel_values_videos": features.get("pixel_values_videos",
                                                np.zeros((rows, qwen.vision.patch_dim), np.float32)),
            "fbank": features.get("fbank", np.zeros((media.audio_windows, media.audio_frames, 128),
                                                    np.float32)),
            "fbank_mask": features.get("fbank_mask", np.zeros(media.audio_windows, bool)),
            **utterance_arrays(features), **layout_arrays(qwen, grid)}


def example_fn(spec: InputSpec, qwen, benchmark: str, modality: str | None,
               pad_absent: bool = False, prompt: str | None = None,
               question_only: bool = False) -> ExampleFn:
    """Decodes only the streams the items need (audio-only items: no video). `prompt` replaces
    the items' own multiple-choice prompt (free questions, emotion read-outs)."""
    return ExampleFn(media=spec.media, video=modality != "a", utterances=spec.utterances,
                     format_fn=functools.partial(item_example, spec=spec, qwen=qwen,
                                                 benchmark=benchmark, pad_absent=pad_absent,
                                                 prompt=prompt, question_only=question_only),
                     reuse_clips=True)


# What the encoders read: the pathway tokens of a batch depend on these fields only.
MEDIA_FIELDS = ("fbank", "fbank_mask", "utterance_mask", "pixel_values_videos", "patch_index",
                "patch_hw", "token_index", "modality")


def media_fields(batch: dict) -> dict:
    """The batch's MEDIA_FIELDS: jitted encoders given only these compile once per media
    shape, not once per prompt length."""
    return {k: batch[k] for k in MEDIA_FIELDS if k in batch}


def _enhanced(m: VAEmotionLLM, batch):
    return m.enhanced_tokens(batch["fbank"], batch["fbank_mask"], batch["pixel_values_videos"],
                             batch_layout(batch), batch.get("utterance_mask"))


def _pathway(m: VAEmotionLLM, batch, modality: str):
    """The placeholder tokens (B, 2N, D) of a batch asked through one pathway ("a", "v", "av"):
    only the encoders that pathway reads run; the unused half of a single pathway's tokens
    repeats its own."""
    e_a = e_v = None
    if modality != "v":
        e_a = m.enhance(jax.lax.stop_gradient(m.audio_tokens(
            batch["fbank"], batch["fbank_mask"], batch.get("utterance_mask"))))
    if modality != "a":
        e_v = m.enhance(m.video_tokens(batch["pixel_values_videos"], batch_layout(batch)))
    return m.pathway_tokens(e_v if e_a is None else e_a, e_a if e_v is None else e_v,
                            batch["modality"])


@functools.partial(jax.jit, static_argnums=0)
def emotions(model: VAEmotionLLM, params, batch) -> jnp.ndarray:
    """V-A predictions (B, 3, 2) for the (a, v, av) pathways (models with a supervisor)."""
    return model.apply({"params": params}, method=lambda m: m.emotions(*_enhanced(m, batch)))


@functools.partial(jax.jit, static_argnums=(0, 3))
def pathway_tokens(model: VAEmotionLLM, params, batch, modality: str) -> jnp.ndarray:
    """The placeholder tokens (B, 2N, D) of a batch whose items ask through `modality`."""
    return model.apply({"params": params}, method=lambda m: _pathway(m, batch, modality))


@functools.partial(jax.jit, static_argnums=(0, 4))
def last_logprobs(model: VAEmotionLLM, params, batch, candidates: jnp.ndarray, modality: str
                  ) -> jnp.ndarray:
    """Log-probabilities (B, K) of `candidates` (K,) token ids as the first reply token."""
    def run(m):
        s = batch["prompt_ids"].shape[1]
        mask = jnp.arange(s)[None] < batch["prompt_ids_length"][:, None]
        h = m.hidden(batch["prompt_ids"], jnp.moveaxis(batch["position_ids"], -1, 0), mask,
                     _pathway(m, batch, modality))
        last = jnp.take_along_axis(h, (batch["prompt_ids_length"] - 1)[:, None, None], 1)
        return jax.nn.log_softmax(m.logits(last[:, 0]).astype(jnp.float32), -1)[:, candidates]
    return model.apply({"params": params}, method=run)


@functools.partial(jax.jit, static_argnums=(0, 7))
def continuation_logprobs(model: VAEmotionLLM, params, batch, rows, starts, targets, mask,
                          modality: str) -> jnp.ndarray:
    """Summed log-probabilities (R,) of continuation tokens, one row per (item, option).

    batch: the items' prompt batch; rows (R,) which item each row is; `batch["full_ids"]`
    (R, S) / `batch["full_positions"]` (R, S, 3) prompt + continuation; targets/mask (R, A) the
    continuation tokens, predicted from positions starts (R,) + arange(A)."""
    def run(m):
        s = batch["full_ids"].shape[1]
        h = m.hidden(batch["full_ids"], jnp.moveaxis(batch["full_positions"], -1, 0),
                     jnp.arange(s)[None] < batch["full_length"][:, None],
                     _pathway(m, batch, modality)[rows])
        index = jnp.minimum(starts[:, None] + jnp.arange(targets.shape[1])[None], s - 1)
        logp = jax.nn.log_softmax(m.logits(jnp.take_along_axis(h, index[..., None], 1))
                                  .astype(jnp.float32), -1)
        picked = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
        return jnp.sum(picked * mask, -1)
    return model.apply({"params": params}, method=run)


def cloze_inputs(batch: dict, records: list[Record], tok, eos_id: int, buckets=_LENGTHS):
    """Prompt + each option as the reply: full ids/positions (R, S), rows, starts, targets,
    mask and the option lengths, for `continuation_logprobs`. R, S and the targets' length are
    bucketed, so batches of similar items share one compiled program."""
    seqs, pos, rows, starts, conts = [], [], [], [], []
    for i, r in enumerate(records):
        if r is None:
            continue
        n = int(batch["prompt_ids_length"][i])
        prompt, ppos = batch["prompt_ids"][i, :n], batch["position_ids"][i, :n]
        for option in r.options:
            cont = np.asarray(tok.encode(option, add_special_tokens=False) + [eos_id], np.int32)
            seqs.append(np.concatenate([prompt, cont]))
            pos.append(np.concatenate([ppos, (ppos.max() + 1 + np.arange(len(cont)))[:, None]
                                       .repeat(3, 1)]))
            rows.append(i), starts.append(n - 1), conts.append(cont)
    s = next(b for b in buckets if b >= max(len(x) for x in seqs))
    a = next(b for b in _SMALL if b >= max(len(x) for x in conts))
    r_ = next(b for b in _SMALL if b >= len(seqs))  # padding rows: no tokens, nothing scored
    full = np.zeros((r_, s), np.int32)
    fpos = np.zeros((r_, s, 3), np.int32)
    tg = np.zeros((r_, a), np.int32)
    mk = np.zeros((r_, a), np.float32)
    for j, (x, p, cnt) in enumerate(zip(seqs, pos, conts)):
        full[j, :len(x)], fpos[j, :len(x)] = x, p
        tg[j, :len(cnt)], mk[j, :len(cnt)] = cnt, 1
    lengths = np.asarray([len(x) for x in seqs], np.int32)
    pad = lambda x: np.pad(np.asarray(x, np.int32), (0, r_ - len(seqs)))
    return ({"full_ids": full, "full_positions": fpos, "full_length": pad(lengths)},
            pad(rows), pad(starts), tg, mk, np.asarray([len(c) for c in conts]))


def letter_token_ids(tokenizer, n: int) -> np.ndarray:
    """The token id of each option letter as the reply's first token."""
    ids = []
    for letter in option_letters(n):
        toks = tokenizer.encode(letter, add_special_tokens=False)
        if len(toks) != 1:
            raise ValueError(f"the letter {letter!r} is {len(toks)} tokens for this tokenizer; "
                             "option scoring needs one")
        ids.append(toks[0])
    return np.asarray(ids, np.int32)


def run_items(model: VAEmotionLLM, params, records: Sequence[Record], spec: InputSpec,
              benchmark: str, mode: str = "loglik", batch_size: int = 32, max_new_tokens: int = 8,
              rule: str = "airbench", pad_absent: bool = False) -> list[Prediction]:
    """Predictions for benchmark items, grouped by modality; progress is logged."""
    qwen = model.config.qwen
    tok = cached_tokenizer(spec.tokenizer_dir)
    by_id = {r.id: r for r in records}
    preds: list[Prediction] = []
    t0, done = time.time(), 0
    if mode == "loglik":
        letters = jnp.asarray(letter_token_ids(tok, max(len(r.options) for r in records)))
    bar = tqdm(total=len(records), unit="question", desc=f"{benchmark} ({mode})", disable=None)
    for modality in sorted({r.modality or "a" for r in records}):
        group = [r for r in records if (r.modality or "a") == modality]
        it = make_iterator(group, example_fn(spec, qwen, benchmark, modality, pad_absent,
                                             question_only=mode == "cloze"),
                           PipelineConfig(batch_size=batch_size, shuffle=False, num_epochs=1,
                                          drop_remainder=False, keep_skipped=True,
                                          buckets=PROMPT_BUCKETS,
                                          pad_values={"prompt_ids": qwen.pad_token_id}))
        for batch in it:
            rows = [i for i in range(len(batch["id"])) if batch["valid"][i]]
            dev = device_batch(batch)
            if mode == "loglik":  # every item's letters among the run's most: one shape
                lp = np.asarray(last_logprobs(model, params, dev, letters, modality))
                for i in rows:
                    r = by_id[str(batch["id"][i])]
                    preds.append(make_prediction(r, benchmark,
                                                 option_logprobs=[[float(x)] for x in lp[i, :len(r.options)]]))
            elif mode == "cloze":
                items = [by_id[str(batch["id"][i])] if batch["valid"][i] else None
                         for i in range(len(batch["id"]))]
                extra, rws, starts, tg, mk, lens = cloze_inputs(batch, items, tok, qwen.eos_token_id)
                total = np.asarray(continuation_logprobs(
                    model, params, {**dev, **{k: jnp.asarray(v) for k, v in extra.items()}},
                    jnp.asarray(rws), jnp.asarray(starts), jnp.asarray(tg), jnp.asarray(mk),
                    modality))
                j = 0
                for i in rows:
                    r = by_id[str(batch["id"][i])]
                    k = len(r.options)
                    preds.append(make_prediction(r, benchmark, option_logprobs=[
                        [float(total[j + o]) / lens[j + o]] for o in range(k)]))
                    j += k
            elif mode == "generate":
                ids, mask, pos = left_pad_prompts(batch, qwen.pad_token_id)
                out = greedy_generate(Qwen2_5_VL(qwen), params["backbone"], ids, mask,
                                      visual_tokens=pathway_tokens(model, params, media_fields(dev),
                                                                    modality),
                                      position_ids=pos, max_new_tokens=max_new_tokens)
                for i in rows:
                    r = by_id[str(batch["id"][i])]
                    text = tok.decode(out[i], skip_special_tokens=True)
                    preds.append(make_prediction(r, benchmark, response=text, rule=rule))
            else:
                raise ValueError(f"mode must be 'loglik', 'cloze' or 'generate', got {mode!r}")
            done += len(rows)
            bar.update(len(rows))
        for bad in it.skipped_examples:  # named and counted by the benchmark's rule, never dropped
            log.warning("item %s could not be asked (%s): counted as a failure", bad.id, bad.message)
            preds.append(unanswered_prediction(by_id[bad.id], benchmark, bad.message))
            bar.update(1)
        log.info("%s", it.summary())
    bar.close()
    log.info("evaluated %d items in %.1f s (%.1f questions/s)", done, time.time() - t0,
             done / max(time.time() - t0, 1e-9))
    return preds


def valence_arousal(model: VAEmotionLLM, params, spec: InputSpec, records: Sequence[Record],
                    batch_size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The supervisor's (valence, arousal) for the (a, v, av) pathways of one record per clip
    with labels: (predicted (N, 3, 2), true (N, 3, 2), has_label (N, 3))."""
    from vaemotion_jax.data.pipeline import label_arrays
    seen, clips = set(), []
    for r in records:
        if r.media not in seen and r.labels:
            seen.add(r.media)
            clips.append(Record(id=r.id, media=r.media, start=r.start, end=r.end, modality="av",
                                labels=r.labels, utterances=r.utterances))
    qwen = model.config.qwen
    it = make_iterator(clips, example_fn(spec, qwen, "artemo", "av", prompt=""),
                       PipelineConfig(batch_size=batch_size, shuffle=False, num_epochs=1,
                                      drop_remainder=False, buckets=PROMPT_BUCKETS,
                                      pad_values={"prompt_ids": qwen.pad_token_id}))
    by_id = {r.id: r for r in clips}
    preds, trues, masks = [], [], []
    for batch in it:
        va = np.asarray(emotions(model, params, media_fields(device_batch(batch))))
        for b in np.flatnonzero(batch["valid"]):
            lab = label_arrays(by_id[str(batch["id"][b])])
            preds.append(va[b]), trues.append(lab["va"]), masks.append(lab["va_mask"])
    return np.stack(preds), np.stack(trues), np.stack(masks)


def device_batch(batch: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in batch.items() if np.asarray(v).dtype.kind not in "USO"}
