"""Parity of our Flax AST with transformers' ASTModel, loaded by our loader from its files."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import linen as nn
from safetensors.torch import save_file

from vaemotion_jax import load_ast as public_load_ast
from vaemotion_jax.checkpoints.ast import export_ast, load_ast
from vaemotion_jax.checkpoints.mapping import flatten
from vaemotion_jax.checkpoints.safetensors_io import (CheckpointError, SafetensorsDir,
                                                      save_safetensors_dir)
from vaemotion_jax.models.ast import (ASTConfig, ASTModel, abstract_params, ast_audioset, preset,
                                      tiny)
from vaemotion_jax.sharding import LOGICAL_RULES, make_mesh

TOL = 1e-5


def hf_config(cfg: ASTConfig, **extra) -> transformers.ASTConfig:
    fields = {k: v for k, v in cfg.to_hf().items() if k not in ("architectures", "model_type")}
    return transformers.ASTConfig(**fields, **extra)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (transformers zero-initialises the cls and position tokens)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.3
            p.copy_(noise + 1.0 if "layernorm" in name and name.endswith("weight") else noise)
    return model.eval()


def save_hf(cls, cfg: ASTConfig, path: str, seed: int = 0, **extra):
    model = randomize(cls(hf_config(cfg, **extra)), seed)
    model.save_pretrained(path)
    return model


def inputs(cfg: ASTConfig, batch: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, cfg.max_length, cfg.num_mel_bins)).astype(np.float32)


def hf_hidden(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).last_hidden_state.numpy()


def ours_hidden(path: str, x: np.ndarray, **kw) -> np.ndarray:
    model, params = load_ast(path, **kw)
    return np.asarray(model.apply({"params": params}, x).last_hidden_state)


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ast_bare"))
    return path, save_hf(transformers.ASTModel, tiny(), path)


def copy_with(src: str, dst: str, edit) -> str:
    """A copy of checkpoint `src` whose tensors dict went through `edit`."""
    ckpt = SafetensorsDir(src)
    tensors = {k: np.array(ckpt.get(k)) for k in ckpt.keys()}
    edit(tensors)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    save_safetensors_dir(tensors, dst, config)
    return dst


# --- parity -----------------------------------------------------------------------------------

def test_bare_ast_model_parity(bare):
    path, hf = bare
    cfg = tiny()
    x = inputs(cfg)
    want, got = hf_hidden(hf, x), ours_hidden(path, x)
    assert got.shape == (2, cfg.num_tokens, cfg.hidden_size) == (2, 2 + 10 * 5, 32)
    assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("changes", [dict(max_length=100),
                                     dict(max_length=48, frequency_stride=16, time_stride=6,
                                          num_mel_bins=64, qkv_bias=False)])
def test_parity_with_other_shapes(tmp_path, changes):
    cfg = tiny().replace(**changes)
    hf = save_hf(transformers.ASTModel, cfg, str(tmp_path), seed=1)
    x = inputs(cfg, seed=1)
    got = ours_hidden(str(tmp_path), x)
    assert got.shape[1] == cfg.num_tokens
    assert np.abs(got - hf_hidden(hf, x)).max() <= TOL


def test_classification_checkpoint_loads_the_backbone(tmp_path):
    cfg = tiny()
    hf = save_hf(transformers.ASTForAudioClassification, cfg, str(tmp_path), seed=2, num_labels=7)
    assert any(k.startswith("classifier.") for k in SafetensorsDir(str(tmp_path)).keys())
    x = inputs(cfg, seed=2)
    with torch.no_grad():
        want = hf.audio_spectrogram_transformer(torch.from_numpy(x))
    model, params = load_ast(str(tmp_path))
    out = model.apply({"params": params}, x)
    assert np.abs(np.asarray(out.last_hidden_state) - want.last_hidden_state.numpy()).max() <= TOL
    assert np.abs(np.asarray(out.pooler_output) - want.pooler_output.numpy()).max() <= TOL


def test_transformers5_module_names_load(tmp_path, bare):
    _, hf = bare
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert "layers.0.attention.q_proj.weight" in state  # transformers 5 in-memory names
    save_file(state, str(tmp_path / "model.safetensors"))
    hf.config.to_json_file(str(tmp_path / "config.json"))
    x = inputs(tiny(), seed=3)
    assert np.abs(ours_hidden(str(tmp_path), x) - hf_hidden(hf, x)).max() <= TOL


def test_export_round_trip_through_transformers(tmp_path, bare):
    path, hf = bare
    model, params = load_ast(path)
    out = str(tmp_path / "exported")
    export_ast(params, model.config, out)
    reloaded = transformers.ASTModel.from_pretrained(out).eval()
    x = inputs(tiny(), seed=4)
    assert np.abs(hf_hidden(reloaded, x) - hf_hidden(hf, x)).max() == 0.0
    original, exported = SafetensorsDir(path), SafetensorsDir(out)
    assert sorted(original.keys()) == sorted(exported.keys())


def test_sharded_load_matches(bare):
    path, hf = bare
    mesh = make_mesh((1, -1, 1))
    x = inputs(tiny(), seed=5)
    model, params = load_ast(path, mesh=mesh)
    assert params["layers"]["mlp"]["fc1"]["kernel"].sharding.mesh.shape == mesh.shape
    got = np.asarray(model.apply({"params": params}, x).last_hidden_state)
    assert np.abs(got - hf_hidden(hf, x)).max() <= TOL


def test_bfloat16_load(bare):
    path, hf = bare
    model, params = load_ast(path, dtype=jnp.bfloat16)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    x = inputs(tiny(), seed=6)
    out = model.apply({"params": params}, x).last_hidden_state
    assert out.dtype == jnp.bfloat16
    assert np.abs(np.asarray(out, np.float32) - hf_hidden(hf, x)).max() < 0.3


def test_public_api(bare):
    assert public_load_ast is load_ast


# --- configuration ----------------------------------------------------------------------------

def test_audioset_preset_is_the_released_architecture():
    cfg = ast_audioset()
    assert cfg == ASTConfig.from_hf(transformers.ASTConfig().to_dict()) == preset("ast_audioset")
    assert cfg.grid == (12, 101) and cfg.num_tokens == 1214
    model = ASTModel(cfg)
    x = jax.ShapeDtypeStruct((2, 1024, 128), jnp.float32)
    params = nn.meta.unbox(abstract_params(cfg))
    out = jax.eval_shape(lambda p, v: model.apply({"params": p}, v), params, x)
    assert out.last_hidden_state.shape == (2, 1214, 768)
    with torch.device("meta"):
        reference = transformers.ASTModel(transformers.ASTConfig())
    count = sum(p.numel() for p in reference.parameters())
    assert sum(p.size for p in jax.tree.leaves(params)) == count == 86_187_264


def test_config_round_trip_and_validation():
    for cfg in (tiny(), tiny().replace(max_length=100, qkv_bias=False), ast_audioset()):
        assert ASTConfig.from_hf(cfg.to_hf()) == cfg
    with pytest.raises(ValueError, match="not a multiple of num_heads"):
        ASTConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        ASTConfig(max_length=10)
    with pytest.raises(ValueError, match="patch_size must be one int"):
        ASTConfig.from_hf({**tiny().to_hf(), "patch_size": [16, 16]})
    with pytest.raises(ValueError, match="unknown AST preset"):
        preset("ast_large")


def test_every_param_has_known_logical_axes():
    boxed = flatten(abstract_params(tiny()))
    known = {name for name, _ in LOGICAL_RULES}
    for path, leaf in boxed.items():
        assert isinstance(leaf, nn.LogicallyPartitioned), path
        assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= known, (path, leaf.names)


def test_wrong_frame_count_is_a_clear_error(bare):
    model, params = load_ast(bare[0])
    with pytest.raises(ValueError, match=r"expects input_values \(batch, 64, 128\).*max_length=64"):
        model.apply({"params": params}, np.zeros((1, 1024, 128), np.float32))


# --- loader errors ----------------------------------------------------------------------------

def test_wrong_kind_of_checkpoint(tmp_path, bare):
    shutil.copy(os.path.join(bare[0], "model.safetensors"), tmp_path)
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model_type": "qwen2_5_vl",
                   "architectures": ["Qwen2_5_VLForConditionalGeneration"]}, f)
    with pytest.raises(CheckpointError, match=r"config.json: model_type 'qwen2_5_vl'.*not an AST"):
        load_ast(str(tmp_path))
    os.remove(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_ast(str(tmp_path))


def test_missing_tensor(tmp_path, bare):
    path = copy_with(bare[0], str(tmp_path), lambda t: t.pop("encoder.layer.1.output.dense.bias"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'encoder.layer.1.output.dense.bias'"):
        load_ast(path)


def test_wrong_shape(tmp_path, bare):
    def edit(t):
        t["embeddings.position_embeddings"] = t["embeddings.position_embeddings"][:, :40]
    path = copy_with(bare[0], str(tmp_path), edit)
    with pytest.raises(CheckpointError,
                       match=r"'embeddings.position_embeddings' in model.safetensors has shape "
                             r"\(1, 40, 32\); the model expects \(52, 32\)"):
        load_ast(path)


@pytest.mark.parametrize("key", ["encoder.layer.2.output.dense.bias", "classifier.dense.weight"])
def test_unexpected_tensor(tmp_path, bare, key):
    def edit(t):
        t[key] = np.zeros(3, np.float32)
    path = copy_with(bare[0], str(tmp_path), edit)
    with pytest.raises(CheckpointError, match=f"unexpected tensor '{key}' in model.safetensors"):
        load_ast(path)
