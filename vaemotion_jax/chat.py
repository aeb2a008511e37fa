"""`python -m vaemotion_jax.chat --checkpoint runs/stage2 --media clip.mp4 --modality av --prompt "..."`

Prints the model's response and, for a Stage 2 run, the Emotion Supervisor's valence/arousal
for the chosen pathway. Audio-only input may be a plain audio file (wav, flac, mp3) or the audio
track of a video. A file that cannot be used (missing, not media, truncated, too short) gets one
line naming it and the reason; the others are answered, and the exit status is non-zero only
when none could be. `respond()` does the same for a batch in Python.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import Sequence

from vaemotion_jax.evaluation.replies import PATHWAY_INDEX, ask
from vaemotion_jax.inference import LoadedRun, load_run


@dataclass
class Reply:
    media: str
    modality: str
    response: str | None                          # None: the file could not be used
    valence_arousal: tuple[float, float] | None   # None without an Emotion Supervisor
    problem: str | None = None                    # why the file could not be used


def respond(run: LoadedRun, media: Sequence[str], modality: str, prompt: str,
            max_new_tokens: int = 64, batch_size: int = 8) -> list[Reply]:
    """One reply per media file (in order), all with the same prompt and pathway (a | v | av);
    a file that cannot be used gets a Reply with `problem` set and no response."""
    return [Reply(media[i], modality, r.response, r.valence_arousal, r.problem)
            for i, r in enumerate(ask(run.model, run.params, run.spec, media, modality, prompt,
                                      max_new_tokens, batch_size))]


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
