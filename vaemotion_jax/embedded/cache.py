"""The embedded default's cache: one root for everything it makes once and reuses (the worlds,
the tiny tokenizer, AST and backbone), and one way to put a finished folder in place."""
from __future__ import annotations

import os
import shutil


def cache_root() -> str:
    """$VAEMOTION_CACHE if set and non-empty, else ~/.cache/vaemotion_jax."""
    return os.environ.get("VAEMOTION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                               "vaemotion_jax")


def cache_path(*parts: str) -> str:
    """A path under the cache root, e.g. cache_path("tiny_ast", key)."""
    return os.path.join(cache_root(), *parts)


def publish(tmp: str, final: str, marker: str) -> str:
    """Renames the finished folder `tmp` to `final` and returns `final`. If another process put
    a complete `final` (one with `marker` in it) in place first, theirs is kept and `tmp`
    deleted; any other failure is raised. Interrupted or concurrent builds never leave a
    half-written folder at `final`."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not os.path.exists(os.path.join(final, marker)):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final
