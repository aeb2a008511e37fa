"""`make_plan`: a stage's program compiled on a mesh, and what XLA's analysis says it needs."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import jax

from vaemotion_jax.planning.programs import PROGRAMS, Options
from vaemotion_jax.planning.xla_analysis import (CPU_PROXY_OPTIONS, collective_traffic, cost_of,
                                                 memory_of, proxy_config)


@dataclass
class Plan:
    """What XLA says one compiled step needs, per device."""
    stage: str
    model: str
    platform: str
    devices: int
    mesh: dict
    clips: int
    seq_len: int
    seq_note: str
    memory: dict                  # bytes per device: argument, output, alias, temp, code, total
    flops: float                  # per device per step (every layer counted)
    compiled_flops: float         # XLA's count on the compiled step (a loop body counted once)
    lower_seconds: float
    compile_seconds: float
    shapes: dict
    levers: dict                  # dtype, param_dtype, remat, scan_layers, batch
    cpu_proxy: bool = False       # planned on XLA:CPU with bf16 as f16 (CPU_PROXY_OPTIONS)
    collectives: dict = dataclasses.field(default_factory=dict)  # bytes sent per device, by kind

    @property
    def tokens(self) -> int:
        return self.clips * self.seq_len

    def compute_seconds(self, peak_tflops: float, mfu: float) -> float:
        return self.flops / (peak_tflops * 1e12 * mfu)

    def comm_seconds(self, link_gbs: float | None) -> float:
        return sum(self.collectives.values()) / (link_gbs * 1e9) if link_gbs else 0.0

    def step_seconds(self, peak_tflops: float, mfu: float, link_gbs: float | None = None) -> float:
        """Compute at the assumed utilisation, or the collectives if they take longer (they
        overlap compute at best)."""
        return max(self.compute_seconds(peak_tflops, mfu), self.comm_seconds(link_gbs))


def unrolled_flops(c, mesh, options: Options) -> float:
    """FLOPs of one step counted on the HLO with every layer loop unrolled (lowered, not
    compiled). XLA's cost analysis counts a while loop's body once, so on a scanned step it
    misses all but one layer of every tower."""
    c = c.copy_and_resolve_references()
    c.scan_layers = False
    program = PROGRAMS[c.stage](c, mesh, options)
    return cost_of(program.jitted.lower(*program.args))["flops"]


def cache_levers(c) -> str:
    """Which caches of frozen work the step reads instead of running (training/frozen_cache.py)."""
    k = c.cache.get("teacher_topk", 0)
    on = (["AST features"] if c.cache.audio_features else []) + (
        [f"teacher logits ({f'top {k}' if k else 'exact'})"]
        if c.cache.get("teacher_logits", False) else [])
    return " + ".join(on) or "none"


def make_plan(c, mesh, options: Options = Options()) -> Plan:
    """Builds the config's stage program on `mesh`, compiles it, and reads XLA's analysis."""
    if c.stage not in PROGRAMS:
        raise ValueError(f"no planner for stage {c.stage!r}; known: {sorted(PROGRAMS)}")
    proxy = (options.cpu_proxy and mesh.devices.flat[0].platform == "cpu"
             and "bfloat16" in (c.dtype, c.param_dtype))
    levers = {"dtype": c.dtype, "param_dtype": c.param_dtype, "remat": c.remat,
              "scan_layers": bool(c.scan_layers), "batch_size": c.data.batch_size,
              "caches": cache_levers(c)}
    if proxy:
        c = proxy_config(c)
    with jax.set_mesh(mesh):      # the mesh context that makes logical constraints bind
        program = PROGRAMS[c.stage](c, mesh, options)
        t0 = time.perf_counter()
        lowered = program.jitted.lower(*program.args)
        t1 = time.perf_counter()
        compiled = lowered.compile(compiler_options=CPU_PROXY_OPTIONS if proxy else None)
        t2 = time.perf_counter()
        compiled_flops = cost_of(compiled)["flops"]
        traffic = collective_traffic(compiled.as_text(), mesh.devices.size)
        # the unrolled count is global (before partitioning); data/FSDP split it evenly
        flops = (unrolled_flops(c, mesh, options) / mesh.devices.size if c.scan_layers
                 else compiled_flops)
    return Plan(
        stage=c.stage, model=c.model, platform=mesh.devices.flat[0].platform,
        devices=mesh.devices.size, mesh=dict(mesh.shape), clips=program.clips,
        seq_len=program.seq_len, seq_note=program.seq_note, memory=memory_of(compiled),
        flops=flops, compiled_flops=compiled_flops, lower_seconds=t1 - t0,
        compile_seconds=t2 - t1, shapes=program.shapes, levers=levers, cpu_proxy=proxy,
        collectives=traffic)
