"""LoRA in the decoder attention: parameters, identity at init, dropout, gradients, and PEFT
export/import checked against PEFT on transformers' Qwen2.5-VL."""
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Qwen2_5_VLForConditionalGeneration

from hf_qwen import build_ids, make_hf_qwen, video_inputs
from vaemotion_jax.checkpoints.mapping import flatten, unflatten
from vaemotion_jax.checkpoints.peft import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_lora_peft,
                                            load_lora_peft)
from vaemotion_jax.checkpoints.qwen2_5_vl import export_qwen2_5_vl, load_qwen2_5_vl
from vaemotion_jax.checkpoints.safetensors_io import (CheckpointError, SafetensorsDir,
                                                      save_safetensors_dir)
from vaemotion_jax.models.lora import count_lora_params, merge_lora, split_lora
from vaemotion_jax.models.qwen2_5_vl.config import qwen2_5_vl_7b, tiny
from vaemotion_jax.models.qwen2_5_vl.model import abstract_params
from vaemotion_jax.sharding import logical_names, make_mesh

CFG = tiny()
GRIDS = [[(3, 6, 10), (1, 4, 8)], [(2, 8, 6)]]
TEXTS = [[37, 41, 19], [11, 23]]
SECONDS = [1.0, 0.5, 0.5]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("qwen_tiny_lora"))
    make_hf_qwen(path, CFG, seed=1)
    return path


@pytest.fixture(scope="module")
def batch():
    """Two left-padded rows of text and videos (> 150 tokens), their pixels and grids."""
    rng = np.random.default_rng(0)
    rows = []
    for grids, texts in zip(GRIDS, TEXTS):
        segs = [texts[0]]
        for g, n in zip(grids, texts[1:]):
            segs += [("video", int(np.prod(g)) // 4), n]
        rows.append(build_ids(CFG, segs, rng))
    s = max(len(r) for r in rows)
    ids = np.full((len(rows), s), CFG.pad_token_id, np.int64)
    mask = np.zeros((len(rows), s), np.int64)
    for i, r in enumerate(rows):
        ids[i, s - len(r):], mask[i, s - len(r):] = r, 1
    pix, grid = video_inputs(CFG, [g for gs in GRIDS for g in gs], seed=0)
    return ids, mask, pix, grid, np.asarray(SECONDS)


def ours_logits(model, params, batch, **kw):
    ids, mask, pix, grid, sec = batch
    out = model.apply({"params": params}, input_ids=jnp.asarray(ids),
                      attention_mask=jnp.asarray(mask), pixel_values_videos=jnp.asarray(pix),
                      video_grid_thw=grid, second_per_grid_ts=sec, **kw)
    return np.asarray(out.logits)


def hf_logits(hf, batch):
    ids, mask, pix, grid, sec = batch
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  pixel_values_videos=torch.tensor(pix), video_grid_thw=torch.tensor(grid),
                  second_per_grid_ts=torch.tensor(sec),
                  mm_token_type_ids=(torch.tensor(ids) == CFG.video_token_id).int() * 2
                  ).logits.numpy()


def randomize_lora(params, seed=0, std=0.05):
    """Non-zero A and B so that the adapter changes the logits."""
    base, lora = split_lora(params)
    flat = flatten(lora)
    keys = jax.random.split(jax.random.key(seed), len(flat))
    flat = {p: std * jax.random.normal(k, x.shape, x.dtype) for k, (p, x) in zip(keys, sorted(flat.items()))}
    return unflatten({**flatten(base), **flat})


def hf_base(path):
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()


# --- parameters -------------------------------------------------------------------------------

def expected_lora_count(cfg, targets):
    t = cfg.text
    q, kv = t.num_heads * t.head_dim, t.num_kv_heads * t.head_dim
    dims = {"q": (t.hidden_size, q), "k": (t.hidden_size, kv), "v": (t.hidden_size, kv),
            "o": (q, t.hidden_size)}
    return t.num_layers * sum(cfg.lora_rank * (dims[n][0] + dims[n][1]) for n in targets)


@pytest.mark.parametrize("rank,targets", [(4, ("q", "k", "v", "o")), (3, ("q", "v"))])
def test_lora_adds_exactly_the_expected_params(rank, targets):
    base = flatten(nn.meta.unbox(abstract_params(CFG)))
    cfg = CFG.replace(lora_rank=rank, lora_targets=targets)
    boxed = abstract_params(cfg)
    flat = flatten(nn.meta.unbox(boxed))
    new = sorted(set(flat) - set(base))
    assert new == sorted(f"llm/layers/attn/{t}/lora_{ab}" for t in targets for ab in "ab")
    assert all(flat[p].shape == base[p].shape for p in base)  # the base tree is unchanged
    n_new = sum(int(np.prod(flat[p].shape)) for p in new)
    assert n_new == expected_lora_count(cfg, targets)
    # r * (in + out) per target per layer, e.g. q at rank 4: 4 layers * 4 * (128 + 128)
    names = flatten(logical_names(boxed))
    assert names["llm/layers/attn/q/lora_a"] == ("layers", "embed", "lora_rank")
    assert names["llm/layers/attn/v/lora_b"] == ("layers", "lora_rank", "kv_heads")
    # the trainer selects them by path
    assert sorted(p for p in flat if re.fullmatch(r".*/lora_[ab]", p)) == new


def test_rank_zero_is_the_base_model():
    assert flatten(nn.meta.unbox(abstract_params(CFG.replace(lora_rank=0, lora_alpha=3.0)))).keys() \
        == flatten(nn.meta.unbox(abstract_params(CFG))).keys()


def test_7b_lora_count():
    """Rank 8 on q, k, v, o of Qwen2.5-VL-7B: 28 * 8 * (2 * (3584 + 3584) + 2 * (3584 + 512))."""
    cfg = qwen2_5_vl_7b(lora_rank=8)
    flat = flatten(nn.meta.unbox(abstract_params(cfg)))
    assert count_lora_params(unflatten(flat)) == 5_046_272 == expected_lora_count(cfg, "qkvo")


def test_bad_lora_configs_are_refused():
    with pytest.raises(ValueError, match="lora_targets"):
        tiny(lora_rank=4, lora_targets=("q", "gate"))
    with pytest.raises(ValueError, match="lora_rank"):
        tiny(lora_rank=-1)
    with pytest.raises(ValueError, match="lora_dropout"):
        tiny(lora_rank=4, lora_dropout=1.0)
    assert tiny(lora_targets=["q", "v"]).lora_targets == ("q", "v")  # hashable


# --- behaviour -----------------------------------------------------------------------------------

def test_loader_adds_lora_and_starts_as_identity(ckpt, batch):
    model0, p0 = load_qwen2_5_vl(ckpt)
    model, p = load_qwen2_5_vl(ckpt, lora_rank=4, lora_rng=jax.random.key(3))
    base, lora = split_lora(p)
    assert jax.tree.structure(base) == jax.tree.structure(p0)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(p0)))
    fl = flatten(lora)
    assert all(not np.any(fl[k]) for k in fl if k.endswith("lora_b"))
    a = np.asarray(fl["llm/layers/attn/q/lora_a"])
    bound = 1 / np.sqrt(CFG.text.hidden_size)  # PEFT's kaiming-uniform A
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound and a.std() > 0.5 * bound
    ref = ours_logits(model0, p0, batch)
    np.testing.assert_array_equal(ours_logits(model, p, batch), ref)
    # ... and changes them once B moves
    moved = ours_logits(model, randomize_lora(p), batch)
    assert np.abs(moved - ref).max() > 0.05


def test_lora_params_on_a_mesh(ckpt):
    mesh = make_mesh((1, 4, 2))
    _, p = load_qwen2_5_vl(ckpt, mesh=mesh, lora_rank=4)
    a = p["llm"]["layers"]["attn"]["q"]["lora_a"]
    assert len(a.sharding.device_set) == 8 and a.addressable_shards[0].data.shape == (4, 32, 4)


def test_gradients_reach_every_lora_layer(ckpt, batch):
    model, p = load_qwen2_5_vl(ckpt, lora_rank=4)
    base, lora = split_lora(p)
    ids, mask, pix, grid, sec = batch

    def loss(lora_params):
        logits = model.apply({"params": unflatten({**flatten(base), **flatten(lora_params)})},
                             input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                             pixel_values_videos=jnp.asarray(pix), video_grid_thw=grid,
                             second_per_grid_ts=sec).logits
        return jnp.mean(jax.nn.log_softmax(logits)[..., 7])

    g = flatten(jax.grad(loss)(lora))
    assert sorted(g) == sorted(flatten(lora))
    for path, x in g.items():
        per_layer = np.abs(np.asarray(x)).reshape(x.shape[0], -1).max(1)
        if path.endswith("lora_a"):  # B = 0 at init, so dL/dA = x^T (dL/dy) B^T = 0
            assert not per_layer.any(), path
        else:
            assert (per_layer > 0).all(), path
    g2 = flatten(jax.grad(loss)(split_lora(randomize_lora(p))[1]))
    assert all((np.abs(np.asarray(x)).reshape(x.shape[0], -1).max(1) > 0).all() for x in g2.values())


def test_dropout_only_when_not_deterministic(ckpt, batch):
    model, p = load_qwen2_5_vl(ckpt, lora_rank=4, lora_dropout=0.5)
    p = randomize_lora(p)
    no_drop, _ = load_qwen2_5_vl(ckpt, lora_rank=4)
    ref = ours_logits(no_drop, p, batch)
    np.testing.assert_array_equal(ours_logits(model, p, batch), ref)  # deterministic by default
    run = lambda seed: ours_logits(model, p, batch, deterministic=False,
                                   rngs={"dropout": jax.random.key(seed)})
    a, a2, b = run(0), run(0), run(1)
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a - ref).max() > 1e-2 and np.abs(a - b).max() > 1e-2
    # dropout acts on the LoRA branch only: with B = 0 the output is the base model's
    model_b0, p_b0 = load_qwen2_5_vl(ckpt, lora_rank=4, lora_dropout=0.5)
    np.testing.assert_array_equal(ours_logits(model_b0, p_b0, batch, deterministic=False,
                                              rngs={"dropout": jax.random.key(0)}),
                                  ours_logits(model_b0, p_b0, batch))
    with pytest.raises(Exception, match="dropout"):
        ours_logits(model, p, batch, deterministic=False)


def test_merge_lora_and_full_export(ckpt, batch, tmp_path):
    model, p = load_qwen2_5_vl(ckpt, lora_rank=4, lora_alpha=6.0)
    p = randomize_lora(p)
    with pytest.raises(ValueError, match="merge_lora"):
        export_qwen2_5_vl(p, model.config, str(tmp_path / "refused"))
    merged = merge_lora(p, model.config.lora)
    out = str(tmp_path / "merged")
    export_qwen2_5_vl(merged, model.config, out)
    model0, p0 = load_qwen2_5_vl(out)
    ours = ours_logits(model, p, batch)
    assert np.abs(ours_logits(model0, p0, batch) - ours).max() <= 1e-4


# --- PEFT --------------------------------------------------------------------------------------

def test_peft_export_matches_peft_on_transformers(ckpt, batch, tmp_path):
    model, p = load_qwen2_5_vl(ckpt, lora_rank=4, lora_alpha=8.0, lora_dropout=0.1)
    p = randomize_lora(p)
    out = str(tmp_path / "adapter")
    assert sorted(export_lora_peft(p, model.config, out)) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    ours = ours_logits(model, p, batch)
    hf = hf_base(ckpt)
    base_ref = hf_logits(hf, batch)
    peft_model = PeftModel.from_pretrained(hf, out).eval()
    ref = hf_logits(peft_model, batch)
    valid = batch[1].astype(bool)
    assert batch[0].shape[1] > 150 and np.abs(ref - base_ref)[valid].max() > 0.05
    assert np.abs(ours[valid] - ref[valid]).max() <= 1e-4
    cfg = peft_model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (4, 8.0, 0.1)
    n_peft = sum(v.numel() for k, v in peft_model.state_dict().items() if "lora_" in k)
    assert n_peft == count_lora_params(p)
    # and back
    cfg2, lora = load_lora_peft(out, CFG)
    assert cfg2 == model.config
    for path, x in flatten(split_lora(p)[1]).items():
        np.testing.assert_array_equal(flatten(lora)[path], x)


def test_load_adapter_saved_by_peft(ckpt, batch, tmp_path):
    """An adapter PEFT trained and saved (q, v only; random B; alpha / r = 2.5) gives PEFT's logits."""
    hf = hf_base(ckpt)
    lcfg = LoraConfig(r=2, lora_alpha=5, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False)
    peft_model = get_peft_model(hf, lcfg).eval()
    out = str(tmp_path / "peft_saved")
    peft_model.save_pretrained(out)
    ref = hf_logits(peft_model, batch)
    cfg, lora = load_lora_peft(out, CFG)
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets) == (2, 5.0, ("q", "v"))
    model, p = load_qwen2_5_vl(ckpt, lora_rank=2, lora_alpha=5.0, lora_targets=("q", "v"))
    p = unflatten({**flatten(split_lora(p)[0]), **flatten(lora)})
    valid = batch[1].astype(bool)
    assert np.abs(ours_logits(model, p, batch)[valid] - ref[valid]).max() <= 1e-4


def _rewrite(src, dst, edit_tensors=None, edit_config=None):
    ck = SafetensorsDir(src, filename=ADAPTER_WEIGHTS)
    tensors = {k: np.array(ck.get(k)) for k in ck.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    save_safetensors_dir(tensors, dst, filename=ADAPTER_WEIGHTS)
    with open(os.path.join(src, ADAPTER_CONFIG)) as f:
        cfg = json.load(f)
    if edit_config:
        edit_config(cfg)
    with open(os.path.join(dst, ADAPTER_CONFIG), "w") as f:
        json.dump(cfg, f)
    return dst


def test_peft_loader_is_strict(tmp_path):
    cfg = CFG.replace(lora_rank=2)
    shapes = split_lora(nn.meta.unbox(abstract_params(cfg)))[1]
    lora = jax.tree.map(lambda s: np.ones(s.shape, np.float32), shapes)
    src = str(tmp_path / "good")
    export_lora_peft(lora, cfg, src)
    prefix = "base_model.model.model.language_model.layers"
    gone = f"{prefix}.2.self_attn.k_proj.lora_B.weight"
    extra = f"{prefix}.0.mlp.gate_proj.lora_A.weight"
    bad = _rewrite(src, str(tmp_path / "b1"), lambda t: (t.pop(gone), t.__setitem__(
        extra, np.zeros((2, 128), np.float32))))
    with pytest.raises(CheckpointError) as e:
        load_lora_peft(bad, CFG)
    assert f"missing tensor {gone!r}" in str(e.value) and f"unexpected tensor {extra!r}" in str(e.value)
    key = f"{prefix}.1.self_attn.q_proj.lora_A.weight"
    bad = _rewrite(src, str(tmp_path / "b2"), lambda t: t.__setitem__(key, t[key][:, :-1]))
    with pytest.raises(CheckpointError, match=re.escape(f"{key!r} in {ADAPTER_WEIGHTS} has shape (2, 127)")):
        load_lora_peft(bad, CFG)
    bad = _rewrite(src, str(tmp_path / "b3"), edit_config=lambda c: c.update(use_dora=True))
    with pytest.raises(CheckpointError, match=r"does not implement: \['use_dora'\]"):
        load_lora_peft(bad, CFG)
    bad = _rewrite(src, str(tmp_path / "b4"),
                   edit_config=lambda c: c.update(target_modules=["q_proj", "gate_proj"]))
    with pytest.raises(CheckpointError, match="gate_proj"):
        load_lora_peft(bad, CFG)
    with pytest.raises(ValueError, match="do not match the config's targets"):
        export_lora_peft(lora, cfg.replace(lora_targets=("q", "k")), str(tmp_path / "b5"))
