"""Looking inside a trained run, for notebooks: token-level teacher/student statistics of
Stage 1 and the Emotion Supervisor's valence/arousal of Stage 2, on held-out clips.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from vaemotion_jax.data.manifest import Record
from vaemotion_jax.data.pipeline import ExampleFn, PipelineConfig, make_iterator
from vaemotion_jax.evaluation.runner import valence_arousal
from vaemotion_jax.inference import LoadedRun
from vaemotion_jax.training import stage1


@dataclass
class TokenStats:
    """One clip's teacher response and, per response token (T,): KL(teacher || student), whether
    the top-k sets share the teacher's top-1, both entropies, and both top-k tokens (T, k)."""
    clip: str
    tokens: list[str]
    kl: np.ndarray
    topk_agree: np.ndarray
    teacher_entropy: np.ndarray
    student_entropy: np.ndarray
    teacher_top: list[list[str]]
    student_top: list[list[str]]


def _stats(teacher_logits, student_logits, k: int):
    lp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), -1)
    lq = jax.nn.log_softmax(student_logits.astype(jnp.float32), -1)
    p, q = jnp.exp(lp), jnp.exp(lq)
    kl = jnp.sum(p * (lp - lq), -1)
    t_top, s_top = jax.lax.top_k(lp, k)[1], jax.lax.top_k(lq, k)[1]
    agree = jnp.any(s_top == t_top[..., :1], -1)
    return kl, agree, -jnp.sum(p * lp, -1), -jnp.sum(q * lq, -1), t_top, s_top


def stage1_token_stats(run: LoadedRun, records: list[Record], k: int = 5,
                       max_new_tokens: int = 24, batch_size: int = 8) -> list[TokenStats]:
    """Teacher (video) vs student (audio) next-token distributions along the teacher's greedy
    response, for each clip of `records` (video + audio files)."""
    c, qwen, tok = run.config, run.model.config.qwen, run.tokenizer
    fn = ExampleFn(media=run.spec.media,
                   format_fn=functools.partial(stage1.prompt_example, tokenizer_dir=run.spec.tokenizer_dir,
                                               qwen=qwen, prompts=tuple(c.prompts), seed=c.seed))
    it = make_iterator(records, fn, PipelineConfig(
        batch_size=batch_size, shuffle=False, num_epochs=1, drop_remainder=False,
        buckets={"prompt_ids": tuple(c.data.seq_buckets)}, pad_values={"prompt_ids": qwen.pad_token_id}))
    from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL
    teacher_fn = jax.jit(functools.partial(stage1.teacher_logits, run.model))
    student_fn = jax.jit(functools.partial(stage1.student_logits, run.model))
    out = []
    for batch in it:
        responses = stage1.teacher_responses(Qwen2_5_VL(qwen), run.params["backbone"], batch, qwen,
                                             max_new_tokens)
        full = stage1.attach_responses(batch, responses, qwen, c.data.seq_buckets,
                                       c.data.target_buckets, qwen.pad_token_id)
        dev = {k_: jnp.asarray(v) for k_, v in full.items() if np.asarray(v).dtype.kind not in "USO"}
        t_logits, _ = teacher_fn(run.params, dev)
        s_logits, _ = student_fn(run.params, dev)
        kl, agree, ht, hs, t_top, s_top = map(np.asarray, _stats(t_logits, s_logits, k))
        for b in np.flatnonzero(full["valid"]):
            n = int(full["target_mask"][b].sum())
            words = lambda ids: [tok.decode([int(i)]) for i in ids]
            out.append(TokenStats(str(full["id"][b]), words(full["target_ids"][b, :n]), kl[b, :n],
                                  agree[b, :n], ht[b, :n], hs[b, :n],
                                  [words(r) for r in t_top[b, :n]], [words(r) for r in s_top[b, :n]]))
    return out


def stage2_valence_arousal(run: LoadedRun, records: list[Record], batch_size: int = 16
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted (N, 3, 2), true (N, 3, 2), has_label (N, 3)) for the (a, v, av) pathways of
    one record per clip."""
    return valence_arousal(run.model, run.params, run.spec, records, batch_size)
