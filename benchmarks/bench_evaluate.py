"""`evaluate` throughput: questions per second of a trained run on its benchmark, and how many
XLA compilations the whole run of the items takes.

The items are run twice in one process: the first pass includes compilation, the second is
warm. Every compilation is counted (JAX's backend-compile event) next to the number of batches,
so a recompilation per batch shows as compilations growing with the batches.

    python benchmarks/bench_evaluate.py --checkpoint runs/stage1 [--mode generate] [--limit 256]
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a training workdir (runs/stage1, ...)")
    p.add_argument("--benchmark", default="artemo")
    p.add_argument("--manifest", help="default: the run's synthetic-world benchmark.jsonl")
    p.add_argument("--split", default="heldout")
    p.add_argument("--mode", default="generate", choices=("generate", "loglik", "cloze"))
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=8)
    args = p.parse_args()
    import jax
    from vaemotion_jax.evaluate import default_manifest
    from vaemotion_jax.evaluation.prompts import load_benchmark
    from vaemotion_jax.evaluation.benchmark import run_items
    from vaemotion_jax.inference import load_run

    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compiles.append(secs)
        if event == "/jax/core/compile/backend_compile_duration" else None)
    run = load_run(args.checkpoint)
    records = load_benchmark(args.manifest or default_manifest(args.checkpoint), args.benchmark,
                             split=args.split)[:args.limit]
    batches = sum(-(-sum((r.modality or "a") == m for r in records) // args.batch_size)
                  for m in {r.modality or "a" for r in records})
    print(f"{len(records)} items in {batches} batches of {args.batch_size}, mode {args.mode}")
    for name in ("cold (with compilation)", "warm"):
        before, t0 = len(compiles), time.perf_counter()
        run_items(run.model, run.params, records, run.spec, args.benchmark, mode=args.mode,
                  batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
        dt = time.perf_counter() - t0
        print(f"  {name:<24} {len(records) / dt:7.1f} questions/s  ({dt:.1f} s, "
              f"{len(compiles) - before} compilations, "
              f"{sum(compiles[before:]):.1f} s compiling)")


if __name__ == "__main__":
    main()
