"""Orbax checkpoints of the train state, the data iterator state and run metadata.

Only trainable state is written; frozen weights are referenced by path and fingerprint, so a
Stage 1 checkpoint of the tiny model is a few MB. Saving is asynchronous; restoring takes the
target shardings, so a checkpoint written on one mesh restores onto another.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from vaemotion_jax.checkpoints.safetensors_io import INDEX_FILE, SINGLE_FILE


def fingerprint(path: str, samples: int = 16, chunk: int = 1 << 16) -> str:
    """Content fingerprint of a Hugging Face directory: config, every safetensors header and
    `samples` evenly spaced chunks of each file (fast on a 16 GB checkpoint)."""
    h = hashlib.sha256()
    names = sorted(f for f in os.listdir(path)
                   if f in ("config.json", SINGLE_FILE, INDEX_FILE) or f.endswith(".safetensors"))
    if not any(n.endswith(".safetensors") for n in names):
        raise FileNotFoundError(f"{path}: no safetensors files to fingerprint")
    for name in names:
        file = os.path.join(path, name)
        size = os.path.getsize(file)
        h.update(f"{name}:{size}".encode())
        with open(file, "rb") as f:
            if not name.endswith(".safetensors"):
                h.update(f.read())
                continue
            n = int.from_bytes(f.read(8), "little")
            h.update(f.read(n))
            span = max(size - 8 - n - chunk, 0)
            for k in range(samples):
                f.seek(8 + n + span * k // max(samples - 1, 1))
                h.update(f.read(chunk))
    return h.hexdigest()


class Checkpointer:
    """Keeps the last `keep` checkpoints under `directory`, one every `every` steps."""

    def __init__(self, directory: str, every: int, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(save_interval_steps=max(1, every), max_to_keep=keep,
                                               enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data: dict, meta: dict, force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data),
            meta=ocp.args.JsonSave(meta)), force=force)

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def read_data(self, step: int) -> dict:
        """The data iterator state saved with `step`."""
        return self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]

    def restore(self, step: int, target: Any) -> tuple[Any, dict, dict]:
        """target: the state with concrete or abstract (ShapeDtypeStruct + sharding) leaves."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return out["state"], out["data"], out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def check_same_run(saved: dict, current: dict, directory: str) -> None:
    """Refuses to resume when the frozen weights or the run's identity differ."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise RuntimeError(
                f"cannot resume from {directory}: {key} differs.\n  checkpoint: "
                f"{json.dumps(saved.get(key))}\n  this run:   {json.dumps(current.get(key))}\n"
                "Use a new --config.workdir, or point the config at the original weights.")
