"""Stage 1, VG-Align: teach the frozen VLM to hear by distilling its visual pathway (eq. 1).

    python -m vaemotion_jax.train --config=stage1                     # embedded tiny default
    python -m vaemotion_jax.train --config=stage1:qwen2_5_vl_7b \
        --config.backbone_path=/ckpt/Qwen2.5-VL-7B-Instruct \
        --config.audio_encoder_path=/ckpt/ast-finetuned-audioset-10-10-0.4593 \
        --config.data.train_manifest=/data/vggsound/stage1.jsonl

Every knob the paper names has the paper's value as default; where the paper is silent the
one-line comment says why we chose the value.
"""
import ml_collections

from vaemotion_jax.configs import common
from vaemotion_jax.training.stage1 import STAGE1_PROMPTS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = common.base_config("stage1")

    # Method (paper section 3.2)
    c.tau = 1.0                   # paper: tau = 1
    c.align = "logits"            # logits (eq. 1) | features (the paper's L2 ablation, Table 1 dagger)
    c.trainable = ("audio_adapter/.*",)  # paper: only the audio adapter trains (path regexes)
    c.teacher_responses = "cache"     # cache (generated once, on disk) | on_the_fly
    c.max_response_tokens = 24    # generation cap of the teacher's greedy response (the tiny
                                  # world's answers end by ~14 tokens; longer ones are counted)
    c.teacher_batch = 32          # clips per batch when generating teacher responses
    c.cache.teacher_logits = False  # cache the teacher's logits at the response positions
    c.cache.teacher_topk = 0        # 0: exact logits; k > 0: only the k largest, renormalised
                                    # (far smaller; changes the loss: README)
    c.prompts = STAGE1_PROMPTS

    # Optimisation: AdamW (paper); lr/schedule are ours (the paper gives 1e-5 only for stage 2,
    # a freshly initialised adapter needs a larger rate).
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 30
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.steps = 400
    c.data.batch_size = 8

    # Evaluation on held-out clips (KL, top-1 agreement, attribute agreement of responses)
    c.eval_every = 100
    c.eval_clips = 32
    common.apply_preset(c, arg)
    return c
