"""`python -m vaemotion_jax.train --config=stage1` (or stage2, or a path to a config file).

Overrides: `--config.steps=200 --config.data.batch_size=4 ...`; the model preset: `--config=stage1:qwen2_5_vl_7b`.
A rerun of the same command resumes from the newest checkpoint in `config.workdir`.
"""
import sys

from absl import app

from vaemotion_jax.configs import define_config_flag, expand_config_names

_CONFIG = define_config_flag()


def main(argv):
    del argv
    from vaemotion_jax.training import loop
    loop.setup_logging()
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
