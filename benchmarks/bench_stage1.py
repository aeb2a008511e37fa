"""Stage 1 on the embedded default, two comparisons in one process:

1. step time with cached teacher responses against on-the-fly generation (the teacher decodes
   its response for every batch): seconds per step and the ratio;
2. logit alignment (eq. 1) against the paper's feature-alignment ablation (L2 between z_a and
   z_v), trained the same number of steps: held-out KL / top-1 / attribute agreement, and
   A-only accuracy on the synthetic benchmark's held-out items (cloze scoring).

    python benchmarks/bench_stage1.py [--steps 300] [--timing-steps 20] [--out runs/bench_stage1]
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
    preds = run_items(run.model, run.params, items, run.spec, "artemo", mode="cloze")
    return artemo_row_from_predictions(preds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--out", default="runs/bench_stage1")
    args = p.parse_args()
    from vaemotion_jax.training import runner
    from vaemotion_jax.training.stage1_run import run
    runner.setup_logging()
    out = os.path.abspath(args.out)

    cached = time_steps(os.path.join(out, "time_cache"), "cache", args.timing_steps)
    fly = time_steps(os.path.join(out, "time_fly"), "on_the_fly", args.timing_steps)

    reports = {}
    for align in ("logits", "features"):
        w = os.path.join(out, f"align_{align}")
        t0 = time.time()
        summary = run(stage1_config(w, steps=args.steps, align=align))
        reports[align] = {"heldout": summary["end"], "benchmark_a": benchmark_accuracy(w),
                          "seconds": time.time() - t0}

    print("\nStage 1 step time (same machine, same process)")
    print(f"  cached teacher responses   {cached:8.3f} s/step")
    print(f"  on-the-fly generation      {fly:8.3f} s/step   ({fly / cached:.2f}x the cached step)")
    print("\nLogit alignment (eq. 1) vs feature alignment (L2 on z_a, z_v), "
          f"{args.steps} steps each, held-out clips")
    print(f"  {'':34}{'logits':>10}{'features':>10}")
    for key, name in (("kl", "KL(teacher || student)"), ("top1", "top-1 agreement"),
                      ("attribute_agreement", "attributes named like the video")):
        print(f"  {name:<34}{reports['logits']['heldout'][key]:10.4f}"
              f"{reports['features']['heldout'][key]:10.4f}")
    for k in ("OC", "OE", "SC", "SE"):
        row = lambda a: reports[a]["benchmark_a"]["categories"]["a"].get(k)
        print(f"  A-only {k:<27}{_pct(row('logits')):>10}{_pct(row('features')):>10}")
    print(f"  {'A-only average':<34}{_pct(reports['logits']['benchmark_a']['averages']['A']):>10}"
          f"{_pct(reports['features']['benchmark_a']['averages']['A']):>10}")
    with open(os.path.join(out, "bench_stage1.json"), "w") as f:
        json.dump({"seconds_per_step": {"cache": cached, "on_the_fly": fly}, "align": reports}, f,
                  indent=2, default=str)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
