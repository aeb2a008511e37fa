"""Test setup: 8 simulated CPU devices (for sharding tests) and fp32 matmuls."""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))  # test helpers (hf_qwen, ...)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
