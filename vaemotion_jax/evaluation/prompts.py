"""Multiple-choice prompts for AIR-Bench Foundation and ArtEmoBenchmark, and loading their items.

AIR-Bench Foundation (official `Inference_Foundation.py`): the instruction, the question and one
"X. text" line per option, joined by "\\n":

    Choose the most suitable answer from options A, B, C, and D to respond the question in next
    line, you may only choose A or B or C or D.        (one line in the prompt)
    {question}
    A. {choice_a}
    B. {choice_b}
    C. {choice_c}
    D. {choice_d}

Items with only two or three choices get only the lines of the choices they have (the instruction
text stays as it is). The official script formats absent choices as "C. None" / "D. None";
`pad_absent=True` reproduces that byte for byte.

ArtEmoBenchmark: the paper does not publish its prompt, only that every model gets "the same
prompts ... and identical context formatting". We use the AIR-Bench layout: for four options the
text is exactly AIR-Bench's; other option counts list their own letters in the same sentence.
The modality (a / v / av) never changes the text: it only decides which media the model gets.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vaemotion_jax.data.manifest import ManifestError, Record, read_manifest, select

BENCHMARKS = ("artemo", "airbench")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
AIRBENCH_INSTRUCTION = ("Choose the most suitable answer from options A, B, C, and D to respond the question "
                        "in next line, you may only choose A or B or C or D.")
AIRBENCH_MAX_OPTIONS = 4
CONTINUATION_STYLES = ("letter", "option")


def option_letters(n_options: int) -> str:
    """The letters of `n_options` options ("ABCD" for 4); 2 to 26 options."""
    if not 2 <= n_options <= len(LETTERS):
        raise ValueError(f"a multiple-choice item needs 2 to {len(LETTERS)} options, got {n_options}")
    return LETTERS[:n_options]


def choice_instruction(n_options: int) -> str:
    """AIR-Bench's instruction sentence for `n_options` letters (AIR-Bench's exact text for 4)."""
    letters = option_letters(n_options)
    listed = f"{letters[0]} and {letters[1]}" if n_options == 2 else f"{', '.join(letters[:-1])}, and {letters[-1]}"
    return (f"Choose the most suitable answer from options {listed} to respond the question in next line, "
            f"you may only choose {' or '.join(letters)}.")


def multiple_choice_prompt(instruction: str, question: str, options: Sequence[str]) -> str:
    """`instruction`, `question` and "A. option" lines, joined by newlines."""
    option_letters(len(options))
    return "\n".join([instruction, question] + [f"{k}. {o}" for k, o in zip(LETTERS, options)])


def airbench_prompt(question: str, options: Sequence[str], pad_absent: bool = False) -> str:
    """AIR-Bench Foundation's official prompt (2 to 4 options; see the module docstring)."""
    if not 2 <= len(options) <= AIRBENCH_MAX_OPTIONS:
        raise ValueError(f"AIR-Bench items have 2 to {AIRBENCH_MAX_OPTIONS} choices, got {len(options)}")
    if pad_absent:
        options = list(options) + ["None"] * (AIRBENCH_MAX_OPTIONS - len(options))
    return multiple_choice_prompt(AIRBENCH_INSTRUCTION, question, options)


def artemo_prompt(question: str, options: Sequence[str]) -> str:
    """Our ArtEmoBenchmark prompt: the AIR-Bench layout, whatever the modality."""
    return multiple_choice_prompt(choice_instruction(len(options)), question, options)


def record_prompt(record: Record, benchmark: str, pad_absent: bool = False) -> str:
    """The prompt of one benchmark record (`pad_absent` only matters for AIR-Bench)."""
    if benchmark == "airbench":
        return airbench_prompt(record.question, record.options, pad_absent)
    if benchmark == "artemo":
        return artemo_prompt(record.question, record.options)
    raise ValueError(f"unknown benchmark {benchmark!r} (expected one of {list(BENCHMARKS)})")


def loglik_continuations(options: Sequence[str], style: str = "letter") -> list[str]:
    """The assistant replies whose log-likelihoods are compared in option-scoring mode.

    "letter": "A", "B", ... (one token each, so length normalisation changes nothing);
    "option": "A. {text}", ... (the option's own words count too).
    """
    letters = option_letters(len(options))
    if style == "letter":
        return list(letters)
    if style == "option":
        return [f"{k}. {o}" for k, o in zip(letters, options)]
    raise ValueError(f"unknown continuation style {style!r} (expected one of {list(CONTINUATION_STYLES)})")


def _item_problem(record: Record, benchmark: str) -> str | None:
    """Why a record cannot be scored as an item of `benchmark`, or None."""
    if record.question is None:
        return "not a multiple-choice item (no question/options/answer)"
    if benchmark == "airbench":
        if len(record.options) > AIRBENCH_MAX_OPTIONS:
            return f"{len(record.options)} options; AIR-Bench items have at most {AIRBENCH_MAX_OPTIONS}"
        if not record.category and not (record.meta or {}).get("task_name"):
            return "no task: `category` (task_name_dataset_name) or meta.task_name is needed"
    elif not record.modality or not record.category:
        return "ArtEmoBenchmark items need `modality` and `category`"
    return None


def load_benchmark(path: str, benchmark: str, split: str | None = None,
                   modality: str | None = None) -> list[Record]:
    """The benchmark items of a manifest, optionally of one split/modality.

    Any malformed line or non-item record raises `ManifestError` naming the file and line: a
    benchmark with silently dropped items would give numbers that cannot be compared.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r} (expected one of {list(BENCHMARKS)})")
    records, problems = read_manifest(path)
    problems += [f"{r.where}: {p}" for r in records if (p := _item_problem(r, benchmark)) is not None]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ManifestError(f"{path}: not a usable {benchmark} benchmark:\n  " + "\n  ".join(problems[:5]) + more)
    records = select(records, split=split, modality=modality)
    if not records:
        raise ManifestError(f"{path}: no items left with split={split!r}, modality={modality!r}")
    return records


ANSWER_STYLES = ("letter", "named")


def choice_answer(options: Sequence[str], letter: str, style: str = "letter") -> str:
    """The reply to a multiple-choice item in a model's answer style: "letter" ("B", as the
    released Qwen2.5-VL answers) or "named" ("It is red (B)", the embedded tiny backbone's:
    it names the option, then its letter, which AIR-Bench's rule reads as B from the
    second-to-last character; see embedded/language.py)."""
    if style == "letter":
        return letter
    if style == "named":
        return f"It is {options[ord(letter) - ord('A')]} ({letter})"
    raise ValueError(f"unknown answer style {style!r} (expected one of {list(ANSWER_STYLES)})")


def as_instruction(record: Record, benchmark: str = "artemo", style: str = "letter") -> Record:
    """A multiple-choice item as a training conversation: the evaluation prompt, answered in the
    model's answer `style` (instruction data in exactly the format the benchmark asks for)."""
    turns = [{"role": "user", "content": record_prompt(record, benchmark)},
             {"role": "assistant", "content": choice_answer(record.options, record.answer, style)}]
    return dataclasses.replace(record, conversations=turns, question=None, options=None,
                               answer=None, category=None)
