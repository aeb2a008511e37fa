"""Tokenizers: the checkpoint's own (AutoTokenizer), and a tiny byte-level BPE for the tiny preset.

The tiny tokenizer has the same pipeline as Qwen2's (NFC, Qwen2's split regex, byte-level
bytes-to-unicode, BPE, byte-level decoder), 1008 regular tokens trained on a built-in corpus,
and the Qwen special tokens at fixed ids 1008..1023 that the tiny model preset relies on. It is
saved with the Qwen2.5-VL chat template, so `AutoTokenizer.from_pretrained` and
`apply_chat_template` work on it as on the real checkpoint.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import trainers

from vaemotion_jax.processing.tokenizer_corpus import tiny_corpus

TINY_VOCAB_SIZE = 1024
TINY_REGULAR_VOCAB_SIZE = 1008
TINY_SPECIAL_TOKENS = {
    "<|endoftext|>": 1008,
    "<|im_start|>": 1009,
    "<|im_end|>": 1010,
    "<|vision_start|>": 1011,
    "<|vision_end|>": 1012,
    "<|vision_pad|>": 1013,
    "<|image_pad|>": 1014,
    "<|video_pad|>": 1015,
    "<|audio_start|>": 1016,
    "<|audio_end|>": 1017,
    "<|audio_pad|>": 1018,
    **{f"<|reserved_{i}|>": 1019 + i for i in range(5)},
}
TINY_MODEL_MAX_LENGTH = 32768

# Qwen2's pre-tokenisation regex (contractions, letter runs, single digits, punctuation runs,
# newlines, spaces), as in transformers' Qwen2 tokenizer.
QWEN2_SPLIT_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                     r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# The chat template shipped with Qwen2.5-VL-*-Instruct (chat_template.json).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _qwen2_style_tokenizer() -> Tokenizer:
    """An untrained BPE with Qwen2's normaliser, pre-tokeniser and decoder."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _train_tiny_backend(corpus: Iterable[str] | None) -> Tokenizer:
    """Train 1008 regular tokens (256 bytes + 752 merges) and append the fixed special tokens."""
    lines = tiny_corpus() + (list(corpus) if corpus is not None else [])
    tokenizer = _qwen2_style_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=TINY_REGULAR_VOCAB_SIZE, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tokenizer.train_from_iterator(lines, trainer=trainer)
    if tokenizer.get_vocab_size() != TINY_REGULAR_VOCAB_SIZE:
        raise ValueError(f"the tiny BPE corpus only supports {tokenizer.get_vocab_size()} regular "
                         f"tokens, need exactly {TINY_REGULAR_VOCAB_SIZE}: add more text")
    ordered = sorted(TINY_SPECIAL_TOKENS.items(), key=lambda item: item[1])
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                  for token, _ in ordered])
    for token, expected_id in ordered:
        if tokenizer.token_to_id(token) != expected_id:
            raise ValueError(f"special token {token} got id {tokenizer.token_to_id(token)}, "
                             f"expected {expected_id}")
    return tokenizer


def build_tiny_tokenizer(out_dir: str | os.PathLike, corpus: Iterable[str] | None = None):
    """Train the tiny tokenizer, save it (with chat template) to `out_dir`, return it.

    Deterministic: the same corpus gives byte-identical files. `corpus` lines are used in
    addition to the built-in corpus. Returns a transformers fast tokenizer of 1024 tokens
    (eos `<|im_end|>`, pad `<|endoftext|>`, no bos, as Qwen2.5-VL-Instruct).
    """
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tiny_backend(corpus), bos_token=None, unk_token=None,
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=TINY_MODEL_MAX_LENGTH, clean_up_tokenization_spaces=False)
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    if len(tokenizer) != TINY_VOCAB_SIZE:
        raise ValueError(f"tiny tokenizer has {len(tokenizer)} tokens, expected {TINY_VOCAB_SIZE}")
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def load_tokenizer(path: str | os.PathLike):
    """AutoTokenizer from a local directory (a checkpoint or a built tiny tokenizer)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        raise FileNotFoundError(f"tokenizer directory {path} has no tokenizer.json or vocab.json")
    return AutoTokenizer.from_pretrained(str(path))


@functools.lru_cache(maxsize=8)
def cached_tokenizer(path: str):
    """`load_tokenizer(path)`, loaded once per process (data workers call it per example)."""
    return load_tokenizer(path)


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the tokens the model and the chat formatting need. `audio_pad` is None for
    tokenizers without audio tokens (the real Qwen2.5-VL one); `pad` falls back to
    `<|endoftext|>` when the tokenizer sets no pad token."""
    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    image_pad: int
    video_pad: int
    audio_pad: int | None
    endoftext: int
    pad: int


def special_ids(tokenizer) -> SpecialIds:
    """Look the special ids up in `tokenizer`'s own vocabulary (tiny or real Qwen)."""

    def lookup(token: str, required: bool = True) -> int | None:
        token_id = tokenizer.convert_tokens_to_ids(token)
        # An unknown token maps to the unk id (Qwen2's unk is <|endoftext|>): check the way back.
        if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
            if required:
                raise KeyError(f"tokenizer {tokenizer.name_or_path!r} has no {token} token")
            return None
        return token_id

    endoftext = lookup("<|endoftext|>")
    return SpecialIds(
        im_start=lookup("<|im_start|>"), im_end=lookup("<|im_end|>"),
        vision_start=lookup("<|vision_start|>"), vision_end=lookup("<|vision_end|>"),
        image_pad=lookup("<|image_pad|>"), video_pad=lookup("<|video_pad|>"),
        audio_pad=lookup("<|audio_pad|>", required=False), endoftext=endoftext,
        pad=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else endoftext)
