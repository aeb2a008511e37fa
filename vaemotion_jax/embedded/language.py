"""The tiny backbone's language: text-only chats in the synthetic world's words.

The released Qwen2.5-VL is a fluent, instruction-tuned language model before it ever sees our
clips; a tiny model trained only on captions is not (its next-token distribution collapses
onto caption words, and Stage 2's LoRA then has to teach it every other word). So the embedded
backbone also learns from text-only chats drawn from a seed, never from a clip:

* descriptions of random pictures and sounds in the answer styles of the world's
  conversations ("I see ...", "I hear ...", "The music feels ...");
* emotion statements whose word and bins follow the meaning of the words (the valence/arousal
  quadrant), but which picture or sound goes with which emotion is NOT here: each chat's
  emotion is drawn independently of its description (that link is what Stage 2 teaches);
* questions about a description given in the prompt: open questions (several wordings)
  answered in the conversations' style, and multiple-choice items in the benchmark's exact
  format answered with the letter (reading comprehension: the instruction following the real
  backbone brings).
"""
from __future__ import annotations

import numpy as np

from vaemotion_jax.data import synth
from vaemotion_jax.evaluation.prompts import artemo_prompt

CONTEXT = "Here is a description of a clip: "

# Open emotion questions: the world's own wordings plus paraphrases, per subject.
EMOTION_QUESTIONS = {
    "a": ("What emotion does the music convey?", "How does the music make you feel?",
          "What mood does the soundtrack have?", "How does the music feel?"),
    "v": ("What emotion does the video convey?", "What mood does the picture have?",
          "How does the video make you feel?", "What feeling does the video give?"),
    "av": ("How do the picture and the music feel together?",
           "What emotion does the clip convey, picture and music together?",
           "What mood does the whole clip have?", "How does the whole clip feel?"),
}


def random_label(rng: np.random.Generator) -> tuple[float, float]:
    """(valence, arousal) uniform in [-1, 1]^2, rounded as the world's labels are."""
    v, a = rng.uniform(-1.0, 1.0, 2)
    return round(float(v), 4), round(float(a), 4)


def random_factors(rng: np.random.Generator) -> dict:
    return {name: str(values[rng.integers(len(values))]) for name, values in synth.FACTORS.items()}


def emotion_sentence(pathway: str, label, agree: bool | None = None) -> str:
    """The conversations' emotion answer for a pathway (a | v | av)."""
    if pathway == "a":
        return f"The music feels {synth.feel(label)}."
    if pathway == "v":
        return f"The video feels {synth.feel(label)}."
    lead = ("The music matches the picture" if agree else
            "The music sets a different mood from the picture")
    return f"{lead}; together the clip feels {synth.feel(label)}."


def _pick(rng, xs):
    return xs[rng.integers(len(xs))]


def describe_chat(rng) -> list[dict]:
    """A description in the prompt; a content question answered in the conversations' style."""
    pic, snd = random_factors(rng), random_factors(rng)
    kind = _pick(rng, ("a", "v", "av"))
    seen, heard = f"I see {synth.caption(pic)}.", f"I hear {synth.sound_description(snd)}."
    if kind == "a":
        context, question, answer = heard, _pick(rng, synth.SOUND_CONTENT), heard
    elif kind == "v":
        context, question, answer = seen, _pick(rng, synth.PICTURE_CONTENT), seen
    else:
        both = f"I see {synth.caption(pic)}, and I hear {synth.sound_description(snd)}."
        context, question, answer = both, _pick(rng, synth.JOINT_CONTENT), both
    return [{"role": "user", "content": f"{CONTEXT}{context}\n{question}"},
            {"role": "assistant", "content": answer}]


def emotion_chat(rng) -> list[dict]:
    """An emotion statement in the prompt; an emotion question (any wording) about it."""
    pathway = _pick(rng, ("a", "v", "av"))
    label = random_label(rng)
    sentence = emotion_sentence(pathway, label, bool(rng.integers(2)))
    return [{"role": "user", "content": f"{CONTEXT}{sentence}\n{_pick(rng, EMOTION_QUESTIONS[pathway])}"},
            {"role": "assistant", "content": sentence}]


def choice_chat(rng) -> list[dict]:
    """A benchmark-format multiple-choice item about a described clip, answered with the letter.
    The description holds the answer; the kinds are the benchmark's twelve."""
    pic, snd = random_factors(rng), random_factors(rng)
    labels = {"a": random_label(rng), "v": random_label(rng), "av": random_label(rng)}
    spec = synth.ClipSpec(index=int(rng.integers(1 << 30)), picture=pic, sound=snd, radius=0.0,
                          position=(0.0, 0.0), angle=0.0, grey=0, tint=(0, 0, 0), tonic_shift=0,
                          melody_seed=0, split="text")
    item = _pick(rng, synth.benchmark_items(spec, labels, int(rng.integers(1 << 30))))
    facts = {"a": [f"I hear {synth.sound_description(snd)}.", emotion_sentence("a", labels["a"])],
             "v": [f"I see {synth.caption(pic)}.", emotion_sentence("v", labels["v"])],
             "av": [f"I see {synth.caption(pic)}, and I hear {synth.sound_description(snd)}.",
                    emotion_sentence("av", labels["av"], labels["a"][0] * labels["v"][0] >= 0)]}
    context = " ".join(facts[item["modality"]])
    prompt = artemo_prompt(item["question"], item["options"])
    return [{"role": "user", "content": f"{CONTEXT}{context}\n{prompt}"},
            {"role": "assistant", "content": item["answer"]}]


KINDS = {"describe": describe_chat, "emotion": emotion_chat, "choice": choice_chat}


def text_chats(count: int, seed: int, mix: dict[str, float] | None = None) -> list[list[dict]]:
    """`count` chats drawn from `seed`, kinds in proportion to `mix` (default equal)."""
    mix = mix or {k: 1.0 for k in KINDS}
    names = sorted(mix)
    p = np.array([mix[k] for k in names], np.float64)
    rng = np.random.default_rng([seed, 7])
    return [KINDS[names[rng.choice(len(names), p=p / p.sum())]](rng) for _ in range(count)]
