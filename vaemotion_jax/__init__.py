"""vaemotion_jax: VAEmotionLLM ("Learning to Hear by Seeing") in JAX/Flax.

Public API (imported lazily, so `import vaemotion_jax` is cheap):
  load_qwen2_5_vl, export_qwen2_5_vl   Qwen2.5-VL backbone from/to Hugging Face safetensors
  load_ast, fbank, resample_audio       the audio pathway's encoder and front end
"""
import importlib

_API = {
    "load_qwen2_5_vl": "vaemotion_jax.checkpoints.qwen2_5_vl",
    "export_qwen2_5_vl": "vaemotion_jax.checkpoints.qwen2_5_vl",
    "Qwen2_5_VLConfig": "vaemotion_jax.models.qwen2_5_vl.config",
    "Qwen2_5_VL": "vaemotion_jax.models.qwen2_5_vl.model",
    "load_ast": "vaemotion_jax.checkpoints.ast",
    "fbank": "vaemotion_jax.processing.fbank",
    "resample_audio": "vaemotion_jax.processing.fbank",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'vaemotion_jax' has no attribute {name!r}")
