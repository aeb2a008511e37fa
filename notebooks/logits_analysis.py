# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Inside VG-Align and the EmoAdapter
#
# How closely does the audio pathway (student) follow the visual pathway (teacher), token by
# token along a response? And where do the Emotion Supervisor's valence/arousal predictions land
# on the circumplex?
#
# Runs on the embedded default: `python -m vaemotion_jax.train --config=stage1` then
# `--config=stage2` (or set `STAGE1_RUN` / `STAGE2_RUN` to other workdirs).

# %%
import json
import os

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt
import numpy as np

from vaemotion_jax.analysis import stage1_token_stats, stage2_valence_arousal
from vaemotion_jax.data.manifest import read_manifest
from vaemotion_jax.inference import load_run

STAGE1_RUN = os.environ.get("STAGE1_RUN", "runs/stage1")
STAGE2_RUN = os.environ.get("STAGE2_RUN", "runs/stage2")
N_CLIPS = int(os.environ.get("N_CLIPS", "16"))

# %% [markdown]
# ## Stage 1: teacher (video) vs student (audio) along the teacher's response

# %%
run1 = load_run(STAGE1_RUN)
world = json.load(open(os.path.join(STAGE1_RUN, "run.json")))["world_dir"]
records, _ = read_manifest(os.path.join(world, "stage1.jsonl"))
heldout = [r for r in records if r.split == "heldout"][:N_CLIPS]
stats = stage1_token_stats(run1, heldout, k=5)
print(f"{len(stats)} held-out clips; mean KL per token "
      f"{np.mean(np.concatenate([s.kl for s in stats])):.4f}")

# %%
width = max(len(s.kl) for s in stats)
def stacked(field):
    out = np.full((len(stats), width), np.nan)
    for i, s in enumerate(stats):
        out[i, :len(s.kl)] = getattr(s, field)
    return out

fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
for ax, field, title in zip(axes, ("kl", "topk_agree", "teacher_entropy"),
                            ("KL(teacher || student)", "teacher top-1 in student top-5",
                             "entropy (nats)")):
    values = stacked(field).astype(float)
    ax.plot(np.nanmean(values, 0), marker="o", label="teacher" if field == "teacher_entropy" else None)
    if field == "teacher_entropy":
        ax.plot(np.nanmean(stacked("student_entropy"), 0), marker="x", label="student")
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel("response token")
fig.tight_layout()

# %% [markdown]
# The teacher's and the student's top tokens for one clip, side by side:

# %%
s = stats[0]
print(f"clip {s.clip}")
print(f"{'token':>14} | {'KL':>7} | {'teacher top-3':<36} | student top-3")
for tok, kl, t, st in zip(s.tokens, s.kl, s.teacher_top, s.student_top):
    print(f"{tok!r:>14} | {kl:7.4f} | {', '.join(map(repr, t[:3])):<36} | {', '.join(map(repr, st[:3]))}")

# %% [markdown]
# ## Stage 2: valence and arousal on the circumplex

# %%
if os.path.exists(os.path.join(STAGE2_RUN, "run.json")):
    run2 = load_run(STAGE2_RUN)
    world2 = json.load(open(os.path.join(STAGE2_RUN, "run.json")))["world_dir"]
    recs2, _ = read_manifest(os.path.join(world2, "stage2.jsonl"))
    pred, true, mask = stage2_valence_arousal(run2, [r for r in recs2 if r.split == "heldout"][:3 * N_CLIPS])
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for p, (ax, name) in enumerate(zip(axes, ("audio", "video", "audio-visual"))):
        m = mask[:, p]
        ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.7"))
        ax.axhline(0, color="0.85"), ax.axvline(0, color="0.85")
        ax.scatter(true[m, p, 0], true[m, p, 1], marker="o", label="true")
        ax.scatter(pred[m, p, 0], pred[m, p, 1], marker="x", label="predicted")
        for a, b in zip(true[m, p], pred[m, p]):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.8", lw=0.5)
        ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), aspect="equal", title=name,
               xlabel="valence", ylabel="arousal")
        ax.legend(loc="lower right")
    fig.tight_layout()
    print("MSE per pathway:", np.round([np.mean(np.sum((pred[mask[:, p], p] - true[mask[:, p], p]) ** 2, -1))
                                        for p in range(3)], 4))
else:
    print(f"no Stage 2 run in {STAGE2_RUN}: run `python -m vaemotion_jax.train --config=stage2`")
