"""The paper's Table 3 on the embedded default: Stage 2 trained with each component set, the
same steps and data, evaluated on the synthetic benchmark's held-out items, side by side.

    python benchmarks/bench_ablation.py [--steps 300] [--out runs/bench_ablation]

Rows: adapter only (the Stage 1 model), + LoRA, + LoRA + Enhancer, + LoRA + Supervisor, full.
As in the paper, the adapter-only row prints "-" for AV and All (no joint pathway there); the
JSON keeps every measured number.
All rows start from the same Stage 1 adapter (runs/stage1 by default; trained first if missing).
"""
from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--stage1-dir", default="runs/stage1")
    p.add_argument("--out", default="runs/bench_ablation")
    args = p.parse_args()
    import configs.stage2
    from configs.common import override
    from vaemotion_jax.evaluation.tables import format_ablation_table
    from vaemotion_jax.training import runner
    from vaemotion_jax.training.stage2_run import run
    runner.setup_logging()
    rows, emotion = {}, {}
    for ablation in configs.stage2.ABLATIONS:
        report = run(override(configs.stage2.get_config(), {
            "ablation": ablation, "steps": args.steps, "stage1_dir": args.stage1_dir,
            "workdir": os.path.join(args.out, ablation)}))
        rows[ablation] = report["benchmark"][f"Stage 2 ({ablation})"]
        if "emotion" in report:
            emotion[ablation] = report["emotion"]
    mode = configs.stage2.get_config().eval_mode
    print(f"\nTable 3 on the synthetic world (held-out benchmark, {mode} scoring)")
    print(format_ablation_table(rows))
    if emotion:
        print("\nValence/arousal CCC on held-out clips (rows with the Emotion Supervisor)")
        for name, e in emotion.items():
            print(f"  {name:<16}" + "  ".join(f"{p}: v {e[f'ccc_{p}_valence']:+.3f} a {e[f'ccc_{p}_arousal']:+.3f}"
                                           for p in ("a", "v", "av")))
    with open(os.path.join(args.out, "bench_ablation.json"), "w") as f:
        json.dump({"rows": rows, "emotion": emotion, "steps": args.steps}, f, indent=2)


if __name__ == "__main__":
    main()
