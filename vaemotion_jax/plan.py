"""Plan before you run: compile a stage's real train step ahead of time, from shapes alone.

    python -m vaemotion_jax.plan --config=stage1_7b:gpu8x24 --devices=8
    python -m vaemotion_jax.plan --config=stage1:qwen2_5_vl_7b --devices=8 \
        --peak_tflops=165 --mfu=0.35

No weight is read or allocated. Params, optimizer state and the batch are ShapeDtypeStructs
that carry the shardings a real run gives them (the logical rules on the config's mesh), and
the stage's own step, built and jitted by the trainer's code (`training/program.py`: shardings
pinned, state donated), is lowered and compiled. The report: per-device memory from XLA's buffer
assignment (arguments, outputs, temporaries, the donated bytes they share), FLOPs per step
(counted on the same step with its layer loops unrolled: XLA counts a loop body once), the
bytes each device moves in collectives (read from the partitioned HLO), compile time, and a
step-time estimate from assumed peak FLOP/s, utilisation and link bandwidth.

`--devices N` simulates N CPU devices. The numbers are then the CPU compiler's: a proxy for a
GPU or TPU, whose compilers fuse, lay out and schedule differently (bf16 is planned as f16,
see `CPU_PROXY_OPTIONS`). Run the same command without `--devices` on the target machine to
get its own compiler's numbers. docs/scaling.md has the plans of the 7B presets.

The planner itself is `vaemotion_jax/planning/`; stages plug in through its `PROGRAMS`: a
builder (config, mesh, options) -> `Program`.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from vaemotion_jax import sharding
from vaemotion_jax.presets import check
from vaemotion_jax.planning.compile import make_plan
from vaemotion_jax.planning.programs import TEXT_TOKENS, Options
from vaemotion_jax.planning.report import Assumptions, as_json, report
from vaemotion_jax.configs import define_config_flag, expand_config_names


define_config_flag()  # --config: a stage config name or path, as for training
_DEVICES = flags.DEFINE_integer(
    "devices", 0, "simulate this many CPU devices (0: use the devices this machine has)")
_PEAK = flags.DEFINE_float(
    "peak_tflops", None, "peak dense bf16 TFLOP/s of one device (default: config hardware)")
_MFU = flags.DEFINE_float("mfu", None, "assumed utilisation of the peak (default: config "
                          "hardware, else 0.4)")
_LINK = flags.DEFINE_float("link_gbs", None, "collective bandwidth per device in GB/s, for the "
                           "step-time estimate (default: config hardware)")
_BUDGET = flags.DEFINE_float("budget_gib", None, "per-device memory budget to check against "
                             "(default: config hardware)")
_SEQ = flags.DEFINE_integer("seq_len", None, "LLM sequence length (default: the smallest "
                            "bucket that holds the video, the text and the targets)")
_TEXT = flags.DEFINE_integer("text_tokens", None, "chat template + prompt tokens around the "
                             "video (default: counted with the backbone's tokenizer when it is "
                             f"at hand, else {TEXT_TOKENS})")
_PROXY = flags.DEFINE_bool("cpu_proxy", True, "on XLA:CPU, plan bfloat16 as float16 (same "
                           "bytes) so 16-bit matmuls are not widened to f32 copies")
_JSON = flags.DEFINE_string("json", "", "also write the plan as JSON to this path")


def simulate_devices(n: int) -> None:
    """Makes the CPU backend show `n` devices; must run before JAX starts its backend."""
    flags_now = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(flags_now + [f"--xla_force_host_platform_device_count={n}"])
    os.environ["JAX_PLATFORMS"] = "cpu"


def main(argv):
    del argv
    c = flags.FLAGS.config
    if c is None:
        raise app.UsageError("--config is required, e.g. --config=stage1_7b:gpu8x24 --devices=8")
    if _DEVICES.value:
        simulate_devices(_DEVICES.value)
    c = check(c)
    hw = c.get("hardware") or {}
    pick = lambda flag, key, default=None: (flag.value if flag.value is not None
                                             else hw.get(key, default))
    a = Assumptions(pick(_PEAK, "peak_tflops"), pick(_MFU, "mfu", 0.4), pick(_LINK, "link_gbs"),
                    pick(_BUDGET, "budget_gib"))
    mesh = sharding.make_mesh(tuple(c.mesh))
    plan = make_plan(c, mesh, Options(_SEQ.value, _TEXT.value, _PROXY.value))
    print(report(plan, a))
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(as_json(plan, a), f, indent=2)


if __name__ == "__main__":
    app.run(main, argv=expand_config_names(sys.argv))
