"""How a run turns clips into inputs (data/media.py): frame sampling by rate or count, the grid,
AST windows over long audio, and the same M-RoPE positions for a clip in training, evaluation
and chat, with or without its video."""
import functools

import jax
import numpy as np
import pytest
import soundfile

from media_files import make_mp4
from vaemotion_jax.data.decode import BadExample, decode_record
from vaemotion_jax.data.manifest import Record
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.pipeline import NOTES, ExampleFn, PipelineConfig, collate, make_iterator

SMALL = dict(resized_hw=(56, 56), min_pixels=28 * 28, max_pixels=56 * 56)


def test_fps_with_a_cap_spreads_the_frames_over_the_whole_window(tmp_path):
    spec = MediaSpec(fps=2.0, max_frames=8, **SMALL)
    np.testing.assert_allclose(spec.frame_times(0.0, 10.0), (np.arange(8) + 0.5) * 1.25)
    assert spec.grid == (4, 4, 4) and spec.frames == 8
    assert spec.second_per_grid(10.0) == 2.5
    clip = make_mp4(str(tmp_path / "ten.mp4"), seconds=10.0, fps=8, size=(56, 56))
    decoded = decode_record(Record(id="c", media=clip), spec.decode_options(audio=False))
    assert len(decoded.frames) == 8
    from vaemotion_jax.data.media import clip_inputs
    inputs = clip_inputs(decoded, spec, clip)
    assert tuple(inputs["video_grid_thw"]) == spec.grid and inputs["second_per_grid_ts"] == 2.5
    # a 3 s clip gives 6 frames at 2 fps: not this run's grid, skipped with the reason
    with pytest.raises(BadExample, match="needs 8 .*at least 4.00 s"):
        spec.check_frames("short.mp4", 3.0)


def test_a_config_with_both_frame_modes_is_refused():
    with pytest.raises(ValueError, match="exactly one of the two"):
        MediaSpec(fps=2.0, max_frames=8, num_frames=4)
    with pytest.raises(ValueError, match="max_frames"):
        MediaSpec(fps=2.0)
    from vaemotion_jax.configs import stage1 as stage1_config
    from vaemotion_jax.configs import common
    from vaemotion_jax.presets import check
    # data.sampling picks the mode; the other mode's fields stay in the config, unused
    c = check(common.override(stage1_config.get_config(),
                              {"data.sampling": "fps", "data.max_frames": 6}))
    spec = MediaSpec.from_config(c.data)
    assert (spec.num_frames, spec.max_frames, spec.fps) == (None, 6, 2.0)
    assert MediaSpec.from_config(stage1_config.get_config().data).num_frames == 4
    with pytest.raises(ValueError, match="data.sampling must be"):
        check(common.override(stage1_config.get_config(), {"data.sampling": "frames"}))
    # a run.json from before `sampling`: the fields that are set decide
    assert MediaSpec.from_config({"fps": None, "max_frames": None, "num_frames": 4}).num_frames == 4


def _wav(path, seconds: float, change_at: float | None, rate: int = 16000) -> str:
    t = np.arange(int(seconds * rate)) / rate
    tone = np.where(t < (change_at if change_at is not None else seconds + 1), 440.0, 1320.0)
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32), rate)
    return path


def test_audio_that_changes_after_the_first_ast_window_reaches_the_audio_tokens(tmp_path):
    from vaemotion_jax.models import ast as ast_lib
    from vaemotion_jax.models.adapters import AudioAdapterConfig
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.models.vaemotion import VAEmotionConfig, VAEmotionLLM
    same = _wav(str(tmp_path / "same.wav"), 30.0, None)
    changed = _wav(str(tmp_path / "changed.wav"), 30.0, change_at=20.0)
    spec = MediaSpec(num_frames=4, audio_frames=1024, audio_windows=3)
    fn = ExampleFn(media=spec, video=False)
    a, b = fn(Record(id="a", media=same)), fn(Record(id="b", media=changed))
    assert a["fbank"].shape == (3, 1024, 128) and a["fbank_mask"].all()
    assert a[NOTES] == ("audio_windows",)
    np.testing.assert_array_equal(a["fbank"][0], b["fbank"][0])   # the first 10.24 s agree
    assert np.abs(a["fbank"][2] - b["fbank"][2]).max() > 0.1      # the change at 20 s is seen
    qwen = qwen_config.tiny()
    acfg = ast_lib.tiny().replace(max_length=1024)
    adapter = AudioAdapterConfig(num_tokens=8, out_dim=qwen.text.hidden_size, seq_hidden=16,
                                 channel_hidden=32)
    model = VAEmotionLLM(VAEmotionConfig(qwen, acfg, adapter))
    fbank = np.stack([a["fbank"], b["fbank"]])
    mask = np.stack([a["fbank_mask"], b["fbank_mask"]])
    params = jax.eval_shape(lambda r: model.init(r, fbank, mask, method=VAEmotionLLM.audio_tokens),
                            jax.random.key(0))
    from flax import linen as nn
    params = nn.meta.unbox(model.init(jax.random.key(0), fbank, mask,
                                      method=VAEmotionLLM.audio_tokens))
    z = np.asarray(model.apply(params, fbank, mask, method=VAEmotionLLM.audio_tokens))
    assert np.abs(z[0] - z[1]).max() > 1e-3
    # only the first window, as before: the change is invisible
    first = np.zeros_like(mask)
    first[:, 0] = True
    z1 = np.asarray(model.apply(params, fbank, first, method=VAEmotionLLM.audio_tokens))
    np.testing.assert_array_equal(z1[0], z1[1])
    # a clip longer than all windows: windows spread over it, and the gap is noted
    one = ExampleFn(media=MediaSpec(num_frames=4, audio_frames=1024, audio_windows=1), video=False)
    assert one(Record(id="c", media=changed))[NOTES] == ("audio_gaps",)


def test_notes_are_counted_in_the_data_summary(tmp_path):
    path = _wav(str(tmp_path / "long.wav"), 25.0, None)
    it = make_iterator([Record(id=f"r{i}", media=path) for i in range(2)],
                       ExampleFn(media=MediaSpec(num_frames=1, audio_frames=1024, audio_windows=3),
                                 video=False),
                       PipelineConfig(batch_size=2, shuffle=False, num_epochs=1))
    batch = next(it)
    assert NOTES not in batch and batch["fbank_mask"].tolist() == [[True, True, True]] * 2
    assert "2 audio_windows" in it.summary() and it.get_state()["notes"] == {"audio_windows": 2}


# --- the same positions everywhere -----------------------------------------------------------

@pytest.fixture(scope="module")
def clip_and_wav(tmp_path_factory):
    """A 3 s world-sized clip and a wav of exactly its decoded audio window."""
    root = tmp_path_factory.mktemp("positions")
    clip = make_mp4(str(root / "clip.mp4"), seconds=3.0, fps=8, size=(112, 112))
    spec = MediaSpec(num_frames=4, resized_hw=(112, 112), min_pixels=28 * 28,
                     max_pixels=112 * 112, audio_frames=300)
    decoded = decode_record(Record(id="c", media=clip), spec.decode_options())
    wav = str(root / "clip.wav")
    soundfile.write(wav, decoded.audio, 16000, subtype="FLOAT")
    return clip, wav, spec


def _positions(example, key="position_ids"):
    return np.asarray(example[key])


def test_a_clip_gets_the_same_positions_in_training_evaluation_and_chat(clip_and_wav):
    from vaemotion_jax.evaluation.replies import question_batches as chat_batches
    from vaemotion_jax.evaluation import benchmark as eval_benchmark
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
    from vaemotion_jax.training import stage1, stage2
    clip, wav, media = clip_and_wav
    qwen, tok = qwen_config.tiny(), default_tiny_tokenizer_dir()
    spec = eval_benchmark.InputSpec(tok, media, "shared_grid")
    question = "What emotion does the music convey?"
    asked_by = {}
    for modality in ("a", "v", "av"):
        record = Record(id="c", media=clip, modality=modality, labels={"a": [0.1, 0.2]},
                        conversations=[{"role": "user", "content": question},
                                       {"role": "assistant", "content": "The music feels calm."}])
        train = ExampleFn(media=media, format_fn=functools.partial(
            stage2.conversation_example, tokenizer_dir=tok, qwen=qwen,
            joint_layout="shared_grid"))(record)
        asked = eval_benchmark.example_fn(spec, qwen, "artemo", modality, prompt=question)(
            Record(id="c", media=clip, modality=modality))
        n = len(asked["prompt_ids"])
        np.testing.assert_array_equal(asked["prompt_ids"], train["input_ids"][:n])
        np.testing.assert_array_equal(_positions(asked), _positions(train)[:n])
        chatted = next(chat_batches(spec, qwen, [clip], modality, question))
        np.testing.assert_array_equal(chatted["position_ids"][0, :n], _positions(train)[:n])
        asked_by[modality] = asked
    asked = asked_by["a"]
    n = len(asked["prompt_ids"])
    # a wav of the same audio stands where its video stood
    asked_wav = next(chat_batches(spec, qwen, [wav], "a", question))
    np.testing.assert_array_equal(asked_wav["position_ids"][0, :n], _positions(asked))
    # Stage 1 trains the audio pathway on the video's positions: the same ones again
    stage1_fn = ExampleFn(media=media, format_fn=functools.partial(
        stage1.teacher_prompt_example, tokenizer_dir=tok, qwen=qwen, prompts=(question,), seed=0))
    prompt = stage1_fn(Record(id="c", media=clip))
    prompt.pop(NOTES)
    batch = collate([prompt], 1, {"prompt_ids": (64, 128)}, {})
    full = stage1.attach_responses(batch, [[7, qwen.eos_token_id]], qwen, (128, 256), (16,),
                                   qwen.pad_token_id)
    np.testing.assert_array_equal(full["position_ids"][0, :n], _positions(asked))
    # the grid stretched over the clip's 3 s (1.5 s per temporal patch), not a 1 s default
    block = _positions(asked)[asked["prompt_ids"] == qwen.video_token_id]
    steps = np.unique(block[:, 0]) - block[0, 0]
    assert steps.tolist() == [0, int(np.floor(1.5 * qwen.vision.tokens_per_second))]


def test_stage1_prompt_is_drawn_per_clip_and_epoch(tmp_path):
    from vaemotion_jax.training.stage1 import prompt_for
    pool = ("p0", "p1", "p2", "p3")
    drawn = {prompt_for("clip-7", pool, 0, epoch) for epoch in range(12)}
    assert len(drawn) > 1                                      # not once per clip
    assert prompt_for("clip-7", pool, 0, 3) == prompt_for("clip-7", pool, 0, 3)  # reproducible
    # the pipeline tags each record with its pass over the data
    path = _wav(str(tmp_path / "x.wav"), 1.0, None)
    it = make_iterator([Record(id=f"r{i}", media=path) for i in range(3)],
                       ExampleFn(media=MediaSpec(num_frames=1, audio_frames=64), video=False,
                                 format_fn=lambda r, f: {"epoch": np.int32(r.epoch)}),
                       PipelineConfig(batch_size=3, shuffle=True, seed=1))
    assert [next(it)["epoch"].tolist() for _ in range(3)] == [[0] * 3, [1] * 3, [2] * 3]


def test_stage2_loss_covers_the_whole_answer_unless_capped():
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.processing.chat import encode_chat
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
    from vaemotion_jax.processing.tokenizer import cached_tokenizer
    from vaemotion_jax.training import stage2
    qwen, tok = qwen_config.tiny(), default_tiny_tokenizer_dir()
    grid = (2, 8, 8)
    features = {"pixel_values_videos": np.zeros((128, 1176), np.float32),
                "video_grid_thw": np.asarray(grid), "second_per_grid_ts": 1.5,
                "fbank": np.zeros((1, 300, 128), np.float32), "fbank_mask": np.ones(1, bool)}
    answer = " ".join(["The music feels calm and warm, with a slow low melody."] * 8)
    turns = [{"role": "user", "content": "What emotion does the music convey?"},
             {"role": "assistant", "content": answer}]
    record = Record(id="long", media="x.mp4", modality="a", conversations=turns)
    whole = stage2.conversation_example(record, features, tokenizer_dir=tok, qwen=qwen,
                                        joint_layout="shared_grid")
    n = int(encode_chat(cached_tokenizer(tok), turns, video_tokens=32)["assistant_mask"].sum())
    assert n > 48 and whole["target_mask"].sum() == n and whole[NOTES] == ()
    np.testing.assert_array_equal(whole["input_ids"][whole["target_index"] + 1], whole["target_ids"])
    capped = stage2.conversation_example(record, features, tokenizer_dir=tok, qwen=qwen,
                                         joint_layout="shared_grid", max_target_tokens=48)
    assert capped["target_mask"].sum() == 48 and capped[NOTES] == ("targets_truncated",)
