"""Hardware setups for the 7B presets: mesh, batch and memory levers, and what the planner
checks them against (per-device budget, peak FLOP/s for its step-time estimate).

    python -m vaemotion_jax.plan --config=stage1_7b:gpu8x24 --devices=8

docs/scaling.md has the plan of every setup. `devices` is how many accelerators the setup has
(pass it as --devices to plan on a CPU-only machine); budgets leave room for the runtime
(CUDA context, NCCL buffers, allocator fragmentation) next to XLA's own buffers.
"""
import ml_collections

SETUPS = {
    # 8 x RTX 4090 (24 GB, PCIe, no NVLink) in one node, or any 8 x 24 GB GPUs: the frozen
    # weights are sharded 8 ways (FSDP); 4 clips per GPU per step in Stage 1 (2048 tokens),
    # 2 in Stage 2 (a joint clip is 3072 tokens; 4 per GPU plans at 20.6 GiB, over budget).
    "gpu8x24": dict(devices=8, device_gib=24, budget_gib=20.0, peak_tflops=165.2, mfu=0.3,
                    link_gbs=10.0, mesh=(1, -1, 1), batch_size={"stage1": 32, "stage2": 16},
                    remat="full"),
    # One 24 GB GPU: the whole bf16 backbone (~15.5 GiB) on it, one clip per step.
    "gpu1x24": dict(devices=1, device_gib=24, budget_gib=22.0, peak_tflops=165.2, mfu=0.3,
                    link_gbs=None, mesh=(1, 1, 1), batch_size=1, remat="full"),
    # TPU v5e-8: 8 chips of 16 GiB HBM, 197 bf16 TFLOP/s each.
    "tpu_v5e8": dict(devices=8, device_gib=16, budget_gib=15.0, peak_tflops=197.0, mfu=0.4,
                     link_gbs=90.0, mesh=(1, -1, 1), batch_size={"stage1": 32, "stage2": 16},
                     remat="full"),
    # TPU v4-8: 4 chips (one JAX device each) of 32 GiB HBM, 275 bf16 TFLOP/s each; 4 clips
    # per chip in Stage 1 and 2 in Stage 2 (8 per chip plans at 26 GiB in Stage 1).
    "tpu_v4_8": dict(devices=4, device_gib=32, budget_gib=20.0, peak_tflops=275.0, mfu=0.4,
                     link_gbs=135.0, mesh=(1, -1, 1), batch_size={"stage1": 16, "stage2": 8},
                     remat="full"),
}


def apply(c: ml_collections.ConfigDict, name: str, stage: str, **overrides) -> None:
    """Sets the setup's levers for `stage` ("stage1" | "stage2") on `c` (bf16 everywhere,
    scanned layers) and records the setup in `c.hardware` for the planner; `overrides`
    replace single entries."""
    if name not in SETUPS:
        raise ValueError(f"unknown hardware setup {name!r}; known: {sorted(SETUPS)}")
    s = {**SETUPS[name], **overrides}
    c.mesh = tuple(s["mesh"])
    batch = s["batch_size"]
    c.data.batch_size = batch[stage] if isinstance(batch, dict) else batch
    c.remat = s["remat"]
    c.dtype = "bfloat16"
    c.param_dtype = "bfloat16"
    c.scan_layers = True
    c.hardware = ml_collections.ConfigDict({
        "name": name, "devices": s["devices"], "device_gib": s["device_gib"],
        "budget_gib": s["budget_gib"], "peak_tflops": s["peak_tflops"], "mfu": s["mfu"],
        "link_gbs": s["link_gbs"]})
