"""A synthetic audio-visual world: real mp4 clips whose picture and sound share latent factors.

Each clip shows one object bouncing over a plain background, with a melody as its soundtrack.
Four discrete factors drive both senses (the full mapping is in `world.json` and
docs/synthetic_world.md):

  shape      circle | square | triangle | star      <-> timbre    sine | square | sawtooth | bell
  colour     red | blue | green | yellow             <-> register  low | middle | high | very high
  motion     still | slow | fast                     <-> tempo     slow | moderate | fast
  brightness dark | bright                           <-> mode      minor and quiet | major and loud

In a "matched" clip the sound is made from the picture's factors, so hearing can be learned from
seeing. In a `mismatch` fraction of clips the sound's factors are drawn independently. Valence and
arousal for `a`, `v` and `av` are computed from the factors (`emotion_labels`); `av` follows a
rule that is not the average of `a` and `v`: agreeing moods reinforce each other, and when the
music's and the picture's valence disagree the music sets the mood and the conflict adds tension.

`python -m vaemotion_jax.data.synth --out DIR [--num-clips N --seed S --workers W]` writes
clips/*.mp4 (H.264 + AAC), stage1.jsonl, stage2.jsonl, captions.jsonl, benchmark.jsonl, mc_train.jsonl and
world.json. Output is a pure function of the seed and the options (the same bytes twice).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from vaemotion_jax.data.manifest import PATHWAYS

WORLD_VERSION = 6  # 3: x264 without mbtree, so the bytes are reproducible; 4: larger objects;
                   # 5: mc_train.jsonl; 6: single-turn Stage 2 chats with question pools

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "blue", "green", "yellow")
MOTIONS = ("still", "slow", "fast")
BRIGHTNESS = ("dark", "bright")
FACTORS = {"shape": SHAPES, "colour": COLOURS, "motion": MOTIONS, "brightness": BRIGHTNESS}

# What each factor value looks and sounds like.
TIMBRE = {"circle": "sine", "square": "square", "triangle": "sawtooth", "star": "bell"}
REGISTER = {"red": "low", "blue": "middle", "green": "high", "yellow": "very high"}
TONIC_HZ = {"red": 130.81, "blue": 261.63, "green": 523.25, "yellow": 1046.50}  # C3 C4 C5 C6
TEMPO = {"still": "slow", "slow": "moderate", "fast": "fast"}
NOTES_PER_SECOND = {"still": 1.0, "slow": 2.0, "fast": 5.0}
SPEED_PX_PER_S = {"still": 0.0, "slow": 12.0, "fast": 48.0}
MODE = {"dark": "minor", "bright": "major"}
LOUDNESS = {"dark": "quiet", "bright": "loud"}
PEAK = {"dark": 0.2, "bright": 0.6}
SCALE = {"minor": (0, 2, 3, 5, 7, 8, 10, 12), "major": (0, 2, 4, 5, 7, 9, 11, 12)}
RGB = {"red": (220, 40, 40), "blue": (50, 80, 230), "green": (40, 190, 60), "yellow": (235, 215, 40)}
BACKGROUND = {"dark": (25, 45), "bright": (190, 225)}  # grey level range

# Emotion: each factor value contributes (valence, arousal); a pathway's label is a weighted sum
# over the four factors with weights that sum to 1, so labels stay in [-1, 1].
CONTRIBUTION = {
    "shape": {"circle": (0.5, -0.5), "square": (-0.5, -0.5), "triangle": (-0.5, 0.5), "star": (0.5, 0.5)},
    "colour": {"red": (-0.5, 0.5), "blue": (-0.5, -0.5), "green": (0.5, -0.5), "yellow": (0.5, 0.5)},
    "motion": {"still": (0.0, -1.0), "slow": (0.0, 0.0), "fast": (0.0, 1.0)},
    "brightness": {"dark": (-1.0, -0.5), "bright": (1.0, 0.5)},
}
WEIGHTS = {  # pathway -> (valence weights, arousal weights) over (shape, colour, motion, brightness)
    "v": ((0.2, 0.3, 0.0, 0.5), (0.15, 0.25, 0.5, 0.1)),
    "a": ((0.15, 0.15, 0.0, 0.7), (0.15, 0.1, 0.55, 0.2)),
}
AV_RULE = ("congruent (valence(a) * valence(v) >= 0): av = clip(0.75 * (a + v)), i.e. 1.5 x the mean, "
           "for valence and arousal; otherwise valence(av) = 0.8 * valence(a) (the music sets the "
           "mood) and arousal(av) = clip(max(arousal(a), arousal(v)) + 0.3) (the conflict adds tension)")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides the world's bytes (besides WORLD_VERSION)."""

    num_clips: int = 500  # 100 held out x 12 questions = 1200 items, the size of ArtEmoBenchmark
    seed: int = 0
    width: int = 112
    height: int = 112
    fps: int = 8
    seconds: float = 3.0
    sample_rate: int = 16000
    mismatch: float = 0.3
    heldout: float = 0.2


@dataclass(frozen=True)
class ClipSpec:
    """One clip's factors and nuisances: everything needed to render it."""

    index: int
    picture: dict
    sound: dict
    radius: float
    position: tuple[float, float]
    angle: float
    grey: int
    tint: tuple[int, int, int]
    tonic_shift: int
    melody_seed: int
    split: str

    @property
    def matched(self) -> bool:
        return self.picture == self.sound

    @property
    def id(self) -> str:
        return f"synth-{self.index:05d}"

    @property
    def file(self) -> str:
        return f"clips/{self.id}.mp4"


# ---------------------------------------------------------------- emotion labels

def pathway_label(factors: dict, pathway: str) -> tuple[float, float]:
    """(valence, arousal) of the picture ("v") or the sound ("a") from its factors."""
    wv, wa = WEIGHTS[pathway]
    contribs = [CONTRIBUTION[name][factors[name]] for name in FACTORS]
    valence = sum(w * c[0] for w, c in zip(wv, contribs))
    arousal = sum(w * c[1] for w, c in zip(wa, contribs))
    return round(valence, 4), round(arousal, 4)


def joint_label(a: tuple[float, float], v: tuple[float, float]) -> tuple[float, float]:
    """(valence, arousal) of picture and sound together (see AV_RULE)."""
    clip = lambda x: round(float(np.clip(x, -1.0, 1.0)), 4)
    if a[0] * v[0] >= 0:
        return clip(0.75 * (a[0] + v[0])), clip(0.75 * (a[1] + v[1]))
    return clip(0.8 * a[0]), clip(max(a[1], v[1]) + 0.3)


def emotion_labels(picture: dict, sound: dict) -> dict[str, list[float]]:
    """Labels for the three pathways, as in a manifest: {"a": [v, a], "v": [...], "av": [...]}."""
    a, v = pathway_label(sound, "a"), pathway_label(picture, "v")
    return {"a": list(a), "v": list(v), "av": list(joint_label(a, v))}


EMOTION_WORDS = ("joyful", "calm", "tense", "sad", "neutral")
VALENCE_BINS = ("very negative", "somewhat negative", "somewhat positive", "very positive")
AROUSAL_BINS = ("very calm", "fairly calm", "fairly energetic", "very energetic")


def emotion_word(label) -> str:
    """neutral if both |valence| and |arousal| < 0.2, else the quadrant's word."""
    valence, arousal = label
    if abs(valence) < 0.2 and abs(arousal) < 0.2:
        return "neutral"
    if valence >= 0:
        return "joyful" if arousal >= 0 else "calm"
    return "tense" if arousal >= 0 else "sad"


def level_bin(x: float, words: tuple[str, ...]) -> str:
    """One of four words for x in [-1, -0.5), [-0.5, 0), [0, 0.5), [0.5, 1]."""
    return words[min(3, int(np.floor((x + 1.0) / 0.5)))]


# ---------------------------------------------------------------- sampling the world

def _draw_factors(rng: np.random.Generator) -> dict:
    return {name: str(values[rng.integers(len(values))]) for name, values in FACTORS.items()}


def sample_specs(cfg: WorldConfig) -> list[ClipSpec]:
    """Every clip's factors, nuisances and split, drawn from the seed."""
    rng = np.random.default_rng([cfg.seed, WORLD_VERSION])
    heldout = set(rng.permutation(cfg.num_clips)[: int(round(cfg.heldout * cfg.num_clips))].tolist())
    specs = []
    for i in range(cfg.num_clips):
        r = np.random.default_rng([cfg.seed, WORLD_VERSION, i])
        picture = _draw_factors(r)
        sound = _draw_factors(r) if r.random() < cfg.mismatch else dict(picture)
        radius = float(r.uniform(24, 34))
        lo_x, hi_x, lo_y, hi_y = radius, cfg.width - radius, radius, cfg.height - radius
        specs.append(ClipSpec(
            index=i, picture=picture, sound=sound, radius=radius,
            position=(float(r.uniform(lo_x, hi_x)), float(r.uniform(lo_y, hi_y))),
            angle=float(r.uniform(0, 2 * np.pi)),
            grey=int(r.integers(*BACKGROUND[picture["brightness"]])),
            tint=tuple(int(x) for x in r.integers(-12, 13, size=3)),
            tonic_shift=int(r.integers(-2, 3)),
            melody_seed=int(r.integers(2**31)),
            split="heldout" if i in heldout else "train",
        ))
    return specs


# ---------------------------------------------------------------- rendering

def _bounce(x0: float, velocity: float, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions (T,) of a point moving at `velocity` between walls lo and hi, reflecting."""
    span = hi - lo
    u = np.mod(x0 - lo + velocity * t, 2 * span)
    return lo + np.where(u <= span, u, 2 * span - u)


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # a little larger than r: its area is the smallest of the four
        angles = np.deg2rad([-90, 30, 150])
        return [(cx + 1.15 * r * np.cos(a), cy + 1.15 * r * np.sin(a)) for a in angles]
    if shape == "star":
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return [(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles)]
    raise ValueError(f"unknown shape {shape!r}")


def render_frames(spec: ClipSpec, cfg: WorldConfig) -> np.ndarray:
    """The clip's pictures -> (fps * seconds, height, width, 3) uint8."""
    from PIL import Image, ImageDraw

    n = int(round(cfg.fps * cfg.seconds))
    t = np.arange(n) / cfg.fps
    speed = SPEED_PX_PER_S[spec.picture["motion"]]
    r = spec.radius
    xs = _bounce(spec.position[0], speed * np.cos(spec.angle), t, r, cfg.width - r)
    ys = _bounce(spec.position[1], speed * np.sin(spec.angle), t, r, cfg.height - r)
    background = tuple(int(np.clip(spec.grey + d, 0, 255)) for d in spec.tint)
    dim = 0.75 if spec.picture["brightness"] == "dark" else 1.0
    colour = tuple(int(c * dim) for c in RGB[spec.picture["colour"]])
    frames = np.empty((n, cfg.height, cfg.width, 3), np.uint8)
    for k in range(n):
        image = Image.new("RGB", (cfg.width, cfg.height), background)
        draw = ImageDraw.Draw(image)
        if spec.picture["shape"] == "circle":
            draw.ellipse([xs[k] - r, ys[k] - r, xs[k] + r, ys[k] + r], fill=colour)
        else:
            draw.polygon(_shape_points(spec.picture["shape"], xs[k], ys[k], r), fill=colour)
        frames[k] = np.asarray(image)
    return frames


def _tone(timbre: str, freq: float, t: np.ndarray, nyquist: float) -> np.ndarray:
    """One note's waveform (len(t),) with unit-ish peak, band-limited below `nyquist`."""
    if timbre == "bell":
        partials = ((1.0, 1.0, 3.0), (2.76, 0.6, 5.0), (5.40, 0.4, 8.0), (8.93, 0.25, 12.0))
        return sum(a * np.exp(-d * t) * np.sin(2 * np.pi * m * freq * t)
                   for m, a, d in partials if m * freq < nyquist) / 2.25
    if timbre == "sine":
        harmonics = [(1, 1.0)]
    else:
        step = 2 if timbre == "square" else 1
        harmonics = [(h, 1.0 / h) for h in range(1, int(nyquist / freq) + 1, step)]
    wave = sum(a * np.sin(2 * np.pi * h * freq * t) for h, a in harmonics)
    return wave / sum(a for _, a in harmonics[:3])


def render_audio(spec: ClipSpec, cfg: WorldConfig) -> np.ndarray:
    """The clip's soundtrack -> (seconds * sample_rate,) float32 mono in [-1, 1]."""
    sr = cfg.sample_rate
    total = int(round(cfg.seconds * sr))
    sound = spec.sound
    rng = np.random.default_rng(spec.melody_seed)
    scale = SCALE[MODE[sound["brightness"]]]
    tonic = TONIC_HZ[sound["colour"]] * 2 ** (spec.tonic_shift / 12)
    note_len = int(round(sr / NOTES_PER_SECOND[sound["motion"]]))
    triad = (0, 2, 4)  # scale positions of root, third and fifth: they make the mode audible
    out = np.zeros(total, np.float64)
    for start in range(0, total, note_len):
        n = min(note_len, total - start)
        degree = triad[rng.integers(3)] if rng.random() < 0.7 else int(rng.integers(len(scale)))
        t = np.arange(n) / sr
        attack, release = np.minimum(1.0, t / 0.01), np.minimum(1.0, (n - 1 - np.arange(n)) / (0.02 * sr))
        envelope = attack * np.exp(-1.5 * t) * release
        pitch = tonic * 2 ** (scale[degree] / 12)
        out[start:start + n] += envelope * _tone(TIMBRE[sound["shape"]], pitch, t, sr / 2)
    t = np.arange(total) / sr
    chord = sum(np.sin(2 * np.pi * tonic * 2 ** (scale[d] / 12) * t) for d in triad) / 3
    out = 0.75 * out + 0.25 * chord * np.minimum(1.0, t / 0.05)
    out *= PEAK[sound["brightness"]] / max(1e-9, np.abs(out).max())
    return out.astype(np.float32)


def write_mp4(path: str, frames: np.ndarray, fps: int, audio: np.ndarray, sample_rate: int) -> None:
    """Writes frames (T, H, W, 3) uint8 and audio (N,) float32 as H.264 + AAC, bit-exactly."""
    import av

    tmp = f"{path}.tmp{os.getpid()}"
    with av.open(tmp, "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        # x264's macroblock-tree rate control (mbtree) made the bytes depend on what the process
        # had encoded before (an uninitialised read, we believe); without it they are reproducible.
        video = container.add_stream("libx264", rate=fps, options={
            "crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"})
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        chunk = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, 0
        container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    os.replace(tmp, path)


def render_clip(args: tuple[ClipSpec, WorldConfig, str]) -> str:
    """Renders and writes one clip under `out_dir`; returns its path (a worker task)."""
    spec, cfg, out_dir = args
    path = os.path.join(out_dir, spec.file)
    write_mp4(path, render_frames(spec, cfg), cfg.fps, render_audio(spec, cfg), cfg.sample_rate)
    return path


# ---------------------------------------------------------------- text: captions, QA, benchmark

def caption(picture: dict) -> str:
    """e.g. "a fast red circle on a bright background"."""
    p = picture
    return f"a {p['motion']} {p['colour']} {p['shape']} on a {p['brightness']} background"


def sound_description(sound: dict) -> str:
    """e.g. "a fast high bell melody in a major key, played loud"."""
    return (f"a {TEMPO[sound['motion']]} {REGISTER[sound['colour']]} {TIMBRE[sound['shape']]} melody "
            f"in a {MODE[sound['brightness']]} key, played {LOUDNESS[sound['brightness']]}")


def feel(label) -> str:
    return (f"{emotion_word(label)}: {level_bin(label[0], VALENCE_BINS)} and "
            f"{level_bin(label[1], AROUSAL_BINS)}")


# Specific content questions: (question, factor, answer words per value, extra distractors).
SOUND_QUESTIONS = {
    "shape": ("Which timbre does the melody have?", TIMBRE, ()),
    "colour": ("In which register is the melody played?", REGISTER, ()),
    "motion": ("What is the tempo of the music?", TEMPO, ("extremely fast",)),
    "brightness": ("Which mode and loudness does the music have?",
                   {"dark": "minor key, quiet", "bright": "major key, loud"},
                   ("minor key, loud", "major key, quiet")),
}
PICTURE_QUESTIONS = {
    "shape": ("What shape is the object?", {s: s for s in SHAPES}, ()),
    "colour": ("What colour is the object?", {c: c for c in COLOURS}, ()),
    "motion": ("How does the object move?",
               {"still": "it stays still", "slow": "it drifts slowly", "fast": "it moves fast"},
               ("it spins in place",)),
    "brightness": ("Is the background dark or bright?", {"dark": "dark", "bright": "bright"},
                   ("striped", "checkered")),
}


def _choice(rng, correct: str, pool) -> tuple[list[str], str]:
    """Four options (correct + 3 distractors from `pool`) in a random order, and the answer letter."""
    distractors = [p for p in dict.fromkeys(pool) if p != correct]
    picked = [distractors[i] for i in rng.choice(len(distractors), size=3, replace=False)]
    options = picked + [correct]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    return options, chr(ord("A") + options.index(correct))


def _specific(rng, factors: dict, questions: dict) -> tuple[str, list[str], str]:
    name = str(rng.choice(list(questions)))
    question, words, extra = questions[name]
    options, answer = _choice(rng, words[factors[name]], list(words.values()) + list(extra))
    return question, options, answer


def _overall(rng, factors: dict, describe) -> tuple[list[str], str]:
    """Correct description + three that each change a different factor."""
    changed = rng.choice(list(FACTORS), size=3, replace=False)
    pool = []
    for name in changed:
        other = [v for v in FACTORS[name] if v != factors[name]]
        pool.append(describe({**factors, name: str(other[rng.integers(len(other))])}))
    return _choice(rng, describe(factors), pool)


def _emotion_question(rng, label, what: str) -> tuple[str, list[str], str]:
    """Specific emotion: how positive or how energetic `what` is, in four bins."""
    if rng.random() < 0.5:
        return (f"How positive or negative is the mood of {what}?", list(VALENCE_BINS),
                chr(ord("A") + VALENCE_BINS.index(level_bin(label[0], VALENCE_BINS))))
    return (f"How energetic is {what}?", list(AROUSAL_BINS),
            chr(ord("A") + AROUSAL_BINS.index(level_bin(label[1], AROUSAL_BINS))))


def benchmark_items(spec: ClipSpec, labels: dict, seed: int) -> list[dict]:
    """The 12 multiple-choice items of one clip (ArtEmoBenchmark layout), as manifest dicts."""
    rng = np.random.default_rng([seed, WORLD_VERSION, spec.index, 1])
    items = []

    def add(modality, category, question, options, answer):
        items.append({"id": f"{spec.id}-{modality}-{category}", "media": spec.file, "question": question,
                      "options": options, "answer": answer, "category": category, "modality": modality,
                      "labels": labels, "split": spec.split})

    pic, snd = spec.picture, spec.sound
    add("a", "OC", "Which description fits the audio best?", *_overall(rng, snd, sound_description))
    add("a", "OE", "What emotion does the music convey?",
        *_choice(rng, emotion_word(labels["a"]), EMOTION_WORDS))
    add("a", "SC", *_specific(rng, snd, SOUND_QUESTIONS))
    add("a", "SE", *_emotion_question(rng, labels["a"], "the music"))
    add("v", "OC", "Which description fits the video best?", *_overall(rng, pic, caption))
    add("v", "OE", "What emotion does the video convey?",
        *_choice(rng, emotion_word(labels["v"]), EMOTION_WORDS))
    add("v", "SC", *_specific(rng, pic, PICTURE_QUESTIONS))
    add("v", "SE", *_emotion_question(rng, labels["v"], "the video"))
    q, o, a = _specific(rng, snd, SOUND_QUESTIONS)
    add("av", "Sp-A", f"Listen to the soundtrack. {q}", o, a)
    pair = lambda p, s: f"a {p['colour']} {p['shape']} with a {TIMBRE[s['shape']]} melody"
    correct = pair(pic, snd)
    pool = {pair({**pic, "colour": c}, snd) for c in COLOURS} | {pair({**pic, "shape": s}, snd) for s in SHAPES}
    pool |= {pair(pic, {**snd, "shape": s}) for s in SHAPES}
    add("av", "Sp-AV", "Which pairing of picture and sound is in this clip?",
        *_choice(rng, correct, sorted(pool)))
    q, o, a = _specific(rng, pic, PICTURE_QUESTIONS)
    add("av", "Sp-V", f"Look at the picture. {q}", o, a)
    add("av", "OE", "What emotion does the clip convey, picture and music together?",
        *_choice(rng, emotion_word(labels["av"]), EMOTION_WORDS))
    return items


SOUND_CONTENT = ("What do you hear?", "Describe the music.", "What does the soundtrack sound like?")
PICTURE_CONTENT = ("What do you see?", "Describe the video.", "What is shown in the video?")
JOINT_CONTENT = ("Describe the picture and the sound.", "What do you see and hear?")


# Open emotion questions per pathway; the first is the one the metrics ask. "What emotion does
# this scene convey?" is kept out of every training text: it is the held-out paraphrase.
EMOTION_QUESTIONS = {
    "a": ("What emotion does the music convey?", "How does the music make you feel?",
          "What mood does the soundtrack have?"),
    "v": ("What emotion does the video convey?", "What mood does the picture have?",
          "How does the video make you feel?"),
    "av": ("How do the picture and the music feel together?",
           "What emotion does the clip convey, picture and music together?",
           "What mood does the whole clip have?"),
}
HELDOUT_EMOTION_QUESTION = "What emotion does this scene convey?"


def content_answer(pathway: str, picture: dict, sound: dict) -> str:
    """The conversations' answer to a content question about a pathway."""
    if pathway == "a":
        return f"I hear {sound_description(sound)}."
    if pathway == "v":
        return f"I see {caption(picture)}."
    return f"I see {caption(picture)}, and I hear {sound_description(sound)}."


def emotion_answer(pathway: str, labels: dict) -> str:
    """The conversations' answer to an emotion question about a pathway (a | v | av)."""
    if pathway == "a":
        return f"The music feels {feel(labels['a'])}."
    if pathway == "v":
        return f"The video feels {feel(labels['v'])}."
    agree = ("The music matches the picture" if labels["a"][0] * labels["v"][0] >= 0
             else "The music sets a different mood from the picture")
    return f"{agree}; together the clip feels {feel(labels['av'])}."


CONTENT_QUESTIONS = {"a": SOUND_CONTENT, "v": PICTURE_CONTENT, "av": JOINT_CONTENT}


def conversations(spec: ClipSpec, labels: dict, seed: int) -> list[dict]:
    """Stage 2 records of one clip: for each pathway (a, v, av) a content question and an
    emotion question, each a single-turn chat (the form a user asks in), wordings drawn from
    the pools."""
    rng = np.random.default_rng([seed, WORLD_VERSION, spec.index, 2])
    pick = lambda xs: xs[rng.integers(len(xs))]
    out = []
    for m in PATHWAYS:
        for kind, question, answer in (
                ("content", pick(CONTENT_QUESTIONS[m]), content_answer(m, spec.picture, spec.sound)),
                ("emotion", pick(EMOTION_QUESTIONS[m]), emotion_answer(m, labels))):
            out.append({"id": f"{spec.id}-{m}-{kind}", "media": spec.file, "modality": m,
                        "labels": labels, "split": spec.split,
                        "conversations": [{"role": "user", "content": question},
                                          {"role": "assistant", "content": answer}]})
    return out


def manifests(specs: list[ClipSpec], cfg: WorldConfig) -> dict[str, list[dict]]:
    """The four manifests' lines (paths relative to the world folder)."""
    out = {"stage1": [], "stage2": [], "captions": [], "benchmark": [], "mc_train": []}
    for spec in specs:
        labels = emotion_labels(spec.picture, spec.sound)
        meta = {"picture": spec.picture, "sound": spec.sound, "matched": spec.matched}
        if spec.matched:  # Stage 1 distils the picture into the sound: only valid when they match
            out["stage1"].append({"id": spec.id, "media": spec.file, "split": spec.split, "meta": meta})
        out["stage2"] += [{**r, "meta": meta} for r in conversations(spec, labels, cfg.seed)]
        text = caption(spec.picture)
        out["captions"].append({"id": spec.id, "media": spec.file, "caption": text, "split": spec.split,
                                "conversations": [{"role": "user", "content": "Describe the video."},
                                                  {"role": "assistant", "content": text}], "meta": meta})
        items = [{**item, "meta": meta} for item in benchmark_items(spec, labels, cfg.seed)]
        # held-out clips make the benchmark; training clips the same kinds of questions as
        # instruction data (answering multiple choice with a letter)
        out["benchmark" if spec.split == "heldout" else "mc_train"] += items
    return out


def world_description(cfg: WorldConfig) -> dict:
    """The content of world.json: config, factor -> feature mapping and label formulas."""
    return {
        "version": WORLD_VERSION,
        "config": asdict(cfg),
        "factors": {k: list(v) for k, v in FACTORS.items()},
        "picture": {"shape": "object outline", "colour": {k: list(v) for k, v in RGB.items()},
                    "motion_px_per_s": SPEED_PX_PER_S, "background_grey": BACKGROUND,
                    "dark_object_dimming": 0.75},
        "sound": {"timbre": TIMBRE, "register": REGISTER, "tonic_hz": TONIC_HZ,
                  "tempo": TEMPO, "notes_per_second": NOTES_PER_SECOND, "mode": MODE,
                  "loudness": LOUDNESS, "peak": PEAK, "scales": SCALE},
        "labels": {"contribution": CONTRIBUTION, "weights": WEIGHTS,
                   "pathway_formula": "label(p) = (sum_f w_val[p][f] * c[f][0], sum_f w_ar[p][f] * c[f][1]); "
                                      "a uses the sound's factors, v the picture's",
                   "av_rule": AV_RULE, "range": [-1.0, 1.0]},
        "words": {"emotion": "neutral if |valence| and |arousal| < 0.2, else joyful (+,+), calm (+,-), "
                             "tense (-,+), sad (-,-)",
                  "valence_bins": VALENCE_BINS, "arousal_bins": AROUSAL_BINS,
                  "bin_edges": [-1.0, -0.5, 0.0, 0.5, 1.0]},
        "files": {"stage1": "matched clips only (picture and sound from the same factors), no labels",
                  "stage2": "six single-turn chats per clip: a content and an emotion question for "
                            "each pathway (a, v, av)",
                  "captions": "one per clip: the picture's caption",
                  "benchmark": "12 items per held-out clip: a/v OC OE SC SE, av Sp-A Sp-AV Sp-V OE",
                  "mc_train": "the same 12 kinds of items for each training clip (instruction data)"},
    }


# ---------------------------------------------------------------- generating a world folder

def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate(out_dir: str, cfg: WorldConfig = WorldConfig(), workers: int = 2) -> dict[str, int]:
    """Writes the world into `out_dir` (world.json last, as the completion marker); returns counts."""
    from vaemotion_jax.data.manifest import read_manifest

    os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
    specs = sample_specs(cfg)
    tasks = [(spec, cfg, out_dir) for spec in specs]
    started = time.time()
    if workers <= 1:
        results = map(render_clip, tasks)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap(render_clip, tasks, chunksize=4)
    try:
        for done, _ in enumerate(results, 1):
            if done % 50 == 0 or done == len(tasks):
                _log(f"synth: {done}/{len(tasks)} clips ({time.time() - started:.1f} s)")
    finally:
        if workers > 1:
            pool.close()
            pool.join()
    counts = {}
    for name, lines in manifests(specs, cfg).items():
        path = os.path.join(out_dir, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(line) + "\n" for line in lines))
        _, problems = read_manifest(path)
        if problems:  # our own output must be valid: fail loudly, naming the first problem
            raise RuntimeError(f"synth wrote an invalid manifest: {problems[0]}")
        counts[name] = len(lines)
    with open(os.path.join(out_dir, "world.json"), "w", encoding="utf-8") as f:
        json.dump(world_description(cfg), f, indent=1)
    return counts


def cache_dir() -> str:
    """$VAEMOTION_CACHE, else ~/.cache/vaemotion_jax."""
    return os.environ.get("VAEMOTION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vaemotion_jax")


def default_world_dir(cfg: WorldConfig = WorldConfig(), workers: int = 2) -> str:
    """The world's folder in the cache (`<cache>/synth/v<version>-n<clips>-seed<seed>-<config hash>`),
    generated on first use.

    Generation goes to a temporary folder that is renamed into place, so an interrupted or
    concurrent run never leaves a half-written world behind. The parallel generation runs in a
    child `python -m vaemotion_jax.data.synth`, so this is safe to call from any script or
    notebook (spawned workers never re-import the caller's `__main__`).
    """
    digest = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
    final = os.path.join(cache_dir(), "synth", f"v{WORLD_VERSION}-n{cfg.num_clips}-seed{cfg.seed}-{digest}")
    if os.path.exists(os.path.join(final, "world.json")):
        return final
    tmp = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _log(f"synth: generating the synthetic world into {final} (first use)")
    cli = {"num_clips", "seed", "mismatch", "heldout", "seconds"}
    if workers > 1 and all(getattr(cfg, f.name) == f.default for f in fields(WorldConfig)
                           if f.name not in cli):
        subprocess.run([sys.executable, "-m", "vaemotion_jax.data.synth", "--out", tmp,
                        "--workers", str(workers)] +
                       [x for name in sorted(cli) for x in (f"--{name.replace('_', '-')}",
                                                            str(getattr(cfg, name)))],
                       check=True)
    else:
        generate(tmp, cfg, 1)
    return publish_world(tmp, final)


def publish_world(tmp: str, final: str) -> str:
    """Renames a finished world directory into place and returns it; if another process
    finished first, its world is kept and ours discarded."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not os.path.exists(os.path.join(final, "world.json")):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.data.synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write the world into")
    p.add_argument("--num-clips", type=int, default=WorldConfig.num_clips)
    p.add_argument("--seed", type=int, default=WorldConfig.seed)
    p.add_argument("--mismatch", type=float, default=WorldConfig.mismatch,
                   help="fraction of clips whose sound has its own factors")
    p.add_argument("--heldout", type=float, default=WorldConfig.heldout,
                   help="fraction of clips held out for the benchmark")
    p.add_argument("--seconds", type=float, default=WorldConfig.seconds)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    cfg = WorldConfig(num_clips=args.num_clips, seed=args.seed, mismatch=args.mismatch,
                      heldout=args.heldout, seconds=args.seconds)
    started = time.time()
    counts = generate(args.out, cfg, args.workers)
    print(f"wrote {args.out} in {time.time() - started:.1f} s: "
          + ", ".join(f"{k}.jsonl {v} lines" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
