"""Qwen2.5-VL chat formatting by our own code (token ids, loss mask, modality types), and padding.

The output equals `tokenizer.apply_chat_template(...)` with the Qwen2.5-VL template, with the
video's single `<|video_pad|>` expanded to `video_tokens` copies:

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|><|video_pad|> x N<|vision_end|>{text}<|im_end|>\\n
    <|im_start|>assistant\\n{reply}<|im_end|>\\n
    <|im_start|>assistant\\n                        (only with add_generation_prompt)

Text between special tokens is tokenised as one piece, exactly as the tokenizer does when it
splits a rendered template on its special tokens.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vaemotion_jax.processing.tokenizer import SpecialIds, special_ids

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
TEXT_TYPE, VIDEO_TYPE = 0, 2  # transformers' mm_token_type_ids values
DEFAULT_BUCKETS = (64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
VIDEO_PLACEMENTS = ("first", "last")


@dataclass(frozen=True)
class _Text:
    """Text tokenised as one piece; tokens reaching past char `loss_from` are in the loss."""
    text: str
    loss_from: int | None = None


@dataclass(frozen=True)
class _Special:
    """`count` copies of one special token."""
    token_id: int
    count: int = 1
    in_loss: bool = False
    token_type: int = TEXT_TYPE


def _check_turns(turns: Sequence[dict]) -> None:
    if not turns:
        raise ValueError("encode_chat needs at least one turn")
    for i, turn in enumerate(turns):
        if not isinstance(turn.get("role"), str) or not isinstance(turn.get("content"), str):
            raise ValueError(f"turn {i} must be a dict with string 'role' and 'content', got {turn}")


def _video_turn_index(turns: Sequence[dict], video_placement: str) -> int:
    """Index of the user turn that carries the video."""
    if video_placement not in VIDEO_PLACEMENTS:
        raise ValueError(f"video_placement must be one of {VIDEO_PLACEMENTS}, got {video_placement!r}")
    user_turns = [i for i, turn in enumerate(turns) if turn["role"] == "user"]
    if not user_turns:
        raise ValueError("a video needs a user turn to go into, but the conversation has none")
    return user_turns[0] if video_placement == "first" else user_turns[-1]


def _pieces(turns: Sequence[dict], video_tokens: int | None, video_placement: str, system: str,
            add_generation_prompt: bool, ids: SpecialIds) -> list[_Text | _Special]:
    """The conversation as text and special-token pieces, in template order."""
    if turns[0]["role"] == "system":  # the template uses a leading system turn instead of the default
        system, turns = turns[0]["content"], turns[1:]
    video_turn = _video_turn_index(turns, video_placement) if video_tokens is not None else None
    pieces = [_Special(ids.im_start), _Text(f"system\n{system}"), _Special(ids.im_end), _Text("\n")]
    for i, turn in enumerate(turns):
        header, is_reply = f"{turn['role']}\n", turn["role"] == "assistant"
        pieces.append(_Special(ids.im_start))
        if i == video_turn:
            pieces += [_Text(header), _Special(ids.vision_start),
                       _Special(ids.video_pad, video_tokens, token_type=VIDEO_TYPE),
                       _Special(ids.vision_end), _Text(turn["content"])]
        else:
            pieces.append(_Text(header + turn["content"], len(header) if is_reply else None))
        pieces += [_Special(ids.im_end, in_loss=is_reply), _Text("\n")]
    if add_generation_prompt:
        pieces += [_Special(ids.im_start), _Text("assistant\n")]
    return pieces


def encode_chat(tokenizer, turns: Sequence[dict], video_tokens: int | None = None,
                video_placement: str = "first", system: str = DEFAULT_SYSTEM_PROMPT,
                add_generation_prompt: bool = False) -> dict[str, np.ndarray]:
    """Token ids of a conversation in the Qwen2.5-VL chat format.

    turns: [{"role": "user" | "assistant" | "system", "content": str}, ...]; a leading system
      turn replaces `system`.
    video_tokens: if given, the first (video_placement="first") or last ("last") user turn gets
      `<|vision_start|>` + video_tokens x `<|video_pad|>` + `<|vision_end|>` before its text.
    Returns (S = sequence length):
      input_ids (S,) int32;
      assistant_mask (S,) bool: the tokens a language-model loss runs over, i.e. each assistant
        reply's tokens INCLUDING its closing `<|im_end|>` (not the "assistant\\n" header, not
        the newline after `<|im_end|>`, not a generation prompt);
      mm_token_type_ids (S,) int32: 0 text, 2 video (`<|video_pad|>` positions).
    """
    _check_turns(turns)
    if video_tokens is not None and (int(video_tokens) != video_tokens or video_tokens <= 0):
        raise ValueError(f"video_tokens must be a positive integer, got {video_tokens}")
    pieces = _pieces(turns, video_tokens, video_placement, system, add_generation_prompt,
                     special_ids(tokenizer))
    texts = [piece.text for piece in pieces if isinstance(piece, _Text)]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    encoded_texts = iter(zip(encoded["input_ids"], encoded["offset_mapping"]))
    ids, in_loss, types = [], [], []
    for piece in pieces:
        if isinstance(piece, _Special):
            ids += [piece.token_id] * piece.count
            in_loss += [piece.in_loss] * piece.count
            types += [piece.token_type] * piece.count
            continue
        token_ids, offsets = next(encoded_texts)
        ids += token_ids
        types += [TEXT_TYPE] * len(token_ids)
        in_loss += [piece.loss_from is not None and end > piece.loss_from for _, end in offsets]
    return {"input_ids": np.asarray(ids, dtype=np.int32),
            "assistant_mask": np.asarray(in_loss, dtype=bool),
            "mm_token_type_ids": np.asarray(types, dtype=np.int32)}


def pad_batch(seqs: Sequence[np.ndarray], pad_id, length: int | None = None,
              side: str = "left") -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D sequences into (B, L), padding with `pad_id` on the left or right.

    L = `length` (an error if a sequence is longer) or the longest sequence. Works for any
    per-token array (ids, masks, type ids), keeping the first sequence's dtype.
    Returns (padded (B, L), attention_mask (B, L) int32, 1 on real tokens).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not seqs:
        raise ValueError("pad_batch needs at least one sequence")
    seqs = [np.asarray(seq) for seq in seqs]
    if any(seq.ndim != 1 for seq in seqs):
        raise ValueError(f"pad_batch takes 1-D sequences, got shapes {[s.shape for s in seqs]}")
    longest = max(len(seq) for seq in seqs)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a sequence of length {longest} does not fit in length {length}")
    padded = np.full((len(seqs), length), pad_id, dtype=seqs[0].dtype)
    mask = np.zeros((len(seqs), length), dtype=np.int32)
    for row, seq in enumerate(seqs):
        start = length - len(seq) if side == "left" else 0
        padded[row, start:start + len(seq)] = seq
        mask[row, start:start + len(seq)] = 1
    return padded, mask


def bucket_length(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """The smallest static length in `buckets` that holds `n` tokens."""
    fitting = [b for b in buckets if b >= n]
    if not fitting:
        raise ValueError(f"{n} tokens exceed the largest bucket {max(buckets)}")
    return min(fitting)
