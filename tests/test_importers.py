"""Importers from VGGSound, VideoInstruct-100K and AIR-Bench Foundation into our manifest."""
import json
import os

import pytest

from media_files import make_mp4, make_wav
from vaemotion_jax.data import importers
from vaemotion_jax.data.manifest import read_manifest, write_manifest
from vaemotion_jax.evaluation.prompts import load_benchmark
from vaemotion_jax.evaluation.scoring import record_task


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return path


def test_vggsound_naming_conventions_and_missing_clips(tmp_path):
    clips = tmp_path / "clips"
    touch(str(clips / "a" / "--abc_xyz_000030.mp4"))     # official: id_start(6 digits)
    touch(str(clips / "AAA_7.mp4"))                      # id_start
    touch(str(clips / "BBB_10000_20000.flac"))           # AudioSet style, milliseconds
    touch(str(clips / "CCC.mkv"))                        # the full video: needs a window
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text("--abc_xyz,30,\"playing violin, fiddle\",train\n"
                        "AAA,7,dog barking,test\n"
                        "BBB,10,rain,train\n"
                        "CCC,40,car engine,train\n"
                        "DDD,0,missing clip,train\n"
                        "EEE,zero,bad start,train\n"
                        "short,row\n")
    result = importers.import_vggsound(str(csv_path), str(clips))
    by_id = {r.id: r for r in result.records}
    assert sorted(by_id) == ["--abc_xyz_000030", "AAA_000007", "BBB_000010", "CCC_000040"]
    assert by_id["--abc_xyz_000030"].meta == {"label": "playing violin, fiddle", "csv_split": "train"}
    assert by_id["AAA_000007"].split == "heldout" and by_id["AAA_000007"].start is None
    assert by_id["BBB_000010"].media.endswith("BBB_10000_20000.flac")
    assert (by_id["CCC_000040"].start, by_id["CCC_000040"].end) == (40.0, 50.0)
    assert len(result.missing) == 1 and "DDD_000000" in result.missing[0]
    assert [p.split(": ", 1)[1][:20] for p in result.problems] == ["start_seconds 'zero'", "expected 4 columns y"]
    only_train = importers.import_vggsound(str(csv_path), str(clips), split="train")
    assert "AAA_000007" not in {r.id for r in only_train.records}


def test_vggsound_test_rows_are_held_out_by_the_trainers(tmp_path, capsys):
    clips = tmp_path / "clips"
    for name in ("tr1_000000", "tr2_000005", "te1_000000", "te2_000010", "va1_000000"):
        touch(str(clips / f"{name}.mp4"))
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text("tr1,0,dog,train\ntr2,5,cat,train\nte1,0,dog,test\nte2,10,rain,test\n"
                        "va1,0,dog,val\n")
    result = importers.import_vggsound(str(csv_path), str(clips))
    assert {r.id: r.split for r in result.records} == {"tr1_000000": "train", "tr2_000005": "train",
                                                       "te1_000000": "heldout", "te2_000010": "heldout"}
    assert {r.id: r.meta["csv_split"] for r in result.records}["te1_000000"] == "test"
    assert result.problems == [f"{csv_path}:5: split 'val' is not one of ['train', 'test']"]
    # what stage1_run.split_records / stage2_run train on: everything not held out
    assert sorted(r.id for r in result.records if r.split != "heldout") == ["tr1_000000", "tr2_000005"]
    out = tmp_path / "test.jsonl"
    assert importers.main(["vggsound", "--csv", str(csv_path), "--clips", str(clips), "--split", "test",
                           "--out", str(out)]) == 0
    records, problems = read_manifest(str(out))
    assert problems == [] and [(r.id, r.split) for r in records] == [("te1_000000", "heldout"),
                                                                      ("te2_000010", "heldout")]
    with pytest.raises(ValueError, match=r"split 'heldout': expected a CSV split word, one of \['train', 'test'\]"):
        importers.import_vggsound(str(csv_path), str(clips), split="heldout")
    with pytest.raises(SystemExit):
        importers.main(["vggsound", "--csv", str(csv_path), "--clips", str(clips), "--split", "heldout",
                        "--out", str(out)])
    assert "invalid choice: 'heldout'" in capsys.readouterr().err


def test_videoinstruct_conversations_and_duration_filter(tmp_path):
    videos = tmp_path / "videos"
    os.makedirs(videos)
    make_mp4(str(videos / "v_short.mp4"), seconds=1.0)
    make_mp4(str(videos / "v_long.mp4"), seconds=3.0)
    items = [{"video_id": "v_long", "q": "What happens?", "a": "A grey screen brightens."},
             {"video_id": "v_long", "q": "Colour?", "a": "Grey."},
             {"video_id": "v_short", "q": "Q", "a": "A"},
             {"video_id": "v_gone", "q": "Q", "a": "A"},
             {"video_id": "v_long", "q": 3}]
    path = tmp_path / "VideoInstruct100K.json"
    path.write_text(json.dumps(items))
    result = importers.import_videoinstruct(str(path), str(videos))
    assert [r.id for r in result.records] == ["v_long-0", "v_long-1", "v_short-0"]
    assert result.records[0].conversations == [{"role": "user", "content": "What happens?"},
                                               {"role": "assistant", "content": "A grey screen brightens."}]
    assert len(result.missing) == 1 and "v_gone" in result.missing[0]
    assert result.problems == [f"{path}[4]: expected string fields video_id, q, a"]
    kept = importers.import_videoinstruct(str(path), str(videos), min_seconds=2.0, max_seconds=30.0)
    assert [r.id for r in kept.records] == ["v_long-0", "v_long-1"]


def airbench_item(i, **kw):
    item = {"path": f"clip{i}.wav", "question": "What is heard?", "choice_a": "dog", "choice_b": "cat",
            "choice_c": "bird", "choice_d": "rain", "answer_gt": "bird", "task_name": "Sound_AQA",
            "dataset_name": "clotho", "uniq_id": 100 + i}
    item.update(kw)
    return {k: v for k, v in item.items() if v is not None}


def test_airbench_answer_letter_from_answer_text(tmp_path):
    folder = tmp_path / "Foundation"
    for i in range(3):  # clip3.wav is missing
        make_wav(str(folder / "Sound_AQA_clotho" / f"clip{i}.wav"), seconds=0.2)
    items = [airbench_item(0),
             airbench_item(1, choice_c=None, choice_d=None, answer_gt="cat"),
             airbench_item(2, answer_gt="horse"),
             airbench_item(3)]
    meta = folder / "Foundation_meta.json"
    meta.write_text(json.dumps(items))
    result = importers.import_airbench(str(meta))
    first, second = result.records
    assert (first.id, first.answer, first.options, first.modality) == ("100", "C", ["dog", "cat", "bird", "rain"], "a")
    assert first.category == "Sound_AQA_clotho" and first.media == str(folder / "Sound_AQA_clotho" / "clip0.wav")
    assert (second.answer, second.options) == ("B", ["dog", "cat"])
    assert result.problems == [f"{meta}[2]: answer_gt 'horse' equals none of the choices"]
    assert len(result.missing) == 1 and "clip3.wav" in result.missing[0]


def test_airbench_audio_grounding_is_read_as_flac_and_task_dataset_kept_apart(tmp_path):
    folder = tmp_path / "Foundation"
    grounding = folder / "Audio_Grounding_AudioGrounding"
    make_wav(str(grounding / "g0.flac"), seconds=0.2)   # meta says g0.wav; AIR-Bench ships .flac
    make_wav(str(grounding / "g1.wav"), seconds=0.2)    # only a .wav: the official loader misses it too
    make_wav(str(folder / "Sound_AQA_clotho" / "clip0.wav"), seconds=0.2)
    ag = dict(task_name="Audio_Grounding", dataset_name="AudioGrounding")
    items = [airbench_item(1, path="g0.wav", **ag), airbench_item(2, path="g1.wav", **ag), airbench_item(0)]
    meta = folder / "Foundation_meta.json"
    meta.write_text(json.dumps(items))
    result = importers.import_airbench(str(meta))
    g0, clip0 = result.records
    assert g0.media == str(grounding / "g0.flac") and clip0.media == str(folder / "Sound_AQA_clotho" / "clip0.wav")
    assert result.missing == [f"{meta}[1]: {grounding / 'g1.flac'} not found"]
    assert (g0.category, g0.meta) == ("Audio_Grounding_AudioGrounding",
                                      {"task_name": "Audio_Grounding", "dataset_name": "AudioGrounding"})
    assert (clip0.category, clip0.meta) == ("Sound_AQA_clotho", {"task_name": "Sound_AQA", "dataset_name": "clotho"})
    out = tmp_path / "airbench.jsonl"
    write_manifest(result.records, str(out))
    back = load_benchmark(str(out), "airbench")
    assert [(r.meta, record_task(r)) for r in back] == [(r.meta, r.category) for r in result.records]


def test_cli_writes_a_valid_manifest_and_reports(tmp_path, capsys):
    folder = tmp_path / "Foundation"
    make_wav(str(folder / "Sound_AQA_clotho" / "clip0.wav"), seconds=0.2)
    (folder / "Foundation_meta.json").write_text(json.dumps([airbench_item(0), airbench_item(5)]))
    out = tmp_path / "manifests" / "airbench.jsonl"
    assert importers.main(["airbench", "--meta", str(folder / "Foundation_meta.json"), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "airbench: 1 records, 1 missing media, 0 malformed entries" in report
    records, problems = read_manifest(str(out))
    assert problems == [] and records[0].media == str(folder / "Sound_AQA_clotho" / "clip0.wav")
    assert json.loads(out.read_text())["media"] == os.path.join("..", "Foundation", "Sound_AQA_clotho", "clip0.wav")


def test_cli_reports_an_unreadable_input_in_one_line(tmp_path, capsys):
    (tmp_path / "meta.json").write_text("{not json")
    assert importers.main(["airbench", "--meta", str(tmp_path / "meta.json"), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit):
        importers.main(["vggsound", "--csv", "x.csv"])
