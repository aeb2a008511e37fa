"""One process of a multi-process checkpoint test (run by tests/test_multihost.py).

    python tests/multihost_worker.py save|restore|lora DIR MESH [COORDINATOR NUM_PROCESSES PROCESS_ID]

save:    a train state sharded on MESH over all processes' devices -> Checkpointer at step 3
         (state + data iterator state + meta).
restore: the same state restored onto MESH (target shardings given), checked against the
         values it was saved with; prints one JSON line with what this process saw.
lora:    a tiny backbone's LoRA leaves sharded by their logical axes on MESH, exported as a PEFT
         directory by the trainer's `export_lora`; prints the written file's hash.
"""
import json
import os
import sys

import numpy as np


def expected():
    """The saved values (every process can make them): a train-state-like tree."""
    return {"step": np.int32(3),
            "params": {"w": np.arange(12 * 6, dtype=np.float32).reshape(12, 6) / 7,
                       "b": np.linspace(-1, 1, 6, dtype=np.float32)},
            "opt": {"mu": np.arange(12 * 6, dtype=np.float32).reshape(12, 6) * -0.5}}


def shardings(mesh):
    from jax.sharding import NamedSharding, PartitionSpec as P
    fsdp = NamedSharding(mesh, P(("data", "fsdp"), None))
    return {"step": NamedSharding(mesh, P()),
            "params": {"w": fsdp, "b": NamedSharding(mesh, P())}, "opt": {"mu": fsdp}}


def main() -> None:
    mode, directory, mesh_arg, *dist = sys.argv[1:]
    import jax
    if dist:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(dist[0], int(dist[1]), int(dist[2]))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from vaemotion_jax import sharding
    from vaemotion_jax.training.checkpoint import Checkpointer

    mesh = sharding.make_mesh(tuple(int(x) for x in mesh_arg.split(",")))
    if mode == "lora":
        print(json.dumps(export_lora(directory, mesh)))
        return
    values, target = expected(), shardings(mesh)
    ckpt = Checkpointer(directory, every=1, keep=2)
    if mode == "save":
        state = jax.tree.map(lambda v, s: jax.make_array_from_callback(v.shape, s, lambda i: v[i]),
                             values, target)
        ckpt.save(3, state, {"position": 48, "shard_count": jax.process_count()},
                  {"writer": jax.process_count()}, force=True)
        ckpt.wait()
        print(json.dumps({"process": jax.process_index(), "saved": True}))
        return
    abstract = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                            values, target)
    state, data, meta = ckpt.restore(ckpt.latest_step(), abstract)
    same_sharding, same_values = True, True
    for got, want, s in zip(jax.tree.leaves(state), jax.tree.leaves(values),
                            jax.tree.leaves(target)):
        same_sharding &= got.sharding == s
        for shard in got.addressable_shards:     # this process's pieces only
            same_values &= bool(np.array_equal(np.asarray(shard.data), want[shard.index]))
    print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(),
                      "same_sharding": bool(same_sharding), "same_values": bool(same_values),
                      "data": data, "meta": meta}))


def export_lora(directory: str, mesh) -> dict:
    import hashlib
    import jax
    from flax import linen as nn
    from vaemotion_jax import sharding
    from vaemotion_jax.models.lora import split_lora
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.models.qwen2_5_vl.model import init_params
    from vaemotion_jax.training.weights import export_lora
    cfg = qwen_config.tiny(lora_rank=4)
    boxed = split_lora(init_params(cfg, jax.random.key(0)))[1]   # same values in every process
    values = jax.tree.map(lambda x: np.asarray(x) + 0.25, nn.meta.unbox(boxed))  # B != 0 too
    target = sharding.param_shardings(boxed, mesh)
    lora = jax.tree.map(lambda v, s: jax.make_array_from_callback(v.shape, s, lambda i: v[i]),
                        values, target)
    export_lora(lora, cfg, directory)
    out = {"process": jax.process_index(),
           "split": any(not x.is_fully_addressable for x in jax.tree.leaves(lora))}
    if jax.process_index() == 0:
        with open(os.path.join(directory, "adapter_model.safetensors"), "rb") as f:
            out["sha256"] = hashlib.sha256(f.read()).hexdigest()
    return out


if __name__ == "__main__":
    main()
