"""Stage 2 (EmoAdapter + LoRA) at the paper's scale: Qwen2.5-VL-7B-Instruct + AST (AudioSet),
512x512 video at 2 fps (4 frames -> 648 tokens per pathway, 1296 for the joint input), 16 kHz
audio, on a named hardware setup from configs/hardware.py (default gpu8x24):

    python -m vaemotion_jax.plan --config=stage2_7b:gpu1x24 --devices=1     # does it fit?
    python -m vaemotion_jax.train --config=stage2_7b:gpu8x24 \\
        --config.backbone_path=/ckpt/Qwen2.5-VL-7B-Instruct \\
        --config.audio_encoder_path=/ckpt/ast-finetuned-audioset-10-10-0.4593 \\
        --config.stage1_dir=runs/stage1_7b --config.data.train_manifest=/data/artemo/train.jsonl
"""
import ml_collections

from configs import hardware, stage2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = stage2.get_config("qwen2_5_vl_7b")
    # a joint clip fills 1296 placeholders; with its conversation it fits 1536, not 1024
    c.data.seq_buckets = (256, 512, 768, 1024, 1536, 2048)
    c.teacher_batch = 8           # items per evaluation batch
    hardware.apply(c, arg or "gpu8x24")
    return c
