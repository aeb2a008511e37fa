"""Our chat formatting equals the Qwen2.5-VL jinja template (via apply_chat_template); padding."""
import numpy as np
import pytest

from vaemotion_jax.processing import chat, tokenizer as tk

VIDEO_PAD = tk.TINY_SPECIAL_TOKENS["<|video_pad|>"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tk.build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


def _reference_ids(tokenizer, turns, video_tokens, video_placement="first", system=None,
                   add_generation_prompt=False):
    """apply_chat_template on the same conversation, its one <|video_pad|> expanded."""
    messages = [dict(turn) for turn in turns]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    if video_tokens is not None:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        i = users[0] if video_placement == "first" else users[-1]
        messages[i] = {"role": "user", "content": [{"type": "video"},
                                                   {"type": "text", "text": messages[i]["content"]}]}
    ids = tokenizer.apply_chat_template(messages, tokenize=True,
                                        add_generation_prompt=add_generation_prompt)["input_ids"]
    if video_tokens is None:
        return ids
    assert ids.count(VIDEO_PAD) == 1
    k = ids.index(VIDEO_PAD)
    return ids[:k] + [VIDEO_PAD] * video_tokens + ids[k + 1:]


CONVERSATIONS = {
    "text_only": [{"role": "user", "content": "What colour is the star?"},
                  {"role": "assistant", "content": "The star is yellow."}],
    "multi_turn": [{"role": "user", "content": "Describe the clip."},
                   {"role": "assistant", "content": "A blue square drifts slowly to the right."},
                   {"role": "user", "content": "And the music?"},
                   {"role": "assistant", "content": "A soft piano in a major key; it feels calm."}],
    "awkward_text": [{"role": "user", "content": "  spaces first\n\nthen lines 日本語 🎵 "},
                     {"role": "assistant", "content": "\n\nstarts with newlines, ends with space "}],
    "question_only": [{"role": "user", "content": "Which instrument is heard?\nA. piano\nB. drum"}],
    "leading_system": [{"role": "system", "content": "You judge emotions."},
                       {"role": "user", "content": "Is it happy?"},
                       {"role": "assistant", "content": "B"}],
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("video_tokens", [None, 1, 7])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_encode_chat_equals_apply_chat_template(tiny, name, video_tokens, add_generation_prompt):
    turns = CONVERSATIONS[name]
    ours = chat.encode_chat(tiny, turns, video_tokens=video_tokens,
                            add_generation_prompt=add_generation_prompt)
    reference = _reference_ids(tiny, turns, video_tokens,
                               add_generation_prompt=add_generation_prompt)
    assert ours["input_ids"].dtype == np.int32
    assert ours["input_ids"].tolist() == reference


@pytest.mark.parametrize("placement", ["first", "last"])
def test_video_placement_and_custom_system(tiny, placement):
    turns = CONVERSATIONS["multi_turn"]
    ours = chat.encode_chat(tiny, turns, video_tokens=4, video_placement=placement,
                            system="Be brief.")
    reference = _reference_ids(tiny, turns, 4, video_placement=placement, system="Be brief.")
    assert ours["input_ids"].tolist() == reference


def test_mm_token_type_ids_mark_only_video_pads(tiny):
    out = chat.encode_chat(tiny, CONVERSATIONS["multi_turn"], video_tokens=9)
    is_pad = out["input_ids"] == VIDEO_PAD
    assert is_pad.sum() == 9
    assert out["mm_token_type_ids"].dtype == np.int32
    np.testing.assert_array_equal(out["mm_token_type_ids"], np.where(is_pad, 2, 0))
    np.testing.assert_array_equal(
        chat.encode_chat(tiny, CONVERSATIONS["multi_turn"])["mm_token_type_ids"], 0)


def _true_runs(mask):
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


@pytest.mark.parametrize("name", ["text_only", "multi_turn", "leading_system"])
def test_assistant_mask_covers_replies_and_their_im_end(tiny, name):
    turns = CONVERSATIONS[name]
    out = chat.encode_chat(tiny, turns, video_tokens=3, add_generation_prompt=False)
    replies = [t["content"] for t in turns if t["role"] == "assistant"]
    runs = _true_runs(out["assistant_mask"])
    assert len(runs) == len(replies)
    for (start, stop), reply in zip(runs, replies):
        assert tiny.decode(out["input_ids"][start:stop]) == reply + "<|im_end|>"
        assert tiny.decode(out["input_ids"][start - 3:start]) == "<|im_start|>assistant\n"
    assert out["assistant_mask"].dtype == bool


def test_generation_prompt_is_not_in_the_loss(tiny):
    turns = CONVERSATIONS["question_only"]
    out = chat.encode_chat(tiny, turns, video_tokens=2, add_generation_prompt=True)
    assert not out["assistant_mask"].any()
    assert tiny.decode(out["input_ids"][-3:]) == "<|im_start|>assistant\n"


def test_reply_starting_with_newline_is_fully_in_the_loss(tiny):
    out = chat.encode_chat(tiny, CONVERSATIONS["awkward_text"])
    (start, stop), = _true_runs(out["assistant_mask"])
    decoded = tiny.decode(out["input_ids"][start:stop])
    assert decoded.endswith("\n\nstarts with newlines, ends with space <|im_end|>")


@pytest.mark.parametrize("kwargs,match", [
    ({"turns": []}, "at least one turn"),
    ({"turns": [{"role": "user"}]}, "string 'role' and 'content'"),
    ({"turns": [{"role": "assistant", "content": "x"}], "video_tokens": 4}, "needs a user turn"),
    ({"turns": [{"role": "user", "content": "x"}], "video_tokens": 0}, "positive integer"),
    ({"turns": [{"role": "user", "content": "x"}], "video_tokens": 2, "video_placement": "mid"},
     "video_placement"),
])
def test_bad_conversations_are_rejected(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        chat.encode_chat(tiny, **kwargs)


def test_pad_batch_left_and_right():
    seqs = [np.array([5, 6, 7], np.int32), np.array([8], np.int32)]
    ids, mask = chat.pad_batch(seqs, pad_id=0, side="left")
    np.testing.assert_array_equal(ids, [[5, 6, 7], [0, 0, 8]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    ids, mask = chat.pad_batch(seqs, pad_id=-1, length=5, side="right")
    np.testing.assert_array_equal(ids, [[5, 6, 7, -1, -1], [8, -1, -1, -1, -1]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    flags, _ = chat.pad_batch([np.array([True]), np.array([False, True])], pad_id=False)
    assert flags.dtype == bool and flags.tolist() == [[False, True], [False, True]]
    with pytest.raises(ValueError, match="does not fit"):
        chat.pad_batch(seqs, pad_id=0, length=2)
    with pytest.raises(ValueError, match="side"):
        chat.pad_batch(seqs, pad_id=0, side="middle")


def test_bucket_length():
    assert chat.bucket_length(1) == 64
    assert chat.bucket_length(64) == 64
    assert chat.bucket_length(65) == 128
    assert chat.bucket_length(1300, buckets=(512, 2048, 1536)) == 1536
    with pytest.raises(ValueError, match="exceed"):
        chat.bucket_length(10_000)
