"""The world's factors, how they map to picture and sound, the clips' emotion labels and
words, and the sampling of clip specs."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np



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
