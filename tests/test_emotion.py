"""EmoAdapter: Emotion Enhancer (eq. 2) and Supervisor (eqs. 3-4) against PyTorch modules built
from the paper's description, and their safetensors export."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from safetensors.torch import load_file

from vaemotion_jax.checkpoints.emotion import (CONFIG, WEIGHTS, export_emotion_modules,
                                               load_emotion_modules)
from vaemotion_jax.checkpoints.mapping import flatten, unflatten
from vaemotion_jax.checkpoints.safetensors_io import CheckpointError
from vaemotion_jax.models.adapters import AudioAdapterConfig, make_audio_adapter
from vaemotion_jax.models.emotion import EmotionEnhancer, EmotionSupervisor, masked_mean
from vaemotion_jax.sharding import logical_names

D, H = 48, 24


def randomize(params, seed=0, std=0.3):
    """Non-trivial values everywhere (the enhancer's W2 starts at zero)."""
    flat = flatten(nn.meta.unbox(params))
    keys = jax.random.split(jax.random.key(seed), len(flat))
    return unflatten({p: (1.0 if p.endswith("scale") else 0.0) + std * jax.random.normal(k, x.shape)
                      for k, (p, x) in zip(keys, sorted(flat.items()))})


def tokens(shape, seed=0):
    """Tokens with a large common offset, like LLM-space features (tests the two-pass LN)."""
    rng = np.random.default_rng(seed)
    return (4.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)


def torch_mlp(sd, prefix, d, h, out):
    m = torch.nn.Sequential(torch.nn.LayerNorm(d, eps=1e-5), torch.nn.Linear(d, h), torch.nn.GELU(),
                            torch.nn.Linear(h, out))
    m.load_state_dict({"0.weight": sd[f"{prefix}.norm.weight"], "0.bias": sd[f"{prefix}.norm.bias"],
                       "1.weight": sd[f"{prefix}.fc1.weight"], "1.bias": sd[f"{prefix}.fc1.bias"],
                       "3.weight": sd[f"{prefix}.fc2.weight"], "3.bias": sd[f"{prefix}.fc2.bias"]})
    return m


def init(module, *args):
    return module.init(jax.random.key(0), *args)["params"]


def test_enhancer_is_identity_at_init_and_position_wise():
    z = jnp.asarray(tokens((2, 7, D)))
    enh = EmotionEnhancer(D, H)
    p = nn.meta.unbox(init(enh, z))
    assert jax.tree.map(jnp.shape, p) == {"norm": {"scale": (D,), "bias": (D,)},
                                          "fc1": {"kernel": (D, H), "bias": (H,)},
                                          "fc2": {"kernel": (H, D), "bias": (D,)}}
    np.testing.assert_array_equal(enh.apply({"params": p}, z), z)
    p = randomize(p)
    out = enh.apply({"params": p}, z)
    assert out.shape == z.shape and np.abs(np.asarray(out - z)).max() > 0.1
    joint = enh.apply({"params": p}, jnp.concatenate([z[:, :3], z[:, 3:]], 1))
    np.testing.assert_allclose(joint, jnp.concatenate(
        [enh.apply({"params": p}, z[:, :3]), enh.apply({"params": p}, z[:, 3:])], 1), atol=1e-6)
    # at init only W2 (and its bias) get a gradient: W1 sits behind the zero W2
    p0 = nn.meta.unbox(init(enh, z))
    g = flatten(jax.grad(lambda q: jnp.sum(enh.apply({"params": q}, z) ** 2))(p0))
    assert not np.any(g["fc1/kernel"]) and np.abs(np.asarray(g["fc2/kernel"])).max() > 0


def test_enhancer_and_supervisor_match_torch(tmp_path):
    z = tokens((3, 9, D), seed=1)
    mask = np.ones((3, 9), bool)
    mask[1, 6:] = False
    mask[2, :2] = False
    enh, sup = EmotionEnhancer(D, H), EmotionSupervisor(D, H)
    params = {"emotion_enhancer": randomize(init(enh, z), 1),
              "emotion_supervisor": randomize(init(sup, z, mask), 2)}
    ours_e = np.asarray(enh.apply({"params": params["emotion_enhancer"]}, z))
    ours_s = np.asarray(sup.apply({"params": params["emotion_supervisor"]}, z, mask))
    export_emotion_modules(params, {"emotion_enhancer": {"hidden_size": D, "mlp_hidden": H},
                                    "emotion_supervisor": {"hidden_size": D, "mlp_hidden": H}},
                           str(tmp_path))
    sd = load_file(str(tmp_path / WEIGHTS))
    with torch.no_grad():
        zt = torch.tensor(z)
        ref_e = (zt + torch_mlp(sd, "emotion_enhancer", D, H, D)(zt)).numpy()
        m = torch.tensor(mask, dtype=torch.float32)[..., None]
        pooled = (zt * m).sum(1) / m.sum(1)
        ref_s = torch.tanh(torch_mlp(sd, "emotion_supervisor", D, H, 2)(pooled)).numpy()
    assert np.abs(ref_e - z).max() > 0.1 and np.abs(ref_s).max() > 0.1
    assert np.abs(ours_e - ref_e).max() <= 1e-5
    assert np.abs(ours_s - ref_s).max() <= 1e-5


def test_supervisor_pools_only_valid_tokens():
    z = tokens((2, 6, D), seed=2)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    sup = EmotionSupervisor(D, H)
    p = randomize(init(sup, z, mask), 3)
    y = np.asarray(sup.apply({"params": p}, z, mask))
    assert y.shape == (2, 2) and y.dtype == np.float32 and (np.abs(y) < 1).all()
    garbage = z.copy()
    garbage[0, 4:] = 1e4  # padding must not leak into the summary
    np.testing.assert_array_equal(sup.apply({"params": p}, garbage, mask), y)
    np.testing.assert_allclose(sup.apply({"params": p}, z[:1, :4]), y[:1], atol=1e-6)
    np.testing.assert_allclose(sup.apply({"params": p}, z[1:]), y[1:], atol=1e-6)
    np.testing.assert_allclose(masked_mean(z, mask)[0], z[0, :4].mean(0), rtol=1e-6)
    empty = np.asarray(masked_mean(z, np.zeros_like(mask)))
    assert np.isfinite(empty).all() and not empty.any()


def test_params_carry_logical_names():
    z = jnp.zeros((1, 3, D))
    for module, args in ((EmotionEnhancer(D, H), (z,)), (EmotionSupervisor(D, H), (z, None))):
        names = flatten(logical_names(jax.eval_shape(lambda: init(module, *args))))
        assert all(n is not None for n in names.values()), names
        assert names["fc1/kernel"] == ("embed", "emotion")


def test_width_mismatch_is_an_error():
    with pytest.raises(ValueError, match="built for width 48"):
        init(EmotionEnhancer(D, H), jnp.zeros((1, 3, 40)))


def test_export_round_trip_with_audio_adapter(tmp_path):
    z = tokens((1, 5, D))
    acfg = AudioAdapterConfig(num_tokens=6, out_dim=D, seq_hidden=7, channel_hidden=9)
    adapter = make_audio_adapter(acfg, in_tokens=10, in_dim=12)
    params = {"emotion_enhancer": randomize(init(EmotionEnhancer(D, H), z), 4),
              "emotion_supervisor": randomize(init(EmotionSupervisor(D, H), z), 5),
              "audio_adapter": nn.meta.unbox(init(adapter, jnp.zeros((1, 10, 12)))),
              "backbone": {"not": {"exported": jnp.zeros(3)}}}
    configs = {"emotion_enhancer": {"hidden_size": D, "mlp_hidden": H},
               "emotion_supervisor": {"hidden_size": D, "mlp_hidden": H}, "audio_adapter": acfg}
    files = export_emotion_modules(params, configs, str(tmp_path))
    assert sorted(files) == sorted([WEIGHTS, CONFIG])
    sd = load_file(str(tmp_path / WEIGHTS))
    assert sd["audio_adapter.seq_fc1.weight"].shape == (7, 10)  # torch Linear layout (out, in)
    loaded, cfgs = load_emotion_modules(str(tmp_path))
    assert cfgs["audio_adapter"]["num_tokens"] == 6 and cfgs["emotion_enhancer"]["mlp_hidden"] == H
    assert sorted(loaded) == ["audio_adapter", "emotion_enhancer", "emotion_supervisor"]
    for name in loaded:
        want, got = flatten(params[name]), flatten(loaded[name])
        assert sorted(want) == sorted(got)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(KeyError, match="no module"):
        export_emotion_modules(params, {"emotion_fuser": {}}, str(tmp_path / "bad"))
    meta = json.loads((tmp_path / CONFIG).read_text())
    del meta["modules"]["audio_adapter"]
    (tmp_path / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unexpected tensor 'audio_adapter"):
        load_emotion_modules(str(tmp_path))
    os.remove(tmp_path / CONFIG)
    with pytest.raises(CheckpointError, match="not found"):
        load_emotion_modules(str(tmp_path))
