"""What every stage's training run shares: mesh, global batches, logging, the checkpointed loop.

The loop is plain: next batch -> jitted step -> log / evaluate / checkpoint. A rerun of the same
command resumes from the newest checkpoint (train state + data iterator position), refusing when
the frozen weights differ.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from vaemotion_jax import sharding
from vaemotion_jax.training.checkpoint import Checkpointer, check_same_run

log = logging.getLogger("vaemotion_jax.train")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("absl", "orbax", "jax._src", "grain"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def initialize_distributed(c) -> None:
    """Joins a multi-process run when the config names a coordinator (local tests, GPU nodes);
    on TPU pods and SLURM, `jax.distributed.initialize()` finds everything in the environment
    when `c.distributed.auto` is set."""
    d = c.get("distributed")
    if d is None or not (d.coordinator or d.auto):
        return
    if d.cpu_collectives:  # before initialize: touching jax.devices() would start the backend
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if d.auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(d.coordinator, d.num_processes, d.process_id)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def enable_compilation_cache(path: str) -> None:
    """XLA's persistent compilation cache in `path` ("auto": the project's cache root, "": off)."""
    if path == "auto":
        from vaemotion_jax.embedded.cache import cache_path
        path = cache_path("xla")
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def start_run(c):
    """What every stage does first: join a multi-process run, turn on the compilation cache,
    build the mesh and the workdir. Returns (mesh, absolute workdir)."""
    initialize_distributed(c)
    enable_compilation_cache(c.compilation_cache)
    mesh = sharding.make_mesh(tuple(c.mesh))
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if c.data.batch_size % shards:
        raise ValueError(f"data.batch_size {c.data.batch_size} does not split over the "
                         f"{shards} batch shards of mesh {dict(mesh.shape)} (data x fsdp); "
                         "choose a multiple, or change --config.mesh")
    workdir = os.path.abspath(c.workdir)
    os.makedirs(workdir, exist_ok=True)
    return mesh, workdir


def write_json(path: str, obj) -> None:
    """Process 0 writes `obj` as JSON (every process of a multi-host run computes it)."""
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)


def agree_on_shapes(batch: dict[str, np.ndarray], pad_values: Mapping[str, Any] | None = None
                    ) -> dict[str, np.ndarray]:
    """Multi-process runs: every array field padded at the end of each axis to the largest shape
    any process holds (each process picks its local batch's buckets, but all must run one
    program); `pad_values` per field, else 0. Padding only ever adds masked positions, so the
    batch equals the one a single process would have assembled. One small all-gather per call."""
    if jax.process_count() == 1:
        return batch
    from jax.experimental import multihost_utils
    names = sorted(k for k, v in batch.items() if np.asarray(v).dtype.kind not in "USO")
    shapes = [np.shape(batch[k]) for k in names]
    every = multihost_utils.process_allgather(np.array([d for s in shapes for d in s], np.int64))
    largest, out, i = np.max(np.asarray(every), axis=0), dict(batch), 0
    for name, shape in zip(names, shapes):
        want = tuple(int(d) for d in largest[i:i + len(shape)])
        i += len(shape)
        if want != shape:
            pad = [(0, w - d) for w, d in zip(want, shape)]
            out[name] = np.pad(np.asarray(batch[name]), pad,
                               constant_values=(pad_values or {}).get(name, 0))
    return out


def token_pad_values(qwen) -> dict[str, int]:
    """What the pipeline pads token fields with (everything else pads with 0)."""
    return {"input_ids": qwen.pad_token_id, "prompt_ids": qwen.pad_token_id}


def global_batch(batch: dict[str, np.ndarray], mesh, pad_values: Mapping[str, Any] | None = None
                 ) -> dict[str, jax.Array]:
    """Process-local NumPy batch -> global arrays sharded on the batch axis (strings dropped),
    shapes agreed across processes first (`agree_on_shapes`)."""
    out = {}
    for name, value in agree_on_shapes(batch, pad_values).items():
        value = np.asarray(value)
        if value.dtype.kind in "USO":
            continue
        spec = sharding.batch_sharding(mesh, value.ndim, value.shape[0] * jax.process_count())
        out[name] = jax.make_array_from_process_local_data(spec, value)
    return out


class Progress:
    """Console progress line and TensorBoard scalars."""

    def __init__(self, workdir: str, total_steps: int, batch_size: int):
        from tensorboardX import SummaryWriter

        self.total, self.batch = total_steps, batch_size
        self.writer = SummaryWriter(os.path.join(workdir, "tb")) if jax.process_index() == 0 else None
        self.t0, self.step0 = time.time(), None
        self.metrics = (open(os.path.join(workdir, "metrics.jsonl"), "a")
                        if jax.process_index() == 0 else None)

    def start(self, step: int) -> None:
        self.t0, self.step0 = time.time(), step

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", float(v), step)
            self.writer.flush()

    def record(self, step: int, values: dict[str, float]) -> None:
        """Appends the logged scalars to workdir/metrics.jsonl (one JSON object per log step)."""
        if self.metrics is not None:
            self.metrics.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
            self.metrics.flush()

    def line(self, step: int, values: dict[str, float]) -> str:
        done = step - (self.step0 or 0)
        rate = done / max(time.time() - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        text = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        return (f"step {step}/{self.total} {text} | {rate * self.batch:.1f} clips/s "
                f"| ETA {eta / 60:.1f} min")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.metrics is not None:
            self.metrics.close()


def train_loop(*, workdir: str, steps: int, state: Any, frozen: Any, iterator, make_batch,
               step_fn: Callable, meta: dict, log_every: int, checkpoint_every: int, keep: int,
               eval_every: int = 0, eval_fn: Callable | None = None, batch_size: int = 1,
               async_checkpoints: bool = True, lr_schedule: Callable | None = None) -> Any:
    """Runs `step_fn(state, frozen, batch) -> (state, metrics)` until `steps`, resuming first.

    make_batch(host_batch) -> device batch; eval_fn(state, step) -> dict of scalars;
    lr_schedule(step) -> the learning rate, logged with the step's metrics.
    """
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), checkpoint_every, keep,
                        async_checkpoints)
    start = ckpt.latest_step() or 0
    if start:
        check_same_run(ckpt.read_meta(start), meta, ckpt.directory)
        state, data_state, _ = ckpt.restore(start, state)
        iterator.set_state(data_state)
        log.info("resumed from %s at step %d (data epoch %d, position %d)", ckpt.directory, start,
                 data_state["epoch"], data_state["position"])
    progress = Progress(workdir, steps, batch_size)
    progress.start(start)
    pending: list[dict] = []
    try:
        for step in range(start, steps):
            state, metrics = step_fn(state, frozen, make_batch(next(iterator)))
            pending.append(metrics)
            done = step + 1
            if done % log_every == 0 or done == steps:
                values = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
                values["skipped"] = float(state.skipped)
                if lr_schedule is not None:
                    values["lr"] = float(lr_schedule(done - 1))
                pending = []
                log.info(progress.line(done, values))
                progress.scalars(done, values)
                progress.record(done, values)
            if eval_fn is not None and eval_every and done % eval_every == 0 and done != steps:
                values = eval_fn(state, done)
                progress.scalars(done, values, "heldout")
            ckpt.save(done, state, iterator.get_state(), meta, force=done == steps)
        log.info("%s", iterator.summary())
    finally:
        ckpt.close()
        progress.close()
        iterator.close()
    return state

