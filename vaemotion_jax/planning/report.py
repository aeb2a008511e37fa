"""The step-time estimate from assumed hardware, and the printed and JSON reports of a plan."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


from vaemotion_jax.planning.compile import Plan


GiB = 2 ** 30


@dataclass(frozen=True)
class Assumptions:
    """What the estimate assumes about the hardware (flags, else the config's `hardware`)."""
    peak_tflops: float | None = None   # dense bf16 per device
    mfu: float = 0.4                   # utilisation of the peak
    link_gbs: float | None = None      # collective bandwidth per device, GB/s
    budget_gib: float | None = None    # memory per device


def estimate(plan: Plan, a: Assumptions) -> dict | None:
    if not a.peak_tflops:
        return None
    t = plan.step_seconds(a.peak_tflops, a.mfu, a.link_gbs)
    return {"compute_seconds": plan.compute_seconds(a.peak_tflops, a.mfu),
            "collective_seconds": plan.comm_seconds(a.link_gbs), "step_seconds": t,
            "tokens_per_second": plan.tokens / t, "clips_per_second": plan.clips / t,
            **dataclasses.asdict(a)}


def report(plan: Plan, a: Assumptions) -> str:
    """The plan as a few readable lines."""
    m = plan.memory
    gib = lambda b: f"{b / GiB:8.2f} GiB" if b >= GiB else f"{b / 2 ** 20:8.1f} MiB"
    mesh = " x ".join(f"{k}={v}" for k, v in plan.mesh.items())
    per_device = plan.clips / max(plan.mesh.get("data", 1) * plan.mesh.get("fsdp", 1), 1)
    lines = [
        f"plan: {plan.stage} / {plan.model} on {plan.devices} {plan.platform} device(s), "
        f"mesh {mesh}",
        f"  step: {plan.clips} clips ({per_device:g} per batch shard) x {plan.seq_len} tokens "
        f"({plan.seq_note})",
        "  levers: " + ", ".join(f"{k} {v}" for k, v in plan.levers.items() if k != "batch_size"),
        "  memory per device (XLA buffer assignment):",
        f"    arguments    {gib(m['argument'])}   (params, optimizer state, batch)",
        f"    outputs      {gib(m['output'])}",
        f"    aliased      {gib(m['alias'])}   (donated state: counted once)",
        f"    temporaries  {gib(m['temp'])}   (activations, gathered weights, workspace)",
        f"    code         {gib(m['code'])}",
        f"    total        {gib(m['total'])}",
    ]
    if a.budget_gib:
        over = m["total"] - a.budget_gib * GiB
        lines.append(f"    budget       {a.budget_gib:8.2f} GiB   -> "
                     + ("fits" if over <= 0 else f"DOES NOT FIT (over by {over / GiB:.2f} GiB)"))
    lines.append(f"  FLOPs per step: {plan.flops:.4g} per device, {plan.flops * plan.devices:.4g} "
                 "total" + (f" (XLA's count with the layer loops unrolled; the compiled scanned "
                            f"step reports {plan.compiled_flops:.4g}, a loop body counted once)"
                            if plan.levers["scan_layers"] else ""))
    if plan.collectives:
        lines.append("  collectives per device per step (ring estimate): " + ", ".join(
            f"{k} {v / GiB:.2f} GiB" for k, v in sorted(plan.collectives.items())))
    lines.append(f"  compile: lower {plan.lower_seconds:.1f} s, compile {plan.compile_seconds:.1f} s")
    e = estimate(plan, a)
    if e:
        comm = (f"; collectives {e['collective_seconds']:.2f} s at {a.link_gbs:g} GB/s"
                if a.link_gbs and plan.collectives else "")
        lines.append(f"  estimate: compute {e['compute_seconds']:.2f} s at {a.peak_tflops:g} TFLOP/s "
                     f"per device x {a.mfu:.0%}{comm} -> {e['step_seconds']:.2f} s per step, "
                     f"{e['tokens_per_second']:,.0f} tokens/s, {e['clips_per_second']:.2f} clips/s")
    else:
        lines.append("  (pass --peak_tflops for a step-time estimate)")
    if plan.platform == "cpu":
        lines.append("  note: compiled by XLA:CPU, a proxy for GPU/TPU (other fusion, layouts and "
                     "scheduling; no cuDNN/NCCL workspaces)"
                     + ("; bfloat16 planned as float16 with f32 widening of matmuls off"
                        if plan.cpu_proxy else "")
                     + ". Run without --devices on the target machine for its own numbers.")
    return "\n".join(lines)


def as_json(plan: Plan, a: Assumptions) -> dict:
    d = dataclasses.asdict(plan)
    d["tokens"] = plan.tokens
    d["estimate"] = estimate(plan, a)
    return d
