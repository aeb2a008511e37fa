"""Evaluation results: the summary of a run, its text table, and the JSON with every prediction.

A results file (written by `write_results`) is one JSON object:

  {"summary": {"benchmark", "model", "items", "failures", "failure_rule", "table", ...},
   "settings": {...how the run was made (CLI arguments)...},
   "predictions": [{"id", "category", "modality", "task", "answer", "predicted", "n_options",
                    "response", "scores"}, ...]}

`python -m vaemotion_jax.evaluation.report RESULTS.json [RESULTS.json ...]` prints the paper's
table from saved results (one row / column per file), optionally re-reading the saved responses
with another letter rule (`--rule strict`):

  python -m vaemotion_jax.evaluation.report ours.json qwen.json --rule strict --json table.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence

from vaemotion_jax.evaluation.prompts import BENCHMARKS
from vaemotion_jax.evaluation.scoring import RULES, Prediction, artemo_accuracy
from vaemotion_jax.evaluation.tables import (AIRBENCH_TASKS, AirBenchTask, airbench_column_from_predictions,
                                             artemo_row_from_predictions, format_airbench_table,
                                             format_artemo_table)

FAILURE_RULES = {"artemo": "counted as wrong answers",
                 "airbench": "left out of the accuracy denominator, as in AIR-Bench"}


def _check_benchmark(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r} (expected one of {list(BENCHMARKS)})")


def summarize(benchmark: str, predictions: Iterable[Prediction], model: str,
              tasks: Sequence[AirBenchTask] = AIRBENCH_TASKS) -> dict:
    """The JSON-able summary of one model's predictions: counts and its Table 2 row / Table 1 column."""
    _check_benchmark(benchmark)
    preds = list(predictions)
    if not preds:
        raise ValueError(f"{model}: no predictions to summarize")
    summary = {"benchmark": benchmark, "model": model, "items": len(preds),
               "failures": sum(p.failed for p in preds), "failure_rule": FAILURE_RULES[benchmark],
               "unreadable_media": sum(p.problem is not None for p in preds)}
    if benchmark == "artemo":
        summary["accuracy"] = artemo_accuracy(preds)
        summary["table"] = artemo_row_from_predictions(preds)
    else:
        summary["table"] = airbench_column_from_predictions(preds, tasks)
    return summary


def format_summaries(summaries: Sequence[dict], tasks: Sequence[AirBenchTask] = AIRBENCH_TASKS) -> str:
    """The paper's table for one or more summaries of the same benchmark, plus failure counts."""
    benchmarks = {s["benchmark"] for s in summaries}
    if len(benchmarks) != 1:
        raise ValueError(f"cannot put different benchmarks in one table: {sorted(benchmarks)}")
    names = [s["model"] for s in summaries]
    if len(set(names)) != len(names):
        raise ValueError(f"model names repeat: {names} (give each run its own name)")
    tables = {s["model"]: s["table"] for s in summaries}
    benchmark = benchmarks.pop()
    if benchmark == "artemo":
        text = "ArtEmoBenchmark (%)\n" + format_artemo_table(tables)
    else:
        text = "AIR-Bench Foundation (%)\n" + format_airbench_table(tables, tasks)
        for s in summaries:
            if s["table"]["missing_tasks"]:
                text += (f"\n{s['model']}: no scored items for {', '.join(s['table']['missing_tasks'])}; "
                         f"its group means and Average cover the other tasks only")
    counts = ", ".join(f"{s['model']} {s['failures']} of {s['items']}"
                       + (f" ({s['unreadable_media']} with unreadable media)"
                          if s.get("unreadable_media") else "") for s in summaries)
    return f"{text}\nfailures ({FAILURE_RULES[benchmark]}): {counts}"


def write_results(path: str, summary: dict, predictions: Iterable[Prediction], settings: dict | None = None) -> None:
    """Writes the summary, the run settings and every prediction as one JSON file (atomically)."""
    data = {"summary": summary, "settings": settings or {}, "predictions": [p.to_dict() for p in predictions]}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def read_results(path: str) -> tuple[dict, dict, list[Prediction]]:
    """(summary, settings, predictions) of a results file; a malformed file raises naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read results ({e})") from e
    if not isinstance(data, dict) or not {"summary", "predictions"} <= set(data):
        raise ValueError(f"{path}: not a results file (expected an object with summary and predictions)")
    summary = data["summary"]
    if summary.get("benchmark") not in BENCHMARKS or not summary.get("model"):
        raise ValueError(f"{path}: summary needs benchmark (one of {list(BENCHMARKS)}) and model")
    try:
        predictions = [Prediction.from_dict(d) for d in data["predictions"]]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e
    return summary, data.get("settings", {}), predictions


def finish(path: str, benchmark: str, predictions: Sequence[Prediction], model: str,
           settings: dict | None = None, tasks: Sequence[AirBenchTask] = AIRBENCH_TASKS, out=sys.stdout) -> dict:
    """End of an evaluation run: summarize, print the table, write the results file; the summary."""
    summary = summarize(benchmark, predictions, model, tasks)
    print(format_summaries([summary], tasks), file=out)
    write_results(path, summary, predictions, settings)
    print(f"wrote {path}", file=out)
    return summary


def _unique_names(names: list[str], paths: list[str]) -> list[str]:
    """Model names, with the file name added where two runs share a name."""
    return [f"{n} ({os.path.basename(p)})" if names.count(n) > 1 else n for n, p in zip(names, paths)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaemotion_jax.evaluation.report",
                                description="Print the paper's table from saved evaluation results.")
    p.add_argument("results", nargs="+", help="results files written by vaemotion_jax.evaluate")
    p.add_argument("--rule", choices=RULES, help="re-read the saved responses with this letter rule")
    p.add_argument("--json", help="also write the summaries (without predictions) to this file")
    args = p.parse_args(argv)
    try:
        runs = [read_results(path) for path in args.results]
        names = _unique_names([s["model"] for s, _, _ in runs], args.results)
        summaries = []
        for (summary, _, preds), name in zip(runs, names):
            if args.rule:
                preds = [x.reread(args.rule) if x.scores is None else x for x in preds]
            summaries.append(summarize(summary["benchmark"], preds, name))
        text = format_summaries(summaries)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summaries, f, ensure_ascii=False, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
