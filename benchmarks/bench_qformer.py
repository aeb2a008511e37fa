"""AcoustEmo's Table 2 on the embedded default: the audio adapters side by side on the utterance
world (embedded/synth/utterances.py), where a brief cue read with the register of the utterance
it sits in decides the emotion.

    python benchmarks/bench_qformer.py [--steps 800] [--seeds 0,1,2] [--clips 2400]
        [--ast-layers 0] [--readout mean|attention]

Rows: the paper's MLP adapter, the Q-Former with the global Q-Former only, with fixed 2 s
windows, and with the utterance windows (the manifest's timestamps), each with the global
Q-Former as in AcoustEmo's full model, and the utterance windows without the global Q-Former
(AcoustEmo's "w/o Global Acoustic Q-Former"); `--rows` runs a subset (names separated by ";").
Each is trained the same way (training/audio_va.py: frozen AST features -> adapter -> Emotion
Supervisor, V-A MSE, same steps, batch, rate and data) on the world's training clips for each
seed (the seed sets initialisation and batch order; the world is fixed) and read out on its
held-out clips: the emotion word of the predicted V-A against the label's, and the V-A CCC, as
mean +- spread (sample std over seeds). `--readout attention` puts a learned attention pool
(training/audio_va.py) between the adapter and the Supervisor, for every row.

The features are frame-level, as AcoustEmo's windows assume: by default the patch embeddings of
the embedded default's frozen tiny AST (`--ast-layers 0`: each patch heard alone, with its
position), since the AST's self-attention layers spread every patch's context over the whole
clip before any window can group it (`--ast-layers -1`: all of them; README has both). The AST
is built in the cache if missing. The first line probes what the features hold; the last line
checks the target: utterance windows beat global-only by more than twice the larger seed spread
of the two rows.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

COMMON = {"adapter.max_utterances": 3}   # the world has at most 3 utterances; 2 s windows: 2
VARIANTS = {  # row -> configs/stage1.py overrides
    "MLP adapter": {"adapter.kind": "mlp"},
    "Q-Former, global only": {"adapter.kind": "qformer", "adapter.utterance_qformer": False},
    "fixed 2 s windows": {"adapter.kind": "qformer", "adapter.windows": "fixed",
                          "adapter.window_seconds": 2.0},
    "utterance windows": {"adapter.kind": "qformer"},
    # AcoustEmo Table 2's "w/o Global Acoustic Q-Former": utterance windows alone
    "utterances, no global": {"adapter.kind": "qformer", "adapter.global_qformer": False},
}
METRICS = ("accuracy", "ccc_valence", "ccc_arousal")


def summarize(values: list[float]) -> tuple[float, float]:
    """(mean, sample std; 0 for one value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def adapter_setup(overrides: dict):
    """(AudioAdapterConfig, Supervisor width, learning rate) of the tiny preset with overrides."""
    from vaemotion_jax.configs import stage1 as stage1_config
    from vaemotion_jax.configs.common import override
    from vaemotion_jax.presets import PRESETS, check
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.training.stage1_run import adapter_config

    c = check(override(stage1_config.get_config(), {**COMMON, **overrides}))
    p = PRESETS[c.model]
    adapter = adapter_config(c, qwen_config.preset(c.qwen_preset))
    return adapter, p["supervisor_hidden"], p["stage2_lr"]


def table(results: dict[str, list[dict]], steps: int, seeds: list[int], chance: float
          ) -> list[str]:
    """The printed table (and the target's check) from each row's per-seed reports."""
    lines = [f"AcoustEmo Table 2 on the utterance world: {steps} steps, seeds {seeds}, held-out "
             f"clips; mean +- spread (sample std over seeds); chance (commonest word) "
             f"{100 * chance:.1f}",
             f"  {'adapter':<24}{'emotion accuracy %':>20}{'CCC valence':>18}{'CCC arousal':>18}"]
    stats = {}
    for name, runs in results.items():
        stats[name] = {m: summarize([r[m] for r in runs]) for m in METRICS}
        acc, v, a = (stats[name][m] for m in METRICS)
        lines.append(f"  {name:<24}{100 * acc[0]:>13.1f} +- {100 * acc[1]:<4.1f}"
                     f"{v[0]:>11.3f} +- {v[1]:.3f}{a[0]:>11.3f} +- {a[1]:.3f}")
    if {"utterance windows", "Q-Former, global only"} <= set(stats):
        (u, su), (g, sg) = (stats[k]["accuracy"] for k in ("utterance windows",
                                                           "Q-Former, global only"))
        gap, bar = u - g, 2 * max(su, sg)
        lines.append(f"target: utterance windows - global only = {100 * gap:+.1f} points vs "
                     f"2 x spread = {100 * bar:.1f}: {'holds' if gap > bar else 'does not hold'}")
    return lines


def default_encoder() -> str:
    """The embedded default's frozen tiny AST (pretrained on the main world; cached)."""
    from vaemotion_jax.presets import PRESETS
    from vaemotion_jax.embedded.synth import default_world_dir
    from vaemotion_jax.embedded.assets import tiny_audio_encoder

    return tiny_audio_encoder(default_world_dir(), PRESETS["tiny"]["audio_max_length"])


def first_layers(ast, params: dict, n: int):
    """(model, params) of the AST cut after its first n layers (n < 0: unchanged)."""
    import dataclasses

    import jax

    if n < 0:
        return ast, params
    if n > ast.config.num_layers:
        raise SystemExit(f"--ast-layers {n}: the AST has {ast.config.num_layers} layers")
    cut = dataclasses.replace(ast.config, num_layers=n)
    return (ast.clone(config=cut),
            {**params, "layers": jax.tree.map(lambda w: w[:n], params["layers"])})


def hearing(features: dict[str, np.ndarray], splits: dict, ast_config, layers: str) -> str:
    """What does the frozen AST hear? Held-out accuracy of a linear probe of the emotion word
    (5 classes) on the AST features averaged over the cue span, its utterance, the whole clip.
    The cue span alone tells the cue, not the register that decides the valence."""
    from vaemotion_jax.processing.fbank import FRAME_SHIFT, SAMPLE_RATE
    from vaemotion_jax.training.audio_va import linear_probe, span_features

    records = splits["train"] + splits["heldout"]
    x = np.concatenate([features["train"], features["heldout"]])
    words = sorted({r.meta["word"] for r in records})
    classes = np.array([words.index(r.meta["word"]) for r in records])
    train = np.arange(len(records)) < len(splits["train"])
    spans = {"cue span": [r.meta["cue_span"] for r in records],
             "its utterance": [r.utterances[r.meta["cue_utterance"]] for r in records],
             "whole clip": [(0.0, ast_config.max_length * FRAME_SHIFT / SAMPLE_RATE)]
                           * len(records)}
    probes = {k: linear_probe(span_features(x, v, ast_config), classes, train)
              for k, v in spans.items()}
    return (f"frozen AST ({layers}), linear probe of the emotion word ({len(words)} classes, "
            "held-out clips) on features averaged over "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in probes.items()))


def main(argv=None) -> list[str]:
    from vaemotion_jax.training import audio_va

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--clips", type=int, default=2400, help="clips in the utterance world")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--world-dir", default="", help="an utterance world ('' = the cached default)")
    p.add_argument("--audio-encoder", default="", help="AST dir ('' = the embedded default's)")
    p.add_argument("--rows", default="", help="row names separated by ';' ('' = all): "
                   + "; ".join(VARIANTS))
    p.add_argument("--ast-layers", type=int, default=0,
                   help="features after the AST's first N layers (0: its patch embeddings, "
                        "which hear each patch alone; -1: all layers)")
    p.add_argument("--readout", choices=audio_va.READOUTS, default="mean",
                   help="how the Supervisor reads the adapter's tokens (training/audio_va.py)")
    p.add_argument("--out", default="runs/bench_qformer.json")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(";")] if args.rows else list(VARIANTS)
    unknown = [r for r in rows if r not in VARIANTS]
    if unknown:
        raise SystemExit(f"--rows: unknown {unknown}; known: {list(VARIANTS)}")
    from vaemotion_jax.checkpoints.ast import load_ast
    from vaemotion_jax.data.manifest import read_manifest
    from vaemotion_jax.data.media import MediaSpec
    from vaemotion_jax.embedded.synth import emotion_word
    from vaemotion_jax.embedded.synth.utterances import (UtteranceWorldConfig,
                                                     default_utterance_world_dir)
    from vaemotion_jax.data.utterances import utterance_spec

    started = time.time()
    world = args.world_dir or default_utterance_world_dir(
        UtteranceWorldConfig(num_clips=args.clips))
    records, problems = read_manifest(os.path.join(world, "utterances.jsonl"))
    if problems:
        raise ValueError(f"{world}/utterances.jsonl: {problems[0]}")
    splits = {s: [r for r in records if r.split == s] for s in ("train", "heldout")}
    if not all(splits.values()):
        raise ValueError(f"{world}: needs train and heldout clips, got "
                         f"{ {s: len(r) for s, r in splits.items()} }")
    encoder = args.audio_encoder or default_encoder()
    ast, ast_params = first_layers(*load_ast(encoder), args.ast_layers)
    media = MediaSpec(num_frames=1, audio_frames=ast.config.max_length)
    seeds = [int(s) for s in args.seeds.split(",")]
    data, features, results = {}, {}, {}
    for name in rows:
        adapter, hidden, lr = adapter_setup(VARIANTS[name])
        spec = utterance_spec(adapter, ast.config)
        key = spec.timestamps_key if spec else ""
        if key not in data:   # decode once per window setting; the AST runs once per split
            data[key] = {s: audio_va.decode_clips(rs, media, spec) for s, rs in splits.items()}
        clips = data[key]
        for s in splits:
            if s not in features:
                features[s] = audio_va.ast_features(ast, ast_params, clips[s]["fbank"])
        model = audio_va.AudioEmotion(adapter, *features["train"].shape[1:], hidden, args.readout)
        for seed in seeds:
            params = audio_va.train(model, features["train"], clips["train"]["labels"],
                                    clips["train"].get("utterance_mask"), steps=args.steps,
                                    batch_size=args.batch_size, lr=lr, seed=seed)
            pred = np.asarray(audio_va.predict(model, params, features["heldout"],
                                               clips["heldout"].get("utterance_mask")))
            report = audio_va.va_report(pred, clips["heldout"]["labels"])
            results.setdefault(name, []).append({"seed": seed, **report})
            print(f"{name}, seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in report.items()),
                  flush=True)
    layers = (f"all {ast.config.num_layers} layers" if args.ast_layers < 0
              else f"first {args.ast_layers} of its layers" if args.ast_layers
              else "patch embeddings")
    lines = [hearing(features, splits, ast.config, layers)]
    words = [emotion_word(r.labels["a"]) for r in splits["heldout"]]
    chance = max(words.count(w) for w in set(words)) / len(words)
    lines += table(results, args.steps, seeds, chance)
    lines.append(f"{len(splits['train'])} training / {len(splits['heldout'])} held-out clips, "
                 f"{time.time() - started:.0f} s in all")
    print("\n".join(lines))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"steps": args.steps, "seeds": seeds, "world": world, "encoder": encoder,
                       "ast_layers": args.ast_layers,
                       "runs": results, "table": lines}, f, indent=2)
    return lines


if __name__ == "__main__":
    main()
