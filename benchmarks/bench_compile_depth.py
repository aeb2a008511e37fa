"""Compile time of the 7B Stage 1 train step against depth, scanned layers vs unrolled.

The model keeps the 7B widths; the LLM gets `depth` layers and the vision tower 8/7 of that
(32 at full depth). Each row compiles the real step ahead of time on simulated CPU devices (no
weights) and prints lower and compile seconds, with the ratio to the shallowest scanned row.

    python benchmarks/bench_compile_depth.py [--devices 8] [--depths 7,14,28] [--unrolled_up_to 14]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys


def depth_preset(depth: int):
    """A Qwen2.5-VL-7B preset with `depth` LLM layers and 8/7 x depth vision blocks."""
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    vision_depth = depth * 8 // 7
    def make(**runtime):
        c = qwen_config.qwen2_5_vl_7b(**runtime)
        full = tuple(i for i in c.vision.fullatt_block_indexes if i < vision_depth)
        return c.replace(text=dataclasses.replace(c.text, num_layers=depth),
                         vision=dataclasses.replace(c.vision, depth=vision_depth,
                                                    fullatt_block_indexes=full or (vision_depth - 1,)))
    return make


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--depths", default="7,14,28")
    p.add_argument("--unrolled_up_to", type=int, default=14, help="deepest unrolled row")
    p.add_argument("--config", default="stage1_7b:gpu8x24")
    args = p.parse_args()
    from vaemotion_jax.plan import simulate_devices
    simulate_devices(args.devices)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import importlib
    from vaemotion_jax.presets import check
    from vaemotion_jax import planning as plan, sharding
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config

    name, _, hw = args.config.partition(":")
    mesh = sharding.make_mesh((1, -1, 1))
    base = None
    print(f"{'LLM layers':>10} {'vision':>6} {'layers':>9} {'lower s':>8} {'compile s':>10} "
          f"{'vs first':>8}  total GiB")
    for scan in (True, False):
        for depth in (int(d) for d in args.depths.split(",")):
            if not scan and depth > args.unrolled_up_to:
                continue
            qwen_config.PRESETS[f"depth{depth}"] = depth_preset(depth)
            c = check(importlib.import_module(f"vaemotion_jax.configs.{name}").get_config(hw or None))
            c.qwen_preset, c.scan_layers = f"depth{depth}", scan
            c.data.batch_size = args.devices
            r = plan.make_plan(c, mesh)
            base = base or r.compile_seconds
            print(f"{depth:>10} {depth * 8 // 7:>6} {'scanned' if scan else 'unrolled':>9} "
                  f"{r.lower_seconds:>8.1f} {r.compile_seconds:>10.1f} "
                  f"{r.compile_seconds / base:>7.2f}x  {r.memory['total'] / 2 ** 30:9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
