"""The tiny backbone's language: text-only chats in the synthetic world's words.

The released Qwen2.5-VL is a fluent, instruction-tuned language model before it ever sees our
clips; a tiny model trained only on captions is not (its next-token distribution collapses
onto caption words, and Stage 2's LoRA then has to teach it every other word). So the embedded
backbone also learns from text-only chats drawn from a seed, never from a clip:

* descriptions of random pictures and sounds in the answer styles of the world's
  conversations ("I see ...", "I hear ...", "The music feels ...");
* emotion statements whose word and bins follow the meaning of the words (the valence/arousal
  quadrant), but which picture or sound goes with which emotion is NOT here: each chat's
  emotion is drawn independently of its description (that link is what Stage 2 teaches); the
  questions come in more wordings than the world's (`EMOTION_FRAMES`), never the held-out one;
* questions about a description given in the prompt: open questions (several wordings)
  answered in the conversations' style, and multiple-choice items in the benchmark's exact
  format answered by naming the option and its letter, "It is red (B)" (reading comprehension:
  the instruction following the real backbone brings; backbone.py says how far the tiny model
  gets with the letter).
"""
from __future__ import annotations

import numpy as np

from vaemotion_jax.embedded import synth
from vaemotion_jax.data.manifest import PATHWAYS
from vaemotion_jax.evaluation.prompts import artemo_prompt, choice_answer

CONTEXT = "Here is a description of a clip: "

def random_label(rng: np.random.Generator) -> tuple[float, float]:
    """(valence, arousal) uniform in [-1, 1]^2, rounded as the world's labels are."""
    v, a = rng.uniform(-1.0, 1.0, 2)
    return round(float(v), 4), round(float(a), 4)


def random_factors(rng: np.random.Generator) -> dict:
    return {name: str(values[rng.integers(len(values))]) for name, values in synth.FACTORS.items()}


def _pick(rng, xs):
    return xs[rng.integers(len(xs))]


def describe_chat(rng) -> list[dict]:
    """A description in the prompt; a content question answered in the conversations' style."""
    pathway = _pick(rng, PATHWAYS)
    answer = synth.content_answer(pathway, random_factors(rng), random_factors(rng))
    question = _pick(rng, synth.CONTENT_QUESTIONS[pathway])
    return [{"role": "user", "content": f"{CONTEXT}{answer}\n{question}"},
            {"role": "assistant", "content": answer}]


# More wordings of the emotion question than the world's conversations use, as an instruction-
# tuned model has met many: the question's intent, not its exact words, decides the answer.
# None says "scene", so the held-out paraphrase ("What emotion does this scene convey?") stays
# unseen. (With only the world's three wordings per pathway, one backbone answered the
# paraphrase with an emotion sentence 100% of the time and the next with a caption 100%.)
EMOTION_FRAMES = ("What emotion does {} convey?", "What mood does {} have?", "How does {} feel?",
                  "What feeling does {} give?", "Which emotion is in {}?",
                  "What emotion do you get from {}?", "Tell me the emotion of {}.")
EMOTION_SUBJECTS = {"a": ("the music", "the soundtrack", "the melody", "the sound"),
                    "v": ("the video", "the picture", "the moving picture"),
                    "av": ("the clip", "this clip", "the whole clip", "the picture and the music")}


def emotion_question(rng, pathway: str) -> str:
    """One of the world's emotion questions for the pathway, or (half the time) a wording from
    `EMOTION_FRAMES` x `EMOTION_SUBJECTS`."""
    if rng.random() < 0.5:
        return _pick(rng, synth.EMOTION_QUESTIONS[pathway])
    return _pick(rng, EMOTION_FRAMES).format(_pick(rng, EMOTION_SUBJECTS[pathway]))


def emotion_chat(rng) -> list[dict]:
    """An emotion statement in the prompt; an emotion question (any wording) about it."""
    pathway = _pick(rng, PATHWAYS)
    sentence = synth.emotion_answer(pathway, {p: random_label(rng) for p in PATHWAYS})
    question = emotion_question(rng, pathway)
    return [{"role": "user", "content": f"{CONTEXT}{sentence}\n{question}"},
            {"role": "assistant", "content": sentence}]


def _random_item(rng) -> tuple[dict, dict, dict, dict]:
    """(item, picture, sound, labels): one of the benchmark's twelve kinds about random factors."""
    pic, snd = random_factors(rng), random_factors(rng)
    labels = {"a": random_label(rng), "v": random_label(rng), "av": random_label(rng)}
    spec = synth.ClipSpec(index=int(rng.integers(1 << 30)), picture=pic, sound=snd, radius=0.0,
                          position=(0.0, 0.0), angle=0.0, grey=0, tint=(0, 0, 0), tonic_shift=0,
                          melody_seed=0, split="text")
    item = _pick(rng, synth.benchmark_items(spec, labels, int(rng.integers(1 << 30))))
    return item, pic, snd, labels


def choice_chat(rng) -> list[dict]:
    """A benchmark-format multiple-choice item about a described clip, answered in the named
    style. The description holds the answer; the kinds are the benchmark's twelve."""
    item, pic, snd, labels = _random_item(rng)
    m = item["modality"]
    context = f"{synth.content_answer(m, pic, snd)} {synth.emotion_answer(m, labels)}"
    prompt = artemo_prompt(item["question"], item["options"])
    return [{"role": "user", "content": f"{CONTEXT}{context}\n{prompt}"},
            {"role": "assistant", "content": choice_answer(item["options"], item["answer"], "named")}]


def matching_choice_chat(rng) -> list[dict]:
    """A benchmark-format item whose context is just the right option's text: the letter
    binding drill at the benchmark's own layout, with its multi-word options."""
    item = _random_item(rng)[0]
    prompt = artemo_prompt(item["question"], item["options"])
    right = item["options"][ord(item["answer"]) - ord("A")]
    return [{"role": "user", "content": f"{CONTEXT}{right}\n{prompt}"},
            {"role": "assistant", "content": choice_answer(item["options"], item["answer"], "named")}]


SINGLE_WORD_KINDS = ("What shape is the object?", "What colour is the object?",
                     "Which timbre does the melody have?", "What emotion does the music convey?",
                     "What emotion does the video convey?", "Is the background dark or bright?")


def format_drill_chat(rng) -> list[dict]:
    """The letter-binding drill in the benchmark's exact layout (instruction, question, four
    options) with one-word options, the context being the right option's word."""
    question = _pick(rng, SINGLE_WORD_KINDS)
    pool = {"What shape is the object?": synth.SHAPES, "What colour is the object?": synth.COLOURS,
            "Which timbre does the melody have?": tuple(synth.TIMBRE.values()),
            "Is the background dark or bright?": ("dark", "bright", "striped", "checkered")}.get(
        question, synth.EMOTION_WORDS)
    options = [pool[i] for i in rng.permutation(len(pool))[:4]]
    letter = "ABCD"[int(rng.integers(4))]
    right = options[ord(letter) - ord("A")]
    return [{"role": "user", "content": f"{CONTEXT}{right}\n{artemo_prompt(question, options)}"},
            {"role": "assistant", "content": choice_answer(options, letter, "named")}]


def short_choice_chat(rng) -> list[dict]:
    """A short multiple-choice drill: one named thing and four single-phrase options, answered
    in the named style (the quickest way for a tiny model to learn to bind letters)."""
    factor = _pick(rng, list(synth.FACTORS))
    values = list(synth.FACTORS[factor])
    order = rng.permutation(len(values))[:4] if len(values) >= 4 else rng.permutation(len(values))
    options = [values[i] for i in order]
    correct = int(rng.integers(len(options)))
    letters = "ABCD"[:len(options)]
    lines = "\n".join(f"{k}. {o}" for k, o in zip(letters, options))
    return [{"role": "user", "content": f"{CONTEXT}{options[correct]}\nWhich is it?\n{lines}"},
            {"role": "assistant", "content": choice_answer(options, letters[correct], "named")}]


KINDS = {"describe": describe_chat, "emotion": emotion_chat, "choice": choice_chat,
         "matching_choice": matching_choice_chat, "short_choice": short_choice_chat,
         "format_drill": format_drill_chat}


def text_chats(count: int, seed: int, mix: dict[str, float] | None = None) -> list[list[dict]]:
    """`count` chats drawn from `seed`, kinds in proportion to `mix` (default equal)."""
    mix = mix or {k: 1.0 for k in KINDS}
    names = sorted(mix)
    p = np.array([mix[k] for k in names], np.float64)
    rng = np.random.default_rng([seed, 7])
    return [KINDS[names[rng.choice(len(names), p=p / p.sum())]](rng) for _ in range(count)]
