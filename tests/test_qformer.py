"""AcoustEmo's utterance-aware acoustic Q-Former (kind="qformer"): window masks from timestamps
(eq. 1) against hand computation, masked windows = slices (eq. 2), masking of absent slots,
ablation switches (Table 2), gradients, the instruction-aware prompt, and config/weights files."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vaemotion_jax import sharding
from vaemotion_jax.checkpoints.emotion import export_emotion_modules, load_emotion_modules
from vaemotion_jax.checkpoints.mapping import flatten, unflatten
from vaemotion_jax.data.utterances import (clip_windows, fixed_windows, time_patches,
                                           timestamps_text, utterance_frame_mask,
                                           utterance_inputs, window_token_mask, with_timestamps)
from vaemotion_jax.models import ast as ast_lib
from vaemotion_jax.models.adapters import AudioAdapterConfig, MLPAudioAdapter, make_audio_adapter
from vaemotion_jax.models.qformer import AcousticQFormer, UtteranceAwareAdapter
from vaemotion_jax.training import weights

# Grid (frequency 2, time 12): 26 tokens, an AST window of 1.28 s at 10 time patches/s.
AST = ast_lib.ASTConfig(hidden_size=12, num_layers=1, num_heads=2, intermediate_size=16,
                        num_mel_bins=32, frequency_stride=16, time_stride=10, max_length=128)
T_A, D_A = AST.num_tokens, AST.hidden_size
K, D, L_V, D_V = 3, 8, 5, 7


def qcfg(**kw) -> AudioAdapterConfig:
    base = dict(kind="qformer", num_tokens=L_V, out_dim=D_V, queries=K, qformer_dim=D,
                qformer_heads=2, qformer_layers=2, max_utterances=3)
    return AudioAdapterConfig(**{**base, **kw})


def features(batch=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, T_A, D_A)), jnp.float32)


def masks(cfg, windows_per_example):
    """(B, N_max, T_A) from per-example lists of (start, end) seconds."""
    return jnp.asarray(np.stack([window_token_mask(w, cfg.max_utterances, AST)
                                 for w in windows_per_example]))


def jitted(module, method=None):
    """jit(apply): (params, features[, mask]) -> output; op-by-op apply is slow on CPU."""
    return jax.jit(lambda p, *a: module.apply({"params": p}, *a, method=method))


def init(adapter, x, m=None):
    return nn.meta.unbox(jax.jit(adapter.init)(jax.random.key(1), x, m)["params"])


def random_params(params, seed=3, std=0.3):
    """Non-trivial values everywhere (biases start at zero, LayerNorms at identity)."""
    rng = np.random.default_rng(seed)
    out = {p: jnp.asarray((1.0 if p.endswith("scale") else 0.0) + std * rng.normal(size=x.shape),
                          jnp.float32) for p, x in sorted(flatten(params).items())}
    return unflatten(out)


# --- host side: windows and masks ------------------------------------------------------------

def test_window_mask_of_a_released_ast_window_by_hand():
    """10.24 s AST window (12 x 101 patches); utterance [2.0, 3.5] s -> time patches 20..34."""
    released = ast_lib.ast_audioset()
    assert released.grid == (12, 101) and released.num_tokens == 1214
    mask = utterance_frame_mask([[2.0, 3.5]], 0.0, 10.24, 2, released)
    assert mask.shape == (2, 1214) and mask.dtype == bool
    want = sorted(2 + f * 101 + t for f in range(12) for t in range(20, 35))
    assert np.flatnonzero(mask[0]).tolist() == want
    assert len(want) == 12 * 15 and not mask[1].any() and not mask[:, :2].any()
    # utterances are in file seconds: the same utterance in a clip starting at 10 s
    shifted = utterance_frame_mask([[12.0, 13.5]], 10.0, 20.24, 2, released)
    np.testing.assert_array_equal(shifted, mask)


def test_time_patches_follow_eq1():
    fs10 = ast_lib.ast_audioset()
    assert time_patches(2.0, 3.5, fs10).tolist() == list(range(20, 35))
    assert time_patches(0.3, 0.7, fs10).tolist() == [3, 4, 5, 6]      # no float-noise ceil
    assert time_patches(2.05, 2.31, fs10).tolist() == [21, 22, 23]    # ceil at both ends
    assert time_patches(2.01, 2.05, fs10).tolist() == [20]            # < one step: its patch
    assert time_patches(9.5, 12.0, fs10).tolist() == list(range(95, 101))  # cut at the grid
    assert time_patches(10.1, 12.0, fs10).tolist() == []              # after the window


def test_averaged_windows_mark_the_overlap_in_each():
    """Features averaged over AST windows starting at 0 and 10.24 s: an utterance across the
    boundary marks the end of the first window's patches and the start of the second's."""
    released = ast_lib.ast_audioset()
    one = window_token_mask([(10.1, 12.0)], 1, released)
    assert not one.any()
    two = window_token_mask([(10.1, 12.0)], 1, released, window_starts=(0.0, 10.24))
    time = two[0, 2:].reshape(12, 101)
    assert (time == time[:1]).all()                                   # every frequency patch
    assert np.flatnonzero(time[0]).tolist() == list(range(0, 18))     # [0, 1.76) s of window 2
    two = window_token_mask([(9.0, 12.0)], 1, released, window_starts=(0.0, 10.24))
    assert np.flatnonzero(two[0, 2:].reshape(12, 101)[0]).tolist() == (
        list(range(0, 18)) + list(range(90, 101)))


def test_clip_windows_cut_sort_truncate_and_fall_back():
    utts = [[5.0, 7.5], [0.5, 2.0], [9.0, 12.0], [20.0, 21.0], [2.5, 4.0]]
    assert clip_windows(utts, 1.0, 11.0, 8) == [(0.0, 1.0), (1.5, 3.0), (4.0, 6.5), (8.0, 10.0)]
    assert clip_windows(utts, 1.0, 11.0, 2) == [(0.0, 1.0), (1.5, 3.0)]
    assert fixed_windows(10.24, 2.0, 8) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0),
                                            (8.0, 10.0), (10.0, 10.24)]
    assert fixed_windows(4.0, 2.0, 8) == [(0.0, 2.0), (2.0, 4.0)]
    assert fixed_windows(10.24, 2.0, 3) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    # no utterance in the clip: fixed windows, or none (global tokens only)
    for none in (None, [], [[20.0, 21.0]]):
        assert clip_windows(none, 0.0, 4.0, 8) == [(0.0, 2.0), (2.0, 4.0)]
        assert clip_windows(none, 0.0, 4.0, 8, no_utterances="global") == []
    # the fixed-window ablation ignores the utterances
    assert clip_windows(utts, 0.0, 3.0, 8, windows="fixed", window_seconds=1.5) == [
        (0.0, 1.5), (1.5, 3.0)]
    with pytest.raises(ValueError, match="windows 'words'"):
        clip_windows(utts, 0.0, 3.0, 8, windows="words")


def test_utterance_inputs_follow_the_config():
    cfg = qcfg(max_utterances=4)
    mask, wins, label = utterance_inputs(cfg, [[0.2, 0.6]], 0.0, 1.28, AST)
    assert wins == [(0.2, 0.6)] and label == "Utterance"
    np.testing.assert_array_equal(mask, window_token_mask(wins, 4, AST))
    assert mask.shape == (4, T_A) and mask[0].sum() == 2 * 4 and not mask[1:].any()
    mask, wins, label = utterance_inputs(cfg.replace(windows="fixed", window_seconds=0.5),
                                         [[0.2, 0.6]], 0.0, 1.28, AST)
    assert wins == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.28)] and label == "Segment"
    _, wins, label = utterance_inputs(cfg.replace(window_seconds=1.0), None, 0.0, 1.28, AST)
    assert wins == [(0.0, 1.0), (1.0, 1.28)] and label == "Segment"
    mask, wins, _ = utterance_inputs(cfg.replace(no_utterances="global"), None, 0.0, 1.28, AST)
    assert wins == [] and not mask.any()
    assert utterance_inputs(cfg.replace(utterance_qformer=False), [[0.2, 0.6]], 0.0, 1.28,
                            AST)[:2] == (None, [])


def test_instruction_aware_prompt_text():
    wins = [(0.0, 2.3), (2.84, 5.06)]
    assert timestamps_text(wins) == "Utterance 1: 0.0-2.3 s; Utterance 2: 2.8-5.1 s."
    assert timestamps_text(wins[:1], "Segment") == "Segment 1: 0.0-2.3 s."
    assert with_timestamps("How does the speaker feel?", wins) == (
        "Utterance 1: 0.0-2.3 s; Utterance 2: 2.8-5.1 s.\nHow does the speaker feel?")
    assert with_timestamps("How does the speaker feel?", []) == "How does the speaker feel?"


# --- the module ------------------------------------------------------------------------------

@pytest.mark.parametrize("n_max", [1, 3, 8])
def test_output_shapes(n_max):
    cfg = qcfg(max_utterances=n_max)
    adapter = make_audio_adapter(cfg, T_A, D_A)
    assert isinstance(adapter, UtteranceAwareAdapter)
    x = features()
    wins = [[(0.0, 0.4)], [(0.1, 0.3), (0.5, 1.2)][:n_max]]
    m = masks(cfg, wins)
    params = init(adapter, x, m)
    assert params["token_fc"]["kernel"].shape == (K * (1 + n_max), L_V)
    assert params["proj"]["kernel"].shape == (D, D_V)
    out = jitted(adapter)(params, x, m)
    assert out.shape == (2, L_V, D_V) and out.dtype == jnp.float32
    tokens, tmask = jitted(adapter, "acoustic_tokens")(params, x, m)
    assert tokens.shape == (2, K * (1 + n_max), D) and tmask.shape == (2, K * (1 + n_max))
    present = [[True] + [j < len(w) for j in range(n_max)] for w in wins]  # global first
    np.testing.assert_array_equal(np.asarray(tmask), np.repeat(present, K, axis=1))


def test_masked_window_equals_the_slice():
    """Eq. (1)-(2): attending under a window mask is attending to F_A[a:b] alone."""
    qf = AcousticQFormer(queries=K, dim=D, layers=2, heads=2, mlp=16)
    x = features(1)
    mask = np.zeros((1, 3, T_A), bool)                                # window 2: empty
    mask[0, 0, 5:11] = True
    mask[0, 1, [2, 3, 20, 25]] = True
    params = random_params(nn.meta.unbox(qf.init(jax.random.key(0), x, jnp.asarray(mask))["params"]))
    out = jitted(qf)(params, x, jnp.asarray(mask))
    for w in range(2):
        sliced = jitted(qf)(params, x[:, mask[0, w]])[:, 0]
        np.testing.assert_allclose(np.asarray(out[:, w]), np.asarray(sliced), rtol=1e-5, atol=1e-5)
    # a window without frames reads nothing: its queries see no feature (and no NaN)
    other = jitted(qf)(params, x + 3.0 * features(1, seed=9), jnp.asarray(mask))
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_array_equal(np.asarray(other[:, 2]), np.asarray(out[:, 2]))
    assert not np.allclose(np.asarray(other[:, 0]), np.asarray(out[:, 0]))


def test_slot_tokens_depend_only_on_their_window_and_absent_slots_are_zero():
    cfg = qcfg()
    adapter = make_audio_adapter(cfg, T_A, D_A)
    x = features(1)
    m = masks(cfg, [[(0.0, 0.3), (0.6, 0.9)]])                        # slot 3 absent
    params = random_params(init(adapter, x, m))
    fn = jitted(adapter, "acoustic_tokens")
    tok = lambda v: np.asarray(fn(params, v, m)[0])
    base = tok(x)
    in_slot1 = np.asarray(m[0, 0])
    noise = jnp.asarray(np.random.default_rng(5).normal(0, 5, x.shape), jnp.float32)
    moved = tok(jnp.where(in_slot1[None, :, None], x, x + noise))     # all but slot 1's frames
    slot = lambda t, i: t[0, i * K:(i + 1) * K]                       # slot 0 is the global one
    np.testing.assert_array_equal(slot(moved, 1), slot(base, 1))
    assert not np.allclose(slot(moved, 2), slot(base, 2))            # the control
    assert not np.allclose(slot(moved, 0), slot(base, 0))
    assert (slot(base, 3) == 0).all() and (slot(moved, 3) == 0).all()


def test_without_global_the_output_ignores_frames_outside_every_window():
    x = features(1)
    noise = jnp.asarray(np.random.default_rng(6).normal(0, 5, x.shape), jnp.float32)
    for global_on in (False, True):
        cfg = qcfg(global_qformer=global_on)
        adapter = make_audio_adapter(cfg, T_A, D_A)
        m = masks(cfg, [[(0.2, 0.5)]])
        params = random_params(init(adapter, x, m))
        inside = np.asarray(m[0].any(0))
        assert 0 < inside.sum() < T_A and not inside[:2].any()
        fn = jitted(adapter)
        f = lambda v: np.asarray(fn(params, v, m))
        moved = f(jnp.where(inside[None, :, None], x, x + noise))
        if global_on:
            assert not np.allclose(moved, f(x))      # the global Q-Former reads every frame
        else:
            np.testing.assert_array_equal(moved, f(x))


@pytest.mark.parametrize("global_on", [True, False])
def test_all_absent_slots_give_no_nan(global_on):
    cfg = qcfg(global_qformer=global_on)
    adapter = make_audio_adapter(cfg, T_A, D_A)
    x = features()
    m = jnp.zeros((2, cfg.max_utterances, T_A), bool)
    params = random_params(init(adapter, x, m))
    out = jitted(adapter)(params, x, m)
    assert np.isfinite(np.asarray(out)).all()
    tokens, tmask = jitted(adapter, "acoustic_tokens")(params, x, m)
    assert np.isfinite(np.asarray(tokens)).all()
    assert np.asarray(tmask).sum() == (2 * K if global_on else 0)
    gp, gx = jax.jit(jax.grad(lambda p, v: jnp.sum(adapter.apply({"params": p}, v, m) ** 2),
                              argnums=(0, 1)))(params, x)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(gp))
    assert np.isfinite(np.asarray(gx)).all()
    if not global_on:  # nothing reads the features
        assert (np.asarray(gx) == 0).all()


def test_gradients_reach_every_adapter_param_and_only_attended_frames():
    cfg = qcfg(global_qformer=False)
    adapter = make_audio_adapter(cfg, T_A, D_A)
    x = features()
    m = masks(cfg, [[(0.0, 0.3), (0.5, 0.7)], [(0.9, 1.2)]])
    params = random_params(init(adapter, x, m))
    loss = lambda p, v: jnp.mean(adapter.apply({"params": p}, v, m) ** 2)
    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    for path, g in flatten(gp).items():
        g = np.asarray(g)
        assert np.isfinite(g).all(), path
        # a key bias shifts every score of a query equally: softmax ignores it (gradient ~0)
        if not path.endswith("k/bias"):
            assert np.abs(g).max() > 0, path
    attended = np.asarray(m.any(1))                                   # (B, T_A)
    gx = np.abs(np.asarray(gx)).max(-1)
    assert (gx[~attended] == 0).all() and (gx[attended] > 0).all()


def test_ablation_switches():
    x = features()
    wins = [[(0.05, 0.45)], [(0.1, 0.35), (0.7, 1.1)]]
    full_cfg = qcfg()
    full = make_audio_adapter(full_cfg, T_A, D_A)
    m = masks(full_cfg, wins)
    p_full = init(full, x, m)
    assert {"global_qformer", "utterance_qformer"} <= set(p_full)
    # w/o Global Acoustic Q-Former
    no_global = make_audio_adapter(qcfg(global_qformer=False), T_A, D_A)
    p = init(no_global, x, m)
    assert "global_qformer" not in p and p["token_fc"]["kernel"].shape == (K * 3, L_V)
    # w/o Utterance-Aware A-QF: global tokens only, the masks play no part (None allowed)
    no_utt = make_audio_adapter(qcfg(utterance_qformer=False), T_A, D_A)
    p = random_params(init(no_utt, x))
    assert "utterance_qformer" not in p and p["token_fc"]["kernel"].shape == (K, L_V)
    out = jitted(no_utt)(p, x)
    np.testing.assert_array_equal(jitted(no_utt)(p, x, m), out)
    # w/ fixed-length windows: the same module, other windows from the host
    fixed_cfg = qcfg(windows="fixed", window_seconds=0.5)
    fixed = make_audio_adapter(fixed_cfg, T_A, D_A)
    shapes = lambda t: jax.tree.map(lambda a: a.shape, t)
    assert shapes(init(fixed, x, m)) == shapes(p_full)
    utts = [[0.05, 0.45]]
    m_utt = utterance_inputs(full_cfg, utts, 0.0, 1.28, AST)[0]
    m_fix = utterance_inputs(fixed_cfg, utts, 0.0, 1.28, AST)[0]
    assert not np.array_equal(m_utt, m_fix)
    params = random_params(p_full)
    fn = jitted(full)
    run = lambda mm: np.asarray(fn(params, x[:1], jnp.asarray(mm)[None]))
    assert not np.allclose(run(m_utt), run(m_fix))


def test_utterance_mask_is_required_and_checked():
    cfg = qcfg()
    adapter = make_audio_adapter(cfg, T_A, D_A)
    x = features()
    params = init(adapter, x)  # initialisation alone may omit it
    with pytest.raises(ValueError, match=r"needs utterance_mask \(2, 3, 26\)"):
        adapter.apply({"params": params}, x)
    with pytest.raises(ValueError, match=r"utterance_mask must be .* = \(2, 3, 26\), got \(2, 4, 26\)"):
        adapter.apply({"params": params}, x, jnp.zeros((2, 4, T_A), bool))
    with pytest.raises(ValueError, match=r"built for features \(batch, 26, 12\)"):
        adapter.apply({"params": params}, x[:, 1:], jnp.zeros((2, 3, T_A - 1), bool))


@pytest.mark.parametrize("kw, message", [
    (dict(qformer_heads=3), "qformer_dim 8 is not a multiple of qformer_heads 3"),
    (dict(queries=0), "queries must be >= 1"),
    (dict(global_qformer=False, utterance_qformer=False), "both off"),
    (dict(max_utterances=0), "max_utterances must be >= 1"),
    (dict(windows="words"), "windows 'words' not one of"),
    (dict(no_utterances="drop"), "no_utterances 'drop' not one of"),
    (dict(window_seconds=0.0), "window_seconds must be > 0"),
    (dict(global_qformer=False, no_utterances="global"), "would give no audio tokens"),
])
def test_config_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        make_audio_adapter(qcfg(**kw), T_A, D_A)


def test_mlp_adapter_takes_and_ignores_the_mask():
    adapter = make_audio_adapter(AudioAdapterConfig(num_tokens=4, out_dim=6), T_A, D_A)
    assert isinstance(adapter, MLPAudioAdapter)
    x = features()
    params = init(adapter, x)
    m = masks(qcfg(), [[(0.0, 0.3)], []])
    np.testing.assert_array_equal(jitted(adapter)(params, x, m), jitted(adapter)(params, x))


def test_vaemotion_audio_tokens_pass_the_mask_to_the_adapter():
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.models.vaemotion import VAEmotionConfig, VAEmotionLLM
    qwen = qwen_config.tiny()
    cfg = qcfg(out_dim=qwen.text.hidden_size)
    model = VAEmotionLLM(VAEmotionConfig(qwen, AST, cfg))
    rng = np.random.default_rng(0)
    fbank = jnp.asarray(rng.normal(size=(1, 2, AST.max_length, AST.num_mel_bins)), jnp.float32)
    fmask = jnp.asarray([[True, False]])
    m = masks(cfg, [[(0.1, 0.5)]])
    variables = jax.jit(lambda r: model.init(r, fbank, fmask, m, method="audio_tokens"))(
        jax.random.key(0))
    assert set(variables["params"]) == {"audio_encoder", "audio_adapter"}
    out = jax.jit(lambda v: model.apply(v, fbank, fmask, m, method="audio_tokens"))(variables)
    feats = jax.jit(lambda v: model.apply(v, fbank, fmask, method="audio_features"))(variables)
    adapter = make_audio_adapter(cfg, T_A, D_A)
    want = jitted(adapter)(variables["params"]["audio_adapter"], feats, m)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-6, atol=1e-6)
    assert out.shape == (1, L_V, qwen.text.hidden_size)


# --- params: logical axes, counts, files -----------------------------------------------------

def test_every_param_has_known_logical_axes_and_shards():
    adapter = make_audio_adapter(qcfg(qformer_dim=16, qformer_heads=4), T_A, D_A)
    boxed = jax.eval_shape(adapter.init, jax.random.key(0), jax.ShapeDtypeStruct((2, T_A, D_A), jnp.float32))["params"]
    known = {name for name, _ in sharding.LOGICAL_RULES}
    for path, leaf in flatten(boxed).items():
        assert isinstance(leaf, nn.LogicallyPartitioned), path
        assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= known, (path, leaf.names)
    mesh = sharding.make_mesh((1, 2, 2))
    specs = flatten(jax.tree.map(lambda s: s.spec, sharding.param_shardings(boxed, mesh)))
    assert specs["utterance_qformer/layer_0/fc1/kernel"] == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert specs["global_qformer/query_tokens/kernel"] == jax.sharding.PartitionSpec(None, "fsdp")


def qformer_param_count(k, d, d_a, layers, mlp):
    per_layer = (3 * 2 * d                       # three LayerNorms
                 + 4 * (d * d + d)               # self-attention q, k, v, o
                 + 2 * (d * d + d) + 2 * (d_a * d + d)   # cross-attention q, o and k, v
                 + d * mlp + mlp + mlp * d + d)  # MLP
    return k * d + layers * per_layer + 2 * d


def test_default_parameter_count():
    released = ast_lib.ast_audioset()
    cfg = AudioAdapterConfig(kind="qformer")     # K 32, d_model 768, 2 layers, N_max 8
    adapter = make_audio_adapter(cfg, released.num_tokens, released.hidden_size)
    boxed = jax.eval_shape(adapter.init, jax.random.key(0),
                           jax.ShapeDtypeStruct((1, released.num_tokens, 768), jnp.float32))["params"]
    count = sum(p.value.size for p in flatten(boxed).values())
    one = qformer_param_count(32, 768, 768, 2, 3072)
    assert count == 2 * one + (32 * 9 * 324 + 324) + (768 * 3584 + 3584)


def test_qformer_config_round_trips_through_json_and_the_adapter_files(tmp_path):
    cfg = qcfg(max_utterances=2, windows="fixed", window_seconds=1.5, no_utterances="global",
               qformer_mlp=12)
    assert AudioAdapterConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    mesh = sharding.make_mesh((1, 2, 2))
    with jax.set_mesh(mesh):
        params = weights.init_adapter(cfg, AST, mesh, jax.random.key(4))
        weights.export_adapter(params, cfg, str(tmp_path / "adapter"))
        loaded, cfg2 = weights.load_adapter(str(tmp_path / "adapter"), AST, mesh)
    assert cfg2 == cfg
    want, got = flatten(params), flatten(loaded)
    assert sorted(want) == sorted(got) and any(k.startswith("utterance_qformer/") for k in got)
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
    # one format for the small modules: the Stage 1 export is an emotion-modules directory, and
    # Stage 2's emoadapter/ (adapter beside the EmoAdapter) loads as an adapter too
    modules, configs = load_emotion_modules(str(tmp_path / "adapter"))
    assert list(modules) == ["audio_adapter"]
    export_emotion_modules({"audio_adapter": params, "extra": {"fc": {"bias": np.ones(3)}}},
                           {"audio_adapter": cfg, "extra": {}}, str(tmp_path / "emo"))
    with jax.set_mesh(mesh):
        from_emo, cfg3 = weights.load_adapter(str(tmp_path / "emo"), AST, mesh)
    assert cfg3 == cfg
    for key, value in flatten(from_emo).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(want[key]))


def test_an_adapter_exported_in_the_old_format_still_loads(tmp_path):
    """Stage 1 exports from before the shared format: adapter_config.json + our-layout tensors."""
    from vaemotion_jax.checkpoints.safetensors_io import save_safetensors_dir
    cfg = qcfg(max_utterances=2)
    mesh = sharding.make_mesh((1, 1, 1))
    with jax.set_mesh(mesh):
        params = weights.init_adapter(cfg, AST, mesh, jax.random.key(5))
        old = str(tmp_path / "old")
        save_safetensors_dir({"audio_adapter." + k.replace("/", "."): np.asarray(v)
                              for k, v in flatten(params).items()}, old)
        with open(f"{old}/{weights.LEGACY_CONFIG}", "w") as f:
            json.dump(dataclasses.asdict(cfg), f)
        loaded, cfg2 = weights.load_adapter(old, AST, mesh)
    assert cfg2 == cfg and weights.is_adapter_dir(old)
    for key, value in flatten(params).items():
        np.testing.assert_array_equal(np.asarray(flatten(loaded)[key]), np.asarray(value))
    with pytest.raises(FileNotFoundError, match="emotion_modules.json"):
        weights.load_adapter(str(tmp_path), AST, mesh)


def test_bfloat16_compute():
    cfg = qcfg()
    adapter = make_audio_adapter(cfg, T_A, D_A, dtype=jnp.bfloat16)
    x = features()
    m = masks(cfg, [[(0.0, 0.4)], []])
    params = init(adapter, x, m)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    out = jitted(adapter)(params, x, m)
    assert out.dtype == jnp.bfloat16 and np.isfinite(np.asarray(out, np.float32)).all()
