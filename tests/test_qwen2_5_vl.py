"""Parity of our Qwen2.5-VL with transformers' PyTorch implementation, loaded from its files."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

from hf_qwen import build_ids, make_hf_qwen, video_inputs
from vaemotion_jax.checkpoints.mapping import flatten
from vaemotion_jax.checkpoints.qwen2_5_vl import export_qwen2_5_vl, keymap, load_qwen2_5_vl
from vaemotion_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsDir, save_safetensors_dir
from vaemotion_jax.generate import greedy_generate
from vaemotion_jax.models.qwen2_5_vl.config import from_hf_dict, qwen2_5_vl_7b, tiny, to_hf_dict
from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL, abstract_params
from vaemotion_jax.models.qwen2_5_vl.rope import get_rope_index
from vaemotion_jax.models.qwen2_5_vl.vision_layout import build_layout
from vaemotion_jax.sharding import make_mesh

CFG = tiny()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("qwen_tiny"))
    hf = make_hf_qwen(path, CFG, seed=0)
    return path, hf


def left_pad(rows, pad):
    s = max(len(r) for r in rows)
    ids = np.full((len(rows), s), pad, np.int64)
    mask = np.zeros((len(rows), s), np.int64)
    for i, r in enumerate(rows):
        ids[i, s - len(r):], mask[i, s - len(r):] = r, 1
    return ids, mask


def batch_inputs(cfg, grids_per_row, texts_per_row, seconds, seed=0):
    """Rows of [text, video, text, video, ..., text] with the given grids (t, h, w)."""
    rng = np.random.default_rng(seed)
    rows = []
    for grids, texts in zip(grids_per_row, texts_per_row):
        segs = []
        for k, n in enumerate(texts):
            segs.append(n)
            if k < len(grids):
                segs.append(("video", int(np.prod(grids[k])) // 4))
        rows.append(build_ids(cfg, segs, rng))
    ids, mask = left_pad(rows, cfg.pad_token_id)
    flat = [g for grids in grids_per_row for g in grids]
    pix, grid = video_inputs(cfg, flat, seed)
    return ids, mask, pix, grid, np.asarray(seconds, np.float64)


def hf_logits(hf, ids, mask, pix=None, grid=None, sec=None):
    kw = {}
    if pix is not None:
        kw = dict(pixel_values_videos=torch.tensor(pix), video_grid_thw=torch.tensor(grid),
                  second_per_grid_ts=torch.tensor(sec),
                  mm_token_type_ids=(torch.tensor(ids) == CFG.video_token_id).int() * 2)
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).logits.numpy()


# Row 0: 3 temporal groups (5 frames padded to 6), a 6x10-patch frame whose 3x5 merged grid
# needs partial 2x2 windows, then a second, smaller video. Row 1: a portrait video, padded row.
GRIDS = [[(3, 6, 10), (1, 4, 8)], [(2, 8, 6)]]
TEXTS = [[37, 41, 19], [11, 23]]
SECONDS = [1.0, 0.5, 0.5]


@pytest.mark.parametrize("mode", ["qwen", "transformers5"])
def test_logits_parity_multimodal_batch(ckpt, mode):
    path, hf = ckpt
    model, params = load_qwen2_5_vl(path, rope_index=mode)
    ids, mask, pix, grid, sec = batch_inputs(CFG, GRIDS, TEXTS, SECONDS)
    if mode == "qwen":  # HF 5.x implements the other rule; these inputs are where both agree
        a = get_rope_index(ids, CFG, grid, sec, mask)[0]
        b = get_rope_index(ids, CFG.replace(rope_index="transformers5"), grid, sec, mask)[0]
        np.testing.assert_array_equal(a, b)
    ref = hf_logits(hf, ids, mask, pix, grid, sec)
    ours = np.asarray(model.apply({"params": params}, input_ids=jnp.asarray(ids),
                                  attention_mask=jnp.asarray(mask),
                                  pixel_values_videos=jnp.asarray(pix), video_grid_thw=grid,
                                  second_per_grid_ts=sec).logits)
    valid = mask.astype(bool)
    assert ids.shape[1] > 150 and ref[valid].std() > 0.5
    assert np.abs(ours[valid] - ref[valid]).max() <= 1e-4


def test_logits_parity_long_video_transformers5(ckpt):
    """A long clip (4 temporal groups, 2 s per group) where the two rope rules differ."""
    path, hf = ckpt
    model, params = load_qwen2_5_vl(path, rope_index="transformers5")
    ids, mask, pix, grid, sec = batch_inputs(CFG, [[(4, 4, 4)]], [[20, 30]], [2.0])
    ref = hf_logits(hf, ids, mask, pix, grid, sec)
    ours = np.asarray(model.apply({"params": params}, input_ids=jnp.asarray(ids),
                                  pixel_values_videos=jnp.asarray(pix), video_grid_thw=grid,
                                  second_per_grid_ts=sec).logits)
    assert np.abs(ours - ref).max() <= 1e-4


def test_logits_parity_text_only(ckpt):
    path, hf = ckpt
    model, params = load_qwen2_5_vl(path)
    ids = np.random.default_rng(3).integers(0, 1000, (1, 173))
    ref = hf_logits(hf, ids, np.ones_like(ids))
    ours = np.asarray(model.apply({"params": params}, input_ids=jnp.asarray(ids)).logits)
    assert np.abs(ours - ref).max() <= 1e-4


def test_vision_tower_parity(ckpt):
    path, hf = ckpt
    model, params = load_qwen2_5_vl(path)
    grids = [(3, 6, 10), (1, 4, 8), (2, 8, 6), (1, 10, 14)]
    pix, grid = video_inputs(CFG, grids, seed=5)
    with torch.no_grad():
        ref = hf.model.visual(torch.tensor(pix), grid_thw=torch.tensor(grid)).pooler_output.numpy()
    layout = build_layout([grids], CFG.vision)
    ours = model.apply({"params": params}, jnp.asarray(pix), layout.arrays(),
                       method=Qwen2_5_VL.encode_video)
    assert ours.shape == (1, ref.shape[0], CFG.vision.out_hidden_size)
    assert np.abs(np.asarray(ours[0]) - ref).max() <= 1e-4


def test_vision_layout_padding_is_inert(ckpt):
    """A bigger bucket (extra groups, windows, tokens) gives the same tokens."""
    path, _ = ckpt
    model, params = load_qwen2_5_vl(path)
    grids = [(2, 6, 10)]
    pix, _ = video_inputs(CFG, grids, seed=1)
    tight = build_layout([grids], CFG.vision)
    loose = build_layout([grids], CFG.vision, groups=4, windows_per_group=9, tokens=40)
    run = lambda lay: np.asarray(model.apply({"params": params}, jnp.asarray(pix), lay.arrays(),
                                             method=Qwen2_5_VL.encode_video))
    a, b = run(tight), run(loose)
    np.testing.assert_allclose(b[0, :a.shape[1]], a[0], atol=1e-5)


def test_rope_index_matches_transformers(ckpt):
    _, hf = ckpt
    cfg = CFG.replace(rope_index="transformers5")
    ids, mask, _, grid, sec = batch_inputs(CFG, [[(4, 4, 4), (1, 4, 8)], [(2, 8, 6)]],
                                           [[5, 9, 3], [2, 7]], [2.0, 1.0, 0.5])
    ours, deltas = get_rope_index(ids, cfg, grid, sec, mask)
    ref, ref_d = hf.model.get_rope_index(
        torch.tensor(ids), mm_token_type_ids=(torch.tensor(ids) == CFG.video_token_id).int() * 2,
        video_grid_thw=torch.tensor(grid), second_per_grid_ts=torch.tensor(sec),
        attention_mask=torch.tensor(mask))
    valid = mask.astype(bool)
    np.testing.assert_array_equal(ours[:, valid], ref.numpy()[:, valid])
    np.testing.assert_array_equal(deltas, ref_d.numpy()[:, 0])


def test_rope_index_qwen_semantics_by_hand():
    """2 text tokens, a video of T'=3 groups (1 s each, 2 tokens/s) on a 2x2 merged grid, text."""
    v = CFG.video_token_id
    ids = np.array([[5, 6] + [v] * 12 + [7, 8]])
    pos, delta = get_rope_index(ids, CFG, np.array([[3, 4, 4]]), np.array([1.0]))
    t = [0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4]
    h = [0, 0, 1, 1] * 3
    w = [0, 1, 0, 1] * 3
    expect = np.array([[0, 1] + [2 + x for x in t] + [7, 8],
                       [0, 1] + [2 + x for x in h] + [7, 8],
                       [0, 1] + [2 + x for x in w] + [7, 8]])
    np.testing.assert_array_equal(pos[:, 0], expect)
    assert delta[0] == 9 - 16
    # transformers 5.x resumes at start + max(H', W') = 4 instead of max + 1 = 7
    pos5, _ = get_rope_index(ids, CFG.replace(rope_index="transformers5"), np.array([[3, 4, 4]]),
                             np.array([1.0]))
    assert pos5[0, 0, -2] == 4


def test_greedy_generation_matches_transformers(ckpt):
    path, hf = ckpt
    model, params = load_qwen2_5_vl(path, rope_index="transformers5")
    ids, mask, pix, grid, sec = batch_inputs(CFG, GRIDS, TEXTS, SECONDS, seed=2)
    ours = greedy_generate(model, params, ids, mask, pix, grid, sec, max_new_tokens=24,
                           eos_token_ids=[])
    mm = (torch.tensor(ids) == CFG.video_token_id).int() * 2
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          pixel_values_videos=torch.tensor(pix), video_grid_thw=torch.tensor(grid),
                          second_per_grid_ts=torch.tensor(sec), mm_token_type_ids=mm,
                          max_new_tokens=24, do_sample=False, eos_token_id=None,
                          pad_token_id=CFG.pad_token_id)[:, ids.shape[1]:].numpy()
    np.testing.assert_array_equal(ours, ref)
    # stopping: make the 6th token of row 0 an end token; row 0 is padded after it
    stop = int(ours[0, 5])
    first = int(np.argmax(ours[0] == stop))
    cut = greedy_generate(model, params, ids, mask, pix, grid, sec, max_new_tokens=24,
                          eos_token_ids=[stop], pad_token_id=0)
    np.testing.assert_array_equal(cut[0, :first + 1], ours[0, :first + 1])
    assert (cut[0, first + 1:] == 0).all()


def test_export_reloads_in_transformers(ckpt, tmp_path):
    path, hf = ckpt
    model, params = load_qwen2_5_vl(path)
    out = str(tmp_path / "exported")
    export_qwen2_5_vl(params, model.config, out, max_shard_bytes=400_000)
    assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    again = Qwen2_5_VLForConditionalGeneration.from_pretrained(out).eval()
    ids, mask, pix, grid, sec = batch_inputs(CFG, GRIDS, TEXTS, SECONDS, seed=4)
    np.testing.assert_array_equal(hf_logits(again, ids, mask, pix, grid, sec),
                                  hf_logits(hf, ids, mask, pix, grid, sec))


def test_sharded_checkpoint_loads_onto_a_mesh(ckpt, tmp_path):
    path, hf = ckpt
    sharded = str(tmp_path / "sharded")
    hf.save_pretrained(sharded, max_shard_size="300KB")
    assert len([f for f in os.listdir(sharded) if f.endswith(".safetensors")]) > 2
    mesh = make_mesh((1, 4, 2))
    model, params = load_qwen2_5_vl(sharded, mesh=mesh)
    q = params["llm"]["layers"]["attn"]["q"]["kernel"]
    assert len(q.sharding.device_set) == 8 and q.addressable_shards[0].data.shape == (4, 32, 64)
    ids = np.random.default_rng(0).integers(0, 1000, (1, 40))
    ours = np.asarray(model.apply({"params": params}, input_ids=jnp.asarray(ids)).logits)
    assert np.abs(ours - hf_logits(hf, ids, np.ones_like(ids))).max() <= 1e-4


def test_bf16_cast(ckpt):
    path, _ = ckpt
    _, params = load_qwen2_5_vl(path, dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))


# --- loader errors ---------------------------------------------------------------------------

def _copy_with(path, dst, edit):
    ck = SafetensorsDir(path)
    tensors = {k: np.array(ck.get(k)) for k in ck.keys()}
    edit(tensors)
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    save_safetensors_dir(tensors, dst, cfg)
    return dst


def test_error_missing_shard(ckpt, tmp_path):
    path, hf = ckpt
    sharded = str(tmp_path / "sharded")
    hf.save_pretrained(sharded, max_shard_size="300KB")
    victim = sorted(f for f in os.listdir(sharded) if f.endswith(".safetensors"))[1]
    os.remove(os.path.join(sharded, victim))
    with pytest.raises(CheckpointError, match=f"shard {victim} is missing"):
        load_qwen2_5_vl(sharded)


def test_error_wrong_shape(ckpt, tmp_path):
    path, _ = ckpt
    key = "model.layers.1.mlp.up_proj.weight"
    bad = _copy_with(path, str(tmp_path / "bad"), lambda t: t.__setitem__(key, t[key][:-1]))
    with pytest.raises(CheckpointError, match=rf"'{key}' in model.safetensors has shape \(255, 128\)"):
        load_qwen2_5_vl(bad)


def test_error_unexpected_and_missing_key(ckpt, tmp_path):
    path, _ = ckpt
    def edit(t):
        t["model.layers.9.mlp.up_proj.weight"] = np.zeros(3, np.float32)
        del t["visual.blocks.2.norm2.weight"]
    bad = _copy_with(path, str(tmp_path / "bad"), edit)
    with pytest.raises(CheckpointError) as e:
        load_qwen2_5_vl(bad)
    assert "unexpected tensor 'model.layers.9.mlp.up_proj.weight' in model.safetensors" in str(e.value)
    assert "missing tensor 'visual.blocks.2.norm2.weight'" in str(e.value)


def test_error_pickle_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    (tmp_path / "config.json").write_text(json.dumps(to_hf_dict(CFG)))
    with pytest.raises(CheckpointError, match="pickle"):
        load_qwen2_5_vl(str(tmp_path))


# --- the 7B preset ---------------------------------------------------------------------------

# config.json of Qwen/Qwen2.5-VL-7B-Instruct as released (transformers 4.x layout).
RELEASED_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
    "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 3584,
    "initializer_range": 0.02, "intermediate_size": 18944, "max_position_embeddings": 128000,
    "max_window_layers": 28, "model_type": "qwen2_5_vl", "num_attention_heads": 28,
    "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
    "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280,
                      "intermediate_size": 3420, "num_heads": 16, "in_chans": 3,
                      "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
                      "spatial_patch_size": 14, "window_size": 112,
                      "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                      "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 152064,
}


def test_7b_preset_matches_released_architecture(tmp_path):
    assert from_hf_dict(RELEASED_7B) == qwen2_5_vl_7b()
    flat = flatten(nn.meta.unbox(abstract_params(qwen2_5_vl_7b())))
    total = sum(int(np.prod(v.shape)) for v in flat.values())
    assert total == 8_292_166_656
    # the reference model with the released config, on the meta device (no memory)
    (tmp_path / "config.json").write_text(json.dumps(RELEASED_7B))
    with torch.device("meta"):
        ref = Qwen2_5_VLForConditionalGeneration(AutoConfig.from_pretrained(str(tmp_path)))
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ref_shapes = {k.replace("model.language_model.", "model.").replace("model.visual.", "visual."): v
                  for k, v in ref_shapes.items()}
    ours = {}
    for rule in keymap(qwen2_5_vl_7b()).rules:
        per_layer = [np.empty(flat[p].shape[1:] if rule.layers else flat[p].shape, np.float32)
                     for p in rule.ours]
        for i in range(rule.layers or 1):
            for k, v in zip(rule.hf_keys(i if rule.layers else None), rule.to_hf(per_layer)):
                ours[k] = v.shape
    assert ours == ref_shapes
    assert sum(int(np.prod(s)) for s in ref_shapes.values()) == total


def test_one_compilation_serves_a_bucket(ckpt):
    """Batches with different video grids and text lengths, padded to one bucket, run through
    the same compiled function (positions and layout are host-side data)."""
    from vaemotion_jax.models.qwen2_5_vl.model import prepare_inputs
    path, _ = ckpt
    model, params = load_qwen2_5_vl(path)
    fwd = jax.jit(lambda p, ids, mask, pix, pos, lay: model.apply(
        {"params": p}, input_ids=ids, attention_mask=mask, pixel_values_videos=pix,
        position_ids=pos, vision_layout=lay).logits)
    outs = []
    for grids, texts in (([(2, 6, 10)], [9, 14]), ([(1, 4, 8)], [30, 3]), ([(3, 4, 4)], [5, 5])):
        ids, mask, pix, grid, sec = batch_inputs(CFG, [grids], [texts], [1.0])
        pad = 96 - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (pad, 0)), constant_values=CFG.pad_token_id)
        mask = np.pad(mask, ((0, 0), (pad, 0)))
        pix = np.pad(pix, ((0, 4 * 64 - pix.shape[0]), (0, 0)))
        prep = prepare_inputs(CFG, ids, mask, grid, sec, vision_bucket=(4, 6, 64))
        outs.append(fwd(params, ids, mask, pix, prep["position_ids"], prep["vision_layout"]))
        ref = model.apply({"params": params}, input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                          pixel_values_videos=jnp.asarray(pix[:int(np.prod(grid))]),
                          video_grid_thw=grid, second_per_grid_ts=sec).logits
        valid = mask.astype(bool)
        assert np.abs(np.asarray(outs[-1])[valid] - np.asarray(ref)[valid]).max() <= 1e-4
    assert fwd._cache_size() == 1
