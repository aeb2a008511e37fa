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

Stages plug in through `PROGRAMS`: a builder (config, mesh, options) -> `Program`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import linen as nn

from vaemotion_jax import sharding
from vaemotion_jax.models import ast as ast_lib
from vaemotion_jax.data.utterances import utterance_spec
from vaemotion_jax.models.adapters import make_audio_adapter
from vaemotion_jax.models.lora import split_lora
from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
from vaemotion_jax.models.qwen2_5_vl.model import abstract_params as qwen_params
from vaemotion_jax.models.vaemotion import VAEmotionConfig, VAEmotionLLM
from vaemotion_jax.presets import check
from vaemotion_jax.processing.chat import encode_chat
from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir, load_tokenizer
from vaemotion_jax.examples import layout_arrays
from vaemotion_jax.training.stage1_run import adapter_config, video_grid
from vaemotion_jax.training.program import (StageParts, emotion_config, jit_step, lora_kwargs,
                                            stage_parts)
from vaemotion_jax.training.state import create_state, merge_params, split_params
from vaemotion_jax.training.weights import abstract_emotion_params
from configs import define_config_flag, expand_config_names

GiB = 2 ** 30
TEXT_TOKENS = 48   # template + prompt tokens when no tokenizer is at hand (Qwen's: about 30)

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


@dataclass(frozen=True)
class Options:
    seq_len: int | None = None    # None: from the buckets
    text_tokens: int | None = None  # template + prompt tokens; None: counted, else TEXT_TOKENS
    cpu_proxy: bool = True        # on CPU, plan bf16 as f16 (see `proxy_config`)


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


@dataclass
class Program:
    """A stage's train step, ready to lower: function, abstract arguments with shardings."""
    step: Callable                # the stage's step function (unjitted)
    jitted: Callable              # jitted as the trainer jits it (training/program.py)
    args: tuple                   # abstract (state, frozen, batch) with shardings
    clips: int                    # examples per step (global)
    seq_len: int                  # LLM tokens per example
    seq_note: str                 # where seq_len comes from
    shapes: dict                  # batch field -> global shape (for the report)


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


PROGRAMS: dict[str, Callable[..., Program]] = {}


def register(stage: str):
    """Decorator: `@register("stage2") def build(c, mesh, options) -> Program`."""
    def add(fn):
        PROGRAMS[stage] = fn
        return fn
    return add


# --- shared pieces: abstract params and state with their shardings -------------------------------

def with_dtype(boxed, dtype):
    """Boxed abstract params cast to `dtype` (boxes and logical names kept)."""
    cast = lambda x: jax.ShapeDtypeStruct(x.shape, dtype)
    return jax.tree.map(lambda b: b.replace_boxed(cast(b.unbox())) if isinstance(
        b, nn.LogicallyPartitioned) else cast(b), boxed,
        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def placed(boxed, mesh):
    """Boxed abstract tree -> plain ShapeDtypeStructs carrying their NamedShardings."""
    shardings = sharding.param_shardings(boxed, mesh)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        nn.meta.unbox(boxed), shardings)


def abstract_state(trainable_boxed, tx, seed: int, mesh):
    """The TrainState a run creates from the trainable params: Adam moments sharded like their
    params (optax maps over the boxes, so the moments keep the logical names)."""
    rng = jax.random.key_data(jax.random.key(seed))
    boxed = jax.eval_shape(lambda p: create_state(p, tx, rng), trainable_boxed)
    return placed(boxed, mesh)


def shardings_of(tree):
    return jax.tree.map(lambda x: x.sharding, tree)


def batch_arrays(shapes: dict[str, tuple[tuple, Any]], mesh) -> dict:
    """{name: (global shape, dtype)} -> ShapeDtypeStructs sharded on the batch axis."""
    return {k: jax.ShapeDtypeStruct(s, d, sharding=sharding.batch_sharding(mesh, len(s), s[0]))
            for k, (s, d) in shapes.items()}


def sequence_length(buckets, needed: int) -> int:
    """The smallest bucket that holds `needed` tokens (what the pipeline pads a batch to)."""
    fits = [b for b in sorted(buckets) if b >= needed]
    if not fits:
        raise ValueError(f"an example of {needed} tokens exceeds the largest sequence bucket "
                         f"{max(buckets)}; add a bucket to data.seq_buckets")
    return fits[0]


def tokenizer_dir(c) -> str | None:
    """The backbone's tokenizer directory when it is on this machine (the tiny one is built in)."""
    if c.backbone_path:
        return c.backbone_path if os.path.isdir(c.backbone_path) else None
    if c.model == "tiny":
        return default_tiny_tokenizer_dir()
    return None


def model_configs(c, **qwen_runtime):
    """(qwen, AST, adapter configs, video grid) from the config alone, as the runs build them."""
    qwen = qwen_config.preset(c.qwen_preset, dtype=c.dtype, scan_layers=c.scan_layers,
                              remat=c.remat, **qwen_runtime)
    ast = ast_lib.preset(c.ast_preset).replace(max_length=c.data.audio_max_length)
    return qwen, ast, adapter_config(c, qwen), video_grid(c)


def frozen_towers(c, qwen, ast) -> dict:
    """Boxed abstract backbone and audio encoder as the loaders make them: weights in
    param_dtype, fresh LoRA params (if any) in float32."""
    base, lora = split_lora(qwen_params(qwen))
    dtype = jnp.dtype(c.param_dtype)
    return {"backbone": merge_params(with_dtype(base, dtype), lora),
            "audio_encoder": with_dtype(ast_lib.abstract_params(ast), dtype)}


def adapter_params(adapter, ast):
    """Boxed abstract audio adapter (float32, as initialised and as Stage 1 exports it)."""
    module = make_audio_adapter(adapter, ast.num_tokens, ast.hidden_size)
    feats = jnp.zeros((1, ast.num_tokens, ast.hidden_size))
    return jax.eval_shape(lambda r: module.init(r, feats)["params"], jax.random.key(0))


def media_shapes(c, qwen, ast, adapter, grid, batch: int, video: bool = True) -> dict:
    """{field: (shape, dtype)} of a batch's video rows and vision layout (if `video`), fbank
    windows (or, with `cache.audio_features`, the cached AST features (B, T_a, d_a)) and, for
    adapters that read utterance windows, utterance_mask (B, N_max, T_a)."""
    lay = layout_arrays(qwen, grid) if video else {}
    k = c.data.audio_windows
    utterances = utterance_spec(adapter, ast)
    audio = ({"audio_features": ((batch, ast.num_tokens, ast.hidden_size), c.param_dtype)}
             if c.cache.audio_features else
             {"fbank": ((batch, k, c.data.audio_max_length, 128), np.float32),
              "fbank_mask": ((batch, k), np.bool_)})
    return {**({"pixel_values_videos": ((batch, int(np.prod(grid)), qwen.vision.patch_dim),
                                        np.float32)} if video else {}),
            **{k_: ((batch,) + v.shape, np.int32) for k_, v in lay.items()}, **audio,
            **({"utterance_mask": ((batch,) + utterances.mask_shape, np.bool_)}
               if utterances else {})}


def target_length(c, tokens: int) -> int:
    """The target bucket (A) that holds `tokens` loss targets."""
    return sequence_length(c.data.target_buckets, tokens)


def text_tokens(c, options: Options, count, default: int) -> tuple[int, str]:
    """Template + prompt tokens: given, counted with the tokenizer (`count(c, path)`), or the
    default estimate."""
    if options.text_tokens is not None:
        return options.text_tokens, "given"
    path = tokenizer_dir(c)
    return (count(c, path), "counted") if path and count else (default, "estimated")


def abstract_program(c, mesh, parts: StageParts, boxed: dict, shapes: dict, seq_len: int,
                     seq_note: str) -> Program:
    """The stage's step with its abstract (state, frozen, batch), sharded as a run shards them
    and jitted by the trainer's own `jit_step`."""
    trainable_boxed, frozen_boxed = split_params(boxed, parts.trainable)
    if not parts.trainable or not jax.tree.leaves(trainable_boxed):
        raise ValueError(f"{c.stage}: the config trains nothing: there is no step to plan")
    state = abstract_state(trainable_boxed, parts.tx, c.seed, mesh)
    frozen = placed(frozen_boxed, mesh)
    batch = batch_arrays(shapes, mesh)
    return Program(parts.step, jit_step(parts.step, state, frozen, mesh), (state, frozen, batch),
                   c.data.batch_size, seq_len, seq_note, {k: s for k, (s, _) in shapes.items()})


# --- stage 1 --------------------------------------------------------------------------------------

def stage1_text_tokens(c, path: str) -> int:
    """Template + prompt tokens of the longest Stage 1 prompt (everything but video and answer)."""
    tok = load_tokenizer(path)
    return max(len(encode_chat(tok, [{"role": "user", "content": p}], video_tokens=1,
                               add_generation_prompt=True)["input_ids"]) - 1 for p in c.prompts)


def stage1_sequence(c, video_tokens: int, options: Options) -> tuple[int, str]:
    """(S, how it was chosen): the bucket a prompt + video + longest response is padded to."""
    if options.seq_len:
        return options.seq_len, "given"
    text, how = text_tokens(c, options, stage1_text_tokens, TEXT_TOKENS)
    need = video_tokens + text + c.max_response_tokens
    return (sequence_length(c.data.seq_buckets, need),
            f"bucket of {video_tokens} video + {text} text ({how}) + "
            f"{c.max_response_tokens} response tokens")


def stage1_batch_shapes(c, qwen, ast, adapter, grid, batch: int, seq_len: int) -> dict:
    """{field: (global shape, dtype)} of a Stage 1 batch after `attach_responses` (the fields
    the step reads, and the small ones it carries)."""
    a, i32 = target_length(c, c.max_response_tokens), np.int32
    k = c.cache.teacher_topk
    teacher = ({"teacher_logits": ((batch, a, k or qwen.text.vocab_size), c.dtype),
                **({"teacher_index": ((batch, a, k), i32)} if k else {})}
               if c.cache.teacher_logits else {})
    return {"input_ids": ((batch, seq_len), i32), "position_ids": ((batch, seq_len, 3), i32),
            "attention_mask": ((batch, seq_len), np.bool_), "target_index": ((batch, a), i32),
            "target_ids": ((batch, a), i32), "target_mask": ((batch, a), np.bool_),
            **media_shapes(c, qwen, ast, adapter, grid, batch, video=not teacher), **teacher,
            "valid": ((batch,), np.bool_), "video_grid_thw": ((batch, 3), i32),
            "second_per_grid_ts": ((batch,), np.float32)}


@register("stage1")
def stage1_program(c, mesh, options: Options) -> Program:
    qwen, ast, adapter, grid = model_configs(c)
    model = VAEmotionLLM(VAEmotionConfig(qwen, ast, adapter, jnp.dtype(c.param_dtype)))
    boxed = {**frozen_towers(c, qwen, ast), "audio_adapter": adapter_params(adapter, ast)}
    seq_len, note = stage1_sequence(c, adapter.num_tokens, options)
    shapes = stage1_batch_shapes(c, qwen, ast, adapter, grid, c.data.batch_size, seq_len)
    return abstract_program(c, mesh, stage_parts(c, model), boxed, shapes, seq_len, note)


# --- stage 2 --------------------------------------------------------------------------------------

STAGE2_TEXT_TOKENS = 96   # template + an emotion question with its options (no tokenizer count:
                          # the conversations are data; --text_tokens or --seq_len to set)
STAGE2_ANSWER_TOKENS = 128  # a long generated answer: the LM loss covers whole answers, so the
                            # plan takes one this long (its target bucket)


def stage2_sequence(c, video_tokens: int, options: Options) -> tuple[int, str]:
    """(S, how): the bucket of a joint (AV) conversation, whose placeholders hold 2N tokens."""
    if options.seq_len:
        return options.seq_len, "given"
    text, how = text_tokens(c, options, None, STAGE2_TEXT_TOKENS)
    need = 2 * video_tokens + text + STAGE2_ANSWER_TOKENS
    return (sequence_length(c.data.seq_buckets, need),
            f"bucket of 2 x {video_tokens} joint audio+video + {text} text ({how}) + "
            f"{STAGE2_ANSWER_TOKENS} answer tokens")


def stage2_batch_shapes(c, qwen, ast, adapter, grid, batch: int, seq_len: int) -> dict:
    """{field: (global shape, dtype)} of a collated Stage 2 batch (`conversation_example`)."""
    a, i32 = target_length(c, STAGE2_ANSWER_TOKENS), np.int32
    return {"input_ids": ((batch, seq_len), i32), "input_ids_length": ((batch,), i32),
            "position_ids": ((batch, seq_len, 3), i32), "position_ids_length": ((batch,), i32),
            "target_index": ((batch, a), i32), "target_ids": ((batch, a), i32),
            "target_mask": ((batch, a), np.bool_), "modality": ((batch,), i32),
            **{f"{k}_length": ((batch,), i32) for k in ("target_index", "target_ids", "target_mask")},
            **media_shapes(c, qwen, ast, adapter, grid, batch), "va": ((batch, 3, 2), np.float32),
            "va_mask": ((batch, 3), np.bool_), "valid": ((batch,), np.bool_)}


@register("stage2")
def stage2_program(c, mesh, options: Options) -> Program:
    qwen, ast, adapter, grid = model_configs(c, **lora_kwargs(c))
    emotion = emotion_config(c)
    model = VAEmotionLLM(VAEmotionConfig(qwen, ast, adapter, jnp.dtype(c.param_dtype), emotion))
    boxed = {**frozen_towers(c, qwen, ast), "audio_adapter": adapter_params(adapter, ast)}
    boxed.update(abstract_emotion_params(emotion, qwen.text.hidden_size))
    seq_len, note = stage2_sequence(c, adapter.num_tokens, options)
    shapes = stage2_batch_shapes(c, qwen, ast, adapter, grid, c.data.batch_size, seq_len)
    return abstract_program(c, mesh, stage_parts(c, model), boxed, shapes, seq_len, note)


# --- compile and measure --------------------------------------------------------------------------

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


def unrolled_flops(c, mesh, options: Options) -> float:
    """FLOPs of one step counted on the HLO with every layer loop unrolled (lowered, not
    compiled). XLA's cost analysis counts a while loop's body once, so on a scanned step it
    misses all but one layer of every tower."""
    c = c.copy_and_resolve_references()
    c.scan_layers = False
    program = PROGRAMS[c.stage](c, mesh, options)
    return cost_of(program.jitted.lower(*program.args))["flops"]


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
