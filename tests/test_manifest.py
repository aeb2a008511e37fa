"""The JSONL manifest: round trip, relative paths, and one clear message per problem."""
import json
import os

import pytest

from vaemotion_jax.data.manifest import (ManifestError, Record, read_manifest, select, validate_record,
                                         write_manifest)

GOOD = {"id": "c1", "media": "clips/c1.mp4", "start": 1.0, "end": 4.5,
        "conversations": [{"role": "user", "content": "How does it feel?"},
                          {"role": "assistant", "content": "Calm."}],
        "labels": {"a": [0.1, -0.2], "av": [-1, 1]}, "utterances": [[1.5, 2.0]], "split": "train",
        "caption": "a still red circle", "meta": {"label": "violin"}}
ITEM = {"id": "q1", "audio": "/abs/track.wav", "video": "v.mp4", "question": "Which?",
        "options": ["x", "y", "z", "w"], "answer": "C", "category": "Sp-AV", "modality": "av"}


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def test_read_resolves_paths_and_write_makes_them_relative(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [GOOD, ITEM])
    records, problems = read_manifest(path)
    assert problems == []
    c1, q1 = records
    assert c1.media == str(tmp_path / "clips" / "c1.mp4") and c1.video_path == c1.audio_path == c1.media
    assert q1.video == str(tmp_path / "v.mp4") and q1.audio == "/abs/track.wav" and q1.answer_index() == 2
    assert c1.source == f"{path}:1"
    out = tmp_path / "elsewhere" / "copy.jsonl"
    assert write_manifest(records, str(out)) == 2
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["media"] == os.path.join("..", "clips", "c1.mp4")
    assert lines[0] == {**GOOD, "media": os.path.join("..", "clips", "c1.mp4")}
    again, _ = read_manifest(str(out))
    assert again == records  # `source` is not compared


@pytest.mark.parametrize("change, message", [
    ({"labels": {"av": [0.2, 1.7]}}, "labels.av: arousal 1.7 outside [-1, 1]"),
    ({"labels": {"v": [-1.5, 0.0]}}, "labels.v: valence -1.5 outside [-1, 1]"),
    ({"labels": {"a": [0.1]}}, "labels.a: expected [valence, arousal], got [0.1]"),
    ({"labels": {"joint": [0, 0]}}, "labels.joint: unknown pathway 'joint'"),
    ({"labels": {"a": ["high", 0]}}, "labels.a: valence 'high' is not a finite number"),
    ({"media": None}, "media: missing (give `media`, or `video` and/or `audio`)"),
    ({"video": "v.mp4"}, "media: give either `media` or `video`/`audio`, not both"),
    ({"id": ""}, "id: missing or not a non-empty string"),
    ({"start": -1}, "start: -1 is not a number >= 0"),
    ({"end": 0.5}, "end: 0.5 is not a number after start"),
    ({"conversations": [{"role": "bot", "content": "x"}]}, "conversations[0]: role 'bot' not one of"),
    ({"conversations": []}, "conversations: expected a non-empty list"),
    ({"lables": {}}, "lables: unknown field (put extra information under `meta`)"),
    ({"question": "Which?"}, "options: missing (a multiple-choice item needs question, options, answer)"),
    ({"question": "Which?", "options": ["a", "b"], "answer": "C"}, "answer: 'C' is not one of ['A', 'B']"),
    ({"modality": "audio"}, "modality: 'audio' not one of ['a', 'v', 'av']"),
    ({"utterances": [[2.0, 1.0]]}, "utterances[0]: [2.0, 1.0] is not [start, end] with 0 <= start < end"),
])
def test_each_problem_has_one_clear_message(tmp_path, change, message):
    bad = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = write_lines(tmp_path / "manifest.jsonl", [GOOD | {"id": "first"}, bad])
    records, problems = read_manifest(path)
    assert [r.id for r in records] == ["first"]
    assert problems[0].startswith(f"{path}:2: {message}")
    with pytest.raises(ManifestError) as e:
        read_manifest(path, strict=True)
    assert str(e.value) == problems[0]


def test_the_documented_message_format(tmp_path, monkeypatch):
    lines = [GOOD | {"id": f"c{i}"} for i in range(16)] + [GOOD | {"id": "x", "labels": {"av": [0.2, 1.7]}}]
    monkeypatch.chdir(tmp_path)
    write_lines("manifest.jsonl", lines)
    assert read_manifest("manifest.jsonl")[1] == ["manifest.jsonl:17: labels.av: arousal 1.7 outside [-1, 1]"]


def test_invalid_json_duplicate_ids_and_blank_lines(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [GOOD, "", '{"id": "c2", ', GOOD, "[1, 2]"])
    records, problems = read_manifest(path)
    assert len(records) == 1
    assert problems[0].startswith(f"{path}:3: not valid JSON")
    assert problems[1] == f"{path}:4: id: 'c1' already used on line 1"
    assert problems[2] == f"{path}:5: expected a JSON object, got list"


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(str(tmp_path / "none.jsonl"))


def test_write_refuses_invalid_records(tmp_path):
    with pytest.raises(ManifestError, match=r"record 'r': labels.a: arousal 3 outside"):
        write_manifest([Record(id="r", media="/x.mp4", labels={"a": [0.0, 3]})], str(tmp_path / "m.jsonl"))
    assert not (tmp_path / "m.jsonl").exists()


def test_validate_record_and_select():
    records = [Record(id="a", media="/a.mp4", split="train", modality="a"),
               Record(id="b", media="/b.mp4", split="heldout", modality="a"),
               Record(id="c", media="/c.mp4", split="heldout", modality="v")]
    assert all(validate_record(r) == [] for r in records)
    assert [r.id for r in select(records, split="heldout")] == ["b", "c"]
    assert [r.id for r in select(records, split="heldout", modality="a")] == ["b"]
