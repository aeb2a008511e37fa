"""Held-out emotion words: ask each held-out clip the open emotion question of each pathway,
read the emotion word of the reply, and compare it with the word of the clip's label for that
pathway. This is what a user sees in `chat`, made a number: the share of replies that are one
well-formed sentence, the share that name the right word, and the chance level of the latter.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Sequence

from vaemotion_jax.data.manifest import PATHWAYS

WORD = re.compile(r"[a-z]+")


def named_word(reply: str | None, vocabulary: Sequence[str]) -> str | None:
    """The first word of `vocabulary` the reply names, or None."""
    if not reply:
        return None
    for word in WORD.findall(reply.lower()):
        if word in vocabulary:
            return word
    return None


def well_formed(reply: str | None) -> bool:
    """One sentence: starts with a capital letter, at least three words, a single full stop at
    the end, no word repeated three times in a row (the look of word salad)."""
    if not reply:
        return False
    text = reply.strip()
    words = text.lower().split()
    if len(words) < 3 or not text[0].isupper() or not text.endswith(".") or "." in text[:-1]:
        return False
    return not any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2))


def chance(truths: Sequence[str]) -> float:
    """The best constant guess's accuracy (the commonest true word's share)."""
    return max(Counter(truths).values()) / len(truths) if truths else float("nan")


def score(replies: Sequence[str | None], truths: Sequence[str], vocabulary: Sequence[str]) -> dict:
    """{"accuracy", "well_formed", "chance", "n"} of one pathway's replies against true words."""
    named = [named_word(r, vocabulary) for r in replies]
    n = len(truths)
    return {"accuracy": sum(a == t for a, t in zip(named, truths)) / n if n else float("nan"),
            "well_formed": sum(well_formed(r) for r in replies) / n if n else float("nan"),
            "chance": chance(truths), "uniform_chance": 1.0 / len(vocabulary), "n": n}


def emotion_word_report(ask: Callable[[Sequence[str], str, str], list[str | None]],
                        clips: Sequence[tuple[str, dict]], questions: dict[str, str],
                        word_of: Callable[[Sequence[float]], str], vocabulary: Sequence[str],
                        paraphrase: str | None = None) -> dict:
    """Per pathway (a, v, av): `score` of the replies `ask(media, pathway, question)` gives to
    `questions[pathway]` about each (media, labels) clip; with `paraphrase`, also the share of
    well-formed non-empty replies to it (joint pathway) and two examples per pathway."""
    media = [m for m, _ in clips]
    out: dict = {}
    for pathway, question in questions.items():
        replies = ask(media, pathway, question)
        truths = [word_of(labels[pathway]) for _, labels in clips]
        out[pathway] = {**score(replies, truths, vocabulary), "question": question,
                        "examples": [r for r in replies[:2]]}
    if paraphrase:
        replies = ask(media, "av", paraphrase)
        out["paraphrase"] = {"question": paraphrase, "examples": replies[:2],
                             "non_empty": sum(bool(r and r.strip()) for r in replies) / len(replies),
                             "well_formed": sum(well_formed(r) for r in replies) / len(replies)}
    return out


def format_report(report: dict) -> str:
    lines = ["Emotion words in free replies on held-out clips (the training question per pathway)",
             "  pathway  well-formed  right word  chance (commonest / uniform)   n"]
    for p in PATHWAYS:
        if p in report:
            r = report[p]
            lines.append(f"  {p:>7}  {100 * r['well_formed']:10.1f}%  {100 * r['accuracy']:9.1f}%"
                         f"  {100 * r['chance']:6.1f}% / {100 * r['uniform_chance']:.1f}%"
                         f"  {r['n']:5d}   e.g. {r['examples'][0]!r}")
    if "paraphrase" in report:
        r = report["paraphrase"]
        lines.append(f"  paraphrase {r['question']!r} (joint): non-empty {100 * r['non_empty']:.0f}%, "
                     f"well-formed {100 * r['well_formed']:.0f}%, e.g. {r['examples'][0]!r}")
    return "\n".join(lines)
