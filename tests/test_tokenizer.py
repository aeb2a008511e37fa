"""The tiny byte-level BPE tokenizer: fixed special ids, round trips, AutoTokenizer, determinism."""
import os
from pathlib import Path

import pytest
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

from vaemotion_jax.processing import tokenizer as tk


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_tokenizer")
    tk.build_tiny_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return tk.load_tokenizer(tiny_dir)


def test_vocabulary_is_1024_with_fixed_special_ids(tiny):
    vocab = tiny.get_vocab()
    assert len(tiny) == tk.TINY_VOCAB_SIZE == 1024
    assert sorted(vocab.values()) == list(range(1024))
    for token, token_id in tk.TINY_SPECIAL_TOKENS.items():
        assert vocab[token] == token_id
        assert tiny.convert_tokens_to_ids(token) == token_id
    regular = {t: i for t, i in vocab.items() if t not in tk.TINY_SPECIAL_TOKENS}
    assert len(regular) == 1008 and max(regular.values()) == 1007
    assert set(tk.TINY_SPECIAL_TOKENS.values()) == set(range(1008, 1024))


def test_tokenizer_settings_match_qwen_instruct(tiny):
    assert tiny.eos_token == "<|im_end|>" and tiny.eos_token_id == 1010
    assert tiny.pad_token == "<|endoftext|>" and tiny.pad_token_id == 1008
    assert tiny.bos_token is None
    assert tiny.chat_template == tk.QWEN2_5_VL_CHAT_TEMPLATE


@pytest.mark.parametrize("text", [
    "A red circle is bouncing slowly to the left.",
    "The music is tense, in a minor key; valence -0.5, arousal 0.75.",
    "  leading spaces\n\nand blank lines\ttabs ",
    "Unicode: wörld, 日本語, emoji 🎵, accents é è ê.",
    "Choose the most suitable answer from options A, B, C, and D.\nA. calm\nB. sad",
])
def test_round_trip(tiny, text):
    ids = tiny.encode(text, add_special_tokens=False)
    assert max(ids) < 1008
    assert tiny.decode(ids) == text


def test_world_words_are_single_tokens(tiny):
    for word in ("red", "circle", "triangle", "bouncing", "piano", "minor", "happy", "valence"):
        assert len(tiny.encode(" " + word, add_special_tokens=False)) == 1, word


def test_special_tokens_in_text_are_parsed_and_skippable(tiny):
    ids = tiny.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == 1009 and ids[-1] == 1010
    assert tiny.decode(ids, skip_special_tokens=True) == "user\nhi"


def test_auto_tokenizer_loads_and_formats_chat(tiny_dir, tiny):
    auto = AutoTokenizer.from_pretrained(str(tiny_dir))
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Hi?"}]},
                {"role": "assistant", "content": "Hello."}]
    text = auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Hi?<|im_end|>\n"
                    "<|im_start|>assistant\nHello.<|im_end|>\n")
    assert auto.encode(text, add_special_tokens=False) == tiny.encode(text, add_special_tokens=False)


def test_build_is_deterministic(tiny_dir, tmp_path):
    tk.build_tiny_tokenizer(tmp_path)
    names = sorted(os.listdir(tiny_dir))
    assert names == sorted(os.listdir(tmp_path))
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(names)
    for name in names:
        assert (tiny_dir / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_extra_corpus_is_used(tiny, tmp_path):
    word = " zyzzyvaquux"
    extended = tk.build_tiny_tokenizer(tmp_path, corpus=[word * 50] * 20)
    assert len(extended) == 1024
    assert extended.convert_tokens_to_ids("<|video_pad|>") == 1015
    assert len(extended.encode(word, add_special_tokens=False)) < len(
        tiny.encode(word, add_special_tokens=False))


def test_special_ids_on_tiny(tiny):
    ids = tk.special_ids(tiny)
    assert ids == tk.SpecialIds(im_start=1009, im_end=1010, vision_start=1011, vision_end=1012,
                                image_pad=1014, video_pad=1015, audio_pad=1018, endoftext=1008,
                                pad=1008)


def test_special_ids_on_a_qwen_style_tokenizer_without_audio_tokens():
    # Qwen2Tokenizer's unk is <|endoftext|>, so an unknown token converts to its id: the lookup
    # must not mistake that for an <|audio_pad|>.
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    qwen = Qwen2Tokenizer(vocab=vocab, merges=[])
    qwen.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
        "<|image_pad|>", "<|video_pad|>"]})
    ids = tk.special_ids(qwen)
    assert ids.audio_pad is None
    assert (ids.endoftext, ids.pad, ids.im_start, ids.video_pad) == (256, 256, 257, 263)


def test_load_tokenizer_names_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tk.load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        tk.load_tokenizer(tmp_path)


def test_default_tiny_tokenizer_dir_builds_once(monkeypatch, tmp_path):
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
    monkeypatch.setenv("VAEMOTION_CACHE", str(tmp_path))
    path = Path(default_tiny_tokenizer_dir())
    assert path.is_relative_to(tmp_path / "tiny_tokenizer")
    stamp = (path / "tokenizer.json").stat().st_mtime_ns
    assert Path(default_tiny_tokenizer_dir()) == path
    assert (path / "tokenizer.json").stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging left behind
    assert len(tk.load_tokenizer(path)) == 1024
