"""What XLA says about a compiled step: memory per device, FLOPs, the bytes each collective
moves (read from the partitioned HLO), and the CPU proxy for 16-bit plans."""
from __future__ import annotations

import re

# XLA:CPU has no bf16 matmul: `change-op-data-type` rewrites every bf16 (and f16) dot into an
# f32 dot on f32 copies of its operands, and loop-invariant code motion then hoists the copies
# of whole stacked weights out of the layer loop (the 1-GPU 7B step: 45.7 GiB instead of 16.8).
# Neither happens on GPU/TPU. With f16 (same width as bf16) and that pass off, XLA:CPU emits
# 16-bit dots, and bf16 cannot be emitted that way.
CPU_PROXY_OPTIONS = {"xla_disable_hlo_passes": "change-op-data-type"}


def proxy_config(c):
    """A copy of `c` with bfloat16 replaced by float16 (same bytes) for XLA:CPU."""
    c = c.copy_and_resolve_references()
    for field in ("dtype", "param_dtype"):
        if c[field] == "bfloat16":
            c[field] = "float16"
    return c


def memory_of(compiled) -> dict[str, int]:
    """Per-device bytes from XLA's buffer assignment; total = arguments + outputs - aliased
    (donated) + temporaries + generated code."""
    m = compiled.memory_analysis()
    if m is None:
        raise RuntimeError("this backend gives no memory analysis for compiled programs")
    out = {"argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
           "alias": m.alias_size_in_bytes, "temp": m.temp_size_in_bytes,
           "code": m.generated_code_size_in_bytes}
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["code"]
    return out


def cost_of(stage) -> dict[str, float]:
    """XLA's cost analysis of a lowered or compiled program."""
    cost = stage.cost_analysis()
    if isinstance(cost, (list, tuple)):   # older JAX: one dict per program
        cost = cost[0]
    if not cost or "flops" not in cost:
        raise RuntimeError("this backend gives no cost analysis for the program")
    return {"flops": float(cost["flops"])}


# --- collectives in the compiled step -------------------------------------------------------------

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16|f8\w*)\[([\d,]*)\]")
_BITS = {"pred": 8, "bf16": 16}


def _bytes_of(types: str) -> int:
    """Bytes of every array shape in an HLO result type such as `(f16[8,3], s32[])`."""
    total = 0
    for dtype, dims in _SHAPE.findall(types):
        bits = _BITS.get(dtype) or int(re.sub(r"\D", "", dtype.split("e")[0]) or 8)
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * bits // 8
    return total


def _group_size(line: str, devices: int) -> int:
    """Participants of a collective from its replica_groups (mesh, iota or explicit lists)."""
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
    if m:
        sizes = dict((k.strip("'"), int(v)) for k, v in re.findall(r"('[^']+')=(\d+)", m.group(1)))
        n = 1
        for axis in re.findall(r"'([^']+)'", m.group(2)):
            n *= sizes.get(axis, 1)
        return n
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)
    if m:
        return int(m.group(2))
    m = re.search(r"replica_groups=\{\{([^}]*)\}", line)
    return len(m.group(1).split(",")) if m else devices


def collective_traffic(hlo: str, devices: int) -> dict[str, float]:
    """Bytes one device sends per step, by collective kind, from a compiled (partitioned) HLO
    module's text: ring algorithms (all-gather and all-to-all (n-1)/n of the result,
    reduce-scatter (n-1) x the result, all-reduce twice (n-1)/n), loop bodies times their known
    trip count, the larger branch of a conditional. Async pairs count once (at `-done`)."""
    own: dict[str, dict[str, float]] = {}
    calls: dict[str, list[tuple[str, int]]] = {}
    branches: dict[str, list[list[str]]] = {}
    comp = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            comp = head.group(1)
            own[comp], calls[comp], branches[comp] = {}, [], []
            if line.startswith("ENTRY"):
                entry = comp
            continue
        if comp is None or "=" not in line:
            continue
        m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.*?) ([a-z\-]+)\(", line)
        if not m:
            continue
        types, op = m.groups()
        kind = op[:-len("-done")] if op.endswith("-done") else op
        if kind in COLLECTIVES and not op.endswith("-start"):
            n = _group_size(line, devices)
            b = _bytes_of(types)
            sent = {"all-gather": b * (n - 1) / n, "all-to-all": b * (n - 1) / n,
                    "reduce-scatter": b * (n - 1), "all-reduce": 2 * b * (n - 1) / n,
                    "collective-permute": b}[kind] if n > 1 else 0.0
            own[comp][kind] = own[comp].get(kind, 0.0) + sent
        elif op == "while":
            body = re.search(r"body=%?([\w.\-]+)", line).group(1)
            trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
            calls[comp].append((body, int(trips.group(1)) if trips else 1))
        elif op == "conditional":
            names = re.findall(r"(?:branch_computations=\{|true_computation=|false_computation=|, )"
                               r"%([\w.\-]+)", line.split("conditional(", 1)[1])
            branches[comp].append(names)
        else:
            for callee in re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", line):
                calls[comp].append((callee, 1))

    memo: dict[str, dict[str, float]] = {}

    def total(name: str) -> dict[str, float]:
        if name not in memo:
            out = dict(own.get(name, {}))
            for callee, times in calls.get(name, []):
                for k, v in total(callee).items():
                    out[k] = out.get(k, 0.0) + times * v
            for names in branches.get(name, []):
                best = max((total(b) for b in names), key=lambda t: sum(t.values()), default={})
                for k, v in best.items():
                    out[k] = out.get(k, 0.0) + v
            memo[name] = out
        return memo[name]

    return total(entry)
