"""Experiment configs (ml_collections), one file per stage and scale, and the `--config` flag
the entry points (`train`, `plan`) share: a config name (stage1, stage2_7b, ...) or a path,
optionally followed by :arg (e.g. stage1:qwen2_5_vl_7b)."""
import os

from ml_collections import config_flags


def define_config_flag():
    """Defines `--config` (call once per entry point, before parsing flags)."""
    return config_flags.DEFINE_config_file(
        "config", None, "stage config: a name (stage1, stage2) or a path to a config .py, "
        "optionally followed by :preset (e.g. stage1:qwen2_5_vl_7b)", lock_config=True)


def config_file(value: str) -> str:
    """`stage1[:arg]` -> the path of configs/stage1.py[:arg]; paths pass through."""
    name, _, arg = value.partition(":")
    if os.path.exists(name) or name.endswith(".py"):
        return value
    path = os.path.join(os.path.dirname(__file__), f"{name}.py")
    if not os.path.exists(path):
        known = sorted(f[:-3] for f in os.listdir(os.path.dirname(path))
                       if f.endswith(".py") and not f.startswith(("_", "common")))
        raise SystemExit(f"--config={value}: no config named {name!r}; known: {known}")
    return path + (f":{arg}" if arg else "")


def expand_config_names(argv: list[str]) -> list[str]:
    """argv with every `--config=<name>` replaced by the config file's path."""
    out = []
    for a in argv:
        if a.startswith("--config="):
            a = "--config=" + config_file(a.split("=", 1)[1])
        out.append(a)
    return out
