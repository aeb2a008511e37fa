"""The AOT planner on the tiny model: the abstract batch is the real one, shardings reach the
compiled step, FLOPs count every layer, the CPU proxy, the CLI, and the 7B presets' configs."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from vaemotion_jax.configs import common
from vaemotion_jax.presets import check
from vaemotion_jax import planning as plan, sharding
from vaemotion_jax.planning import programs
from vaemotion_jax.data.manifest import Record
from vaemotion_jax.training import stage1
from vaemotion_jax.training.stage1_run import video_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
    from vaemotion_jax.configs import stage1 as module
    return check(common.override(module.get_config(), overrides))


def shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the first device)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape)
        total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
    return total


def clip_features(c) -> dict:
    """A decoded clip's features (zeros) at the config's video grid and fbank size."""
    grid = video_grid(c)
    return {"pixel_values_videos": np.zeros((int(np.prod(grid)), 1176), np.float32),
            "fbank": np.zeros((c.data.audio_windows, c.data.audio_max_length, 128), np.float32),
            "fbank_mask": np.ones(c.data.audio_windows, bool),
            "video_grid_thw": np.asarray(grid), "second_per_grid_ts": 1.0}


def stage2_batch(c, seq_buckets, target_buckets) -> dict:
    """A batch of one joint (AV) conversation, made by Stage 2's host code and collated by the
    pipeline into the given buckets."""
    from vaemotion_jax.data.pipeline import NOTES, collate
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.training import stage2
    record = Record(id="clip0", modality="av", labels={"av": [0.5, -0.2]}, conversations=[
        {"role": "user", "content": "How does this feel?"},
        {"role": "assistant", "content": "Calm and warm, with a slow melody."}])
    example = stage2.conversation_example(record, clip_features(c),
                                          tokenizer_dir=default_tiny_tokenizer_dir(),
                                          qwen=qwen_config.tiny(), joint_layout=c.joint_layout)
    example.pop(NOTES)
    return collate([example] * c.data.batch_size, c.data.batch_size,
                   {"input_ids": seq_buckets, "position_ids": seq_buckets,
                    **{k: target_buckets for k in stage2.TARGET_FIELDS}}, {})


def real_batch(c, batch: int, **features) -> dict:
    """A Stage 1 batch made by the trainer's own host code (teacher_prompt_example, attach_responses)
    with the longest prompt and a response of max_response_tokens; `features` added to the
    clip's."""
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
    qwen = qwen_config.tiny()
    features = {**clip_features(c), **features}
    longest = max(c.prompts, key=len)
    examples = [stage1.teacher_prompt_example(Record(id=f"clip{i}"), features,
                                      tokenizer_dir=default_tiny_tokenizer_dir(), qwen=qwen,
                                      prompts=(longest,), seed=0) for i in range(batch)]
    n = max(len(e["prompt_ids"]) for e in examples)
    out = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != "prompt_ids"}
    out["prompt_ids"] = np.stack([np.pad(e["prompt_ids"], (0, n - len(e["prompt_ids"])))
                                  for e in examples])
    out["prompt_ids_length"] = np.array([len(e["prompt_ids"]) for e in examples])
    out["valid"] = np.ones(batch, bool)
    responses = [[7] * c.max_response_tokens] * batch
    return stage1.attach_responses(out, responses, qwen, c.data.seq_buckets,
                                   c.data.target_buckets, qwen.pad_token_id)


def test_abstract_batch_is_the_trainers_batch():
    c = tiny()
    mesh = sharding.make_mesh((1, 2, 1))
    with jax.set_mesh(mesh):
        program = plan.stage1_program(c, mesh, plan.Options())
    real = real_batch(c, c.data.batch_size)
    state, frozen, batch = program.args
    assert set(batch) <= set(real)
    for k, x in batch.items():
        assert x.shape == real[k].shape, k
        assert np.dtype(x.dtype) == real[k].dtype or (x.dtype, real[k].dtype.kind) in (
            (np.int32, "i"), (np.float32, "f")), (k, x.dtype, real[k].dtype)
    assert "counted" in program.seq_note     # the tiny tokenizer is at hand
    # every field the step reads is in the abstract batch
    jax.eval_shape(program.step, state, frozen, batch)


def test_stage2_abstract_batch_is_the_trainers_batch():
    """A joint (AV) conversation collated by the pipeline has the planner's shapes when its
    text is as long as the planner assumes; the step traces on the abstract arguments."""
    from vaemotion_jax.configs import stage2 as module
    from vaemotion_jax.training import stage2
    c = check(module.get_config())
    mesh = sharding.make_mesh((1, 2, 1))
    with jax.set_mesh(mesh):
        program = plan.stage2_program(c, mesh, plan.Options())
    real = stage2_batch(c, c.data.seq_buckets, c.data.target_buckets)
    assert real["input_ids"].shape[1] <= program.seq_len
    state, frozen, batch = program.args
    assert set(batch) == set(real)
    for k, x in batch.items():
        if k not in ("input_ids", "position_ids") + stage2.TARGET_FIELDS:
            assert x.shape == real[k].shape, k
        assert np.dtype(x.dtype).kind == real[k].dtype.kind, k
    jax.eval_shape(program.step, state, frozen, batch)
    assert any("lora_a" in "/".join(map(str, path)) for path, _ in
               jax.tree_util.tree_flatten_with_path(state.params)[0])


QFORMER = {"adapter.kind": "qformer", "adapter.max_utterances": 3}


def test_qformer_abstract_batches_carry_the_utterance_mask():
    """kind="qformer": both stages' abstract batches hold utterance_mask (B, N_max, T_a),
    sharded on the batch axis like fbank_mask, the shape the trainer's host code makes; the
    steps trace with it and the adapter's params are the Q-Former's."""
    from vaemotion_jax.configs import stage2 as module2
    c = tiny(**QFORMER)
    mesh = sharding.make_mesh((1, 2, 1))
    with jax.set_mesh(mesh):
        programs = [plan.stage1_program(c, mesh, plan.Options()),
                    plan.stage2_program(check(common.override(module2.get_config(),
                                                                       QFORMER)), mesh,
                                        plan.Options())]
    t_a = 2 + 10 * 29    # the tiny AST on 300 frames: 10 x 29 patches + 2
    mask = np.zeros((3, t_a), bool)
    real = real_batch(c, c.data.batch_size, utterance_mask=mask)
    for program in programs:
        state, frozen, batch = program.args
        assert batch["utterance_mask"].shape == real["utterance_mask"].shape == (
            c.data.batch_size, 3, t_a)
        assert batch["utterance_mask"].dtype == np.bool_
        assert (batch["utterance_mask"].sharding.spec[0] == batch["fbank_mask"].sharding.spec[0]
                == ("data", "fsdp"))
        adapter = {**state.params, **frozen}["audio_adapter"]   # trained in Stage 1 only
        assert {"global_qformer", "utterance_qformer", "token_fc", "proj"} == set(adapter)
        jax.eval_shape(program.step, state, frozen, batch)


@pytest.mark.slow
def test_argument_memory_is_the_sharded_arguments():
    """XLA's argument bytes per device = the per-device shards of params, state and batch, so
    the planner's shardings are the ones the compiled step takes; FSDP shrinks them."""
    sizes = {}
    for fsdp in (1, 4):
        c = tiny(**{"data.batch_size": 4, "scan_layers": True})
        mesh = sharding.make_mesh((1, fsdp, 1))
        with jax.set_mesh(mesh):
            program = plan.stage1_program(c, mesh, plan.Options())
        p = plan.make_plan(c, mesh)
        # jit drops the arguments the step never reads, as it does in training
        unread = {k: program.args[2][k] for k in ("target_ids", "video_grid_thw",
                                                  "second_per_grid_ts")}
        assert p.memory["argument"] == shard_bytes(program.args) - shard_bytes(unread)
        assert p.memory["total"] == (p.memory["argument"] + p.memory["output"]
                                     - p.memory["alias"] + p.memory["temp"] + p.memory["code"])
        assert p.memory["alias"] > 0            # the donated train state
        frozen_bytes = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                           for x in jax.tree.leaves(program.args[1]))
        if fsdp == 1:
            assert p.collectives == {}
        else:   # every frozen weight is gathered for the forward passes
            assert p.collectives["all-gather"] > 0.5 * frozen_bytes * (fsdp - 1) / fsdp
        sizes[fsdp] = p
    assert sizes[4].memory["argument"] < 0.5 * sizes[1].memory["argument"]
    assert sizes[4].flops == pytest.approx(sizes[1].flops / 4, rel=1e-6)


@pytest.mark.slow
def test_flops_count_every_scanned_layer_and_remat():
    """XLA counts a while loop's body once; the plan's FLOPs of a scanned step match the
    compiled unrolled step's. Full remat runs the student's layers forward twice."""
    mesh = sharding.make_mesh((1, 1, 1))
    scanned = plan.make_plan(tiny(**{"data.batch_size": 2, "scan_layers": True}), mesh)
    unrolled = plan.make_plan(tiny(**{"data.batch_size": 2, "scan_layers": False}), mesh)
    assert unrolled.flops == unrolled.compiled_flops
    assert scanned.flops == pytest.approx(unrolled.flops, rel=0.01)
    assert scanned.compiled_flops < 0.6 * scanned.flops
    full = plan.make_plan(tiny(**{"data.batch_size": 2, "remat": "full"}), mesh)
    assert full.flops > 1.1 * scanned.flops and full.levers["remat"] == "full"


@pytest.mark.slow
def test_cpu_proxy_keeps_16_bit_matmuls():
    """bf16 on XLA:CPU: without the proxy every dot works on f32 copies (more temporaries)."""
    c = tiny(**{"data.batch_size": 2, "dtype": "bfloat16", "param_dtype": "bfloat16"})
    mesh = sharding.make_mesh((1, 1, 1))
    proxy = plan.make_plan(c, mesh, plan.Options(cpu_proxy=True))
    raw = plan.make_plan(c, mesh, plan.Options(cpu_proxy=False))
    assert proxy.cpu_proxy and not raw.cpu_proxy
    assert proxy.memory["temp"] < raw.memory["temp"]
    assert proxy.memory["argument"] == raw.memory["argument"]   # f16 and bf16: same bytes
    assert proxy.levers["dtype"] == "bfloat16"                   # reported as configured


HLO = """HloModule m

%body.1 (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %ag = f32[1024]{0} all-gather(%x), channel_id=1, replica_groups=[1,4]<=[4], dimensions={0}
  ROOT %t = (s32[], f32[4]{0}) tuple(%i, %y)
}

%branch_a (q: f32[4]) -> f32[4] {
  %ar = (f32[256]{0}, bf16[256]{0}) all-reduce(%y, %z), replica_groups={{0,1},{2,3}}, to_apply=%add
}

%branch_b (q: f32[4]) -> f32[4] {
  ROOT %rs = f32[16]{0} reduce-scatter(%y), replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_0','axis_1'}
}

ENTRY %main.9 (a: f32[4]) -> f32[4] {
  %w = (s32[], f32[4]{0}) while(%init), condition=%cond.2, body=%body.1, backend_config={"known_trip_count":{"n":"28"},"known_init_step":{"init":"0"}}
  %c = f32[4]{0} conditional(%pred, %a, %b), true_computation=%branch_a, false_computation=%branch_b
  %s = (f32[16]{0}, f32[64]{0}) all-gather-start(%v), replica_groups=[1,4]<=[4]
  ROOT %d = f32[64]{0} all-gather-done(%s)
}
"""


def test_collective_traffic_counts_loops_branches_and_groups():
    t = plan.collective_traffic(HLO, devices=4)
    # 28 trips x 4 KiB x 3/4, plus the async gather once (at -done)
    assert t["all-gather"] == pytest.approx(28 * 4096 * 3 / 4 + 256 * 3 / 4)
    # the larger branch: a tuple all-reduce in groups of 2 (1536 B x 2 x 1/2) over a
    # reduce-scatter in a group of 4 (64 B x 3)
    assert t["all-reduce"] == pytest.approx(1536) and "reduce-scatter" not in t


def test_sequence_length_and_refusals():
    assert plan.sequence_length((128, 256, 512), 129) == 256
    with pytest.raises(ValueError, match="largest sequence bucket 512"):
        plan.sequence_length((128, 256, 512), 600)
    c = tiny()
    n, note = programs.stage1_sequence(c, 648, plan.Options(text_tokens=30))
    assert n == 768 and "648 video + 30 text (given) + 24 response" in note
    with pytest.raises(ValueError, match="no planner for stage 'stage9'"):
        c.stage = "stage9"
        plan.make_plan(c, sharding.make_mesh((1, 1, 1)))


def test_cli_prints_and_writes_the_plan(tmp_path):
    out = tmp_path / "plan.json"
    env = {**os.environ, "XLA_FLAGS": ""}
    p = subprocess.run([sys.executable, "-m", "vaemotion_jax.plan", "--config=stage1",
                        "--devices=2", "--peak_tflops=100", "--mfu=0.5", "--budget_gib=0.001",
                        f"--json={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "plan: stage1 / tiny on 2 cpu device(s), mesh data=1 x fsdp=2 x tensor=1" in p.stdout
    assert "DOES NOT FIT" in p.stdout and "XLA:CPU" in p.stdout
    d = json.loads(out.read_text())
    assert d["devices"] == 2 and d["memory"]["total"] > 0 and d["flops"] > 0
    step = d["flops"] / (100e12 * 0.5)
    assert d["estimate"]["step_seconds"] == pytest.approx(step)
    assert d["estimate"]["tokens_per_second"] == pytest.approx(d["clips"] * d["seq_len"] / step)


@pytest.mark.parametrize("name", [f"{stage}_7b:{hw}" for stage in ("stage1", "stage2")
                                  for hw in ("gpu8x24", "gpu1x24", "tpu_v5e8", "tpu_v4_8")])
def test_7b_presets_are_complete_configs(name):
    """The presets' configs (their plans are in docs/scaling.md; compiling a 7B is not for CI)."""
    import importlib
    file, _, arg = name.partition(":")
    c = check(importlib.import_module(f"vaemotion_jax.configs.{file}").get_config(arg))
    assert c.model == "qwen2_5_vl_7b" and c.dtype == "bfloat16" and c.scan_layers
    hw = c.hardware
    assert hw.budget_gib < hw.device_gib
    shards = int(np.prod([s for s in c.mesh if s != -1]))
    assert c.data.batch_size % (hw.devices if -1 in c.mesh else shards) == 0
    assert c.data.batch_size >= hw.devices      # at least one clip per device


@pytest.mark.parametrize("name", ["stage1", "stage2", "stage1:qwen2_5_vl_7b", "stage2_7b"])
def test_a_config_is_complete_when_made(name):
    """Every value a run uses is in the config get_config returns: no None left to fill."""
    import importlib
    file, _, arg = name.partition(":")
    c = importlib.import_module(f"vaemotion_jax.configs.{file}").get_config(arg or None)
    leaves = jax.tree_util.tree_flatten_with_path(c.to_dict(), is_leaf=lambda x: x is None)[0]
    unset = [jax.tree_util.keystr(p) for p, v in leaves if v is None]
    assert unset == ["['adapter']['qformer_mlp']"] or unset == [
        "['adapter']['qformer_mlp']", "['stage1']['adapter']['qformer_mlp']"], unset  # None: 4 x width
    check(c)


def test_model_changed_on_the_command_line_is_refused():
    """`--config.model=qwen2_5_vl_7b` would keep the tiny sizes: refused, naming the fix."""
    from vaemotion_jax.configs import stage1 as module
    c = common.override(module.get_config(), {"model": "qwen2_5_vl_7b"})
    with pytest.raises(ValueError, match="--config=stage1:qwen2_5_vl_7b"):
        check(c)



def test_cached_abstract_batch_is_the_trainers_cached_batch(tmp_path):
    """With the caches of frozen work on, the planner's batch is the one the trainer makes after
    reading them: AST features instead of fbank, top-k teacher logits instead of the video."""
    from vaemotion_jax.models import ast as ast_lib
    from vaemotion_jax.training import frozen_cache
    c = tiny(**{"cache.audio_features": True, "cache.teacher_logits": True,
                "cache.teacher_topk": 4})
    mesh = sharding.make_mesh((1, 2, 1))
    with jax.set_mesh(mesh):
        program = plan.stage1_program(c, mesh, plan.Options())
    real = real_batch(c, c.data.batch_size)
    b, a = real["target_mask"].shape
    real["clip"] = np.array([json.dumps({"audio": [f"/clip{i}.wav", 1, 1], "video": [
        f"/clip{i}.mp4", 1, 1], "start": None, "end": None}) for i in range(b)])
    ast = ast_lib.preset(c.ast_preset).replace(max_length=c.data.audio_max_length)
    shape = (ast.num_tokens, ast.hidden_size)
    real = frozen_cache.attach_audio_features(
        real, frozen_cache.EntryCache(str(tmp_path), "ast", {}),
        lambda g: {"features": np.zeros((b,) + shape, np.float32)}, mesh, shape)
    real = frozen_cache.attach_teacher_logits(
        real, frozen_cache.EntryCache(str(tmp_path), "teacher", {}),
        lambda g: {"logits": np.zeros((b, a, 4), np.float32),
                   "index": np.zeros((b, a, 4), np.int32)}, mesh, 4, 4)
    state, frozen, batch = program.args
    assert set(batch) <= set(real) and "pixel_values_videos" not in batch
    assert {"audio_features", "teacher_logits", "teacher_index"} <= set(batch)
    for k, x in batch.items():
        assert x.shape == real[k].shape, k
    jax.eval_shape(program.step, state, frozen, batch)


def test_planner_and_trainer_shard_the_same_state(tmp_path):
    """The trainer's real params and state (loaded by its own code onto a (2, 2, 2) mesh) sit in
    the shardings the planner compiles its step for, and both jit through `jit_step`."""
    from stage1_assets import make_assets, settings
    from vaemotion_jax.embedded.assets import Assets
    from vaemotion_jax.training import program
    from vaemotion_jax.training.stage1_run import build
    from vaemotion_jax.training.state import create_state, split_params
    assets = make_assets(str(tmp_path))
    c = tiny(**{k: v for k, v in settings(assets, str(tmp_path / "run")).items()}, mesh=(2, 2, 2))
    mesh = sharding.make_mesh(tuple(c.mesh))
    with jax.set_mesh(mesh):
        model, _, params, _ = build(c, Assets(world_dir=assets["world"], tokenizer_dir="",
                                              backbone_path=assets["backbone"],
                                              audio_encoder_path=assets["audio"]), mesh)
        parts = program.stage_parts(c, model)
        trainable, frozen = split_params(params, parts.trainable)
        state = create_state(trainable, parts.tx, jax.random.key_data(jax.random.key(0)))
        planned = plan.stage1_program(c, mesh, plan.Options())
    real = jax.tree_util.tree_flatten_with_path((state, frozen))[0]
    abstract = jax.tree.leaves(planned.args[:2])
    assert len(real) == len(abstract)
    diffs = [(jax.tree_util.keystr(p), x.sharding, y.sharding) for (p, x), y in zip(real, abstract)
             if not program._on_mesh(x, mesh).is_equivalent_to(y.sharding, x.ndim)]
    assert not diffs, diffs[:5]
    assert any(not y.sharding.is_fully_replicated for y in abstract)  # FSDP/tensor split some


def trainer_step_text(c, model, params, host_batch, qwen, mesh) -> str:
    """StableHLO of the step as a run makes it: its state from `params`, jitted by
    `program.jit_step`, lowered on the host batch placed by `loop.global_batch`."""
    from vaemotion_jax.training import loop, program
    from vaemotion_jax.training.state import create_state, split_params
    parts = program.stage_parts(c, model)
    trainable, frozen = split_params(params, parts.trainable)
    state = create_state(trainable, parts.tx, jax.random.key_data(jax.random.key(c.seed)))
    batch = loop.global_batch(host_batch, mesh, loop.token_pad_values(qwen))
    return program.jit_step(parts.step, state, frozen, mesh).lower(state, frozen, batch).as_text()


def test_planner_compiles_the_trainers_step(tmp_path):
    """The step the planner lowers from shapes alone is, op for op, the one the trainer lowers
    from its loaded weights and a batch made by its own host code (same StableHLO text, so the
    same shardings, donation and program)."""
    from stage1_assets import make_assets, settings
    from vaemotion_jax.embedded.assets import Assets
    from vaemotion_jax.training.stage1_run import build
    assets = make_assets(str(tmp_path))
    c = tiny(**settings(assets, str(tmp_path / "run")), mesh=(2, 2, 2))
    mesh = sharding.make_mesh(tuple(c.mesh))
    with jax.set_mesh(mesh):
        model, qwen_model, params, _ = build(c, Assets(
            world_dir=assets["world"], tokenizer_dir="", backbone_path=assets["backbone"],
            audio_encoder_path=assets["audio"]), mesh)
        trainer = trainer_step_text(c, model, params, real_batch(c, c.data.batch_size),
                                    qwen_model.config, mesh)
        planned = plan.stage1_program(c, mesh, plan.Options())
        planner = planned.jitted.lower(*planned.args)
    assert trainer == planner.as_text()


def test_planner_compiles_the_stage2_trainers_step(tmp_path):
    """Stage 2 likewise: the trainer's `build` (frozen weights with fresh LoRA, the Stage 1
    adapter from disk, a new EmoAdapter) and a conversation batch collated by the pipeline give
    the same StableHLO as the planner's abstract program."""
    from stage1_assets import AUDIO_FRAMES, make_assets
    from vaemotion_jax.configs import stage2 as module
    from vaemotion_jax.embedded.assets import Assets
    from vaemotion_jax.models import ast as ast_lib
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.training import weights
    from vaemotion_jax.training.stage1_run import adapter_config
    from vaemotion_jax.training.stage2_run import build
    assets = make_assets(str(tmp_path))
    c = check(common.override(module.get_config(), {
        "backbone_path": assets["backbone"], "audio_encoder_path": assets["audio"],
        "data.audio_max_length": AUDIO_FRAMES, "mesh": (2, 2, 2)}))
    mesh = sharding.make_mesh(tuple(c.mesh))
    qwen = qwen_config.tiny()
    adapter_dir = str(tmp_path / "adapter")
    ast = ast_lib.tiny().replace(max_length=AUDIO_FRAMES)
    adapter = adapter_config(c, qwen)
    with jax.set_mesh(mesh):
        weights.export_adapter(weights.init_adapter(adapter, ast, mesh, jax.random.key(3)),
                               adapter, adapter_dir)
        model, qwen_model, _, params = build(c, Assets(
            world_dir="", tokenizer_dir="", backbone_path=assets["backbone"],
            audio_encoder_path=assets["audio"]), adapter_dir, mesh)
        planned = plan.stage2_program(c, mesh, plan.Options())
        real = stage2_batch(c, (planned.seq_len,), (planned.shapes["target_ids"][1],))
        trainer = trainer_step_text(c, model, params, real, qwen_model.config, mesh)
        planner = planned.jitted.lower(*planned.args)
    assert trainer == planner.as_text()
