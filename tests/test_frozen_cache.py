"""Caches of frozen work (training/frozen_cache.py): cached runs train exactly as uncached ones,
entries are keyed by what they depend on, bad entries are rebuilt."""
import json
import os

import jax
import numpy as np
import pytest
from flax import linen as nn

from stage1_assets import AUDIO_FRAMES, config, make_assets, settings
from vaemotion_jax.checkpoints.ast import export_ast
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.models import ast as ast_lib
from vaemotion_jax.training import frozen_cache
from vaemotion_jax.training.checkpoint import fingerprint

MEDIA = MediaSpec(num_frames=4, resized_hw=(112, 112), audio_frames=AUDIO_FRAMES)
CACHES = {"cache.audio_features": True, "cache.teacher_logits": True}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(str(tmp_path_factory.mktemp("cache_assets")))


def losses_of(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def entries(root):
    """{entry file: mtime_ns} under a cache root."""
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(root) for f in files if f.endswith(".safetensors")}


def stage1(assets, workdir, **extra):
    from vaemotion_jax.training.stage1_run import run
    run(config(settings(assets, workdir, steps=4, mesh=(1, 2, 1), **extra)))
    return losses_of(workdir)


@pytest.fixture(scope="module")
def plain(assets, tmp_path_factory):
    """An uncached Stage 1 run: (workdir, losses)."""
    workdir = str(tmp_path_factory.mktemp("plain"))
    return workdir, stage1(assets, workdir)


def test_cached_stage1_losses_equal_uncached(assets, plain, tmp_path):
    """Off, then on (built), then on again (read only): the same losses."""
    root = str(tmp_path / "cache")
    plain = plain[1]
    built = stage1(assets, str(tmp_path / "build"), **CACHES, **{"cache.dir": root})
    made = entries(root)
    assert len(made) > 0
    read = stage1(assets, str(tmp_path / "read"), **CACHES, **{"cache.dir": root})
    assert entries(root) == made   # nothing rebuilt or rewritten
    np.testing.assert_allclose(built, plain, atol=1e-6, rtol=0)
    np.testing.assert_allclose(read, plain, atol=1e-6, rtol=0)


def test_topk_over_the_whole_vocabulary_is_the_exact_loss(assets, plain, tmp_path):
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    vocab = qwen_config.tiny().text.vocab_size
    plain = plain[1]
    whole = stage1(assets, str(tmp_path / "k"), **CACHES, **{"cache.teacher_topk": vocab})
    np.testing.assert_allclose(whole, plain, atol=1e-6, rtol=0)
    few = stage1(assets, str(tmp_path / "k8"), **CACHES, **{"cache.teacher_topk": 8})
    assert np.all(np.isfinite(few)) and not np.allclose(few, plain, atol=1e-3)


def test_cached_stage2_losses_equal_uncached(assets, plain, tmp_path):
    from vaemotion_jax.training.stage2_run import run as run2
    s1 = plain[0]
    out = {}
    for name, extra in (("off", {}), ("on", {"cache.audio_features": True})):
        s = settings(assets, str(tmp_path / name), steps=3, stage1_dir=s1, mesh=(1, 1, 1),
                     eval_items=2, eval_mode="loglik", eval_chat_clips=0,
                     eval_stage1_baseline=False, **{"lora.dropout": 0.1}, **extra)
        del s["eval_clips"], s["max_response_tokens"]
        run2(config(s, "stage2"))
        out[name] = losses_of(str(tmp_path / name))
    np.testing.assert_allclose(out["on"], out["off"], atol=1e-6, rtol=0)


def test_a_changed_encoder_gets_other_entries(assets, tmp_path):
    other = str(tmp_path / "other_ast")
    cfg = ast_lib.tiny().replace(max_length=AUDIO_FRAMES)
    export_ast(nn.meta.unbox(ast_lib.init_params(cfg, jax.random.key(7))), cfg, other)
    root = str(tmp_path / "cache")
    a = frozen_cache.audio_feature_cache(root, fingerprint(assets["audio"]), "float32", MEDIA)
    b = frozen_cache.audio_feature_cache(root, fingerprint(other), "float32", MEDIA)
    assert a.directory != b.directory
    key = {"audio": ["/clip.wav", 1, 2], "start": None, "end": None}
    a.put(key, {"features": np.ones((3, 2), np.float32)})
    assert a.get(key) is not None and b.get(key) is None
    windows = frozen_cache.audio_feature_cache(root, fingerprint(assets["audio"]), "float32",
                                               MediaSpec(num_frames=4, audio_frames=AUDIO_FRAMES,
                                                         audio_windows=2))
    assert windows.directory != a.directory


def test_bad_entries_are_rebuilt_not_used(tmp_path):
    cache = frozen_cache.EntryCache(str(tmp_path), "test", {"weights": "abc"})
    key, other = {"clip": 1}, {"clip": 2}
    value = {"features": np.arange(6, dtype=np.float32).reshape(3, 2)}
    cache.put(key, value)
    np.testing.assert_array_equal(cache.get(key, {"features": (3, 2)})["features"],
                                  value["features"])
    assert cache.get(key, {"features": (4, 2)}) is None          # another shape
    path = cache.path(key)
    with open(path, "r+b") as f:                                   # cut short by a crash
        f.truncate(os.path.getsize(path) - 4)
    assert cache.get(key) is None
    cache.put(other, value)
    os.replace(cache.path(other), path)                            # a file of another key
    assert cache.get(key) is None
    assert cache.rebuilt == 3
    cache.put(key, value)
    assert cache.get(key) is not None
