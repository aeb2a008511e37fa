"""Prompts, letter extraction, option log-likelihood choice and accuracy with failures."""
import json

import pytest

from vaemotion_jax.data.manifest import ManifestError, Record
from vaemotion_jax.evaluation.prompts import (AIRBENCH_INSTRUCTION, airbench_prompt, artemo_prompt,
                                              choice_instruction, load_benchmark, loglik_continuations,
                                              record_prompt)
from vaemotion_jax.evaluation.scoring import (Prediction, airbench_accuracy, artemo_accuracy, extract_letter,
                                              best_letter, make_prediction, option_scores)

# (response, letter by the airbench rule, letter by the strict rule) for a 4-option item
ANSWERS = [
    ("A", "A", "A"),
    ("B.", "B", "B"),
    ("  C\n", "C", "C"),                      # stripped first
    ("D) because the music is slow", "D", "D"),
    ("(B)", "B", "B"),                        # "(" is no letter: second-to-last character
    ("The answer is C.", "C", "C"),           # the case the official rule was written for
    ("The answer is C", None, "C"),           # second-to-last is a space: an official failure
    ("Answer: D", "A", "D"),                  # officially its first character, "A"
    ("The correct option is (B).", None, "B"),
    ("(B) the violin", None, "B"),
    ("b", None, None),                        # upper case only
    ("The answer is b.", None, None),
    ("Both sound alike.", "B", None),         # official quirk: first character
    ("Definitely A.", "D", None),
    ("An apple falls", "A", None),
    ("A\nB", "A", None),                      # newlines are deleted: "AB"
    ("I think so.", None, None),
    ("None", None, None),                     # the literal text None is a failure officially
    ("", None, None),
    ("   ", None, None),
]


@pytest.mark.parametrize("response,airbench,strict", ANSWERS)
def test_extract_letter_rules(response, airbench, strict):
    assert extract_letter(response, 4, "airbench") == airbench
    assert extract_letter(response, 4, "strict") == strict


def test_letters_outside_the_options():
    # official: any of A-D counts, so "C" on a two-option item is a (wrong) answer, not a failure
    assert extract_letter("C", 2, "airbench") == "C"
    assert extract_letter("C", 2, "strict") is None
    assert extract_letter("E.", 5, "strict") == "E"
    assert extract_letter(None, 4) is None
    with pytest.raises(ValueError, match="only A-D"):
        extract_letter("E", 5, "airbench")
    with pytest.raises(ValueError, match="unknown letter rule"):
        extract_letter("A", 4, "loose")
    with pytest.raises(ValueError, match="2 to 26"):
        extract_letter("A", 1)


def test_loglik_choice_sum_and_length_normalisation():
    logprobs = [[-1.0, -1.0, -1.0], [-2.5], [-0.5, -3.0]]  # sums -3, -2.5, -3.5; means -1, -2.5, -1.75
    assert option_scores(logprobs) == [-3.0, -2.5, -3.5]
    assert best_letter(option_scores(logprobs)) == "B"
    assert best_letter(option_scores(logprobs, length_normalize=True)) == "A"
    assert best_letter(option_scores([[-1.0], [-1.0]])) == "A"  # ties go to the first option
    assert best_letter(option_scores([[float("-inf")], [-40.0]])) == "B"
    for bad, match in [([[-1.0], []], "no tokens"), ([[-1.0], [float("nan")]], "NaN"), ([[0.5], [-1.0]], "<= 0"),
                       ([[-1.0]], "2 to 26")]:
        with pytest.raises(ValueError, match=match):
            best_letter(option_scores(bad))


def test_airbench_prompt_is_the_official_text():
    four = airbench_prompt("Which age?", ["teens", "thirties", "fifties", "seventies"])
    assert four == ("Choose the most suitable answer from options A, B, C, and D to respond the question in "
                    "next line, you may only choose A or B or C or D.\nWhich age?\n"
                    "A. teens\nB. thirties\nC. fifties\nD. seventies")
    assert airbench_prompt("Male?", ["yes", "no"]) == f"{AIRBENCH_INSTRUCTION}\nMale?\nA. yes\nB. no"
    assert airbench_prompt("Male?", ["yes", "no"], pad_absent=True).endswith("A. yes\nB. no\nC. None\nD. None")
    with pytest.raises(ValueError, match="2 to 4"):
        airbench_prompt("Q", list("abcde"))


def test_artemo_prompt_same_layout_for_every_modality():
    options = ["calm", "sad", "tense", "joyful"]
    assert artemo_prompt("What emotion?", options) == airbench_prompt("What emotion?", options)
    assert choice_instruction(4) == AIRBENCH_INSTRUCTION
    assert choice_instruction(3).startswith("Choose the most suitable answer from options A, B, and C to")
    assert choice_instruction(2).endswith("you may only choose A or B.")
    prompts = {record_prompt(Record(id=m, media="x.mp4", question="What emotion?", options=options, answer="A",
                                    category="OE", modality=m), "artemo") for m in ("a", "v", "av")}
    assert len(prompts) == 1
    assert loglik_continuations(options) == ["A", "B", "C", "D"]
    assert loglik_continuations(options, "option")[3] == "D. joyful"


def item(id_, answer, modality="a", category="OC", options=4, meta=None):
    return Record(id=id_, media="x.mp4", question="Q?", options=[f"o{i}" for i in range(options)], answer=answer,
                  category=category, modality=modality, meta=meta)


def test_make_prediction_generate_and_loglik():
    p = make_prediction(item("q1", "B"), "artemo", response="The answer is B.")
    assert (p.predicted, p.correct, p.failed, p.task, p.n_options) == ("B", True, False, None, 4)
    p = make_prediction(item("q2", "C"), "artemo", option_logprobs=[[-3.0], [-2.0], [-0.1], [-5.0]])
    assert (p.predicted, p.scores, p.response) == ("C", [-3.0, -2.0, -0.1, -5.0], None)
    air = item("7", "A", category="Speaker_Age_Prediction_common_voice_13.0_en")
    assert make_prediction(air, "airbench", response="I do not know").failed
    kept = item("8", "A", category="whatever", meta={"task_name": "Sound_AQA", "dataset_name": "avqa"})
    assert make_prediction(kept, "airbench", response="A").task == "Sound_AQA_avqa"
    with pytest.raises(ValueError, match="exactly one"):
        make_prediction(air, "airbench")
    with pytest.raises(ValueError, match="3 option scores for 4"):
        make_prediction(air, "airbench", option_logprobs=[[-1.0]] * 3)
    saved = make_prediction(item("q3", "B"), "artemo", response="Answer: B")
    assert saved.predicted == "A" and saved.reread("strict").predicted == "B"
    with pytest.raises(ValueError, match="no response"):
        p.reread("strict")


def pred(answer, predicted, task=None, modality="a", category="OC"):
    return Prediction(id=f"{task}{modality}{category}{answer}{predicted}", category=category, modality=modality,
                      task=task, answer=answer, predicted=predicted)


def test_airbench_accuracy_leaves_failures_out_of_the_denominator():
    preds = ([pred("A", "A", "Sound_AQA_avqa")] * 3 + [pred("A", "B", "Sound_AQA_avqa")]
             + [pred("A", None, "Sound_AQA_avqa")] * 2 + [pred("C", None, "Music_AQA_music_avqa")])
    acc = airbench_accuracy(preds)
    assert acc["Sound_AQA_avqa"] == {"total": 6, "scored": 4, "correct": 3, "failures": 2, "accuracy": 75.0}
    assert acc["Music_AQA_music_avqa"] == {"total": 1, "scored": 0, "correct": 0, "failures": 1, "accuracy": None}
    with pytest.raises(ValueError, match="without a task"):
        airbench_accuracy([pred("A", "A")])


def test_artemo_accuracy_counts_failures_as_wrong():
    preds = [pred("A", "A"), pred("B", "B"), pred("C", None), pred("D", "A"),
             pred("A", "A", modality="av", category="Sp-AV"), pred("A", None, modality="av", category="Sp-AV")]
    acc = artemo_accuracy(preds)
    assert acc["a"]["OC"] == {"total": 4, "scored": 3, "correct": 2, "failures": 1, "accuracy": 50.0}
    assert acc["av"]["Sp-AV"]["accuracy"] == 50.0 and acc["av"]["Sp-AV"]["failures"] == 1
    with pytest.raises(ValueError, match="without modality or category"):
        artemo_accuracy([pred("A", "A", modality=None)])


def test_prediction_round_trip_and_bad_dicts():
    p = Prediction("q", "OE", "av", None, "B", None, 4, "hmm", None)
    assert Prediction.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        Prediction.from_dict({**p.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="missing fields \\['answer'\\]"):
        Prediction.from_dict({"id": "q", "predicted": None})


def write_jsonl(path, items):
    path.write_text("".join(json.dumps(d) + "\n" for d in items))
    return str(path)


def test_load_benchmark_checks_items(tmp_path):
    good = {"id": "q1", "media": "c.mp4", "question": "Q?", "options": ["a", "b", "c", "d"], "answer": "A",
            "category": "OC", "modality": "a", "split": "test"}
    path = write_jsonl(tmp_path / "b.jsonl", [good, {**good, "id": "q2", "modality": "v"}])
    assert [r.id for r in load_benchmark(path, "artemo", modality="v")] == ["q2"]
    bad = write_jsonl(tmp_path / "bad.jsonl",
                      [good, {"id": "c", "media": "c.mp4"}, {**good, "id": "q3", "answer": "E"}])
    with pytest.raises(ManifestError, match=r"bad.jsonl:3: answer: 'E'[\s\S]*bad.jsonl:2: not a multiple-choice"):
        load_benchmark(bad, "artemo")
    no_cat = write_jsonl(tmp_path / "nc.jsonl", [{k: v for k, v in good.items() if k != "category"}])
    with pytest.raises(ManifestError, match="need `modality` and `category`"):
        load_benchmark(no_cat, "artemo")
    five = write_jsonl(tmp_path / "five.jsonl", [{**good, "options": list("abcde")}])
    with pytest.raises(ManifestError, match="at most 4"):
        load_benchmark(five, "airbench")
    with pytest.raises(ManifestError, match="no items left"):
        load_benchmark(path, "artemo", split="train")
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark(path, "mmlu")
