"""Stage 1 on the embedded default, two comparisons in one process:

1. step time with cached teacher responses against on-the-fly generation (the teacher decodes
   its response for every batch): seconds per step and the ratio; then with the caches of
   frozen work (training/frozen_cache.py: AST features, teacher logits exact or top-k), each
   timed on a second run that reads what a first run over the same batches built, with the
   disk each entry takes; and the effect of the top-k form on the loss (the first step's loss,
   same params, against the exact one; held-out KL after `--steps` steps);
2. the paper's Table 1 dagger: logit alignment (eq. 1) against feature alignment (L2 between
   z_a and z_v), trained the same number of steps, over several seeds, judged by measures
   neither loss optimises: A-only accuracy on the synthetic benchmark's held-out items in the
   paper's protocol (generate mode, AIR-Bench's letter rule) and how often the audio-only
   response names the attributes the video response names; KL / top-1 for reference. Mean and
   spread (sample std over seeds) per measure.

    python benchmarks/bench_stage1.py [--steps 400] [--seeds 0,1,2] [--out runs/bench_stage1]
        [--topk 64] [--timing-only | --table1-only]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time


def stage1_config(workdir: str, **values):
    from vaemotion_jax.configs import stage1 as stage1_config
    from vaemotion_jax.configs.common import override
    return override(stage1_config.get_config(), {"workdir": workdir, **values})


def time_steps(workdir: str, mode: str, steps: int, responses: str = "", **values) -> float:
    """Seconds per step after compilation (the first 3 steps are excluded); `responses`: a
    teacher_cache folder to start from (the same batches need the same responses)."""
    from vaemotion_jax.training.stage1_run import run
    if responses and not os.path.exists(os.path.join(workdir, "teacher_cache")):
        shutil.copytree(responses, os.path.join(workdir, "teacher_cache"))
    run(stage1_config(workdir, steps=steps, teacher_responses=mode, eval_clips=0, log_every=1,
                      checkpoint_every=10_000, **values))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        times = [json.loads(line)["time"] for line in f]
    if len(times) < 5:
        raise RuntimeError(f"{workdir}: too few logged steps to time")
    return (times[-1] - times[3]) / (len(times) - 4)


def time_cached(out: str, name: str, steps: int, **caches) -> tuple[float, dict]:
    """Seconds per step of a run that reads every entry (a first run over the same batches
    builds them), and the mean bytes per entry of each cache kind."""
    values = {"cache.dir": os.path.join(out, f"cache_{name}"), **caches}
    responses = os.path.join(out, "time_cache", "teacher_cache")
    time_steps(os.path.join(out, f"build_{name}"), "cache", steps, responses, **values)
    seconds = time_steps(os.path.join(out, f"time_{name}"), "cache", steps, responses, **values)
    sizes: dict = {}
    for d, _, files in os.walk(values["cache.dir"]):
        for f in files:
            if f.endswith(".safetensors"):
                kind = os.path.basename(os.path.dirname(d)).split("-")[0]
                sizes.setdefault(kind, []).append(os.path.getsize(os.path.join(d, f)))
    return seconds, {k: sum(v) / len(v) for k, v in sizes.items()}


def alternating_steps(out: str, batches: int, rounds: int, topk: int) -> dict:
    """The jitted step alone, on the same batches, each setting in turn within every round (so a
    busy machine's drift hits all settings alike): median seconds per step; and the host time
    of reading each cache per batch. Reads the entries the `time_cache` settings built."""
    import functools
    import statistics
    import jax
    from vaemotion_jax.presets import check
    from vaemotion_jax.training import frozen_cache, loop, stage1
    from vaemotion_jax.training import stage1_run as s1
    from vaemotion_jax.training.checkpoint import fingerprint
    from vaemotion_jax.training.state import create_state, make_optimizer, split_params
    from vaemotion_jax.data.pipeline import make_iterator
    c = check(stage1_config(os.path.join(out, "alternating"), **{
        "cache.dir": os.path.join(out, "cache_alternating"), "cache.audio_features": True,
        "cache.teacher_logits": True}))
    mesh, workdir = loop.start_run(c)
    assets = s1.resolve_assets(c)
    with jax.set_mesh(mesh):
        model, qwen_model, params, _ = s1.build(c, assets, mesh)
        qwen = qwen_model.config
        backbone = fingerprint(assets.backbone_path)
        responses = stage1.ResponseCache(os.path.join(workdir, "teacher_cache"), backbone,
                                         c.max_response_tokens)
        records = s1.split_records(c, assets, "stage1.jsonl")[0][:batches * c.data.batch_size]
        examples = s1.example_fn(c, assets, qwen)
        s1.fill_teacher_cache(responses, records, 1, c, examples, qwen, qwen_model,
                              params["backbone"])
        plain = [stage1.attach_responses(b, s1.responses_for(b, responses, c), qwen,
                                         c.data.seq_buckets, c.data.target_buckets,
                                         qwen.pad_token_id)
                 for b in make_iterator(records, examples, s1.pipeline(c, qwen, c.data.batch_size,
                                                                        False))]
        ast = frozen_cache.audio_feature_transform(c, workdir, model, params,
                                                   fingerprint(assets.audio_encoder_path), mesh)
        exact = s1.teacher_logit_transform(c, workdir, model, params, backbone, mesh)
        with c.unlocked():
            c.cache.teacher_topk = topk
        top = s1.teacher_logit_transform(c, workdir, model, params, backbone, mesh)
        transforms = {"none": [], "AST features": [ast], "teacher logits (exact)": [exact],
                      "both (exact)": [ast, exact], f"both (top {topk})": [ast, top]}
        host, inputs = {}, {}
        for name, ts in transforms.items():
            for t in ts:          # the first pass builds the entries, the timed one reads them
                [t[1](b) for b in plain]
            started = time.process_time()
            made = []
            for b in plain:
                for t in ts:
                    b = t[1](b)
                made.append(loop.global_batch(b, mesh))
            host[name] = (time.process_time() - started) / len(plain)
            inputs[name] = made
        trainable, frozen = split_params(params, tuple(c.trainable))
        tx = make_optimizer(c.optim.lr, c.optim.warmup_steps, c.steps, 0.0, 1.0)
        state = create_state(trainable, tx, jax.random.key_data(jax.random.key(0)))
        step = jax.jit(functools.partial(stage1.train_step, model=model, tx=tx, tau=c.tau,
                                         align=c.align))
        seconds: dict = {name: [] for name in inputs}
        for name, made in inputs.items():   # compile
            jax.block_until_ready(step(state, frozen, made[0]))
        for _ in range(rounds):
            for name, made in inputs.items():
                for b in made:
                    started = time.perf_counter()
                    jax.block_until_ready(step(state, frozen, b))
                    seconds[name].append(time.perf_counter() - started)
    return {"step_seconds": {k: statistics.median(v) for k, v in seconds.items()},
            "host_cpu_seconds_per_batch": host}


def first_metrics(workdir: str) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return json.loads(f.readline())


def timings(out: str, steps: int, topk: int) -> dict:
    """Step times (s) of every setting, entry sizes, and the top-k form's effect on the loss."""
    cached = time_steps(os.path.join(out, "time_cache"), "cache", steps)
    fly = time_steps(os.path.join(out, "time_fly"), "on_the_fly", steps)
    settings = {"AST features": {"cache.audio_features": True},
                "teacher logits (exact)": {"cache.teacher_logits": True},
                "both (exact)": {"cache.audio_features": True, "cache.teacher_logits": True},
                f"both (top {topk})": {"cache.audio_features": True, "cache.teacher_logits": True,
                                       "cache.teacher_topk": topk}}
    rows, sizes = {}, {}
    for i, (name, values) in enumerate(settings.items()):
        rows[name], entry = time_cached(out, f"s{i}", steps, **values)
        sizes.update({f"{k} ({name})": v for k, v in entry.items()})
    exact = first_metrics(os.path.join(out, "time_s2"))
    top = first_metrics(os.path.join(out, "time_s3"))
    return {"seconds_per_step": {"cached responses": cached, "on the fly": fly, **rows},
            "entry_bytes": sizes,
            "first_step": {"exact": {k: exact[k] for k in ("loss", "kl", "top1")},
                           f"top {topk}": {k: top[k] for k in ("loss", "kl", "top1")}}}


def heldout_topk(out: str, steps: int, topk: int) -> dict:
    """Held-out KL / top-1 / attributes (measured with the exact teacher) after training with
    the exact and the top-k teacher."""
    from vaemotion_jax.training.stage1_run import run
    result, responses = {}, os.path.join(out, "time_cache", "teacher_cache")
    for name, k in (("exact", 0), (f"top {topk}", topk)):
        w = os.path.join(out, f"train_{k}")
        shutil.copytree(responses, os.path.join(w, "teacher_cache"))
        responses = os.path.join(w, "teacher_cache")
        result[name] = run(stage1_config(w, steps=steps, **{
            "cache.dir": os.path.join(out, "cache_train"), "cache.teacher_logits": True,
            "cache.teacher_topk": k}))["end"]
    return result


def print_timings(t: dict, topk: int) -> None:
    base = t["seconds_per_step"]["cached responses"]
    print("\nStage 1 step time (same machine, same process)")
    for name, s_ in t["seconds_per_step"].items():
        print(f"  {name:<28} {s_:8.3f} s/step   ({base / s_:.2f}x the step with cached responses)")
    print("  bytes per cache entry: " + ", ".join(f"{k} {v:,.0f}" for k, v in
                                                   t["entry_bytes"].items()))
    f = t["first_step"]
    print(f"  first step, same params: loss exact {f['exact']['loss']:.5f} vs top {topk} "
          f"{f[f'top {topk}']['loss']:.5f}; kl {f['exact']['kl']:.5f} vs "
          f"{f[f'top {topk}']['kl']:.5f}")


def benchmark_accuracy(stage1_dir: str) -> dict:
    """A-only accuracy of a Stage 1 run on the synthetic world's held-out benchmark."""
    from vaemotion_jax.evaluation.prompts import load_benchmark
    from vaemotion_jax.evaluation.benchmark import run_items
    from vaemotion_jax.evaluation.tables import artemo_row_from_predictions
    from vaemotion_jax.inference import load_run
    run = load_run(stage1_dir)
    world = json.load(open(os.path.join(stage1_dir, "run.json")))["world_dir"]
    items = load_benchmark(os.path.join(world, "benchmark.jsonl"), "artemo", split="heldout",
                           modality="a")
    preds = run_items(run.model, run.params, items, run.spec, "artemo", mode="generate",
                      max_new_tokens=run.config.eval_max_new_tokens)
    return artemo_row_from_predictions(preds)


def save(out: str, name: str, result: dict) -> None:
    """Prints the load average (timings mean little on a busy machine) and writes out/name."""
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    with open(os.path.join(out, name), "w") as f:
        json.dump(result, f, indent=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--out", default="runs/bench_stage1")
    p.add_argument("--topk", type=int, default=64)
    p.add_argument("--alternating", action="store_true",
                   help="only the jitted step per cache setting, alternating on the same batches")
    p.add_argument("--timing-only", action="store_true",
                   help="step times, cache sizes and the top-k comparison only (no Table 1)")
    p.add_argument("--table1-only", action="store_true", help="only Table 1 dagger (no timings)")
    args = p.parse_args()
    import numpy as np
    from vaemotion_jax.training import loop
    from vaemotion_jax.training.stage1_run import run
    loop.setup_logging()
    out = os.path.abspath(args.out)
    seeds = [int(x) for x in args.seeds.split(",")]

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.alternating:
        a = alternating_steps(out, 4, 5, args.topk)
        print("\nStage 1 jitted step per cache setting (median of 5 alternating rounds x 4 "
              "batches; host: CPU s per batch to read the caches)")
        for name, sec in a["step_seconds"].items():
            print(f"  {name:<24} {sec:7.3f} s/step ({a['step_seconds']['none'] / sec:.2f}x)  "
                  f"host {a['host_cpu_seconds_per_batch'][name]:.4f} s")
        save(out, "bench_stage1_alternating.json", a)
        return
    t = {}
    if not args.table1_only:
        t = timings(out, args.timing_steps, args.topk)
        print_timings(t, args.topk)
        t["heldout_after_training"] = heldout_topk(out, args.steps, args.topk)
        for name, r in t["heldout_after_training"].items():
            print(f"  after {args.steps} steps with the {name} teacher: held-out KL {r['kl']:.4f}, "
                  f"top-1 {r['top1']:.3f}, attributes {r.get('attribute_agreement', float('nan')):.3f}")
        save(out, "bench_stage1_timing.json", t)
    if args.timing_only:
        return

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
        json.dump({"timing": t, "align": reports,
                   "table": table, "seeds": seeds, "steps": args.steps}, f, indent=2, default=str)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
