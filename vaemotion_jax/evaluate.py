"""`python -m vaemotion_jax.evaluate --checkpoint runs/stage2 --benchmark artemo|airbench|emer ...`

Scores a trained run on a multiple-choice benchmark manifest: greedy generation + letter
extraction (AIR-Bench's rule by default) or option log-likelihood scoring; prints the paper's
Table 2 (ArtEmoBenchmark) or Table 1 grouping (AIR-Bench) and writes every prediction to JSON.
For the embedded default the manifest defaults to the synthetic world's held-out benchmark.
`--benchmark emer` asks each clip of an EMER-style label file an open question and scores the
emotion words of the reply against the clip's reference words (evaluation/emer.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from vaemotion_jax.data.manifest import MODALITIES
from vaemotion_jax.evaluation import emer
from vaemotion_jax.evaluation.prompts import BENCHMARKS, load_benchmark
from vaemotion_jax.evaluation.report import finish
from vaemotion_jax.evaluation.scoring import RULES

log = logging.getLogger("vaemotion_jax.evaluate")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a training workdir (runs/stage1, runs/stage2)")
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS + ("emer",))
    p.add_argument("--manifest", help="benchmark manifest (.jsonl); artemo default: the run's "
                   "synthetic world benchmark.jsonl; emer: a label file (.jsonl, .json, .csv)")
    p.add_argument("--split", help="only items of this split (artemo default with the synthetic "
                   "world: heldout)")
    p.add_argument("--modality", choices=MODALITIES, help="only items of this modality (emer: "
                   "the pathway every clip is asked through, default av)")
    p.add_argument("--prompt", help=f"emer: the open question (default {emer.EMER_PROMPT!r})")
    p.add_argument("--limit", type=int, help="only the first N items (a quick check)")
    p.add_argument("--mode", default="generate", choices=("generate", "loglik", "cloze"),
                   help="greedy generation + letter extraction; option-letter log-likelihood; or "
                   "cloze: each option's text scored as the reply to the question alone")
    p.add_argument("--rule", default="airbench", choices=RULES, help="letter extraction rule")
    p.add_argument("--pad-absent-options", action="store_true",
                   help="AIR-Bench: print absent choices as 'C. None' like the official script")
    p.add_argument("--max-new-tokens", type=int, help="default 8 (emer: 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--model-name", default="Ours", help="row/column name in the table")
    p.add_argument("--out", help="results file (default CHECKPOINT/eval_BENCHMARK.json)")
    return p.parse_args(argv)


def default_manifest(checkpoint: str) -> str:
    """The benchmark of the synthetic world the run was trained on."""
    with open(os.path.join(checkpoint, "run.json")) as f:
        world = json.load(f).get("world_dir")
    if not world:
        raise SystemExit(f"{checkpoint} was not trained on the synthetic world: give --manifest")
    return os.path.join(world, "benchmark.jsonl")


def main(argv=None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.benchmark == "emer":
        return evaluate_emer(args)
    if args.prompt is not None:
        raise SystemExit("--prompt is for --benchmark emer; multiple-choice items use their benchmark's prompt")
    args.max_new_tokens = args.max_new_tokens or 8
    from vaemotion_jax.evaluation.benchmark import run_items
    from vaemotion_jax.inference import load_run

    manifest = args.manifest
    split = args.split
    if manifest is None:
        if args.benchmark != "artemo":
            raise SystemExit("--manifest is required for airbench (import Foundation_meta.json with "
                             "python -m vaemotion_jax.data.importers airbench)")
        manifest, split = default_manifest(args.checkpoint), split or "heldout"
    records = load_benchmark(manifest, args.benchmark, split=split, modality=args.modality)
    if args.limit:
        records = records[:args.limit]
    run = load_run(args.checkpoint)
    preds = run_items(run.model, run.params, records, run.spec, args.benchmark, mode=args.mode,
                      batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                      rule=args.rule, pad_absent=args.pad_absent_options)
    out = args.out or os.path.join(args.checkpoint, f"eval_{args.benchmark}.json")
    finish(out, args.benchmark, preds, args.model_name,
           settings={k: v for k, v in vars(args).items() if k != "out"} | {"manifest": manifest})
    return 0


def evaluate_emer(args: argparse.Namespace) -> int:
    """`--benchmark emer`: ask every clip of the label file the open question through one pathway,
    score the replies' emotion words (`emer.score`), print the table, write the results JSON."""
    from vaemotion_jax import inference
    from vaemotion_jax.evaluation import replies
    if args.manifest is None:
        raise SystemExit("--manifest (an EMER-style label file: .jsonl, .json or .csv) is required for emer")
    if args.mode != "generate" or args.split:
        raise SystemExit("emer scores generated replies: --mode generate only, and no --split")
    try:
        items = emer.load_emer(args.manifest)
    except emer.EmerFileError as e:
        raise SystemExit(f"error: {e}") from None
    items = items[:args.limit] if args.limit else items
    modality, prompt = args.modality or "av", args.prompt or emer.EMER_PROMPT
    max_new_tokens = args.max_new_tokens or 64
    run = inference.load_run(args.checkpoint)
    answers = replies.ask(run.model, run.params, run.spec, [it["media"] for it in items], modality,
                          prompt, max_new_tokens=max_new_tokens, batch_size=args.batch_size)
    for item, answer in zip(items, answers):
        if answer.problem is not None:  # named and counted as an empty prediction, never dropped
            log.warning("%s (%s) could not be asked (%s): scored as an empty prediction",
                        item["name"], item["media"], answer.problem)
    preds = emer.predictions(items, [a.response for a in answers], [a.problem for a in answers])
    summary = emer.summarize(preds, args.model_name)
    out = args.out or os.path.join(args.checkpoint, "eval_emer.json")
    settings = {k: v for k, v in vars(args).items() if k != "out"} | {
        "modality": modality, "prompt": prompt, "max_new_tokens": max_new_tokens}
    print(emer.format_summary(summary))
    emer.write_results(out, summary, preds, settings)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
