"""The offline EMER-style scorer: synonym clusters, word forms, extraction, set-level accuracy and
recall, label files, and `evaluate --benchmark emer` with a fake reply function (no model)."""
import json
import os
from types import SimpleNamespace

import pytest

from vaemotion_jax.evaluation import emer


# ---- the synonym map and word forms -----------------------------------------------------------

def test_map_has_each_word_in_one_cluster_and_variants_land_on_cluster_words():
    sizes = sum(len(words) for words in emer.EMOTION_CLUSTERS.values())
    assert len(emer.CLUSTER_OF) == sizes  # no word in two clusters
    assert 20 <= len(emer.EMOTION_CLUSTERS) <= 40
    assert all(name in words for name, words in emer.EMOTION_CLUSTERS.items())
    assert [v for v in emer.VARIANTS.values() if v not in emer.CLUSTER_OF] == []


@pytest.mark.parametrize("word, normal, cluster", [
    ("happiness", "happy", "happy"), ("Sadness", "sad", "sad"), ("angrily", "angry", "angry"),
    ("scared", "scared", "fearful"), ("Joy!", "joyful", "happy"), ("anxiety", "anxious", "fearful"),
    ("amazement", "amazed", "surprised"), ("terrifying", "terrified", "fearful"),
    ("loneliness", "lonely", "lonely"), ("Cheerfully,", "cheerful", "happy"),
    ("fears", "fearful", "fearful"), ("annoying", "annoyed", "angry"),
    ("Light-hearted", "light-hearted", "happy"), ("majesty", "majestic", "solemn"),
    ("Sunny", "sunny", "sunny"),  # unknown: its own cluster
    ("interesting", "interesting", "interesting"),  # not read as "interested"
])
def test_word_forms_normalise_to_their_cluster(word, normal, cluster):
    assert emer.normalize_word(word) == normal
    assert emer.cluster_of(word) == cluster


# ---- extraction -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("The music sounds melancholic and a bit tense.", ["melancholic", "tense"]),
    ("Joyful, cheerful and excited, or maybe JOYFUL.", ["joyful", "cheerful", "excited"]),
    ("Happiness; sadness or anger", ["happy", "sad", "angry"]),
    ("It is not sad, but calm. Isn't very angry. Scary!", ["calm", "scared"]),
    ("A man walks down a street.", []),
    (None, []),
])
def test_extract_emotion_words(text, words):
    assert emer.extract_emotion_words(text) == words


# ---- scoring ----------------------------------------------------------------------------------

def test_synonyms_count_as_hits_after_cluster_dedupe():
    s = emer.score_item(["joyful", "cheerful"], ["happy"])
    assert (s["accuracy"], s["recall"], s["empty"]) == (1.0, 1.0, False)
    assert s["predicted_clusters"] == ["happy"] and s["matched"] == ["happy"]


def test_partial_overlap_and_asymmetric_sets():
    s = emer.score_item(["sad", "angry"], ["sad", "fearful"])
    assert (s["accuracy"], s["recall"]) == (0.5, 0.5) and s["matched"] == ["sad"]
    s = emer.score_item(["happy", "excited", "tense"], ["glad"])
    assert (s["accuracy"], s["recall"]) == (pytest.approx(1 / 3), 1.0)
    s = emer.score_item(["sorrowful"], ["slightly sad", "wonder"])  # phrase -> its emotion word
    assert (s["accuracy"], s["recall"], s["reference_clusters"]) == (1.0, 0.5, ["sad", "wonder"])


def test_empty_prediction_scores_zero_and_empty_reference_is_refused():
    s = emer.score_item([], ["sad"])
    assert (s["accuracy"], s["recall"], s["empty"]) == (0.0, 0.0, True)
    with pytest.raises(ValueError, match="item 'clip7': no reference emotion words"):
        emer.score_item(["sad"], ["", " "], name="clip7")
    with pytest.raises(TypeError, match="list of words"):
        emer.score_item("sad", ["sad"])


def test_score_means_over_items():
    items = [{"name": "a", "predicted": ["joyful", "cheerful"], "reference": ["happy"]},     # 1, 1
             {"name": "b", "predicted": ["sad", "angry"], "reference": ["sad", "fearful"]},  # .5, .5
             {"name": "c", "predicted": [], "reference": ["calm"]},                          # 0, 0
             {"name": "d", "predicted": ["happy", "excited", "tense"], "reference": ["happy"]}]  # 1/3, 1
    s = emer.score(items)
    assert s["accuracy"] == pytest.approx((1 + 0.5 + 0 + 1 / 3) / 4)
    assert s["recall"] == pytest.approx(2.5 / 4)
    assert s["avg"] == pytest.approx(((1 + 0.5 + 1 / 3) / 4 + 2.5 / 4) / 2)
    assert (s["n"], s["n_empty"]) == (4, 1)
    with pytest.raises(ValueError, match="no items"):
        emer.score([])


# ---- label files ------------------------------------------------------------------------------

def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_load_jsonl_with_varied_keys_and_relative_media(tmp_path):
    path = _write(tmp_path / "emer.jsonl", "\n".join([
        json.dumps({"name": "c1", "media": "clips/c1.mp4", "reference": ["Happy", "excited"]}),
        "",
        json.dumps({"id": "c2", "clip": "/abs/c2.wav", "labels": "sad; lonely"}),
        json.dumps({"name": "c3", "openset": "['calm', 'serene']"})]) + "\n")
    items = emer.load_emer(path)
    assert [(i["name"], i["media"], i["reference"]) for i in items] == [
        ("c1", str(tmp_path / "clips" / "c1.mp4"), ["happy", "excited"]),
        ("c2", "/abs/c2.wav", ["sad", "lonely"]),
        ("c3", str(tmp_path / "c3"), ["calm", "serene"])]
    assert items[1]["where"] == f"{path}:3"


def test_load_jsonl_bad_lines_are_named(tmp_path):
    path = _write(tmp_path / "bad.jsonl", '{"name": "c1", "reference": "happy"}\n{"name": "c2"\n')
    with pytest.raises(emer.EmerFileError, match=rf"^{path}:2: invalid JSON"):
        emer.load_emer(path)
    path = _write(tmp_path / "dup.jsonl", '{"name": "c1", "reference": "happy"}\n'
                                          '{"name": "c1", "reference": "sad"}\n')
    with pytest.raises(emer.EmerFileError, match=rf"^{path}:2: clip 'c1' repeats line 1"):
        emer.load_emer(path)


def test_load_json_list_and_its_bad_row_line(tmp_path):
    good = [{"name": "c1", "media": "c1.mp4", "emotions": ["angry"]},
            {"name": "c2", "media": "c2.mp4", "emotions": "fearful, tense"}]
    path = _write(tmp_path / "emer.json", json.dumps(good, indent=1))
    assert [i["reference"] for i in emer.load_emer(path)] == [["angry"], ["fearful", "tense"]]
    path = _write(tmp_path / "bad.json", '[\n {"name": "c1", "emotions": "sad"},\n'
                                         ' {"name": "c2", "emotions": []},\n'
                                         ' {"name": "c3", "emotions": 5}\n]\n')
    with pytest.raises(emer.EmerFileError, match=rf"^{path}:3: the reference list is empty"):
        emer.load_emer(path)
    path = _write(tmp_path / "obj.json", '{"c1": "sad"}')
    with pytest.raises(emer.EmerFileError, match=rf"^{path}:1: a JSON label file must be a list"):
        emer.load_emer(path)


def test_load_csv_quoted_and_separated_references(tmp_path):
    path = _write(tmp_path / "emer.csv", 'name,media,reference\n'
                                         'c1,clips/c1.mp4,"happy, joyful"\n'
                                         'c2,clips/c2.mp4,sad;lonely\n'
                                         '\n'
                                         'c3,/data/c3.mp4,"[\'calm\']"\n')
    items = emer.load_emer(path)
    assert [(i["name"], i["media"], i["reference"]) for i in items] == [
        ("c1", str(tmp_path / "clips" / "c1.mp4"), ["happy", "joyful"]),
        ("c2", str(tmp_path / "clips" / "c2.mp4"), ["sad", "lonely"]),
        ("c3", "/data/c3.mp4", ["calm"])]


def test_load_csv_bad_rows_name_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.csv", 'name,reference\nc1,happy\nc2,\n')
    with pytest.raises(emer.EmerFileError, match=rf"^{path}:3: no reference words"):
        emer.load_emer(path)
    path = _write(tmp_path / "extra.csv", 'name,reference\nc1,happy\nc2,sad,angry\n')
    with pytest.raises(emer.EmerFileError, match=rf"^{path}:3: more fields than the header"):
        emer.load_emer(path)
    path = _write(tmp_path / "header.csv", 'clip_id,words\nc1,happy\n')
    with pytest.raises(emer.EmerFileError, match=rf"^{path}:1: the header"):
        emer.load_emer(path)
    with pytest.raises(emer.EmerFileError, match=r"unknown label file type '\.txt'"):
        emer.load_emer(_write(tmp_path / "labels.txt", "c1 happy\n"))


# ---- evaluate --benchmark emer (a fake run and reply function) ----------------------------------

@pytest.fixture
def fake_model(monkeypatch):
    from vaemotion_jax import inference
    from vaemotion_jax.evaluation import replies
    calls = {}
    texts = {"c1.mp4": "Joyful and a little nervous.", "c2.mp4": "sad, lonely"}

    def ask(model, params, spec, media, modality, prompt, max_new_tokens=64, batch_size=8):
        calls.update(media=list(media), modality=modality, prompt=prompt,
                     max_new_tokens=max_new_tokens)
        return [replies.Answer(texts[os.path.basename(m)], None) if os.path.basename(m) in texts
                else replies.Answer(None, None, "file not found") for m in media]

    monkeypatch.setattr(inference, "load_run",
                        lambda path: SimpleNamespace(model=None, params=None, spec=None))
    monkeypatch.setattr(replies, "ask", ask)
    return calls


def test_evaluate_emer_scores_replies_and_counts_unreadable_media(tmp_path, fake_model, capsys):
    from vaemotion_jax.evaluate import main as evaluate
    labels = _write(tmp_path / "emer.csv", 'name,media,reference\nc1,clips/c1.mp4,happy\n'
                                           'c2,clips/c2.mp4,"sad; lonely"\nc3,clips/gone.mp4,calm\n')
    run = tmp_path / "run"
    assert evaluate(["--checkpoint", str(run), "--benchmark", "emer", "--manifest", labels,
                     "--modality", "a", "--prompt", "Name the emotions."]) == 0
    assert fake_model == {"media": [str(tmp_path / "clips" / f) for f in ("c1.mp4", "c2.mp4", "gone.mp4")],
                          "modality": "a", "prompt": "Name the emotions.", "max_new_tokens": 64}
    result = json.load(open(run / "eval_emer.json"))
    by_name = {p["name"]: p for p in result["predictions"]}
    assert by_name["c1"]["predicted"] == ["joyful", "nervous"]
    assert (by_name["c1"]["accuracy"], by_name["c1"]["recall"]) == (0.5, 1.0)
    assert (by_name["c2"]["accuracy"], by_name["c2"]["recall"]) == (1.0, 1.0)
    assert by_name["c3"]["problem"] == "file not found" and by_name["c3"]["empty"] is True
    s = result["summary"]
    assert s["accuracy"] == pytest.approx(0.5) and s["recall"] == pytest.approx(2 / 3)
    assert s["avg"] == pytest.approx(7 / 12)
    assert (s["n"], s["n_empty"], s["unreadable_media"]) == (3, 1, 1)
    assert result["settings"]["prompt"] == "Name the emotions."
    out = capsys.readouterr().out
    assert "  Ours          58.33     50.00   66.67      3      1          1" in out
    assert f"wrote {run / 'eval_emer.json'}" in out


def test_evaluate_emer_default_prompt_and_refusals(tmp_path, fake_model):
    from vaemotion_jax.evaluate import main as evaluate
    labels = _write(tmp_path / "emer.jsonl", '{"media": "c2.mp4", "reference": "sad"}\n')
    out = str(tmp_path / "r.json")
    assert evaluate(["--checkpoint", "run", "--benchmark", "emer", "--manifest", labels,
                     "--out", out]) == 0
    assert (fake_model["prompt"], fake_model["modality"]) == (emer.EMER_PROMPT, "av")
    assert json.load(open(out))["summary"]["avg"] == 0.75  # "sad, lonely" vs "sad"
    bad = _write(tmp_path / "bad.jsonl", '{"media": "c2.mp4"}\n')
    with pytest.raises(SystemExit, match=rf"{bad}:1: no reference words"):
        evaluate(["--checkpoint", "run", "--benchmark", "emer", "--manifest", bad])
    with pytest.raises(SystemExit, match="--manifest"):
        evaluate(["--checkpoint", "run", "--benchmark", "emer"])
    with pytest.raises(SystemExit, match="--prompt is for --benchmark emer"):
        evaluate(["--checkpoint", "run", "--benchmark", "artemo", "--prompt", "Which?"])
