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


def test_the_cue_and_its_twin_lie_inside_the_high_and_low_utterances_with_pauses(world):
    _, records = world
    room = su.PAUSE_SECONDS + su.MARGIN_SECONDS
    for r in records:
        m = r.meta
        kinds = {m["registers"][m["cue_utterance"]], m["registers"][m["twin_utterance"]]}
        assert kinds == {"high", "low"}
        for k, (a, b) in ((m["cue_utterance"], m["cue_span"]),
                          (m["twin_utterance"], m["twin_span"])):
            s, e = r.utterances[k]
            assert s + room - 1e-9 <= a and b <= e - room + 1e-9
            assert b - a == pytest.approx(CFG.cue_seconds)
    clip = su.sample_clips(CFG)[0]
    sound = su.render_audio(clip, CFG)
    for a, b in (clip.cue_span, clip.twin_span):
        before = sound[int((a - su.PAUSE_SECONDS) * SR):int(a * SR)]
        after = sound[int(b * SR):int((b + su.PAUSE_SECONDS) * SR)]
        assert np.abs(before).max() == 0.0 and np.abs(after).max() == 0.0


def test_labels_bind_the_cue_to_its_utterance_and_words_are_balanced(world):
    out, records = world
    words = [r.meta["word"] for r in records]
    assert {w: words.count(w) for w in set(words)} == {
        w: 4 for w in ("neutral", "joyful", "tense", "sad", "calm")}
    for r in records:
        registers = r.meta["registers"]
        assert sorted(registers)[:2] == ["high", "low"] and set(registers) <= {"high", "mid", "low"}
        register = registers[r.meta["cue_utterance"]]
        assert register in ("high", "low")
        assert r.labels == {"a": list(su.LABELS[(r.meta["cue"], register)])}
        assert r.meta["word"] == emotion_word(r.labels["a"])
    labels = json.load(open(os.path.join(out, "world.json")))["labels"]
    assert labels["tremor in the low utterance"]["word"] == "tense"
    assert labels["chime in the high utterance"]["word"] == "calm"


def test_only_the_cue_span_depends_on_the_cue_and_not_on_its_register():
    """Same clip with each cue: the sound outside the cue span is the same (up to the peak
    normalisation's scale). The cue sits at the key's tonic whatever its utterance's register,
    while the high utterance's notes are two octaves above the low one's."""
    plain = su.sample_clips(dataclasses.replace(CFG, num_clips=40))
    base = next(c for c in plain if c.timbre == "sine")
    sound = {c: su.render_audio(dataclasses.replace(base, cue=c), CFG) for c in su.CUES}
    a, b = (int(round(t * SR)) for t in base.cue_span)
    outside = np.r_[0:a, b:len(sound["none"])]
    for c, wave in sound.items():
        assert np.corrcoef(wave[outside], sound["none"][outside])[0, 1] > 0.9999, c
        if c != "none":
            assert not np.allclose(wave[a:b] / np.abs(wave).max(),
                                   sound["none"][a:b] / np.abs(sound["none"]).max(), atol=0.05)
    assert dominant_frequency(sound["none"][a:b], SR) == pytest.approx(base.tonic_hz, rel=0.05)
    a2, b2 = (int(round(t * SR)) for t in base.twin_span)       # the twin: the same plain note
    assert dominant_frequency(sound["tremor"][a2:b2], SR) == pytest.approx(base.tonic_hz, rel=0.05)
    flipped = dataclasses.replace(base, registers=tuple(
        {"high": "low", "low": "high"}.get(r, r) for r in base.registers))
    assert flipped.label[0] == -base.label[0]
    wave = su.render_audio(flipped, CFG)
    assert np.corrcoef(wave[a:b], sound[base.cue][a:b])[0, 1] > 0.9999
    middle = {}
    for register in ("high", "low"):
        s, e = base.utterances[base.registers.index(register)]
        a, b = base.cue_span if register == base.registers[base.cue_utterance] else base.twin_span
        s, e = max([(s, a - su.PAUSE_SECONDS), (b + su.PAUSE_SECONDS, e)],
                   key=lambda x: x[1] - x[0])          # the longer run of the phrase's notes
        middle[register] = dominant_frequency(sound["none"][int(s * SR):int(e * SR)], SR)
    top = 2 ** (max(su.PHRASE_DEGREES) / 12)          # the notes lie on the register's degrees
    for register, f in middle.items():
        factor = su.REGISTERS[register] * base.tonic_hz
        assert 0.95 * factor < f < 1.05 * top * factor, register


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
    assert lines[0].startswith("frozen AST (patch embeddings)")
    lines = bench.main(["--world-dir", world[0], "--audio-encoder", encoder, "--steps", "2",
                        "--seeds", "0", "--batch-size", "4", "--rows", "MLP adapter",
                        "--ast-layers", "-1", "--out", ""])
    assert lines[0].startswith("frozen AST (all 2 layers)")
    with pytest.raises(SystemExit, match="the AST has 2 layers"):
        bench.main(["--world-dir", world[0], "--audio-encoder", encoder, "--ast-layers", "3"])


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
