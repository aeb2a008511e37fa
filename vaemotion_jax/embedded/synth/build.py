"""Generating a world folder (clips, manifests, world.json) and the default world in the
cache."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, fields


from vaemotion_jax.embedded.cache import cache_path, publish
from vaemotion_jax.embedded.synth.factors import (WORLD_VERSION, WorldConfig, sample_specs,
                                                  world_description)
from vaemotion_jax.embedded.synth.render import render_clip
from vaemotion_jax.embedded.synth.text import manifests


# ---------------------------------------------------------------- generating a world folder

def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate(out_dir: str, cfg: WorldConfig = WorldConfig(), workers: int = 2) -> dict[str, int]:
    """Writes the world into `out_dir` (world.json last, as the completion marker); returns counts."""
    from vaemotion_jax.data.manifest import read_manifest

    os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
    specs = sample_specs(cfg)
    tasks = [(spec, cfg, out_dir) for spec in specs]
    started = time.time()
    if workers <= 1:
        results = map(render_clip, tasks)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap(render_clip, tasks, chunksize=4)
    try:
        for done, _ in enumerate(results, 1):
            if done % 50 == 0 or done == len(tasks):
                _log(f"synth: {done}/{len(tasks)} clips ({time.time() - started:.1f} s)")
    finally:
        if workers > 1:
            pool.close()
            pool.join()
    counts = {}
    for name, lines in manifests(specs, cfg).items():
        path = os.path.join(out_dir, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(line) + "\n" for line in lines))
        _, problems = read_manifest(path)
        if problems:  # our own output must be valid: fail loudly, naming the first problem
            raise RuntimeError(f"synth wrote an invalid manifest: {problems[0]}")
        counts[name] = len(lines)
    with open(os.path.join(out_dir, "world.json"), "w", encoding="utf-8") as f:
        json.dump(world_description(cfg), f, indent=1)
    return counts


def default_world_dir(cfg: WorldConfig = WorldConfig(), workers: int = 2) -> str:
    """The world's folder in the cache (`<cache>/synth/v<version>-n<clips>-seed<seed>-<config hash>`),
    generated on first use.

    Generation goes to a temporary folder that is renamed into place, so an interrupted or
    concurrent run never leaves a half-written world behind. The parallel generation runs in a
    child `python -m vaemotion_jax.embedded.synth`, so this is safe to call from any script or
    notebook (spawned workers never re-import the caller's `__main__`).
    """
    digest = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
    final = cache_path("synth", f"v{WORLD_VERSION}-n{cfg.num_clips}-seed{cfg.seed}-{digest}")
    if os.path.exists(os.path.join(final, "world.json")):
        return final
    tmp = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _log(f"synth: generating the synthetic world into {final} (first use)")
    cli = {"num_clips", "seed", "mismatch", "heldout", "seconds"}
    if workers > 1 and all(getattr(cfg, f.name) == f.default for f in fields(WorldConfig)
                           if f.name not in cli):
        subprocess.run([sys.executable, "-m", "vaemotion_jax.embedded.synth", "--out", tmp,
                        "--workers", str(workers)] +
                       [x for name in sorted(cli) for x in (f"--{name.replace('_', '-')}",
                                                            str(getattr(cfg, name)))],
                       check=True)
    else:
        generate(tmp, cfg, 1)
    return publish(tmp, final, "world.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.embedded.synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write the world into")
    p.add_argument("--num-clips", type=int, default=WorldConfig.num_clips)
    p.add_argument("--seed", type=int, default=WorldConfig.seed)
    p.add_argument("--mismatch", type=float, default=WorldConfig.mismatch,
                   help="fraction of clips whose sound has its own factors")
    p.add_argument("--heldout", type=float, default=WorldConfig.heldout,
                   help="fraction of clips held out for the benchmark")
    p.add_argument("--seconds", type=float, default=WorldConfig.seconds)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    cfg = WorldConfig(num_clips=args.num_clips, seed=args.seed, mismatch=args.mismatch,
                      heldout=args.heldout, seconds=args.seconds)
    started = time.time()
    counts = generate(args.out, cfg, args.workers)
    print(f"wrote {args.out} in {time.time() - started:.1f} s: "
          + ", ".join(f"{k}.jsonl {v} lines" for k, v in counts.items()))
    return 0

