"""A synthetic world that needs utterance windows (AcoustEmo's Table 2 on the embedded default).

Each clip is 2-3 "utterances" (short neutral melodic phrases, each in its own register: one high,
one low, any other in the middle) with silences between them, and the manifest gives their
timestamps (`utterances`). Inside the high or the low utterance, set off by short pauses, sits a
brief cue (0.3 s, always at the clip's middle pitch); the other of the two holds its twin, a
plain note at the same pitch set off the same way. The cue says how intense the clip is; the
register of the utterance it sits in says which way:

  cue      what it sounds like                                  in the high / low utterance
  none     a plain note                                         neutral (0, 0) either way
  tremor   a fast trill (24 pieces/s alternating a whole tone)  joyful (0.6, 0.6) / tense (-0.6, 0.6)
  chime    a bell strike                                        calm (0.6, -0.6) / sad (-0.6, -0.6)

So the label binds two things heard at different times inside one utterance. Every clip has one
high and one low utterance, each with a paused span, so the clip as a whole (which registers,
how many notes of each, which cue) tells the cue but not the valence: an adapter has to read
the cue together with the utterance around it. That is AcoustEmo's case for utterance windows
(a cue means what its speaker's turn makes it mean); a world where the cue alone decides
(version 1 of this world) is solved as well by a global Q-Former, which attends to the cue
wherever it is (README, "What we tried").

Everything is made of what the tiny AST was pretrained to hear in the main world (register,
timbre, note rate; embedded/audio_pretrain.py). The pauses (0.2 s, longer than one AST patch's
0.175 s of sound) keep any single AST patch from hearing a cue and its utterance's notes at
once. Nuisances per clip: the timbre (sine | square | sawtooth), the key (C4 +- 3 semitones),
the notes, the order of the registers and the placement of the utterances and spans. The
picture is a plain grey frame: the clip is to be heard.

`python -m vaemotion_jax.embedded.synth.utterances --out DIR [--num-clips N --seed S]` writes
clips/*.mp4 (H.264 + AAC, through synth's writer), utterances.jsonl (id, media, split,
utterances, labels {"a": [v, a]}, meta: the cue, its utterance, the spans, the registers) and
world.json. Output is a pure function of the options. `default_utterance_world_dir()` makes it
once in the cache.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from vaemotion_jax.embedded.cache import cache_path, publish
from vaemotion_jax.embedded.synth.factors import emotion_word
from vaemotion_jax.embedded.synth.render import tone, write_mp4

UTTERANCE_WORLD_VERSION = 2

CUES = ("none", "tremor", "chime")
REGISTERS = {"high": 2.0, "mid": 1.0, "low": 0.5}   # register -> factor on the clip's key
TWIN_REGISTER = {"high": "low", "low": "high"}      # the cue's register -> its twin's
LABELS = {  # (cue, register of its utterance) -> (valence, arousal) of the clip
    ("none", "high"): (0.0, 0.0), ("none", "low"): (0.0, 0.0),
    ("tremor", "high"): (0.6, 0.6), ("tremor", "low"): (-0.6, 0.6),
    ("chime", "high"): (0.6, -0.6), ("chime", "low"): (-0.6, -0.6)}
CLASSES = (("none", None), ("tremor", "high"), ("tremor", "low"), ("chime", "low"),
           ("chime", "high"))   # the five emotion words, balanced; none's register is drawn
TIMBRES = ("sine", "square", "sawtooth")
TONIC_HZ = 261.63                      # C4
PHRASE_DEGREES = (0, 2, 4, 7, 9)       # major pentatonic: a phrase with no mood of its own
NOTE_SECONDS = 0.25
TRILL_PIECES_PER_S = 24
PAUSE_SECONDS = 0.2                    # silence on both sides of the cue
MARGIN_SECONDS = 0.05                  # utterance notes before the first pause and after the last
PEAK = 0.4
GREY = 128


@dataclass(frozen=True)
class UtteranceWorldConfig:
    """Everything that decides the utterance world's bytes (besides the version)."""

    num_clips: int = 600
    seed: int = 0
    seconds: float = 3.0        # one window of the tiny AST (300 fbank frames)
    min_utterances: int = 2
    max_utterances: int = 3
    cue_seconds: float = 0.3    # 3 AST time patches
    heldout: float = 0.25
    sample_rate: int = 16000
    size: int = 32              # the grey picture's width and height
    fps: int = 8


@dataclass(frozen=True)
class UtteranceClip:
    """One clip: its utterances (seconds) and their registers, the cue and where it sits, and
    the nuisances."""

    index: int
    utterances: tuple[tuple[float, float], ...]
    registers: tuple[str, ...]          # one per utterance: "high" | "mid" | "low"
    cue: str
    cue_utterance: int                  # index into utterances: the high or the low one
    cue_span: tuple[float, float]       # seconds, inside utterances[cue_utterance]
    twin_span: tuple[float, float]      # a plain note like the cue's, in the other of high/low
    timbre: str
    tonic_hz: float
    melody_seed: int
    split: str

    @property
    def id(self) -> str:
        return f"utter-{self.index:05d}"

    @property
    def file(self) -> str:
        return f"clips/{self.id}.mp4"

    @property
    def label(self) -> tuple[float, float]:
        return LABELS[(self.cue, self.registers[self.cue_utterance])]

    @property
    def twin_utterance(self) -> int:
        """The other of the high and the low utterance (it holds twin_span)."""
        return self.registers.index(TWIN_REGISTER[self.registers[self.cue_utterance]])


# ---------------------------------------------------------------- sampling

def shortest_cue_utterance(cue_seconds: float) -> float:
    """Seconds an utterance needs to hold a cue with its pauses and margins (and 10 ms for the
    rounding of its ends)."""
    return cue_seconds + 2 * (PAUSE_SECONDS + MARGIN_SECONDS) + 0.01


def place_utterances(rng: np.random.Generator, seconds: float, count: int, shortest: float
                     ) -> list[tuple[float, float]]:
    """`count` utterances in time order, one in each of `count` equal slots of [0, seconds):
    at least `shortest` and 55-85% of its slot long, with silence before and after it
    (rounded to 10 ms)."""
    slot = seconds / count
    if shortest > 0.85 * slot:
        raise ValueError(f"{count} utterances in {seconds} s leave {0.85 * slot:.2f} s each, "
                         f"shorter than the {shortest:.2f} s a cue needs")
    out = []
    for i in range(count):
        length = rng.uniform(max(0.55 * slot, shortest), 0.85 * slot)
        start = rng.uniform(i * slot + 0.1 * slot, (i + 1) * slot - 0.05 * slot - length)
        out.append((round(start, 2), round(start + length, 2)))
    return out


def place_cue(rng: np.random.Generator, utterance: tuple[float, float], seconds: float
              ) -> tuple[float, float]:
    """A cue span of `seconds` inside the utterance, with a pause and a margin of notes on both
    sides (its start on the 10 ms grid)."""
    room = PAUSE_SECONDS + MARGIN_SECONDS
    lo, hi = utterance[0] + room, utterance[1] - room - seconds
    grid_lo, grid_hi = np.ceil(round(lo * 100, 6)) / 100, np.floor(round(hi * 100, 6)) / 100
    if grid_hi < grid_lo:
        raise ValueError(f"utterance {utterance} too short for a {seconds} s cue with "
                         f"{room} s of pause and notes on both sides")
    start = float(np.clip(round(rng.uniform(lo, max(lo, hi)), 2), grid_lo, grid_hi))
    return start, round(start + seconds, 2)


def sample_clips(cfg: UtteranceWorldConfig) -> list[UtteranceClip]:
    """Every clip, drawn from the seed; the five emotion words are balanced (as equal counts
    as num_clips allows) and the held-out split is a random `heldout` fraction."""
    rng = np.random.default_rng([cfg.seed, UTTERANCE_WORLD_VERSION])
    classes = [CLASSES[i % len(CLASSES)] for i in rng.permutation(cfg.num_clips)]
    held = int(round(cfg.heldout * cfg.num_clips))
    heldout = set(rng.permutation(cfg.num_clips)[:held].tolist())
    shortest = shortest_cue_utterance(cfg.cue_seconds)
    clips = []
    for i, (cue, register) in enumerate(classes):
        r = np.random.default_rng([cfg.seed, UTTERANCE_WORLD_VERSION, i])
        count = int(r.integers(cfg.min_utterances, cfg.max_utterances + 1))
        utterances = place_utterances(r, cfg.seconds, count, shortest)
        registers = tuple(str(x) for x in r.permutation(["high", "low"] + ["mid"] * (count - 2)))
        register = register or str(("high", "low")[r.integers(2)])
        k = registers.index(register)
        twin = registers.index(TWIN_REGISTER[register])
        clips.append(UtteranceClip(
            index=i, utterances=tuple(utterances), registers=registers, cue=cue,
            cue_utterance=k, cue_span=place_cue(r, utterances[k], cfg.cue_seconds),
            twin_span=place_cue(r, utterances[twin], cfg.cue_seconds),
            timbre=str(TIMBRES[r.integers(len(TIMBRES))]),
            tonic_hz=float(TONIC_HZ * 2 ** (int(r.integers(-3, 4)) / 12)),
            melody_seed=int(r.integers(2**31)), split="heldout" if i in heldout else "train"))
    return clips


# ---------------------------------------------------------------- rendering

def _envelope(n: int, sample_rate: int) -> np.ndarray:
    """(n,) note envelope: 10 ms attack, gentle decay, 20 ms release."""
    t = np.arange(n) / sample_rate
    return (np.minimum(1.0, t / 0.01) * np.exp(-1.5 * t)
            * np.minimum(1.0, (n - 1 - np.arange(n)) / (0.02 * sample_rate)))


def _note(timbre: str, freq: float, n: int, sample_rate: int) -> np.ndarray:
    """(n,) one enveloped note."""
    t = np.arange(n) / sample_rate
    return _envelope(n, sample_rate) * tone(timbre, freq, t, sample_rate / 2)


def render_cue(cue: str, timbre: str, pitch: float, n: int, sample_rate: int) -> np.ndarray:
    """(n,) the cue span's sound at `pitch` Hz (see the module table)."""
    if cue == "none":
        return _note(timbre, pitch, n, sample_rate)
    if cue == "chime":
        return _note("bell", pitch, n, sample_rate)
    if cue == "tremor":
        piece = int(round(sample_rate / TRILL_PIECES_PER_S))
        return np.concatenate([
            _note(timbre, pitch * 2 ** (2 * (k % 2) / 12), min(piece, n - s), sample_rate)
            for k, s in enumerate(range(0, n, piece))])
    raise ValueError(f"unknown cue {cue!r}; known: {list(CUES)}")


def _notes(start: float, end: float) -> list[tuple[float, float, str]]:
    """[start, end) cut into equal plain notes of about NOTE_SECONDS (none if empty)."""
    if end <= start:
        return []
    n = max(1, int(round((end - start) / NOTE_SECONDS)))
    edges = np.linspace(start, end, n + 1)
    return [(float(a), float(b), "note") for a, b in zip(edges, edges[1:])]


def utterance_segments(clip: UtteranceClip, k: int) -> list[tuple[float, float, str]]:
    """Utterance k as (start, end, what) sounds in seconds, what = "note" or a cue: the cue in
    its utterance, a plain one ("none") in its twin's; both have PAUSE_SECONDS of silence on
    both sides."""
    start, end = clip.utterances[k]
    if k not in (clip.cue_utterance, clip.twin_utterance):
        return _notes(start, end)
    (a, b), cue = (clip.cue_span, clip.cue) if k == clip.cue_utterance else (clip.twin_span, "none")
    return (_notes(start, a - PAUSE_SECONDS) + [(a, b, cue)]
            + _notes(b + PAUSE_SECONDS, end))


def render_audio(clip: UtteranceClip, cfg: UtteranceWorldConfig) -> np.ndarray:
    """The clip's sound -> (seconds * sample_rate,) float32: each utterance a phrase of notes
    on random phrase degrees in its register, the cue at the key's tonic, silence elsewhere."""
    sr = cfg.sample_rate
    rng = np.random.default_rng(clip.melody_seed)
    out = np.zeros(int(round(cfg.seconds * sr)), np.float64)
    for k, register in enumerate(clip.registers):
        for a, b, what in utterance_segments(clip, k):
            i, j = int(round(a * sr)), int(round(b * sr))
            degree = PHRASE_DEGREES[rng.integers(len(PHRASE_DEGREES))]
            if what == "note":
                pitch = clip.tonic_hz * REGISTERS[register] * 2 ** (degree / 12)
                out[i:j] += _note(clip.timbre, pitch, j - i, sr)
            else:
                out[i:j] += render_cue(what, clip.timbre, clip.tonic_hz, j - i, sr)
    return (out * PEAK / max(1e-9, np.abs(out).max())).astype(np.float32)


def render_clip(clip: UtteranceClip, cfg: UtteranceWorldConfig, out_dir: str) -> str:
    """Writes one clip (grey picture, rendered sound) under out_dir; returns its path."""
    frames = np.full((int(round(cfg.fps * cfg.seconds)), cfg.size, cfg.size, 3), GREY, np.uint8)
    path = os.path.join(out_dir, clip.file)
    write_mp4(path, frames, cfg.fps, render_audio(clip, cfg), cfg.sample_rate)
    return path


# ---------------------------------------------------------------- manifest and folder

def manifest_line(clip: UtteranceClip) -> dict:
    """The clip's line in utterances.jsonl."""
    return {"id": clip.id, "media": clip.file, "split": clip.split, "modality": "a",
            "utterances": [list(u) for u in clip.utterances], "labels": {"a": list(clip.label)},
            "meta": {"cue": clip.cue, "cue_utterance": clip.cue_utterance,
                     "cue_span": list(clip.cue_span), "twin_utterance": clip.twin_utterance,
                     "twin_span": list(clip.twin_span), "registers": list(clip.registers),
                     "word": emotion_word(clip.label), "timbre": clip.timbre,
                     "tonic_hz": round(clip.tonic_hz, 2)}}


def world_description(cfg: UtteranceWorldConfig) -> dict:
    """The content of world.json."""
    return {"version": UTTERANCE_WORLD_VERSION, "config": asdict(cfg),
            "labels": {f"{c} in the {r} utterance": {"label": list(v), "word": emotion_word(v)}
                       for (c, r), v in LABELS.items()},
            "phrase": {"timbres": TIMBRES, "tonic_hz": TONIC_HZ, "key_shift_semitones": [-3, 3],
                       "registers": REGISTERS, "degrees": PHRASE_DEGREES,
                       "note_seconds": NOTE_SECONDS, "pause_seconds": PAUSE_SECONDS,
                       "peak": PEAK},
            "files": {"utterances": "one line per clip: utterances (timestamps, seconds), "
                                    "labels.a from the cue and its utterance's register, "
                                    "meta.cue / cue_utterance / cue_span / twin_utterance / "
                                    "twin_span / registers"}}


def generate(out_dir: str, cfg: UtteranceWorldConfig = UtteranceWorldConfig()) -> int:
    """Writes the world into out_dir (world.json last, as the completion marker); returns the
    number of clips."""
    from vaemotion_jax.data.manifest import read_manifest

    os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
    clips = sample_clips(cfg)
    for clip in clips:
        render_clip(clip, cfg, out_dir)
    path = os.path.join(out_dir, "utterances.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(manifest_line(c)) + "\n" for c in clips))
    _, problems = read_manifest(path)
    if problems:  # our own output must be valid: fail loudly, naming the first problem
        raise RuntimeError(f"synth_utterances wrote an invalid manifest: {problems[0]}")
    with open(os.path.join(out_dir, "world.json"), "w", encoding="utf-8") as f:
        json.dump(world_description(cfg), f, indent=1)
    return len(clips)


def default_utterance_world_dir(cfg: UtteranceWorldConfig = UtteranceWorldConfig()) -> str:
    """The world's folder in the cache (`<cache>/synth_utterances/v<version>-n<clips>-seed<seed>-
    <config hash>`), generated on first use into a temporary folder renamed into place."""
    digest = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
    final = cache_path("synth_utterances",
                       f"v{UTTERANCE_WORLD_VERSION}-n{cfg.num_clips}-seed{cfg.seed}-{digest}")
    if os.path.exists(os.path.join(final, "world.json")):
        return final
    tmp = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"synth_utterances: generating {cfg.num_clips} clips into {final} (first use)",
          file=sys.stderr, flush=True)
    generate(tmp, cfg)
    return publish(tmp, final, "world.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.embedded.synth.utterances",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write the world into")
    p.add_argument("--num-clips", type=int, default=UtteranceWorldConfig.num_clips)
    p.add_argument("--seed", type=int, default=UtteranceWorldConfig.seed)
    args = p.parse_args(argv)
    started = time.time()
    n = generate(args.out, UtteranceWorldConfig(num_clips=args.num_clips, seed=args.seed))
    print(f"wrote {args.out} in {time.time() - started:.1f} s: {n} clips, utterances.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
