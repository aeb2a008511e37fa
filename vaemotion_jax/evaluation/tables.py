"""The paper's result tables: Table 2 (ArtEmoBenchmark), Table 3 (its ablations) and Table 1
(AIR-Bench Foundation).

Table 2 (one row per model): A-only OC OE SC SE | V-only OC OE SC SE | AV Sp-A Sp-AV Sp-V OE |
averages A V AV All. A group average is the mean of its four category accuracies and needs all
four (a model without that modality prints "-"). All is the mean of the three group averages and
needs all three. With four categories per group this equals the mean of the 12 category
accuracies; the paper's rows fit both (e.g. "Ours": mean(89, 77, 70, 72) = 77.0,
mean(100, 74, 87, 90) = 87.75, mean(60, 53, 42, 59) = 53.5, All = 72.75 either way, printed
72.8). Values are rounded half up to one decimal, which reproduces every printed average of the
paper's Table 2 except Emotion-LLaMA's AV (37.25 printed as 37.2; Qwen2.5-Omni's 75.25 is
printed 75.3, so the paper does not round half to even either).

Table 3 (one row per ablation of training/stage2.py's ABLATIONS) has Table 2's layout. The
adapter-only row (the Stage 1 model, no LoRA or EmoAdapter) has no joint pathway in the paper, so
its AV block, and hence All, prints "-" (the paper: A 29.5, V 72.3, AV -, All -).

Table 1 (one column per model): the 19 Foundation tasks in the paper's row order, each mapped to
speech / sound / music as AIR-Bench groups them (`AIRBENCH_TASKS`; pass your own tuple to
override). A task's accuracy pools its source-dataset subsets (e.g. Speaker_Gender_Recognition
= common_voice_13_en + meld), failures left out as in AIR-Bench. A group's accuracy is the mean of
its tasks present; Average is the mean of the three group accuracies: this reproduces the
Average AIR-Bench published for Qwen-Audio 54.5, Next-GPT 31.5, BLSP 31.4 and SpeechGPT 30.0
(the plain mean of the 19 tasks gives 54.6, 31.8, 32.2, 30.9). The paper's own columns (Ours
35.17, Ours-feature-align 31.59, Qwen2-Audio 60.02) match neither definition; `task_mean` (mean
of the tasks) and `micro` (all scored items pooled) are reported too.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from vaemotion_jax.evaluation.scoring import Prediction, Tally, airbench_accuracy, artemo_accuracy, tally

ARTEMO_LAYOUT = (  # (modality, average name, header, categories)
    ("a", "A", "Audio (A-only)", ("OC", "OE", "SC", "SE")),
    ("v", "V", "Video (V-only)", ("OC", "OE", "SC", "SE")),
    ("av", "AV", "Audio-Visual (AV, joint)", ("Sp-A", "Sp-AV", "Sp-V", "OE")),
)
ARTEMO_AVERAGES = ("A", "V", "AV", "All")


@dataclass(frozen=True)
class AirBenchTask:
    """A Foundation task: `name` as in Foundation_meta.json's task_name, the paper's row `label`."""

    name: str
    label: str
    group: str


AIRBENCH_TASKS = (  # the paper's Table 1 row order; names keep the dataset's own spellings
    AirBenchTask("Speech_Grounding", "Speech Grounding", "speech"),
    AirBenchTask("Spoken_Language_Identification", "Spoken Language Identification", "speech"),
    AirBenchTask("Speaker_Gender_Recognition", "Speaker Gender Recognition", "speech"),
    AirBenchTask("Speaker_Emotion_Recontion", "Emotion Recognition", "speech"),
    AirBenchTask("Speaker_Age_Prediction", "Speaker Age Prediction", "speech"),
    AirBenchTask("Speech_Entity_Reconition", "Speech Entity Recognition", "speech"),
    AirBenchTask("Speaker_Intent_Classification", "Intent Classification", "speech"),
    AirBenchTask("Speaker_Number_Verification", "Speaker Number Verification", "speech"),
    AirBenchTask("Synthesized_Voice_Detection", "Synthesized Voice Detection", "speech"),
    AirBenchTask("Audio_Grounding", "Audio Grounding", "sound"),
    AirBenchTask("vocal_sound_classification", "Vocal Sound Classification", "sound"),
    AirBenchTask("Acoustic_Scene_Classification", "Acoustic Scene Classification", "sound"),
    AirBenchTask("Sound_AQA", "Sound Question Answering", "sound"),
    AirBenchTask("Music_Instruments_Classfication", "Music Instruments Classification", "music"),
    AirBenchTask("Music_Genre_Recognition", "Music Genre Classification", "music"),
    AirBenchTask("Music_Midi_Pitch_Analysis", "Music Note Analysis (Pitch)", "music"),
    AirBenchTask("Music_Midi_Velocity_Analysis", "Music Note Analysis (Velocity)", "music"),
    AirBenchTask("Music_AQA", "Music Question Answering", "music"),
    AirBenchTask("Music_Mood_Recognition", "Music Emotion Detection", "music"),
)


def format_pct(value: float | None, digits: int = 1) -> str:
    """A percentage rounded half up to `digits` decimals; "-" for None."""
    if value is None:
        return "-"
    return str(Decimal(repr(round(value, 9))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def mean_of_all(values: Sequence[float | None]) -> float | None:
    """The mean, or None if there are no values or any is None."""
    if not values or any(v is None for v in values):
        return None
    return math.fsum(values) / len(values)


def mean_of_present(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None (None if there are none)."""
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


# ---------------------------------------------------------------- Table 2 (ArtEmoBenchmark)

def artemo_row(category_accuracy: Mapping[str, Mapping[str, float | None]]) -> dict:
    """A Table 2 row from {modality: {category: percent}}: {"categories": ..., "averages": ...}."""
    layout = {m: cats for m, _, _, cats in ARTEMO_LAYOUT}
    unknown = [(m, c) for m, cats in category_accuracy.items() for c in cats if c not in layout.get(m, ())]
    if unknown:
        raise ValueError(f"(modality, category) pairs outside Table 2's layout: {unknown}; "
                         f"expected {[(m, c) for m, cats in layout.items() for c in cats]}")
    categories = {m: {c: category_accuracy.get(m, {}).get(c) for c in cats} for m, cats in layout.items()}
    averages = {name: mean_of_all(list(categories[m].values())) for m, name, _, _ in ARTEMO_LAYOUT}
    averages["All"] = mean_of_all(list(averages.values()))
    return {"categories": categories, "averages": averages}


def artemo_row_from_predictions(predictions: Iterable[Prediction]) -> dict:
    """The Table 2 row of a model's predictions (failures counted as wrong)."""
    counts = artemo_accuracy(predictions)
    return artemo_row({m: {c: d["accuracy"] for c, d in cats.items()} for m, cats in counts.items()})


def format_artemo_table(rows: Mapping[str, dict], digits: int = 1) -> str:
    """Table 2 as text: one line per model name in `rows` (values from `artemo_row`)."""
    width = 6
    name_width = max([len("Model")] + [len(n) for n in rows])
    blocks = [(head, cats) for _, _, head, cats in ARTEMO_LAYOUT] + [("Averages", ARTEMO_AVERAGES)]
    block_width = [max(len(cats) * width, len(head)) for head, cats in blocks]
    top = " | ".join([" " * name_width] + [h.ljust(w) for (h, _), w in zip(blocks, block_width)])
    sub = " | ".join(["Model".ljust(name_width)]
                     + ["".join(c.rjust(width) for c in cats).ljust(w) for (_, cats), w in zip(blocks, block_width)])
    lines = [top.rstrip(), sub.rstrip(), "-" * len(sub.rstrip())]
    for name, row in rows.items():
        values = [[row["categories"][m][c] for c in cats] for m, _, _, cats in ARTEMO_LAYOUT]
        values.append([row["averages"][a] for a in ARTEMO_AVERAGES])
        cells = ["".join(format_pct(v, digits).rjust(width) for v in vs).ljust(w) for vs, w in zip(values, block_width)]
        lines.append(" | ".join([name.ljust(name_width)] + cells).rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------- Table 3 (ablations)

NO_JOINT_PATHWAY = ("adapter_only",)  # training/stage2.py ABLATIONS: the Stage 1 model


def ablation_row(ablation: str, row: Mapping) -> dict:
    """The Table 3 row of `ablation` from its Table 2 row: without the AV block (so AV and All
    are None) if the paper's model of that ablation has no joint pathway."""
    if ablation not in NO_JOINT_PATHWAY:
        return dict(row)
    return artemo_row({m: cats for m, cats in row["categories"].items() if m != "av"})


def format_ablation_table(rows: Mapping[str, Mapping], digits: int = 1) -> str:
    """Table 3 as text: one line per ablation name in `rows` (values from `artemo_row`)."""
    return format_artemo_table({name: ablation_row(name, row) for name, row in rows.items()}, digits)


# ---------------------------------------------------------------- Table 1 (AIR-Bench Foundation)

def task_of(subset: str, tasks: Sequence[AirBenchTask] = AIRBENCH_TASKS) -> str | None:
    """The task name of a `task_name_dataset_name` subset id (longest matching task name), or None."""
    matches = [t.name for t in tasks if subset == t.name or subset.startswith(t.name + "_")]
    return max(matches, key=len) if matches else None


def airbench_summary(task_accuracy: Mapping[str, float | None],
                     tasks: Sequence[AirBenchTask] = AIRBENCH_TASKS) -> dict:
    """Group accuracies, Average (mean of the groups) and task_mean from {task name: percent}."""
    known = {t.name for t in tasks}
    unknown = sorted(set(task_accuracy) - known)
    if unknown:
        raise ValueError(f"tasks not in the Table 1 mapping: {unknown} (pass a `tasks` tuple that has them)")
    accuracy = {t.name: task_accuracy.get(t.name) for t in tasks}
    groups = {g: mean_of_present(accuracy[t.name] for t in tasks if t.group == g)
              for g in dict.fromkeys(t.group for t in tasks)}
    return {"tasks": accuracy, "groups": groups, "average": mean_of_all(list(groups.values())),
            "task_mean": mean_of_present(accuracy.values()),
            "missing_tasks": [name for name, acc in accuracy.items() if acc is None]}


def airbench_column_from_predictions(predictions: Iterable[Prediction],
                                     tasks: Sequence[AirBenchTask] = AIRBENCH_TASKS) -> dict:
    """A Table 1 column of a model's predictions: subsets, tasks (pooled), groups, averages, failures."""
    preds = list(predictions)
    subsets = airbench_accuracy(preds)
    unmapped = sorted(s for s in subsets if task_of(s, tasks) is None)
    if unmapped:
        raise ValueError(f"AIR-Bench subsets whose task is not in the Table 1 mapping: {unmapped} "
                         f"(pass a `tasks` tuple that has them)")
    pooled: dict[str, Tally] = {}
    for subset, d in subsets.items():
        name = task_of(subset, tasks)
        pooled[name] = pooled.get(name, Tally(0, 0, 0)) + Tally(d["total"], d["correct"], d["failures"])
    summary = airbench_summary({name: t.accuracy(failures_are_wrong=False) for name, t in pooled.items()}, tasks)
    everything = tally(preds)
    return {**summary, "subsets": subsets,
            "task_counts": {name: t.as_dict(failures_are_wrong=False) for name, t in pooled.items()},
            "micro": everything.accuracy(failures_are_wrong=False), "failures": everything.failures,
            "total": everything.total}


def format_airbench_table(columns: Mapping[str, dict], tasks: Sequence[AirBenchTask] = AIRBENCH_TASKS,
                          digits: int = 2) -> str:
    """Table 1 as text: task rows, group rows, Average, one column per model in `columns`."""
    groups = list(dict.fromkeys(t.group for t in tasks))
    group_labels = {g: f"{g.capitalize()} (mean of tasks)" for g in groups}
    average_label, failures_label = "Average (mean of groups)", "Failures (not scored)"
    label_width = max(len(x) for x in [t.label for t in tasks] + list(group_labels.values()) + [average_label])
    widths = [max(len(name), digits + 5) for name in columns]
    header = " | ".join(["Task".ljust(label_width)] + [n.rjust(w) for n, w in zip(columns, widths)])
    lines = [header, "-" * len(header)]

    def line(label, values, fmt=lambda v: format_pct(v, digits)):
        lines.append(" | ".join([label.ljust(label_width)] + [fmt(v).rjust(w) for v, w in zip(values, widths)]))

    for t in tasks:
        line(t.label, [c["tasks"].get(t.name) for c in columns.values()])
    lines.append("-" * len(header))
    for g in groups:
        line(group_labels[g], [c["groups"].get(g) for c in columns.values()])
    line(average_label, [c["average"] for c in columns.values()])
    if all("failures" in c for c in columns.values()):
        line(failures_label, [c["failures"] for c in columns.values()], fmt=str)
    return "\n".join(lines)
