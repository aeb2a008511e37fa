"""Stage 1 on the embedded default, two comparisons in one process:

1. step time with cached teacher responses against on-the-fly generation (the teacher decodes
   its response for every batch): seconds per step and the ratio;
2. the paper's Table 1 dagger: logit alignment (eq. 1) against feature alignment (L2 between
   z_a and z_v), trained the same number of steps, over several seeds, judged by measures
   neither loss optimises: A-only accuracy on the synthetic benchmark's held-out items in the
   paper's protocol (generate mode, AIR-Bench's letter rule) and how often the audio-only
   response names the attributes the video response names; KL / top-1 for reference. Mean and
   spread (sample std over seeds) per measure.

    python benchmarks/bench_stage1.py [--steps 400] [--seeds 0,1,2] [--out runs/bench_stage1]
"""
from __future__ import annotations

import argparse
import json
import os
import time


def stage1_config(workdir: str, **values):
    import configs.stage1
    from configs.common import override
    return override(configs.stage1.get_config(), {"workdir": workdir, **values})


def time_steps(workdir: str, mode: str, steps: int) -> float:
    """Seconds per step after compilation (the first 3 steps are excluded)."""
    from vaemotion_jax.training.stage1_run import run
    run(stage1_config(workdir, steps=steps, teacher_responses=mode, eval_clips=0, log_every=1,
                      checkpoint_every=10_000))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        times = [json.loads(line)["time"] for line in f]
    if len(times) < 5:
        raise RuntimeError(f"{workdir}: too few logged steps to time")
    return (times[-1] - times[3]) / (len(times) - 4)


def benchmark_accuracy(stage1_dir: str) -> dict:
    """A-only accuracy of a Stage 1 run on the synthetic world's held-out benchmark."""
    from vaemotion_jax.evaluation.prompts import load_benchmark
    from vaemotion_jax.evaluation.runner import run_items
    from vaemotion_jax.evaluation.tables import artemo_row_from_predictions
    from vaemotion_jax.inference import load_run
    run = load_run(stage1_dir)
    world = json.load(open(os.path.join(stage1_dir, "run.json")))["world_dir"]
    items = load_benchmark(os.path.join(world, "benchmark.jsonl"), "artemo", split="heldout",
                           modality="a")
    preds = run_items(run.model, run.params, items, run.spec, "artemo", mode="generate",
                      max_new_tokens=run.config.eval_max_new_tokens)
    return artemo_row_from_predictions(preds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--out", default="runs/bench_stage1")
    args = p.parse_args()
    import numpy as np
    from vaemotion_jax.training import runner
    from vaemotion_jax.training.stage1_run import run
    runner.setup_logging()
    out = os.path.abspath(args.out)
    seeds = [int(x) for x in args.seeds.split(",")]

    cached = time_steps(os.path.join(out, "time_cache"), "cache", args.timing_steps)
    fly = time_steps(os.path.join(out, "time_fly"), "on_the_fly", args.timing_steps)

    reports: dict = {"logits": [], "features": []}
    for align in reports:
        for seed in seeds:
            w = os.path.join(out, f"align_{align}-seed{seed}")
            t0 = time.time()
            summary = run(stage1_config(w, steps=args.steps, align=align, seed=seed))
            reports[align].append({"seed": seed, "heldout": summary["end"],
                                   "benchmark_a": benchmark_accuracy(w), "seconds": time.time() - t0})

    def stat(align, get):
        xs = [get(r) for r in reports[align]]
        xs = [x for x in xs if x is not None]
        return (float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0) if xs else None

    measures = {
        "A-only accuracy (generate), %": lambda r: r["benchmark_a"]["averages"]["A"],
        "attributes named like the video": lambda r: r["heldout"]["attribute_agreement"],
        "KL(teacher || student)": lambda r: r["heldout"]["kl"],
        "top-1 agreement": lambda r: r["heldout"]["top1"],
    }
    print("\nStage 1 step time (same machine, same process)")
    print(f"  cached teacher responses   {cached:8.3f} s/step")
    print(f"  on-the-fly generation      {fly:8.3f} s/step   ({fly / cached:.2f}x the cached step)")
    print(f"\nTable 1 dagger on the synthetic world: logit vs feature alignment, {args.steps} steps, "
          f"seeds {seeds}, held-out clips; mean +- spread")
    print(f"  {'':34}{'logits':>18}{'features':>18}{'difference':>14}")
    table = {}
    for name, get in measures.items():
        lo, fe = stat("logits", get), stat("features", get)
        cell = lambda s_: "-" if s_ is None else f"{s_[0]:.4g} +- {s_[1]:.2g}"
        diff = "-" if lo is None or fe is None else f"{lo[0] - fe[0]:+.4g}"
        table[name] = {"logits": lo, "features": fe}
        print(f"  {name:<34}{cell(lo):>18}{cell(fe):>18}{diff:>14}")
    with open(os.path.join(out, "bench_stage1.json"), "w") as f:
        json.dump({"seconds_per_step": {"cache": cached, "on_the_fly": fly}, "align": reports,
                   "table": table, "seeds": seeds, "steps": args.steps}, f, indent=2, default=str)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
