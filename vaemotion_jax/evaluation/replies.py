"""Free-form replies to one question about many media files (chat, and the Stage 2 report's
emotion-word read-out): batched greedy generation with the evaluation's own input code, so a
clip gets the inputs and positions it was trained with (and, for a kind="qformer" adapter, the
utterance windows and timestamped prompt of a clip without utterances: data/utterances.py);
unusable files are named, not fatal."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vaemotion_jax.data.manifest import Record
from vaemotion_jax.data.pipeline import BatchIterator, PipelineConfig, make_iterator
from vaemotion_jax.evaluation import benchmark as eval_benchmark
from vaemotion_jax.examples import left_pad_prompts
from vaemotion_jax.generate import greedy_generate
from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL
from vaemotion_jax.processing.tokenizer import cached_tokenizer

PATHWAY_INDEX = {"a": 0, "v": 1, "av": 2}


@dataclass
class Answer:
    response: str | None                          # None: the file could not be used
    valence_arousal: tuple[float, float] | None   # the Emotion Supervisor's, if the model has one
    problem: str | None = None                    # why the file could not be used


def question_batches(spec: eval_benchmark.InputSpec, qwen, media: Sequence[str], modality: str,
                     prompt: str, batch_size: int = 8) -> BatchIterator:
    """The model inputs of `prompt` about each media file; bad files are kept as
    `skipped_examples` (ids are the files' indices)."""
    if modality not in PATHWAY_INDEX:
        raise ValueError(f"modality must be a, v or av, got {modality!r}")
    records = [Record(id=str(i), media=path, modality=modality) for i, path in enumerate(media)]
    return make_iterator(records, eval_benchmark.example_fn(spec, qwen, "artemo", modality,
                                                         prompt=prompt), PipelineConfig(
        batch_size=batch_size, shuffle=False, num_epochs=1, drop_remainder=False,
        keep_skipped=True, buckets=eval_benchmark.PROMPT_BUCKETS,
        pad_values={"prompt_ids": qwen.pad_token_id}))


def ask(model, params, spec: eval_benchmark.InputSpec, media: Sequence[str], modality: str,
        prompt: str, max_new_tokens: int = 64, batch_size: int = 8) -> list[Answer]:
    """One `Answer` per media file, in order, to `prompt` through the `modality` pathway."""
    qwen = model.config.qwen
    tok = cached_tokenizer(spec.tokenizer_dir)
    emotion = model.config.emotion
    has_va = emotion is not None and emotion.supervisor
    it = question_batches(spec, qwen, media, modality, prompt, batch_size)
    answers: dict[int, Answer] = {}
    for batch in it:
        dev = eval_benchmark.device_batch(batch)
        ids, mask, pos = left_pad_prompts(batch, qwen.pad_token_id)
        out = greedy_generate(Qwen2_5_VL(qwen), params["backbone"], ids, mask,
                              visual_tokens=eval_benchmark.pathway_tokens(
                                  model, params, eval_benchmark.media_fields(dev), modality),
                              position_ids=pos, max_new_tokens=max_new_tokens)
        va = (np.asarray(eval_benchmark.emotions(model, params, eval_benchmark.media_fields(dev)))
              if has_va else None)
        for b in np.flatnonzero(batch["valid"]):
            pair = None if va is None else tuple(float(x) for x in va[b, PATHWAY_INDEX[modality]])
            answers[int(batch["id"][b])] = Answer(tok.decode(out[b], skip_special_tokens=True), pair)
    for bad in it.skipped_examples:
        answers[int(bad.id)] = Answer(None, None, bad.reason)
    return [answers[i] for i in range(len(media))]
