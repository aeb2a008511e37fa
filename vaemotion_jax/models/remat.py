"""Named rematerialisation policies for the scanned layers (config field `remat`)."""
import jax

POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,                  # recompute everything
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
    "none": jax.checkpoint_policies.everything_saveable,
}


def remat_policy(name: str):
    if name not in POLICIES:
        raise ValueError(f"unknown remat policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name]
