"""Each stage's train step from shapes alone: abstract params, optimizer state and batch with
the shardings a run gives them, and the step jitted by the trainer's own `jit_step`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vaemotion_jax import sharding
from vaemotion_jax.models import ast as ast_lib
from vaemotion_jax.data.utterances import utterance_spec
from vaemotion_jax.models.adapters import make_audio_adapter
from vaemotion_jax.models.lora import split_lora
from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
from vaemotion_jax.models.qwen2_5_vl.model import abstract_params as qwen_params
from vaemotion_jax.models.vaemotion import VAEmotionConfig, VAEmotionLLM
from vaemotion_jax.processing.chat import encode_chat
from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
from vaemotion_jax.processing.tokenizer import load_tokenizer
from vaemotion_jax.examples import layout_arrays
from vaemotion_jax.training.stage1_run import adapter_config, video_grid
from vaemotion_jax.training.program import (StageParts, emotion_config, jit_step, lora_kwargs,
                                            stage_parts)
from vaemotion_jax.training.state import create_state, merge_params, split_params
from vaemotion_jax.training.weights import abstract_emotion_params

TEXT_TOKENS = 48   # template + prompt tokens when no tokenizer is at hand (Qwen's: about 30)


@dataclass(frozen=True)
class Options:
    seq_len: int | None = None    # None: from the buckets
    text_tokens: int | None = None  # template + prompt tokens; None: counted, else TEXT_TOKENS
    cpu_proxy: bool = True        # on CPU, plan bf16 as f16 (see `proxy_config`)


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
