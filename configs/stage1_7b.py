"""Stage 1 (VG-Align) at the paper's scale: Qwen2.5-VL-7B-Instruct + AST (AudioSet), 512x512
video at 2 fps (4 frames -> 648 video tokens), 16 kHz audio (1024 fbank frames), on a named
hardware setup from configs/hardware.py (default gpu8x24):

    python -m vaemotion_jax.plan --config=stage1_7b:gpu1x24 --devices=1     # does it fit?
    python -m vaemotion_jax.train --config=stage1_7b:gpu8x24 \
        --config.backbone_path=/ckpt/Qwen2.5-VL-7B-Instruct \
        --config.audio_encoder_path=/ckpt/ast-finetuned-audioset-10-10-0.4593 \
        --config.data.train_manifest=/data/vggsound/stage1.jsonl
"""
import ml_collections

from configs import hardware, stage1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = stage1.get_config("qwen2_5_vl_7b")
    c.max_response_tokens = 64    # the 7B's one-sentence descriptions run to ~20-50 tokens
    c.teacher_batch = 8           # clips per generation batch when filling the response cache
    hardware.apply(c, arg or "gpu8x24")
    return c
