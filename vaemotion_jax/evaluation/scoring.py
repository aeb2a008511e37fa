"""Scoring multiple-choice answers: letter extraction, option log-likelihoods, accuracy tallies.

Letter extraction rules (`extract_letter`); a `None` result is a failure, never a guess:

  "airbench"  AIR-Bench's `score_foundation.py`: strip the response and delete its newlines; an
              empty response or the text "None" fails; else its first character if it is one of
              A B C D; else its second-to-last character if it is one of A B C D (meant for
              "The answer is C."); else it fails. Upper case only, and always the letters A-D
              (as in the official script, "C" on a two-option item is a wrong answer, not a
              failure). So "B", "B.", "B) because", "(B)", "The answer is B." all give B; "b",
              "The answer is B" (no full stop), "(B) text" and "I think so." fail; and, as
              officially, "Answer: D" gives A, "Both sound alike." B, "Definitely A." D.
  "strict"    only unambiguous forms: an option letter (upper case, within the item's options)
              standing alone at the start, bare ("B"), in parentheses ("(B)", "(B) text") or
              followed by . ) : or , ("B.", "B) text", "B: text"), optionally after a lead-in
              such as "Answer:", "The answer is" or "The correct option is". Everything else
              fails, including "Both sound alike." and "The answer is b".

Accuracy: AIR-Bench per `task_name_dataset_name`, failures left out of the denominator and
counted (the official rule); ArtEmoBenchmark per (modality, category), failures counted as wrong
answers (so a model cannot gain by refusing) and counted too.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace

from vaemotion_jax.data.manifest import Record
from vaemotion_jax.evaluation.prompts import AIRBENCH_MAX_OPTIONS, LETTERS, option_letters

RULES = ("airbench", "strict")
AIRBENCH_LETTERS = LETTERS[:AIRBENCH_MAX_OPTIONS]
_LEAD_IN = r"(?i:(?:the\s+)?(?:(?:correct|right|best|final)\s+)?(?:answer|option|choice)(?:\s+is)?\s*:?\s*)?"
_STRICT = re.compile(rf"^{_LEAD_IN}(?:\((?P<paren>[A-Z])\)(?=\s|[.:,]|$)|(?P<bare>[A-Z])(?=[.):,]|$))", re.S)


def _airbench_letter(response: str) -> str | None:
    text = response.strip().replace("\n", "")
    if not text or text == "None":
        return None
    if text[0] in AIRBENCH_LETTERS:
        return text[0]
    if len(text) > 1 and text[-2] in AIRBENCH_LETTERS:
        return text[-2]
    return None


def _strict_letter(response: str, letters: str) -> str | None:
    m = _STRICT.match(response.strip())
    letter = m and (m["paren"] or m["bare"])
    return letter if letter and letter in letters else None


def extract_letter(response: str | None, n_options: int, rule: str = "airbench") -> str | None:
    """The option letter a free-text answer names, or None (a failure); rules in the module doc."""
    letters = option_letters(n_options)
    if rule not in RULES:
        raise ValueError(f"unknown letter rule {rule!r} (expected one of {list(RULES)})")
    if rule == "airbench" and n_options > AIRBENCH_MAX_OPTIONS:
        raise ValueError(f"the airbench rule knows only A-D; this item has {n_options} options")
    if response is None:
        return None
    return _airbench_letter(response) if rule == "airbench" else _strict_letter(response, letters)


def option_scores(option_logprobs: Sequence[Sequence[float]], length_normalize: bool = False) -> list[float]:
    """Each option's summed token log-probabilities (divided by its token count if normalising)."""
    option_letters(len(option_logprobs))
    scores = []
    for k, token_logprobs in zip(LETTERS, option_logprobs):
        values = [float(x) for x in token_logprobs]
        if not values:
            raise ValueError(f"option {k} has no tokens to score")
        if any(math.isnan(x) or x > 0 for x in values):
            raise ValueError(f"option {k}: log-probabilities must be <= 0 and not NaN, got {values}")
        total = math.fsum(values)
        scores.append(total / len(values) if length_normalize else total)
    return scores


def best_letter(scores: list[float]) -> str:
    """The letter of the highest-scoring option; ties go to the first."""
    return LETTERS[scores.index(max(scores))]


@dataclass
class Prediction:
    """One scored item: `predicted` is the chosen letter, None when the answer could not be read.

    `response` is the generated text (generation mode), `scores` the options' log-likelihood
    scores (option-scoring mode); `n_options` lets a saved response be re-read with another rule.
    """

    id: str
    category: str | None
    modality: str | None
    task: str | None
    answer: str
    predicted: str | None
    n_options: int | None = None
    response: str | None = None
    scores: list[float] | None = None
    problem: str | None = None     # why the item could not be asked (its media unreadable)
    named: str | None = None       # the letter of the option whose text the response names
                                   # (a diagnostic beside the letter rule; generation only)

    @property
    def failed(self) -> bool:
        return self.predicted is None

    @property
    def correct(self) -> bool:
        return self.predicted is not None and self.predicted == self.answer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Prediction":
        names = {f.name for f in fields(cls)}
        unknown, missing = set(d) - names, {"id", "answer", "predicted"} - set(d)
        if unknown or missing:
            raise ValueError(f"prediction {d.get('id')!r}: unknown fields {sorted(unknown)}, "
                             f"missing fields {sorted(missing)}")
        return cls(**{"category": None, "modality": None, "task": None, **d})

    def reread(self, rule: str) -> "Prediction":
        """This prediction with the letter extracted again from its response by `rule`."""
        if self.response is None or self.n_options is None:
            raise ValueError(f"prediction {self.id!r} has no response text and option count to re-read")
        return replace(self, predicted=extract_letter(self.response, self.n_options, rule))


def record_task(record: Record) -> str | None:
    """An AIR-Bench record's `task_name_dataset_name` (from meta if the importer kept it, else category)."""
    meta = record.meta or {}
    if meta.get("task_name") and meta.get("dataset_name"):
        return f"{meta['task_name']}_{meta['dataset_name']}"
    return record.category


def make_prediction(record: Record, benchmark: str, response: str | None = None,
                    option_logprobs: Sequence[Sequence[float]] | None = None, rule: str = "airbench",
                    length_normalize: bool = False) -> Prediction:
    """The `Prediction` of one record from a generated `response` or from its options' log-probs."""
    if (response is None) == (option_logprobs is None):
        raise ValueError(f"{record.id}: give exactly one of response and option_logprobs")
    n = len(record.options)
    if option_logprobs is not None:
        if len(option_logprobs) != n:
            raise ValueError(f"{record.id}: {len(option_logprobs)} option scores for {n} options")
        scores = option_scores(option_logprobs, length_normalize)
        predicted = best_letter(scores)
    else:
        scores, predicted = None, extract_letter(response, n, rule)
    task = record_task(record) if benchmark == "airbench" else None
    return Prediction(id=record.id, category=record.category, modality=record.modality, task=task,
                      answer=record.answer, predicted=predicted, n_options=n, response=response,
                      scores=scores, named=None if response is None else named_option(response, record.options))


def named_option(response: str, options: Sequence[str]) -> str | None:
    """The letter of the option whose whole text the response contains (the longest such
    option; None if none): what the answer says, whatever letter it gives."""
    text = response.lower()
    hits = [(len(o), LETTERS[i]) for i, o in enumerate(options) if o and o.lower() in text]
    return max(hits)[1] if hits else None


def unanswered_prediction(record: Record, benchmark: str, problem: str) -> Prediction:
    """The `Prediction` of an item that could not be asked (e.g. its media file is unreadable):
    a failure, counted by the benchmark's own rule like an unreadable answer."""
    task = record_task(record) if benchmark == "airbench" else None
    return Prediction(id=record.id, category=record.category, modality=record.modality, task=task,
                      answer=record.answer, predicted=None, n_options=len(record.options),
                      problem=problem)


@dataclass(frozen=True)
class Tally:
    """Counts of one group of predictions; `scored` = total - failures."""

    total: int
    correct: int
    failures: int

    @property
    def scored(self) -> int:
        return self.total - self.failures

    def accuracy(self, failures_are_wrong: bool) -> float | None:
        """Percent correct of all items (failures wrong) or of the scored ones; None if none."""
        denominator = self.total if failures_are_wrong else self.scored
        return 100.0 * self.correct / denominator if denominator else None

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.total + other.total, self.correct + other.correct, self.failures + other.failures)

    def as_dict(self, failures_are_wrong: bool) -> dict:
        return {"total": self.total, "scored": self.scored, "correct": self.correct, "failures": self.failures,
                "accuracy": self.accuracy(failures_are_wrong)}


def tally(predictions: Iterable[Prediction]) -> Tally:
    """The counts of a group of predictions."""
    preds = list(predictions)
    return Tally(len(preds), sum(p.correct for p in preds), sum(p.failed for p in preds))


def tallies_by(predictions: Iterable[Prediction], key) -> dict:
    """{key(p): Tally}, keys sorted."""
    groups: dict = {}
    for p in predictions:
        groups.setdefault(key(p), []).append(p)
    return {k: tally(groups[k]) for k in sorted(groups)}


def airbench_accuracy(predictions: Iterable[Prediction]) -> dict[str, dict]:
    """{task_name_dataset_name: counts and accuracy}, failures out of the denominator (official)."""
    preds = list(predictions)
    missing = [p.id for p in preds if not p.task]
    if missing:
        raise ValueError(f"AIR-Bench predictions without a task: {missing[:5]}")
    return {k: t.as_dict(failures_are_wrong=False) for k, t in tallies_by(preds, lambda p: p.task).items()}


def artemo_accuracy(predictions: Iterable[Prediction]) -> dict[str, dict[str, dict]]:
    """{modality: {category: counts and accuracy}}, failures counted as wrong answers."""
    preds = list(predictions)
    missing = [p.id for p in preds if not p.modality or not p.category]
    if missing:
        raise ValueError(f"ArtEmoBenchmark predictions without modality or category: {missing[:5]}")
    out: dict[str, dict[str, dict]] = {}
    for (modality, category), t in tallies_by(preds, lambda p: (p.modality, p.category)).items():
        out.setdefault(modality, {})[category] = t.as_dict(failures_are_wrong=True)
    return out
