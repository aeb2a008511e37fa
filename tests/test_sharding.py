"""Logical axes -> mesh axes (sharding.py): a dimension the mesh does not divide falls back to
the longest dividing prefix of its mesh axes, and the log says so once."""
import logging

from jax.sharding import PartitionSpec

from vaemotion_jax import sharding


def test_undivisible_dimension_falls_back_and_is_logged_once(caplog):
    mesh = sharding.make_mesh((1, 2, 4))
    with caplog.at_level(logging.WARNING, logger="vaemotion_jax.sharding"):
        spec = sharding.logical_to_spec(("embed", "kv_heads"), (64, 2), mesh)
        again = sharding.logical_to_spec(("embed", "kv_heads"), (64, 2), mesh)
    assert spec == again == PartitionSpec("fsdp", None)
    notes = [r.getMessage() for r in caplog.records if "not divisible" in r.getMessage()]
    assert len(notes) == 1 and "'kv_heads'" in notes[0] and "replicated" in notes[0]


def test_divisible_dimensions_are_sharded_silently(caplog):
    mesh = sharding.make_mesh((1, 2, 4))
    with caplog.at_level(logging.WARNING, logger="vaemotion_jax.sharding"):
        spec = sharding.logical_to_spec(("embed", "heads"), (64, 8), mesh)
    assert spec == PartitionSpec("fsdp", "tensor")
    assert not caplog.records
