"""Looking inside a trained run, for notebooks: token-level teacher/student statistics of
Stage 1 and the Emotion Supervisor's valence/arousal of Stage 2, on held-out clips.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaemotion_jax.data.manifest import PATHWAYS, Record
from vaemotion_jax.data.pipeline import ExampleFn, PipelineConfig, make_iterator
from vaemotion_jax.evaluation.benchmark import valence_arousal
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
    fn = ExampleFn(media=run.spec.media, utterances=run.spec.utterances,
                   format_fn=functools.partial(stage1.teacher_prompt_example,
                                               tokenizer_dir=run.spec.tokenizer_dir, qwen=qwen,
                                               prompts=tuple(c.prompts), seed=c.seed))
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


# --- figures ----------------------------------------------------------------------------------

def untrained_adapter(run: LoadedRun, seed: int = 0) -> LoadedRun:
    """The run with a freshly initialised audio adapter (the Stage 1 model before training)."""
    import dataclasses
    from vaemotion_jax import sharding
    from vaemotion_jax.training import weights
    mesh = sharding.make_mesh((1, 1, 1))
    cfg = run.model.config
    fresh = weights.init_adapter(cfg.adapter, cfg.ast, mesh, jax.random.key(seed))
    return dataclasses.replace(run, params={**run.params, "audio_adapter": fresh})


def plot_token_kl(before: list[TokenStats], after: list[TokenStats], path: str) -> None:
    """Mean KL(teacher || student) per response token, before and after Stage 1 (log scale)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for stats, label in ((before, "before Stage 1 (fresh adapter)"), (after, "after Stage 1")):
        width = max(len(s.kl) for s in stats)
        values = np.full((len(stats), width), np.nan)
        for i, s in enumerate(stats):
            values[i, :len(s.kl)] = s.kl
        mean = np.nanmean(values, 0)
        ax.plot(np.arange(1, width + 1), np.maximum(mean, 1e-5), marker="o", ms=3,
                label=f"{label}: mean {np.nanmean(values):.3f}")
    ax.set(yscale="log", xlabel="response token", ylabel="KL(teacher || student), nats",
           title=f"Audio pathway vs video pathway on {len(after)} held-out clips")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_circumplex(pred: np.ndarray, true: np.ndarray, mask: np.ndarray, path: str) -> None:
    """Held-out valence/arousal predictions against labels, one panel per pathway."""
    import matplotlib.pyplot as plt
    from vaemotion_jax.training.stage2 import ccc
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.9))
    for p, (ax, name) in enumerate(zip(axes, ("audio", "video", "audio + video"))):
        m = mask[:, p]
        ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.75"))
        ax.axhline(0, color="0.88", lw=0.8), ax.axvline(0, color="0.88", lw=0.8)
        for a, b in zip(true[m, p], pred[m, p]):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.8", lw=0.5)
        ax.scatter(true[m, p, 0], true[m, p, 1], s=14, label="label")
        ax.scatter(pred[m, p, 0], pred[m, p, 1], s=14, marker="x", label="predicted")
        ax.set(xlim=(-1.15, 1.15), ylim=(-1.15, 1.15), aspect="equal", xlabel="valence",
               ylabel="arousal" if p == 0 else None,
               title=f"{name}: CCC v {ccc(pred[m, p, 0], true[m, p, 0]):.2f}, "
                     f"a {ccc(pred[m, p, 1], true[m, p, 1]):.2f}")
        ax.title.set_fontsize(9)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Emotion Supervisor on {int(mask.any(1).sum())} held-out clips", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax, bench: dict, groups: Sequence[str], value, hidden, chance: float | None,
          title: str) -> None:
    """One bar per (row, group): the mean of `value(run, group)` over seeds, the seeds'
    sample std as the error bar; `hidden(row, group)` leaves a bar out."""
    rows = list(bench["runs"])
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        means, errs = [], []
        for g in groups:
            xs = [value(r, g) for r in bench["runs"][row]]
            xs = [x for x in xs if x is not None]
            hide = hidden(row, g)
            means.append(np.nan if hide or not xs else np.mean(xs))
            errs.append(0.0 if hide or len(xs) < 2 else np.std(xs, ddof=1))
        ax.bar(np.arange(len(groups)) + i * width, means, width, yerr=errs, capsize=2, label=row)
    if chance is not None:
        ax.axhline(chance, color="0.6", ls="--", lw=0.8)
    ax.set(xticks=np.arange(len(groups)) + 0.4 - width / 2, xticklabels=groups, ylim=(0, 100),
           ylabel="accuracy, %", title=title)
    ax.title.set_fontsize(9)


def plot_ablation(bench: dict, path: str) -> None:
    """Table 3 rows (bench_ablation.json) with the seeds' spread as error bars: the benchmark's
    groups (the adapter-only row has no joint pathway: AV, All left out) and, where the bench
    recorded them, the held-out emotion-word accuracy per pathway."""
    import matplotlib.pyplot as plt
    from vaemotion_jax.evaluation.tables import NO_JOINT_PATHWAY
    with_words = any(r.get("words") for runs in bench["runs"].values() for r in runs)
    fig, axes = plt.subplots(1, 2 if with_words else 1, figsize=(12 if with_words else 8, 3.8))
    axes = np.atleast_1d(axes)
    seeds = len(bench["seeds"])
    _bars(axes[0], bench, ("A", "V", "AV", "All"), lambda r, g: r["averages"].get(g),
          lambda row, g: row in NO_JOINT_PATHWAY and g in ("AV", "All"), 25,
          f"benchmark, generate mode ({seeds} seeds; dashed: chance)")
    if with_words:
        _bars(axes[1], bench, PATHWAYS, lambda r, g: r.get("words", {}).get(g),
              lambda row, g: False, 20,
              f"emotion word of free replies ({seeds} seeds; dashed: uniform chance)")
    axes[-1].legend(fontsize=7, ncol=2)
    fig.suptitle("Table 3 on the synthetic world, held-out clips", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    import argparse
    import json
    import os
    from vaemotion_jax.data.manifest import read_manifest
    from vaemotion_jax.inference import load_run
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.analysis",
                                description="PNG figures of finished runs (held-out clips).")
    p.add_argument("--stage1", default="runs/stage1", help="a Stage 1 workdir")
    p.add_argument("--stage2", default="runs/stage2", help="a Stage 2 workdir")
    p.add_argument("--ablation", default="runs/bench_ablation/bench_ablation.json",
                   help="benchmarks/bench_ablation.py's JSON (skipped if absent)")
    p.add_argument("--clips", type=int, default=32, help="held-out clips per figure")
    p.add_argument("--out", default="docs/figures")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    written = []
    if os.path.exists(os.path.join(args.stage1, "run.json")):
        run = load_run(args.stage1)
        records, _ = read_manifest(os.path.join(run_world(args.stage1), "stage1.jsonl"))
        clips = [r for r in records if r.split == "heldout"][:args.clips]
        path = os.path.join(args.out, "stage1_token_kl.png")
        plot_token_kl(stage1_token_stats(untrained_adapter(run), clips),
                      stage1_token_stats(run, clips), path)
        written.append(path)
    if os.path.exists(os.path.join(args.stage2, "run.json")):
        run = load_run(args.stage2)
        records, _ = read_manifest(os.path.join(run_world(args.stage2), "stage2.jsonl"))
        heldout = [r for r in records if r.split == "heldout"]
        media = list(dict.fromkeys(r.media for r in heldout))[:args.clips * 3]
        pred, true, mask = stage2_valence_arousal(run, [r for r in heldout if r.media in media])
        path = os.path.join(args.out, "stage2_circumplex.png")
        plot_circumplex(pred, true, mask, path)
        written.append(path)
    if os.path.exists(args.ablation):
        path = os.path.join(args.out, "table3_ablation.png")
        plot_ablation(json.load(open(args.ablation)), path)
        written.append(path)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("nothing to plot: no finished runs at the given paths", file=sys.stderr)
    return 0 if written else 1


def run_world(workdir: str) -> str:
    """The synthetic world a run was trained on (run.json)."""
    import json
    import os
    world = json.load(open(os.path.join(workdir, "run.json"))).get("world_dir")
    if not world:
        raise SystemExit(f"{workdir} was not trained on the synthetic world: no held-out clips to plot")
    return world


if __name__ == "__main__":
    sys.exit(main())
