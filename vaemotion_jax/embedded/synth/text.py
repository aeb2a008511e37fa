"""The world's words: captions, sound descriptions, the benchmark's items and the Stage 2
conversations."""
from __future__ import annotations

import numpy as np

from vaemotion_jax.data.manifest import PATHWAYS
from vaemotion_jax.embedded.synth.factors import (AROUSAL_BINS, COLOURS, EMOTION_WORDS, FACTORS,
                                                  LOUDNESS, MODE, REGISTER, SHAPES, TEMPO, TIMBRE,
                                                  VALENCE_BINS, WORLD_VERSION, ClipSpec, WorldConfig,
                                                  emotion_labels, emotion_word, level_bin)


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
