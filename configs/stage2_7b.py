"""Stage 2 (EmoAdapter + LoRA) at the paper's scale: Qwen2.5-VL-7B-Instruct + AST (AudioSet),
512x512 video at 2 fps capped at 8 frames (1296 tokens per pathway, 2592 for the joint input;
a 30 s clip: 8 frames at 0.27 fps), 16 kHz audio as up to 3 AST windows (30.7 s), on a named
hardware setup from configs/hardware.py (default gpu8x24):

    python -m vaemotion_jax.plan --config=stage2_7b:gpu1x24 --devices=1     # does it fit?
    python -m vaemotion_jax.train --config=stage2_7b:gpu8x24 \\
        --config.backbone_path=/ckpt/Qwen2.5-VL-7B-Instruct \\
        --config.audio_encoder_path=/ckpt/ast-finetuned-audioset-10-10-0.4593 \\
        --config.stage1_dir=runs/stage1_7b --config.data.train_manifest=/data/artemo/train.jsonl \
        --config.data.general_manifest=/data/videoinstruct/general.jsonl
"""
import ml_collections

from vaemotion_jax.configs import hardware, stage2


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = stage2.get_config("qwen2_5_vl_7b")
    # The paper's mix: 8,325 VideoInstruct samples beside 16,720 emotion QA pairs (33%).
    c.data.general_fraction = 8325 / (8325 + 16720)
    # a joint clip fills 2592 placeholders; with its conversation it fits 3072
    c.data.seq_buckets = (512, 1024, 1536, 2048, 2560, 3072, 4096)
    c.eval_batch = 8              # items per evaluation batch
    hardware.apply(c, arg or "gpu8x24", "stage2")
    return c
