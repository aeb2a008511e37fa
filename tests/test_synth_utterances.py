"""The utterance world (embedded/synth/utterances.py) and AcoustEmo's Table 2 benchmark on it."""
import dataclasses
import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from flax import linen as nn

from media_files import dominant_frequency
from vaemotion_jax.checkpoints.ast import export_ast
from vaemotion_jax.embedded.synth import utterances as su
from vaemotion_jax.data.decode import DecodeOptions, decode_record
from vaemotion_jax.data.manifest import read_manifest
from vaemotion_jax.embedded.synth import emotion_word
from vaemotion_jax.models import ast as ast_lib
from vaemotion_jax.training.audio_va import va_report

CFG = su.UtteranceWorldConfig(num_clips=20, seed=1, heldout=0.25)
SR = CFG.sample_rate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("utterance_world"))
    su.generate(out, CFG)
    records, problems = read_manifest(os.path.join(out, "utterances.jsonl"))
    assert problems == []
    return out, records


def test_manifest_timestamps_are_valid_and_match_the_sound(world):
    _, records = world
    assert len(records) == CFG.num_clips
    assert sum(r.split == "heldout" for r in records) == 5
    for r in records[:6]:
        u = np.asarray(r.utterances)
        assert CFG.min_utterances <= len(u) <= CFG.max_utterances
        assert np.all(u[:, 0] < u[:, 1]) and u[0, 0] > 0 and u[-1, 1] < CFG.seconds
        assert np.all(u[1:, 0] > u[:-1, 1])                      # silences between them
        audio = decode_record(r, DecodeOptions(video=False)).audio
        inside = np.zeros(len(audio), bool)
        for s, e in u:
            inside[int(s * SR):int(e * SR)] = True
        rms = lambda m: float(np.sqrt(np.mean(audio[m] ** 2)))
        edges = np.zeros(len(audio), bool)   # AAC smears ~20 ms around each edge
        for t in u.ravel():
            edges[max(0, int((t - 0.03) * SR)):int((t + 0.03) * SR)] = True
        assert rms(~inside & ~edges) < 0.01 * rms(inside & ~edges)


def test_the_cue_lies_inside_its_utterance(world):
    _, records = world
    for r in records:
        m = r.meta
        (s, e), (a, b) = r.utterances[m["cue_utterance"]], m["cue_span"]
        assert s + 0.05 - 1e-9 <= a and b <= e - 0.05 + 1e-9
        assert b - a == pytest.approx(CFG.cue_seconds)


def test_labels_follow_the_cue_and_cues_are_balanced(world):
    out, records = world
    cues = [r.meta["cue"] for r in records]
    assert {c: cues.count(c) for c in su.CUES} == {c: 4 for c in su.CUES}
    for r in records:
        assert r.labels == {"a": list(su.CUES[r.meta["cue"]])}
        assert r.meta["word"] == emotion_word(r.labels["a"])
    words = {emotion_word(v) for v in su.CUES.values()}
    assert words == {"neutral", "joyful", "tense", "sad", "calm"}
    assert json.load(open(os.path.join(out, "world.json")))["cues"]["tremor"]["word"] == "tense"


def test_only_the_cue_span_depends_on_the_cue():
    """Same clip with each cue: the sound outside the cue span is the same (up to the peak
    normalisation's scale); inside, leap / drop move the note an octave up / down."""
    base = su.sample_clips(CFG)[0]
    sound = {c: su.render_audio(dataclasses.replace(base, cue=c), CFG) for c in su.CUES}
    a, b = (int(round(t * SR)) for t in base.cue_span)
    outside = np.r_[0:a, b:len(sound["none"])]
    for c, wave in sound.items():
        assert np.corrcoef(wave[outside], sound["none"][outside])[0, 1] > 0.9999, c
        if c != "none":
            assert not np.allclose(wave[a:b] / np.abs(wave).max(),
                                   sound["none"][a:b] / np.abs(sound["none"]).max(), atol=0.05)
    plain = su.sample_clips(dataclasses.replace(CFG, num_clips=40))
    sine = next(c for c in plain if c.timbre == "sine")
    f = {c: dominant_frequency(su.render_audio(dataclasses.replace(sine, cue=c), CFG)
                               [int(sine.cue_span[0] * SR):int(sine.cue_span[1] * SR)], SR)
         for c in ("none", "leap", "drop")}
    assert f["leap"] == pytest.approx(2 * f["none"], rel=0.05)
    assert f["drop"] == pytest.approx(f["none"] / 2, rel=0.05)


def test_generation_is_deterministic(tmp_path):
    cfg = dataclasses.replace(CFG, num_clips=3)
    for d in ("a", "b"):
        su.generate(str(tmp_path / d), cfg)
    for name in ("utterances.jsonl", "clips/utter-00002.mp4"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_va_report_reads_words_and_ccc():
    true = np.array([[0.6, 0.6], [-0.6, 0.6], [0.0, 0.0], [0.6, -0.6]])
    pred = np.array([[0.5, 0.4], [-0.3, 0.7], [0.5, 0.5], [0.4, -0.9]])
    r = va_report(pred, true)
    assert r["accuracy"] == 0.75
    assert va_report(true, true)["ccc_valence"] == pytest.approx(1.0)


@pytest.mark.slow
def test_bench_qformer_runs_end_to_end(world, tmp_path):
    acfg = ast_lib.tiny().replace(max_length=300)
    encoder = str(tmp_path / "ast")
    export_ast(nn.meta.unbox(ast_lib.init_params(acfg, jax.random.key(0))), acfg, encoder)
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_qformer.py")
    spec = importlib.util.spec_from_file_location("bench_qformer", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = str(tmp_path / "bench.json")
    lines = bench.main(["--world-dir", world[0], "--audio-encoder", encoder, "--steps", "2",
                        "--seeds", "0,1", "--batch-size", "4", "--out", out])
    rows = [line.split("  ")[1] for line in lines if line.startswith("  ") and "+-" in line]
    assert [row.strip() for row in rows] == list(bench.VARIANTS)
    assert any(line.startswith("target: ") for line in lines)
    runs = json.load(open(out))["runs"]
    assert {k: len(v) for k, v in runs.items()} == {k: 2 for k in bench.VARIANTS}
    assert all(0 <= r["accuracy"] <= 1 for v in runs.values() for r in v)


def test_audio_emotion_readouts():
    """Both readouts give V-A in (-1, 1) from the same adapter; the attention pool is a
    different function of the tokens; a wrong name is an error naming the choices."""
    from vaemotion_jax.models.adapters import AudioAdapterConfig
    from vaemotion_jax.training.audio_va import AudioEmotion

    adapter = AudioAdapterConfig(num_tokens=6, out_dim=16)
    x = jax.random.normal(jax.random.key(0), (3, 10, 8))
    out = {}
    for readout in ("mean", "attention"):
        model = AudioEmotion(adapter, 10, 8, 12, readout)
        params = model.init(jax.random.key(1), x)["params"]
        out[readout] = np.asarray(model.apply({"params": params}, x))
        assert out[readout].shape == (3, 2) and np.all(np.abs(out[readout]) < 1)
    assert "AttentionPool_0" in params
    assert not np.allclose(out["mean"], out["attention"])
    with pytest.raises(ValueError, match="readout 'max' not one of"):
        AudioEmotion(adapter, 10, 8, 12, "max").init(jax.random.key(1), x)
