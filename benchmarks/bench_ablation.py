"""The paper's Table 3 on the embedded default: Stage 2 trained with each component set, the
same steps and data, over several seeds, evaluated on the synthetic benchmark's held-out items
in the paper's protocol (generate mode, AIR-Bench's letter rule, failures counted as wrong),
and by the held-out emotion-word accuracy of free replies per pathway (30 clips; the measure
on which the embedded tiny backbone shows Stage 2 working: its letter binding is weak, see
embedded/backbone.py).

    python benchmarks/bench_ablation.py [--steps 300] [--seeds 0,1,2] [--out runs/bench_ablation]

Rows: adapter only (the Stage 1 model), + LoRA, + LoRA + Enhancer, + LoRA + Supervisor, full;
each printed as mean and spread (sample standard deviation over the seeds) of A, V, AV and All,
with the joint pathway's valence/arousal CCC where the row has a Supervisor. As in the paper,
the adapter-only row prints "-" for AV and All. All rows start from the same Stage 1 adapter
(runs/stage1 by default; trained first if missing); the seed changes Stage 2's initialisation
and data order. Every run's report is kept under --out.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

GROUPS = ("A", "V", "AV", "All")
PATHWAYS = ("a", "v", "av")


def summarize(values: list[float | None]) -> tuple[float, float] | None:
    xs = [x for x in values if x is not None]
    if not xs:
        return None
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--stage1-dir", default="runs/stage1")
    p.add_argument("--out", default="runs/bench_ablation")
    p.add_argument("--chat-clips", type=int, default=30, help="held-out clips for emotion words")
    args = p.parse_args()
    from vaemotion_jax.configs import stage2 as stage2_config
    from vaemotion_jax.configs.common import override
    from vaemotion_jax.evaluation.tables import NO_JOINT_PATHWAY
    from vaemotion_jax.training import loop
    from vaemotion_jax.training.stage2 import ABLATIONS
    from vaemotion_jax.training.stage2_run import run
    loop.setup_logging()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict = {}
    for ablation in ABLATIONS:
        for seed in seeds:
            workdir = os.path.join(args.out, f"{ablation}-seed{seed}")
            done = os.path.join(workdir, "summary.json")
            if os.path.exists(done):          # a rerun continues where it stopped
                report = json.load(open(done))
            else:
                report = run(override(stage2_config.get_config(), {
                    "ablation": ablation, "steps": args.steps, "stage1_dir": args.stage1_dir,
                    "seed": seed, "workdir": workdir, "eval_stage1_baseline": False,
                    "eval_chat_clips": args.chat_clips}))
            row = report["benchmark"][f"Stage 2 ({ablation})"]
            ccc = report.get("emotion", {})
            words = report.get("emotion_words", {}).get(f"Stage 2 ({ablation})", {})
            results.setdefault(ablation, []).append(
                {"seed": seed, "averages": row["averages"],
                 "words": {p: 100 * words[p]["accuracy"] for p in PATHWAYS if p in words},
                 "ccc_av": (ccc.get("ccc_av_valence"), ccc.get("ccc_av_arousal")) if ccc else None})
    lines = [f"Table 3 on the synthetic world: {args.steps} steps, seeds {seeds}, held-out items, "
             "generate mode; mean +- spread (sample std over seeds)",
             f"  {'row':<16}" + "".join(f"{g:>16}" for g in GROUPS)
             + "".join(f"{'words ' + p:>16}" for p in PATHWAYS) + f"{'joint CCC (v / a)':>26}"]
    for ablation, runs in results.items():
        cells = []
        for g in GROUPS:
            stat = summarize([r["averages"].get(g) for r in runs])
            hidden = ablation in NO_JOINT_PATHWAY and g in ("AV", "All")
            cells.append("-" if stat is None or hidden else f"{stat[0]:.1f} +- {stat[1]:.1f}")
        for p in PATHWAYS:
            stat = summarize([r.get("words", {}).get(p) for r in runs])
            cells.append("-" if stat is None else f"{stat[0]:.1f} +- {stat[1]:.1f}")
        cc = [r["ccc_av"] for r in runs if r["ccc_av"]]
        ccc = (f"{np.mean([c[0] for c in cc]):.3f} / {np.mean([c[1] for c in cc]):.3f}" if cc else "-")
        lines.append(f"  {ablation:<16}" + "".join(f"{c:>16}" for c in cells) + f"{ccc:>26}")
    print("\n".join(lines))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_ablation.json"), "w") as f:
        json.dump({"steps": args.steps, "seeds": seeds, "runs": results, "table": lines}, f, indent=2)


if __name__ == "__main__":
    main()
