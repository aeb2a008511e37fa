"""Loading a trained run (Stage 1 or Stage 2 workdir) for inference, evaluation and notebooks.

A run directory holds `run.json` (the resolved config and the weights it was trained from) and
its exports: `audio_adapter/` (Stage 1), `lora_peft/` and `emoadapter/` (Stage 2). The frozen
backbone and audio encoder are read from the paths in `run.json`; the audio adapter (its kind
and, for kind="qformer", its Q-Former and window settings) from the adapter export's
adapter_config.json, which also decides the inputs (utterance windows, timestamps) of evaluation
and chat.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
import jax
import ml_collections

from vaemotion_jax import sharding
from vaemotion_jax.checkpoints.emotion import load_emotion_modules
from vaemotion_jax.checkpoints.peft import load_lora_peft
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.utterances import utterance_spec
from vaemotion_jax.evaluation.benchmark import InputSpec
from vaemotion_jax.models.vaemotion import EmotionConfig, VAEmotionConfig, VAEmotionLLM
from vaemotion_jax.training import weights
from vaemotion_jax.training.run_file import RUN_FILE
from vaemotion_jax.training.state import merge_params

@dataclass
class LoadedRun:
    model: VAEmotionLLM
    params: dict
    spec: InputSpec
    config: ml_collections.ConfigDict
    stage: str

    @property
    def tokenizer(self):
        from vaemotion_jax.processing.tokenizer import load_tokenizer
        return load_tokenizer(self.spec.tokenizer_dir)


def load_run(path: str, mesh=None) -> LoadedRun:
    """The model of a finished (or checkpoint-exported) Stage 1 / Stage 2 run directory."""
    file = os.path.join(path, RUN_FILE)
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: not found; --checkpoint must be a training workdir "
                                "(runs/stage1, runs/stage2, ...)")
    with open(file) as f:
        run = json.load(f)
    c = ml_collections.ConfigDict(run["config"])
    if "max_frames" not in c.data:  # runs from before data.max_frames sampled num_frames only
        c.data.fps, c.data.max_frames = None, None
    mesh = mesh or sharding.make_mesh((1, 1, 1))
    stage = c.stage
    with jax.set_mesh(mesh):
        qwen_model, qwen_params, ast_model, ast_params = weights.load_frozen(
            c, run["backbone_path"], run["audio_encoder_path"], mesh)
        qwen = qwen_model.config
        adapter_dir = os.path.join(path, "audio_adapter") if stage == "stage1" else run["adapter_dir"]
        adapter_params, adapter_cfg = weights.load_adapter(adapter_dir, ast_model.config, mesh)
        params = {"backbone": qwen_params, "audio_encoder": ast_params,
                  "audio_adapter": adapter_params}
        emotion = None
        if stage == "stage2":
            lora_dir = os.path.join(path, "lora_peft")
            if os.path.exists(lora_dir):
                qwen, lora = load_lora_peft(lora_dir, qwen)
                params["backbone"] = merge_params(params["backbone"], lora)
            modules, configs = load_emotion_modules(os.path.join(path, "emoadapter"))
            for name in ("emotion_enhancer", "emotion_supervisor"):
                if name in modules:
                    params[name] = modules[name]
            emotion = EmotionConfig(
                "emotion_enhancer" in modules, "emotion_supervisor" in modules,
                configs.get("emotion_enhancer", {}).get("mlp_hidden", 1),
                configs.get("emotion_supervisor", {}).get("mlp_hidden", 1))
    model = VAEmotionLLM(VAEmotionConfig(qwen, ast_model.config, adapter_cfg, ast_model.dtype,
                                         emotion))
    spec = InputSpec(run["tokenizer_dir"], MediaSpec.from_config(c.data),
                     c.get("joint_layout", "shared_grid"),
                     utterance_spec(adapter_cfg, ast_model.config))
    return LoadedRun(model, params, spec, c, stage)
