"""The Stage 1 step against the paper's stack in PyTorch, side by side in one process.

Ours: the project's jitted `stage1.train_step` (teacher forward on the video, student forward
and backward through the frozen LLM into the audio adapter, AdamW). PyTorch: transformers
Qwen2.5-VL + transformers AST + the 4-FC adapter, soft cross-entropy, AdamW on the adapter,
same weights (saved by transformers, loaded by our strict loaders) and same inputs; the step-0
losses of both sides are printed as a check that they compute the same thing.

Sizes (issue 15): text 512 x 8 layers (8 heads, 2 kv, MLP 1024), vocab 8192; vision 256 x 4
blocks; AST 256 x 4 layers (602 tokens); B = 4, one (1, 16, 16) video per row, 158 tokens of
which 64 are response targets. Ours runs with the Stage 1 config's settings (layer scan, remat,
optimiser) and pads the sequence to its smallest bucket that fits (`data.seq_buckets`);
PyTorch runs the 158 tokens as they are. The steps alternate
(ours, theirs, ours, ...) so that other load on the machine hits both alike; medians are printed
with their ratio, the step's matmul FLOPs (counted from the jaxpr, scanned layers times their
trip count) and the share of the fp32 matmul peak XLA reaches in the same process.

    python benchmarks/bench_vs_torch.py [--steps 15] [--cores 2]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time

SEQ, RESPONSE, BATCH = 158, 64, 4


def sizes():
    """(Qwen2.5-VL config, AST config) of the comparison; special ids inside the 8192 vocab."""
    from vaemotion_jax.models.ast import ASTConfig
    from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig, TextConfig, VisionConfig
    qwen = Qwen2_5_VLConfig(
        vision=VisionConfig(depth=4, hidden_size=256, intermediate_size=512, num_heads=4,
                            fullatt_block_indexes=(3,), out_hidden_size=512),
        text=TextConfig(vocab_size=8192, hidden_size=512, intermediate_size=1024, num_layers=8,
                        num_heads=8, num_kv_heads=2, mrope_section=(8, 12, 12)),
        bos_token_id=8000, eos_token_id=8001, pad_token_id=8000, vision_start_token_id=8002,
        vision_end_token_id=8003, image_token_id=8004, video_token_id=8005)
    ast = ASTConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=512,
                    max_length=512)
    return qwen, ast


def save_torch_models(qwen, ast, root: str, seed: int = 0):
    """Random transformers models of these sizes, saved under root: (qwen, ast, their dirs)."""
    import torch
    import transformers
    from vaemotion_jax.models.qwen2_5_vl.config import to_hf_dict
    torch.manual_seed(seed)
    q_dir, a_dir = os.path.join(root, "qwen"), os.path.join(root, "ast")
    os.makedirs(q_dir, exist_ok=True)
    with open(os.path.join(q_dir, "config.json"), "w") as f:
        json.dump(to_hf_dict(qwen), f)
    hf_qwen = transformers.Qwen2_5_VLForConditionalGeneration(
        transformers.AutoConfig.from_pretrained(q_dir))
    hf_qwen.save_pretrained(q_dir)
    fields = {k: v for k, v in ast.to_hf().items() if k not in ("architectures", "model_type")}
    hf_ast = transformers.ASTModel(transformers.ASTConfig(**fields))
    with torch.no_grad():  # transformers zero-initialises the special and position tokens
        for p in (hf_ast.embeddings.cls_token, hf_ast.embeddings.distillation_token,
                  hf_ast.embeddings.position_embeddings):
            p.normal_(0.0, 0.02)
    hf_ast.save_pretrained(a_dir)
    for m in (hf_qwen, hf_ast):
        m.eval().requires_grad_(False)
    return hf_qwen, hf_ast, q_dir, a_dir


def make_batch(qwen, ast, seq_buckets, target_buckets, seed: int = 0) -> dict:
    """One Stage 1 batch in the trainer's layout (NumPy), padded to the config's buckets."""
    import numpy as np
    from vaemotion_jax.models.qwen2_5_vl.rope import rope_index_one
    from vaemotion_jax.examples import layout_arrays
    rng = np.random.default_rng(seed)
    grid = (1, 16, 16)
    n_video = int(np.prod(grid)) // qwen.vision.spatial_merge_size ** 2
    before = 10
    after = SEQ - RESPONSE - before - n_video - 2
    s = min(b for b in seq_buckets if b >= SEQ)
    a = min(b for b in target_buckets if b >= RESPONSE)
    out = {k: [] for k in ("input_ids", "position_ids", "attention_mask", "target_index",
                           "target_ids", "target_mask")}
    for _ in range(BATCH):
        text = lambda n: list(rng.integers(0, 8000, n))
        row = np.asarray(text(before) + [qwen.vision_start_token_id] + [qwen.video_token_id] * n_video
                         + [qwen.vision_end_token_id] + text(after + RESPONSE), np.int32)
        pos = rope_index_one(row, [grid], [1.0], qwen).T
        prompt = SEQ - RESPONSE
        out["input_ids"].append(np.pad(row, (0, s - SEQ), constant_values=qwen.pad_token_id))
        out["position_ids"].append(np.pad(pos, ((0, s - SEQ), (0, 0))).astype(np.int32))
        out["attention_mask"].append(np.arange(s) < SEQ)
        out["target_index"].append(np.pad(np.arange(prompt - 1, SEQ - 1), (0, a - RESPONSE)))
        out["target_ids"].append(np.pad(row[prompt:], (0, a - RESPONSE)))
        out["target_mask"].append(np.arange(a) < RESPONSE)
    batch = {k: np.stack(v) for k, v in out.items()}
    batch["target_index"] = batch["target_index"].astype(np.int32)
    layout = layout_arrays(qwen, grid)
    batch.update({k: np.stack([v] * BATCH) for k, v in layout.items()})
    rows = int(np.prod(grid))
    batch["pixel_values_videos"] = rng.standard_normal(
        (BATCH, rows, qwen.vision.patch_dim)).astype(np.float32)
    batch["fbank"] = rng.standard_normal(
        (BATCH, 1, ast.max_length, ast.num_mel_bins)).astype(np.float32)
    batch["fbank_mask"] = np.ones((BATCH, 1), bool)
    batch["valid"] = np.ones(BATCH, bool)
    return batch


# --- FLOPs and the matmul peak -----------------------------------------------------------------

def matmul_flops(jaxpr) -> int:
    """FLOPs of the dot_generals and convolutions of a jaxpr; a scan's body counts `length`
    times, a cond its costliest branch (XLA's cost analysis counts a loop body once)."""
    import numpy as np
    from jax.extend import core
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (_, rc), (_, rb) = eqn.params["dimension_numbers"]
            lhs, rhs = (v.aval.shape for v in eqn.invars)
            free = [d for i, d in enumerate(rhs) if i not in rc and i not in rb]
            total += 2 * int(np.prod(lhs)) * int(np.prod(free))
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod(rhs)) // out_features
        elif name == "scan":
            total += eqn.params["length"] * matmul_flops(eqn.params["jaxpr"].jaxpr)
        elif name == "cond":
            total += max(matmul_flops(b.jaxpr) for b in eqn.params["branches"])
        elif name == "while":
            raise ValueError("matmul_flops: a while loop has no static trip count")
        else:
            total += sum(matmul_flops(sub) for sub in core.jaxprs_in_params(eqn.params))
    return total


def step_flops(fn, *args) -> int:
    """Matmul FLOPs of `fn(*args)` after dead-code elimination."""
    import jax
    from jax._src.interpreters import partial_eval as pe
    closed = jax.make_jaxpr(fn)(*args)
    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    return matmul_flops(jaxpr)


def median_seconds(run, repeats: int) -> float:
    import numpy as np
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def xla_matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a plain jitted fp32 (n, n) @ (n, n) matmul."""
    import jax
    import jax.numpy as jnp
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(jnp.dot)
    return 2 * n ** 3 / median_seconds(lambda: mm(x, x).block_until_ready(), repeats)


def torch_matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    import torch
    x = torch.randn(n, n)
    return 2 * n ** 3 / median_seconds(lambda: x @ x, repeats)


# --- the two steps -------------------------------------------------------------------------------

def ours(qwen, ast, q_dir: str, a_dir: str, adapter_cfg, c):
    """(jitted step, state, frozen params, model, adapter params) of the project's trainer."""
    import jax
    from flax import linen as nn
    from vaemotion_jax.checkpoints.ast import load_ast
    from vaemotion_jax.checkpoints.qwen2_5_vl import load_qwen2_5_vl
    from vaemotion_jax.models.adapters import make_audio_adapter
    from vaemotion_jax.models.vaemotion import VAEmotionConfig, VAEmotionLLM
    from vaemotion_jax.training import stage1
    from vaemotion_jax.training.state import create_state, make_optimizer
    qwen_model, qwen_params = load_qwen2_5_vl(q_dir, scan_layers=c.scan_layers, remat=c.remat)
    ast_model, ast_params = load_ast(a_dir)
    adapter = make_audio_adapter(adapter_cfg, ast.num_tokens, ast.hidden_size)
    feats = jax.numpy.zeros((1, ast.num_tokens, ast.hidden_size))
    adapter_params = nn.meta.unbox(adapter.init(jax.random.key(0), feats)["params"])
    model = VAEmotionLLM(VAEmotionConfig(qwen_model.config, ast_model.config, adapter_cfg))
    o = c.optim
    tx = make_optimizer(o.lr, o.warmup_steps, c.steps, o.weight_decay, o.grad_clip, o.b1, o.b2)
    state = create_state({"audio_adapter": adapter_params}, tx, jax.random.key_data(jax.random.key(0)))
    frozen = {"backbone": qwen_params, "audio_encoder": ast_params}
    step = functools.partial(stage1.train_step, model=model, tx=tx, tau=c.tau, align=c.align)
    return step, state, frozen, adapter_params


def torch_adapter(params):
    """The paper's 4-FC adapter as PyTorch Linear layers holding the weights of ours."""
    import numpy as np
    import torch

    def linear(p):
        kernel = torch.from_numpy(np.array(p["kernel"]))
        layer = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            layer.weight.copy_(kernel.T)
            layer.bias.copy_(torch.from_numpy(np.array(p["bias"])))
        return layer
    return torch.nn.ModuleDict({n: linear(params[n]) for n in
                                ("seq_fc1", "seq_fc2", "channel_fc1", "channel_fc2")})


def adapter_forward(adapter, feats):
    """feats (B, T_a, d_a) -> (B, L_v, d_v): two FCs over the sequence axis, two over channels,
    GELU after the first of each pair (models/adapters.py)."""
    import torch.nn.functional as F
    x = feats.transpose(1, 2)
    x = adapter["seq_fc2"](F.gelu(adapter["seq_fc1"](x))).transpose(1, 2)
    return adapter["channel_fc2"](F.gelu(adapter["channel_fc1"](x)))


def theirs(hf_qwen, hf_ast, adapter, batch, qwen, c):
    """A closure running one PyTorch step on the unpadded batch; returns the loss."""
    import numpy as np
    import torch
    t = lambda k, dtype=None: torch.from_numpy(np.ascontiguousarray(batch[k][:, :SEQ] if k in (
        "input_ids", "position_ids", "attention_mask") else batch[k])).to(dtype)
    ids = t("input_ids", torch.long)
    pos = t("position_ids", torch.long).permute(2, 0, 1).contiguous()
    pixels = torch.from_numpy(batch["pixel_values_videos"].reshape(-1, qwen.vision.patch_dim))
    grid = torch.tensor([[1, 16, 16]] * BATCH)
    fbank = torch.from_numpy(batch["fbank"][:, 0])
    index = t("target_index", torch.long)[..., None].expand(-1, -1, qwen.text.hidden_size)
    is_video = (ids == qwen.video_token_id)[..., None]
    o = c.optim
    opt = torch.optim.AdamW(adapter.parameters(), lr=o.lr, betas=(o.b1, o.b2),
                            weight_decay=o.weight_decay)
    lm = hf_qwen.model.language_model

    def logits_at_targets(hidden):
        return hf_qwen.lm_head(torch.gather(hidden, 1, index))

    def step() -> float:
        with torch.no_grad():
            h = hf_qwen.model(input_ids=ids, position_ids=pos, pixel_values_videos=pixels,
                              video_grid_thw=grid).last_hidden_state
            teacher = torch.softmax(logits_at_targets(h) / c.tau, -1)
            feats = hf_ast(fbank).last_hidden_state
        z_a = adapter_forward(adapter, feats)
        embeds = lm.embed_tokens(ids).masked_scatter(is_video, z_a)
        h = lm(inputs_embeds=embeds, position_ids=pos).last_hidden_state
        log_q = torch.log_softmax(logits_at_targets(h) / c.tau, -1)
        loss = -(teacher * log_q).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.parameters(), o.grad_clip)
        opt.step()
        return float(loss.detach())

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=15, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    p.add_argument("--cores", type=int, default=2, help="CPUs this process may use (XLA sizes "
                   "its thread pool by them) and PyTorch intra-op threads")
    p.add_argument("--out", help="write the numbers to this JSON file")
    args = p.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])  # before XLA starts
    import jax
    import numpy as np
    import torch
    from vaemotion_jax.configs import stage1 as stage1_config
    from vaemotion_jax.presets import check
    from vaemotion_jax.models.adapters import AudioAdapterConfig
    torch.set_num_threads(args.cores)
    c = check(stage1_config.get_config())
    qwen, ast = sizes()
    adapter_cfg = AudioAdapterConfig(num_tokens=64, out_dim=qwen.text.hidden_size)
    batch = make_batch(qwen, ast, c.data.seq_buckets, c.data.target_buckets)
    with tempfile.TemporaryDirectory() as root:
        hf_qwen, hf_ast, q_dir, a_dir = save_torch_models(qwen, ast, root)
        step, state, frozen, adapter_params = ours(qwen, ast, q_dir, a_dir, adapter_cfg, c)
    dev = {k: jax.numpy.asarray(v) for k, v in batch.items()}
    flops = step_flops(step, state, frozen, dev)
    jitted = jax.jit(step, donate_argnums=(0,))
    torch_step = theirs(hf_qwen, hf_ast, torch_adapter(adapter_params), batch, qwen, c)

    load = os.getloadavg()[0]
    ours_t, theirs_t, losses = [], [], {}
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        state, metrics = jitted(state, frozen, dev)
        loss = float(metrics["loss"])
        t1 = time.perf_counter()
        torch_loss = torch_step()
        t2 = time.perf_counter()
        if i == 0:
            losses = {"ours": loss, "pytorch": torch_loss}
        if i >= args.warmup:
            ours_t.append(t1 - t0)
            theirs_t.append(t2 - t1)
    peak, torch_peak = xla_matmul_peak(), torch_matmul_peak()
    ours_s, theirs_s = float(np.median(ours_t)), float(np.median(theirs_t))
    rate = flops / ours_s
    s = dev["input_ids"].shape[1]
    print(f"\nStage 1 step, fp32, B={BATCH}, {SEQ} tokens (ours padded to {s}), {args.steps} "
          f"alternating steps each, median (load average {load:.1f} -> "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.cores} used):")
    print(f"  step-0 loss          ours {losses['ours']:.6f}   PyTorch {losses['pytorch']:.6f}")
    print(f"  PyTorch (transformers) {theirs_s * 1e3:8.1f} ms")
    print(f"  ours (jitted)          {ours_s * 1e3:8.1f} ms   {theirs_s / ours_s:.2f}x PyTorch")
    print(f"  our step: {flops / 1e9:.1f} GFLOP of matmuls -> {rate / 1e9:.1f} GFLOP/s, "
          f"{100 * rate / peak:.0f}% of XLA's fp32 matmul peak {peak / 1e9:.0f} GFLOP/s "
          f"(PyTorch's: {torch_peak / 1e9:.0f})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"ours_ms": ours_s * 1e3, "pytorch_ms": theirs_s * 1e3,
                       "ratio": theirs_s / ours_s, "gflop": flops / 1e9,
                       "peak_gflops": peak / 1e9, "share_of_peak": rate / peak,
                       "seq_padded": s, "ours_times": ours_t, "pytorch_times": theirs_t,
                       "step0_loss": losses, "load_average": [load, os.getloadavg()[0]]},
                      f, indent=2)


if __name__ == "__main__":
    main()
