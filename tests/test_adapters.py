"""The audio adapter: shapes for video grids, parameter count, maths, and frozen-encoder gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from scipy.special import erf

from vaemotion_jax.checkpoints.mapping import flatten
from vaemotion_jax.models.adapters import (AudioAdapterConfig, MLPAudioAdapter,
                                           make_audio_adapter, video_tokens_for_grid)
from vaemotion_jax.models.ast import ASTModel, ast_audioset, init_params, tiny
from vaemotion_jax.sharding import LOGICAL_RULES


def mlp_param_count(t_a, d_a, l_v, d_v, seq_hidden, channel_hidden):
    """Kernels + biases of T_a -> S -> L_v (sequence) and d_a -> C -> d_v (channels)."""
    return (t_a * seq_hidden + seq_hidden + seq_hidden * l_v + l_v
            + d_a * channel_hidden + channel_hidden + channel_hidden * d_v + d_v)


def abstract_adapter(cfg, t_a, d_a):
    adapter = make_audio_adapter(cfg, t_a, d_a)
    x = jax.ShapeDtypeStruct((2, t_a, d_a), jnp.float32)
    params = jax.eval_shape(adapter.init, jax.random.key(0), x)["params"]
    out = jax.eval_shape(lambda p, v: adapter.apply({"params": p}, v), nn.meta.unbox(params), x)
    return params, out


@pytest.mark.parametrize("grid, tokens", [((1, 36, 36), 324), ((2, 36, 36), 648),
                                          ((4, 36, 36), 1296), ((1, 8, 12), 24), ((3, 2, 2), 3)])
def test_video_tokens_for_grid(grid, tokens):
    assert video_tokens_for_grid(grid) == tokens
    assert video_tokens_for_grid(grid, spatial_merge_size=1) == tokens * 4


@pytest.mark.parametrize("grid", [(1, 35, 36), (0, 36, 36)])
def test_video_grid_errors(grid):
    with pytest.raises(ValueError, match="divisible by the spatial merge size"):
        video_tokens_for_grid(grid)


@pytest.mark.parametrize("grid", [(1, 36, 36), (2, 36, 36), (4, 36, 36), (1, 8, 12)])
def test_output_has_the_shape_of_the_video_tokens(grid):
    released = ast_audioset()
    cfg = AudioAdapterConfig(num_tokens=video_tokens_for_grid(grid), out_dim=3584)
    params, out = abstract_adapter(cfg, released.num_tokens, released.hidden_size)
    assert out.shape == (2, video_tokens_for_grid(grid), 3584) and out.dtype == jnp.float32
    count = sum(p.value.size for p in flatten(params).values())
    l_v = cfg.num_tokens
    assert count == mlp_param_count(1214, 768, l_v, 3584, l_v, 3584)


def test_default_config_parameter_count():
    params, _ = abstract_adapter(AudioAdapterConfig(), 1214, 768)
    count = sum(p.value.size for p in flatten(params).values())
    assert count == mlp_param_count(1214, 768, 324, 3584, 324, 3584) == 16_103_696


def test_explicit_hidden_sizes_and_activation():
    cfg = AudioAdapterConfig(num_tokens=6, out_dim=10, seq_hidden=7, channel_hidden=9,
                             activation="relu")
    params, out = abstract_adapter(cfg, 13, 5)
    shapes = {k: v.value.shape for k, v in flatten(params).items()}
    assert shapes == {"seq_fc1/kernel": (13, 7), "seq_fc1/bias": (7,),
                      "seq_fc2/kernel": (7, 6), "seq_fc2/bias": (6,),
                      "channel_fc1/kernel": (5, 9), "channel_fc1/bias": (9,),
                      "channel_fc2/kernel": (9, 10), "channel_fc2/bias": (10,)}
    assert sum(np.prod(s) for s in shapes.values()) == mlp_param_count(13, 5, 6, 10, 7, 9)
    assert out.shape == (2, 6, 10)


def test_maths_is_sequence_pair_then_channel_pair():
    cfg = AudioAdapterConfig(num_tokens=4, out_dim=6, seq_hidden=5, channel_hidden=7)
    adapter = make_audio_adapter(cfg, 9, 3)
    x = np.random.default_rng(0).normal(size=(2, 9, 3)).astype(np.float32)
    params = nn.meta.unbox(jax.jit(adapter.init)(jax.random.key(1), x)["params"])
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    gelu = lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2)))
    dense = lambda v, name: v @ p[name]["kernel"] + p[name]["bias"]
    seq = dense(gelu(dense(x.transpose(0, 2, 1), "seq_fc1")), "seq_fc2").transpose(0, 2, 1)
    want = dense(gelu(dense(seq, "channel_fc1")), "channel_fc2")
    with jax.default_matmul_precision("highest"):
        got = adapter.apply({"params": params}, x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frozen", [True, False])
def test_gradient_reaches_only_the_adapter_when_the_encoder_is_frozen(frozen):
    ast_cfg = tiny()
    encoder = ASTModel(ast_cfg, frozen=frozen)
    adapter = make_audio_adapter(AudioAdapterConfig(num_tokens=8, out_dim=24),
                                 ast_cfg.num_tokens, ast_cfg.hidden_size)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 128)), jnp.float32)
    params = {"ast": nn.meta.unbox(init_params(ast_cfg, jax.random.key(0))),
              "adapter": nn.meta.unbox(jax.jit(adapter.init)(
                  jax.random.key(1), jnp.zeros((1, ast_cfg.num_tokens, ast_cfg.hidden_size)))
                  ["params"])}

    def loss(p):
        features = encoder.apply({"params": p["ast"]}, x).last_hidden_state
        return jnp.mean(adapter.apply({"params": p["adapter"]}, features) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    ast_norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["ast"])]
    adapter_norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["adapter"])]
    assert all(n > 0 for n in adapter_norms)
    if frozen:
        assert all(n == 0 for n in ast_norms)
    else:
        assert all(n > 0 for n in ast_norms)  # the control: the same graph does reach the AST


def test_input_shape_and_kind_errors():
    adapter = make_audio_adapter(AudioAdapterConfig(num_tokens=4, out_dim=6), 9, 3)
    assert isinstance(adapter, MLPAudioAdapter)
    with pytest.raises(ValueError, match=r"built for features \(batch, 9, 3\), got \(1, 10, 3\)"):
        adapter.init(jax.random.key(0), jnp.zeros((1, 10, 3)))
    with pytest.raises(ValueError, match=r"unknown audio adapter kind 'perceiver'; known: \['mlp', 'qformer'\]"):
        make_audio_adapter(AudioAdapterConfig(kind="perceiver"), 9, 3)
    with pytest.raises(ValueError, match="must be positive"):
        make_audio_adapter(AudioAdapterConfig(num_tokens=0), 9, 3)


def test_every_param_has_known_logical_axes():
    params, _ = abstract_adapter(AudioAdapterConfig(num_tokens=4, out_dim=6), 9, 3)
    known = {name for name, _ in LOGICAL_RULES}
    for path, leaf in flatten(params).items():
        assert isinstance(leaf, nn.LogicallyPartitioned), path
        assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= known, (path, leaf.names)


def test_bfloat16_compute():
    adapter = make_audio_adapter(AudioAdapterConfig(num_tokens=4, out_dim=6), 9, 3,
                                 dtype=jnp.bfloat16)
    x = jnp.ones((1, 9, 3), jnp.float32)
    params = jax.jit(adapter.init)(jax.random.key(0), x)["params"]
    assert {p.dtype for p in jax.tree.leaves(nn.meta.unbox(params))} == {jnp.dtype(jnp.float32)}
    assert adapter.apply({"params": params}, x).dtype == jnp.bfloat16
