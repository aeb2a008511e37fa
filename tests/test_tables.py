"""Table 2 and Table 1 numbers against hand-computed values and the paper's, and the results files."""
import io
import json

import pytest

from vaemotion_jax.evaluation.report import finish, format_summaries, main, read_results, summarize
from vaemotion_jax.evaluation.scoring import Prediction
from vaemotion_jax.evaluation.tables import (AIRBENCH_TASKS, AirBenchTask, ablation_row,
                                             airbench_column_from_predictions, airbench_summary, artemo_row,
                                             artemo_row_from_predictions, format_ablation_table,
                                             format_airbench_table, format_artemo_table, format_pct, task_of)

# The paper's Table 2: 12 category accuracies (A OC OE SC SE, V ..., AV Sp-A Sp-AV Sp-V OE) and the
# printed averages A, V, AV, All; None is the paper's "-".
PAPER_TABLE2 = {
    "Qwen-Audio": ([74, 35, 49, 52] + [None] * 8, ["52.5", "-", "-", "-"]),
    "Qwen2-Audio (7B)": ([87, 40, 60, 65] + [None] * 8, ["63.0", "-", "-", "-"]),
    "Qwen2.5-VL (7B)": ([None] * 4 + [84, 55, 69, 81] + [None] * 4, ["-", "72.3", "-", "-"]),
    "InternVL2.5 (8B)": ([None] * 4 + [94, 56, 81, 79] + [None] * 4, ["-", "77.5", "-", "-"]),
    "Qwen2.5-Omni (7B)": ([88, 50, 72, 66, 83, 59, 76, 83, 52, 40, 22, 53], ["69.0", "75.3", "41.8", "62.0"]),
    "InteractiveOmni (8B)": ([80, 49, 65, 64, 97, 63, 87, 85, 53, 42, 25, 46], ["64.5", "83.0", "41.5", "63.0"]),
    "VideoLLaMA2 (7B)": ([77, 55, 48, 63, 98, 65, 81, 81, 39, 37, 27, 43], ["60.8", "81.3", "36.5", "59.5"]),
    "Emotion-LLaMA": ([36, 33, 27, 39, 56, 30, 46, 59, 40, 35, 32, 42], ["33.8", "47.8", "37.2", "39.6"]),
    "AffectGPT": ([69, 36, 48, 53, 57, 42, 63, 81, 48, 36, 40, 44], ["51.5", "60.8", "42.0", "51.4"]),
    "Ours": ([89, 77, 70, 72, 100, 74, 87, 90, 60, 53, 42, 59], ["77.0", "87.8", "53.5", "72.8"]),
}
LAYOUT = [("a", c) for c in ("OC", "OE", "SC", "SE")] + [("v", c) for c in ("OC", "OE", "SC", "SE")] + \
         [("av", c) for c in ("Sp-A", "Sp-AV", "Sp-V", "OE")]


def category_dict(values):
    out = {}
    for (m, c), v in zip(LAYOUT, values):
        if v is not None:
            out.setdefault(m, {})[c] = float(v)
    return out


@pytest.mark.parametrize("model", PAPER_TABLE2)
def test_paper_table2_averages(model):
    values, printed = PAPER_TABLE2[model]
    row = artemo_row(category_dict(values))
    got = [format_pct(row["averages"][k]) for k in ("A", "V", "AV", "All")]
    if model == "Emotion-LLaMA":  # AV = mean(40, 35, 32, 42) = 37.25, printed 37.2 (75.25 elsewhere is 75.3)
        assert row["averages"]["AV"] == 37.25 and got[2] == "37.3"
        got[2] = "37.2"
    assert got == printed


def test_all_is_the_mean_of_the_12_categories_and_of_the_groups():
    row = artemo_row(category_dict(PAPER_TABLE2["Ours"][0]))
    assert row["averages"]["All"] == pytest.approx(sum(PAPER_TABLE2["Ours"][0]) / 12) == pytest.approx(72.75)
    assert row["averages"] == pytest.approx({"A": 77.0, "V": 87.75, "AV": 53.5, "All": 72.75})
    partial = artemo_row({"a": {"OC": 50.0, "OE": 50.0, "SC": 50.0}})  # SE missing: no A average
    assert partial["averages"]["A"] is None and partial["categories"]["a"]["SE"] is None
    with pytest.raises(ValueError, match=r"outside Table 2's layout: \[\('a', 'Sp-A'\)\]"):
        artemo_row({"a": {"Sp-A": 50.0}})


def preds_for(modality, category, correct, wrong, failed):
    out = []
    for kind, n in (("ok", correct), ("wrong", wrong), ("fail", failed)):
        for i in range(n):
            predicted = {"ok": "A", "wrong": "B", "fail": None}[kind]
            out.append(Prediction(f"{modality}-{category}-{kind}{i}", category, modality, None, "A", predicted))
    return out


def test_table2_from_fixed_predictions_equals_hand_computed_values():
    # (correct, wrong, failed) per category, 4 items each
    counts = {("a", "OC"): (4, 0, 0), ("a", "OE"): (3, 1, 0), ("a", "SC"): (2, 0, 2), ("a", "SE"): (1, 3, 0),
              ("v", "OC"): (4, 0, 0), ("v", "OE"): (4, 0, 0), ("v", "SC"): (3, 0, 1), ("v", "SE"): (2, 2, 0),
              ("av", "Sp-A"): (1, 2, 1), ("av", "Sp-AV"): (0, 4, 0), ("av", "Sp-V"): (2, 1, 1), ("av", "OE"): (3, 1, 0)}
    preds = [p for (m, c), n in counts.items() for p in preds_for(m, c, *n)]
    row = artemo_row_from_predictions(preds)
    assert row["categories"]["a"] == {"OC": 100.0, "OE": 75.0, "SC": 50.0, "SE": 25.0}  # failures are wrong
    assert row["categories"]["av"] == {"Sp-A": 25.0, "Sp-AV": 0.0, "Sp-V": 50.0, "OE": 75.0}
    # A = (100+75+50+25)/4 = 62.5; V = (100+100+75+50)/4 = 81.25; AV = (25+0+50+75)/4 = 37.5
    # All = (62.5+81.25+37.5)/3 = 60.416...
    assert row["averages"] == pytest.approx({"A": 62.5, "V": 81.25, "AV": 37.5, "All": 181.25 / 3})
    text = format_artemo_table({"Ours": row, "Audio only": artemo_row_from_predictions(preds[:16])})
    lines = text.splitlines()
    assert lines[1].split() == ["Model", "|", "OC", "OE", "SC", "SE", "|", "OC", "OE", "SC", "SE", "|",
                                "Sp-A", "Sp-AV", "Sp-V", "OE", "|", "A", "V", "AV", "All"]
    assert lines[3].split("|")[-1].split() == ["62.5", "81.3", "37.5", "60.4"]
    assert lines[4].split("|")[-1].split() == ["62.5", "-", "-", "-"]


def test_table3_adapter_only_row_has_no_joint_pathway():
    # the paper's Table 3 adapter-only row: A 29.5, V 72.3, AV -, All -; its AV here is measured
    adapter_only = artemo_row(category_dict([30, 25, 31, 32, 84, 55, 69, 81, 25, 50, 25, 50]))
    full = artemo_row(category_dict(PAPER_TABLE2["Ours"][0]))
    lines = format_ablation_table({"adapter_only": adapter_only, "full": full}).splitlines()
    name, a_block, v_block, av_block, averages = lines[3].split("|")
    assert name.strip() == "adapter_only" and averages.split() == ["29.5", "72.3", "-", "-"]
    assert a_block.split() == ["30.0", "25.0", "31.0", "32.0"] and av_block.split() == ["-"] * 4
    assert lines[4].split("|")[-1].split() == ["77.0", "87.8", "53.5", "72.8"]  # the full model: all four
    assert ablation_row("adapter_only", adapter_only)["averages"] == {"A": 29.5, "V": 72.25, "AV": None, "All": None}
    assert adapter_only["averages"]["AV"] == 37.5  # the measured row itself is left as it is
    assert ablation_row("lora", adapter_only) == adapter_only


def test_format_pct_rounds_half_up():
    assert [format_pct(x) for x in (72.75, 75.25, 81.25, 0.05, 100.0, None)] == \
           ["72.8", "75.3", "81.3", "0.1", "100.0", "-"]
    assert format_pct(2 / 3 * 100, 2) == "66.67" and format_pct(35.175, 2) == "35.18"


SUBSETS = ["Speaker_Age_Prediction_common_voice_13.0_en", "Speaker_Emotion_Recontion_iemocap",
           "Speaker_Emotion_Recontion_meld", "Speaker_Gender_Recognition_common_voice_13_en",
           "Speaker_Gender_Recognition_meld", "Speaker_Intent_Classification_slurp",
           "Speaker_Number_Verification_voxceleb1", "Speech_Entity_Reconition_slurp", "Speech_Grounding_librispeech",
           "Spoken_Language_Identification_covost2", "Synthesized_Voice_Detection_fake_or_real",
           "Acoustic_Scene_Classification_CochlScene", "Acoustic_Scene_Classification_TUT2017",
           "Audio_Grounding_AudioGrounding", "Sound_AQA_avqa", "Sound_AQA_clothoaqa",
           "vocal_sound_classification_VocalSound", "Music_AQA_music_avqa", "Music_Genre_Recognition_MTJ-Jamendo",
           "Music_Genre_Recognition_fma", "Music_Instruments_Classfication_MTJ-Jamendo",
           "Music_Instruments_Classfication_nsynth", "Music_Midi_Pitch_Analysis_nsynth",
           "Music_Midi_Velocity_Analysis_nsynth", "Music_Mood_Recognition_MTJ-Jamendo"]


def test_the_25_foundation_subsets_map_to_19_tasks_in_3_groups():
    tasks = {s: task_of(s) for s in SUBSETS}
    assert None not in tasks.values() and len(set(tasks.values())) == 19 == len(AIRBENCH_TASKS)
    assert tasks["Music_AQA_music_avqa"] == "Music_AQA" and tasks["Sound_AQA_clothoaqa"] == "Sound_AQA"
    groups = {t.name: t.group for t in AIRBENCH_TASKS}
    assert [sum(g == x for g in groups.values()) for x in ("speech", "sound", "music")] == [9, 4, 6]
    assert groups["vocal_sound_classification"] == "sound" and groups["Music_Mood_Recognition"] == "music"
    assert task_of("Speech_Grounding") == "Speech_Grounding" and task_of("Speech_Ground_x") is None
    longer = (AirBenchTask("Music", "m", "music"), AirBenchTask("Music_AQA", "qa", "music"))
    assert task_of("Music_AQA_music_avqa", longer) == "Music_AQA"


# AIR-Bench's published Foundation numbers (the paper's Table 1 baselines), in AIRBENCH_TASKS order
PAPER_TABLE1 = {
    "Qwen-Audio": ([56.10, 92.80, 67.20, 43.20, 36.00, 71.20, 77.80, 35.30, 48.30, 23.90, 84.90, 67.50, 64.60,
                    59.10, 71.20, 28.60, 25.40, 48.20, 36.10], "54.5"),
    "Next-GPT": ([25.40, 23.70, 57.00, 25.70, 62.40, 26.10, 25.60, 25.40, 30.80, 62.20, 23.50, 24.10, 18.80,
                  24.30, 28.10, 25.10, 23.10, 47.10, 25.40], "31.5"),
    "BLSP": ([25.00, 30.80, 33.20, 27.40, 51.20, 37.20, 46.60, 28.10, 50.00, 34.60, 29.80, 25.20, 36.10, 22.80,
              26.10, 23.50, 24.90, 31.00, 28.30], "31.4"),
    "SpeechGPT": ([28.80, 39.60, 29.20, 37.60, 20.40, 35.90, 45.80, 32.60, 39.20, 26.10, 26.20, 23.70, 33.90,
                   29.10, 29.30, 24.10, 25.20, 31.30, 29.70], "30.0"),
}


@pytest.mark.parametrize("model", PAPER_TABLE1)
def test_airbench_average_is_the_mean_of_the_three_groups(model):
    values, printed = PAPER_TABLE1[model]
    summary = airbench_summary({t.name: v for t, v in zip(AIRBENCH_TASKS, values)})
    assert format_pct(summary["average"], 1) == printed
    assert format_pct(summary["task_mean"], 1) != printed  # the plain mean of 19 tasks is not it
    assert summary["groups"]["sound"] == pytest.approx(sum(values[9:13]) / 4)


def air(subset, answer, predicted, i):
    return Prediction(f"{subset}-{i}", subset, "a", subset, answer, predicted)


def test_table1_column_from_predictions():
    preds = ([air("Sound_AQA_avqa", "A", "A", i) for i in range(3)] + [air("Sound_AQA_avqa", "A", None, 3)]
             + [air("Sound_AQA_clothoaqa", "B", x, i) for i, x in enumerate("BCD")]          # 1 of 3
             + [air("Audio_Grounding_AudioGrounding", "C", x, i) for i, x in enumerate(["C", None])]  # 1 of 1
             + [air("Speech_Grounding_librispeech", "D", x, i) for i, x in enumerate("DA")]  # 1 of 2
             + [air("Music_AQA_music_avqa", "A", None, 0)])                                # 0 scored
    col = airbench_column_from_predictions(preds)
    assert col["subsets"]["Sound_AQA_avqa"]["accuracy"] == 100.0
    assert col["task_counts"]["Sound_AQA"] == {"total": 7, "scored": 6, "correct": 4, "failures": 1,
                                               "accuracy": pytest.approx(400 / 6)}  # pooled, not mean of subsets
    assert col["groups"]["speech"] == 50.0 and col["groups"]["music"] is None
    assert col["groups"]["sound"] == pytest.approx((400 / 6 + 100) / 2)  # Sound_AQA 66.67, Audio_Grounding 100
    assert col["average"] is None  # no music task scored
    assert col["failures"] == 3 and col["total"] == 12 and col["micro"] == pytest.approx(100 * 6 / 9)
    assert "Music_AQA" in col["missing_tasks"] and len(col["missing_tasks"]) == 16  # 19 - 3 scored
    text = format_airbench_table({"Ours": col})
    assert "Sound Question Answering" in text and "66.67" in text and "83.33" in text
    assert text.splitlines()[-1].split() == ["Failures", "(not", "scored)", "|", "3"]
    with pytest.raises(ValueError, match=r"not in the Table 1 mapping: \['Foo_bar'\]"):
        airbench_column_from_predictions([air("Foo_bar", "A", "A", 0)])


def test_table1_mapping_can_be_overridden():
    tasks = (AirBenchTask("Sound_AQA", "Sound QA", "sound"), AirBenchTask("Music_AQA", "Music QA", "music"))
    preds = [air("Sound_AQA_avqa", "A", "A", 0), air("Music_AQA_music_avqa", "A", "B", 0)]
    col = airbench_column_from_predictions(preds, tasks)
    assert col["groups"] == {"sound": 100.0, "music": 0.0} and col["average"] == 50.0
    assert format_airbench_table({"x": col}, tasks).splitlines()[2].split()[-1] == "100.00"


def test_summaries_results_file_and_cli(tmp_path, capsys):
    preds = [Prediction("q1", "OC", "a", None, "A", "A", 4, "A."),
             Prediction("q2", "OE", "a", None, "B", "A", 4, "Answer: B"),   # airbench rule reads "A"
             Prediction("q3", "SC", "a", None, "C", None, 4, "The answer is C"),
             Prediction("q4", "SE", "a", None, "D", "D", 4, None, [-9.0, -8.0, -7.0, -1.0])]
    out = io.StringIO()
    path = str(tmp_path / "ours.json")
    summary = finish(path, "artemo", preds, "Ours", settings={"mode": "generate"}, out=out)
    assert summary["failures"] == 1 and summary["table"]["averages"]["A"] == 50.0
    assert "failures (counted as wrong answers): Ours 1 of 4" in out.getvalue()
    s, settings, back = read_results(path)
    assert back == preds and settings == {"mode": "generate"} and s == json.loads(json.dumps(summary))
    copy = str(tmp_path / "again.json")
    with open(copy, "w") as f:
        f.write(open(path).read())
    assert main([path, copy, "--rule", "strict", "--json", str(tmp_path / "t.json")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Ours (")]
    assert [r.split()[1] for r in rows] == ["(ours.json)", "(again.json)"]  # same name: told apart by file
    assert rows[0].split("|")[1].split() == ["100.0"] * 4  # strict re-read: all 4 right
    assert json.loads((tmp_path / "t.json").read_text())[0]["table"]["averages"]["A"] == 100.0
    with pytest.raises(ValueError, match="different benchmarks"):
        format_summaries([summary, summarize("airbench", [air("Sound_AQA_avqa", "A", "A", 0)], "x")])
    (tmp_path / "bad.json").write_text('{"summary": {}}')
    assert main([str(tmp_path / "bad.json")]) == 2
    assert "bad.json: not a results file" in capsys.readouterr().err
