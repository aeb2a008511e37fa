"""The embedded default's tokenizer: processing/tokenizer.py's tiny byte-level BPE, built once
into the cache."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from vaemotion_jax.embedded.cache import cache_path, publish
from vaemotion_jax.processing.tokenizer import (QWEN2_5_VL_CHAT_TEMPLATE, QWEN2_SPLIT_REGEX,
                                                TINY_MODEL_MAX_LENGTH, TINY_REGULAR_VOCAB_SIZE,
                                                TINY_SPECIAL_TOKENS, TOKENIZER_FILES,
                                                build_tiny_tokenizer)
from vaemotion_jax.processing.tokenizer_corpus import tiny_corpus


def tiny_fingerprint() -> str:
    """Short hash of everything the built tiny tokenizer depends on."""
    recipe = {"corpus": tiny_corpus(), "specials": TINY_SPECIAL_TOKENS,
              "regex": QWEN2_SPLIT_REGEX, "template": QWEN2_5_VL_CHAT_TEMPLATE,
              "regular": TINY_REGULAR_VOCAB_SIZE, "max_length": TINY_MODEL_MAX_LENGTH}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def default_tiny_tokenizer_dir() -> str:
    """The tiny tokenizer's folder, `<cache>/tiny_tokenizer/<fingerprint>`, built on first use
    (the fingerprint changes with the corpus or the recipe, so a stale build is never reused;
    built in a temporary folder and renamed, so concurrent callers are safe)."""
    final = cache_path("tiny_tokenizer", tiny_fingerprint())
    if all(os.path.isfile(os.path.join(final, name)) for name in TOKENIZER_FILES):
        return final
    os.makedirs(os.path.dirname(final), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".building-", dir=os.path.dirname(final))
    try:
        build_tiny_tokenizer(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return publish(staging, final, TOKENIZER_FILES[0])
