"""`python -m vaemotion_jax.evaluate --checkpoint runs/stage2 --benchmark artemo|airbench ...`

Scores a trained run on a multiple-choice benchmark manifest: greedy generation + letter
extraction (AIR-Bench's rule by default) or option log-likelihood scoring; prints the paper's
Table 2 (ArtEmoBenchmark) or Table 1 grouping (AIR-Bench) and writes every prediction to JSON.
For the embedded default the manifest defaults to the synthetic world's held-out benchmark.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from vaemotion_jax.data.manifest import MODALITIES
from vaemotion_jax.evaluation.prompts import BENCHMARKS, load_benchmark
from vaemotion_jax.evaluation.report import finish
from vaemotion_jax.evaluation.scoring import RULES


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a training workdir (runs/stage1, runs/stage2)")
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--manifest", help="benchmark manifest (.jsonl); artemo default: the run's "
                   "synthetic world benchmark.jsonl")
    p.add_argument("--split", help="only items of this split (artemo default with the synthetic "
                   "world: heldout)")
    p.add_argument("--modality", choices=MODALITIES, help="only items of this modality")
    p.add_argument("--limit", type=int, help="only the first N items (a quick check)")
    p.add_argument("--mode", default="generate", choices=("generate", "loglik", "cloze"),
                   help="greedy generation + letter extraction; option-letter log-likelihood; or "
                   "cloze: each option's text scored as the reply to the question alone")
    p.add_argument("--rule", default="airbench", choices=RULES, help="letter extraction rule")
    p.add_argument("--pad-absent-options", action="store_true",
                   help="AIR-Bench: print absent choices as 'C. None' like the official script")
    p.add_argument("--max-new-tokens", type=int, default=8)
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
    from vaemotion_jax.evaluation.runner import run_items
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


if __name__ == "__main__":
    sys.exit(main())
