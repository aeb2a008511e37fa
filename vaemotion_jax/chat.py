"""`python -m vaemotion_jax.chat --checkpoint runs/stage2 --media clip.mp4 --modality av --prompt "..."`

Prints the model's response and, for a Stage 2 run, the Emotion Supervisor's valence/arousal
for the chosen pathway. Audio-only input may be a plain audio file (wav, flac, mp3) or the audio
track of a video. A file that cannot be used (missing, not media, truncated, too short) gets one
line naming it and the reason; the others are answered, and the exit status is non-zero only
when none could be. `respond()` does the same for a batch in Python.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from dataclasses import dataclass
from typing import Sequence

import jax
import numpy as np

from vaemotion_jax.data.manifest import Record
from vaemotion_jax.data.pipeline import BatchIterator, PipelineConfig, make_iterator
from vaemotion_jax.evaluation import runner as eval_runner
from vaemotion_jax.generate import greedy_generate
from vaemotion_jax.inference import LoadedRun, load_run
from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL

PATHWAY_INDEX = {"a": 0, "v": 1, "av": 2}


@dataclass
class Reply:
    media: str
    modality: str
    response: str | None                          # None: the file could not be used
    valence_arousal: tuple[float, float] | None   # None without an Emotion Supervisor
    problem: str | None = None                    # why the file could not be used


def chat_batches(spec: eval_runner.InputSpec, qwen, media: Sequence[str], modality: str,
                 prompt: str, batch_size: int = 8) -> BatchIterator:
    """The model inputs of `prompt` about each media file (the evaluation's own host code, so a
    clip gets the positions it was trained with); bad files are kept as `skipped_examples`."""
    if modality not in PATHWAY_INDEX:
        raise ValueError(f"modality must be a, v or av, got {modality!r}")
    records = [Record(id=str(i), media=path, modality=modality) for i, path in enumerate(media)]
    return make_iterator(records, eval_runner.example_fn(spec, qwen, "artemo", modality,
                                                         prompt=prompt), PipelineConfig(
        batch_size=batch_size, shuffle=False, num_epochs=1, drop_remainder=False,
        keep_skipped=True, buckets=eval_runner.PROMPT_BUCKETS,
        pad_values={"prompt_ids": qwen.pad_token_id}))


def respond(run: LoadedRun, media: Sequence[str], modality: str, prompt: str,
            max_new_tokens: int = 64, batch_size: int = 8) -> list[Reply]:
    """One reply per media file (in order), all with the same prompt and pathway (a | v | av);
    a file that cannot be used gets a Reply with `problem` set and no response."""
    qwen = run.model.config.qwen
    it = chat_batches(run.spec, qwen, media, modality, prompt, batch_size)
    tok = run.tokenizer
    emotion = run.model.config.emotion
    has_va = emotion is not None and emotion.supervisor
    tokens_fn = jax.jit(functools.partial(eval_runner.pathway_tokens, run.model))
    va_fn = jax.jit(functools.partial(eval_runner.emotions, run.model)) if has_va else None
    replies: dict[int, Reply] = {}
    for batch in it:
        dev = eval_runner.device_batch(batch)
        ids, mask, pos = eval_runner.left_pad_prompts(batch, qwen.pad_token_id)
        out = greedy_generate(Qwen2_5_VL(qwen), run.params["backbone"], ids, mask,
                              visual_tokens=np.asarray(tokens_fn(run.params, dev)),
                              position_ids=pos, max_new_tokens=max_new_tokens)
        va = np.asarray(va_fn(run.params, dev)) if has_va else None
        for b in np.flatnonzero(batch["valid"]):
            i = int(batch["id"][b])
            pair = None if va is None else tuple(float(x) for x in va[b, PATHWAY_INDEX[modality]])
            replies[i] = Reply(media[i], modality, tok.decode(out[b], skip_special_tokens=True), pair)
    for bad in it.skipped_examples:
        replies[int(bad.id)] = Reply(media[int(bad.id)], modality, None, None, bad.reason)
    return [replies[i] for i in range(len(media))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.chat", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a training workdir (runs/stage1, runs/stage2)")
    p.add_argument("--media", required=True, nargs="+", help="video (with audio) or audio files")
    p.add_argument("--modality", default="av", choices=sorted(PATHWAY_INDEX))
    p.add_argument("--prompt", default="Describe what you perceive in this clip.")
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args(argv)
    logging.getLogger("vaemotion_jax.data").setLevel(logging.ERROR)  # bad files: one line each, below
    try:
        run = load_run(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:  # CheckpointError is a ValueError
        print(f"{args.checkpoint}: cannot load the run: {e}", file=sys.stderr)
        return 2
    answered = 0
    for reply in respond(run, args.media, args.modality, args.prompt, args.max_new_tokens):
        if reply.problem is not None:
            print(f"{reply.media}: cannot use this file: {reply.problem}", file=sys.stderr)
            continue
        answered += 1
        print(f"{reply.media} [{reply.modality}]: {reply.response}")
        if reply.valence_arousal is not None:
            v, a = reply.valence_arousal
            print(f"  valence {v:+.3f}  arousal {a:+.3f}")
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
