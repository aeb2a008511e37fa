"""`python -m vaemotion_jax.data.inspect`: counts, durations, coverage and every problem."""
import json
import os

from media_files import broken_set, make_wav
from vaemotion_jax.data import inspect


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def test_clean_manifest_report_and_exit_code(tmp_path, capsys):
    broken_set(str(tmp_path))
    make_wav(str(tmp_path / "a.wav"), seconds=1.0)
    path = write_lines(tmp_path / "m.jsonl", [
        {"id": "c1", "media": "good.mp4", "labels": {"a": [0.1, 0.2], "av": [0, 0]}, "split": "train"},
        {"id": "c2", "media": "good.mp4", "start": 0.5, "end": 1.5, "split": "heldout", "modality": "v",
         "question": "Q?", "options": ["a", "b", "c", "d"], "answer": "A", "category": "OC"},
        {"id": "c3", "media": "a.wav", "labels": {"a": [0.0, 0.0]}},
        {"id": "c4", "media": "silent.mp4", "modality": "v"},
    ])
    assert inspect.main([path, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 valid records, 0 problems" in out
    assert "splits: heldout 1, train 1" in out and "category: v/OC 1" in out
    assert "labels per pathway: a 2/4, v 0/4, av 1/4" in out
    assert "durations (s): total 6.0 (0.00 h), mean 1.50, min 1.00, max 2.00" in out


def test_every_problem_is_listed_and_the_exit_code_is_set(tmp_path, capsys):
    files = broken_set(str(tmp_path))
    lines = [{"id": k, "media": os.path.basename(p)} for k, p in files.items()]
    lines += [{"id": "bad", "media": "good.mp4", "labels": {"v": [2, 0]}},
              {"id": "long", "media": "good.mp4", "end": 9.0}]
    path = write_lines(tmp_path / "m.jsonl", lines)
    assert inspect.main([path, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "7 valid records, 7 problems" in out  # 5 bad files, a window past the end, a bad line
    assert f"problem: {path}:7: labels.v: valence 2 outside [-1, 1]" in out
    for name, kind in [("noise.mp4", "unreadable"), ("cut_index.mp4", "unreadable"), ("cut_data.mp4", "truncated"),
                       ("silent.mp4", "no_audio"), ("not_there.mp4", "missing"), ("good.mp4", "too_short")]:
        assert any(name in line and line.endswith(f"[{kind}]") for line in out.splitlines()), name
    assert "file problems by kind: missing 1, no_audio 1, too_short 1, truncated 1, unreadable 2" in out


def test_quick_mode_reads_headers_only(tmp_path):
    files = broken_set(str(tmp_path))
    path = write_lines(tmp_path / "m.jsonl", [{"id": "t", "media": "cut_data.mp4"}])
    report, problems = inspect.inspect_manifest(path, quick=True, progress=False)
    assert problems == [] and "durations (s): total 2.0" in report  # the header looks fine
    report, problems = inspect.inspect_manifest(path, quick=False, progress=False)
    assert len(problems) == 1 and files["truncated"] in problems[0]
