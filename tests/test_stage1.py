"""Stage 1 (VG-Align): eq. (1) against NumPy, gradient flow, sharding, multi-process, kill/resume."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from stage1_assets import cli_args, config, make_assets, settings
from vaemotion_jax.checkpoints.emotion import load_emotion_modules
from vaemotion_jax.checkpoints.mapping import flatten
from vaemotion_jax.examples import batch_layout
from vaemotion_jax.models import ast as ast_lib
from vaemotion_jax.models.adapters import AudioAdapterConfig
from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
from vaemotion_jax.models.qwen2_5_vl.vision_layout import build_layout
from vaemotion_jax.models.vaemotion import VAEmotionConfig, VAEmotionLLM
from vaemotion_jax.training import losses, stage1
from vaemotion_jax.training.checkpoint import Checkpointer
from vaemotion_jax.training.state import split_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numpy_eq1(teacher, student, mask, tau):
    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    p, q = softmax(teacher / tau), softmax(student / tau)
    ce = -(p * np.log(q)).sum(-1)
    return np.array([ce[b][mask[b]].mean() for b in range(len(ce))])


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_soft_cross_entropy_is_eq1(tau):
    rng = np.random.default_rng(0)
    t, s = rng.normal(0, 3, (3, 7, 50)), rng.normal(0, 3, (3, 7, 50))
    mask = rng.random((3, 7)) < 0.6
    mask[:, 0] = True
    ours = losses.soft_cross_entropy(jnp.asarray(t, jnp.float32), jnp.asarray(s, jnp.float32),
                                     jnp.asarray(mask), tau)
    np.testing.assert_allclose(np.asarray(ours), numpy_eq1(t, s, mask, tau), rtol=1e-5)
    # KL = CE - H(teacher), and it vanishes when the student equals the teacher
    kl = losses.kl_divergence(jnp.asarray(t), jnp.asarray(t), jnp.asarray(mask), tau)
    np.testing.assert_allclose(np.asarray(kl), 0, atol=1e-6)


def tiny_model_and_batch():
    qwen, acfg = qwen_config.tiny(), ast_lib.tiny()
    grid = (2, 4, 4)
    n = int(np.prod(grid)) // 4
    adapter = AudioAdapterConfig(num_tokens=n, out_dim=qwen.text.hidden_size, seq_hidden=16,
                                 channel_hidden=32)
    model = VAEmotionLLM(VAEmotionConfig(qwen, acfg, adapter))
    lay = build_layout([[grid]], qwen.vision)
    ids = np.array([[5, 6, qwen.vision_start_token_id] + [qwen.video_token_id] * n +
                    [qwen.vision_end_token_id, 7, 8, 9, 10, 11]], np.int32)
    from vaemotion_jax.models.qwen2_5_vl.rope import get_rope_index
    pos, _ = get_rope_index(ids, qwen, np.array([grid]), np.array([1.0]))
    rng = np.random.default_rng(0)
    batch = {"input_ids": ids, "position_ids": np.moveaxis(pos, 0, -1),
             "attention_mask": np.ones_like(ids, bool),
             "pixel_values_videos": rng.normal(size=(1, 32, qwen.vision.patch_dim)).astype(np.float32),
             "fbank": rng.normal(size=(1, 1, acfg.max_length, 128)).astype(np.float32),
             "fbank_mask": np.ones((1, 1), bool),
             "patch_index": lay.patch_index, "patch_hw": lay.patch_hw, "token_index": lay.token_index,
             "target_index": np.array([[n + 3, n + 4, n + 5]], np.int32),
             "target_mask": np.ones((1, 3), bool), "valid": np.ones(1, bool)}
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    params = nn.meta.unbox(model.init(jax.random.key(0), batch["fbank"], batch["fbank_mask"],
                                      batch["pixel_values_videos"],
                                      batch_layout(batch), batch["input_ids"],
                                      jnp.moveaxis(batch["position_ids"], -1, 0),
                                      batch["attention_mask"])["params"])
    return model, params, batch


def test_gradient_reaches_only_the_adapter():
    """Differentiating w.r.t. every param: the frozen encoders (AST, vision tower) get exactly
    zero; the frozen LLM is backpropagated through but is not trained: a train step keeps
    optimizer state for the adapter alone and leaves every frozen weight unchanged."""
    from vaemotion_jax.training.state import create_state, make_optimizer
    model, params, batch = tiny_model_and_batch()
    teacher, z_v = stage1.teacher_logits(model, params, batch)

    def loss_all(p):
        return stage1.stage1_loss(p, {}, batch, teacher, z_v, model=model, tau=1.0, align="logits")[0]

    grads = jax.grad(loss_all)(params)
    total = lambda tree: float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(tree)))
    assert total(grads["audio_adapter"]) > 0
    assert total(grads["audio_encoder"]) == 0 and total(grads["backbone"]["visual"]) == 0
    trainable, frozen = split_params(params, ("audio_adapter/.*",))
    assert set(trainable) == {"audio_adapter"} and set(frozen) == {"backbone", "audio_encoder"}
    tx = make_optimizer(1e-2, 0, 10)
    state = create_state(trainable, tx, jax.random.key_data(jax.random.key(0)))
    n_adapter = len(jax.tree.leaves(trainable))
    assert len([x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]) == 2 * n_adapter
    before = jax.tree.map(np.asarray, frozen)
    new, metrics = stage1.train_step(state, frozen, batch, model=model, tx=tx, tau=1.0,
                                     align="logits")
    assert bool(metrics["finite"]) and int(new.step) == 1
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                           new.params, trainable)
    assert any(jax.tree.leaves(changed))
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, frozen))


# --- whole runs --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(str(tmp_path_factory.mktemp("stage1_assets")))


def run_inprocess(assets, workdir, **extra):
    from vaemotion_jax.training.stage1_run import run
    return run(config(settings(assets, workdir, **extra)))


def losses_of(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def adapter_of(workdir):
    modules, _ = load_emotion_modules(os.path.join(workdir, "audio_adapter"))
    return {k: np.array(v) for k, v in flatten(modules["audio_adapter"]).items()}


def test_sharded_run_equals_single_device(assets, tmp_path):
    one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
    run_inprocess(assets, one, mesh=(1, 1, 1), steps=4)
    run_inprocess(assets, eight, mesh=(2, 2, 2), steps=4)
    a, b = losses_of(one), losses_of(eight)
    assert len(a) == 4 and a[0] > 0
    np.testing.assert_allclose(b, a, rtol=1e-5)


def _cli(assets, workdir, *extra, env=None):
    cmd = [sys.executable, "-m", "vaemotion_jax.train", "--config=stage1",
           *cli_args(settings(assets, workdir, steps=12)), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _env(devices=1):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def test_killed_run_resumes_to_the_same_adapter(assets, tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    p = _cli(assets, straight, env=_env())
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    p = _cli(assets, killed, env=_env())
    metrics = os.path.join(killed, "metrics.jsonl")
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 5:
            break
        time.sleep(0.02)
    assert p.poll() is None, "the run finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert not os.path.exists(os.path.join(killed, "summary.json"))
    p = _cli(assets, killed, env=_env())
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    assert "resumed from" in out
    a, b = adapter_of(straight), adapter_of(killed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    position = lambda w: Checkpointer(os.path.join(w, "checkpoints"), 2).read_data(12)["position"]
    assert position(straight) == position(killed) == 12 * 4


def test_two_processes_equal_one(assets, tmp_path):
    single = str(tmp_path / "single")
    p = _cli(assets, single, "--config.mesh=(1,2,1)", "--config.steps=4", env=_env(2))
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    multi = str(tmp_path / "multi")
    procs = [_cli(assets, multi, "--config.mesh=(1,-1,1)", "--config.steps=4",
                  f"--config.distributed.coordinator=127.0.0.1:{port}",
                  "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
                  "--config.distributed.cpu_collectives=True", env=_env(1)) for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    np.testing.assert_allclose(losses_of(multi), losses_of(single), rtol=1e-5)


def test_resume_against_other_weights_is_refused(tmp_path):
    """A checkpoint remembers which frozen weights it was trained on."""
    from vaemotion_jax.training.checkpoint import check_same_run
    ckpt = Checkpointer(str(tmp_path / "ck"), every=1)
    meta = {"backbone": {"path": "/w/a", "fingerprint": "aaa"}, "stage": "stage1"}
    ckpt.save(1, {"x": jnp.zeros(3)}, {"position": 4}, meta, force=True)
    ckpt.close()
    saved = Checkpointer(str(tmp_path / "ck"), every=1).read_meta(1)
    check_same_run(saved, meta, "ck")
    other = {**meta, "backbone": {"path": "/w/a", "fingerprint": "bbb"}}
    with pytest.raises(RuntimeError, match="backbone differs"):
        check_same_run(saved, other, "ck")


def test_weights_that_are_not_the_presets_are_named(assets, caplog):
    """The planner compiles the config's presets: a run whose checkpoint differs says where."""
    from vaemotion_jax import sharding
    from vaemotion_jax.presets import preset_differences
    from vaemotion_jax.training import weights
    c = config(settings(assets, "unused"))
    mesh = sharding.make_mesh((1, 1, 1))
    with caplog.at_level("WARNING", logger="vaemotion_jax.weights"):
        qwen_model, _, ast_model, _ = weights.load_frozen(c, assets["backbone"], assets["audio"],
                                                          mesh)
    assert preset_differences(c, qwen_model.config, ast_model.config) == []   # loaded == preset
    assert not caplog.records
    with c.unlocked():
        c.ast_preset = "ast_audioset"
    with caplog.at_level("WARNING", logger="vaemotion_jax.weights"):
        weights.load_frozen(c, assets["backbone"], assets["audio"], mesh)
    (record,) = caplog.records
    message = record.getMessage()
    assert "audio_encoder.hidden_size" in message and "ast_audioset" in message
