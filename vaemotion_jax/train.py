"""`python -m vaemotion_jax.train --config=stage1` (or stage2, or a path to a config file).

Overrides: `--config.steps=200 --config.data.batch_size=4 --config.model=qwen2_5_vl_7b ...`.
A rerun of the same command resumes from the newest checkpoint in `config.workdir`.
"""
import os
import sys

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "stage config: a name (stage1, stage2) or a path to a config .py, "
    "optionally followed by :preset (e.g. stage1:qwen2_5_vl_7b)", lock_config=True)


def config_file(value: str) -> str:
    """`stage1[:arg]` -> the path of configs/stage1.py[:arg]; paths pass through."""
    name, _, arg = value.partition(":")
    if os.path.exists(name) or name.endswith(".py"):
        return value
    import configs
    path = os.path.join(os.path.dirname(configs.__file__), f"{name}.py")
    if not os.path.exists(path):
        known = sorted(f[:-3] for f in os.listdir(os.path.dirname(path))
                       if f.endswith(".py") and not f.startswith(("_", "common")))
        raise SystemExit(f"--config={value}: no config named {name!r}; known: {known}")
    return path + (f":{arg}" if arg else "")


def expand_config_names(argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        if a.startswith("--config="):
            a = "--config=" + config_file(a.split("=", 1)[1])
        out.append(a)
    return out


def main(argv):
    del argv
    from vaemotion_jax.training import runner
    runner.setup_logging()
    c = _CONFIG.value
    if c is None:
        raise app.UsageError("--config is required, e.g. --config=stage1")
    if c.stage == "stage1":
        from vaemotion_jax.training.stage1_run import run
    elif c.stage == "stage2":
        from vaemotion_jax.training.stage2_run import run
    else:
        raise app.UsageError(f"unknown stage {c.stage!r}")
    run(c)


if __name__ == "__main__":
    app.run(main, argv=expand_config_names(sys.argv))
