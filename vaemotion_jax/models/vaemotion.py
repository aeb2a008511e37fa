"""VAEmotionLLM: the three pathways into one frozen Qwen2.5-VL.

    video -> vision tower -> z_v ------------------------------.
    audio -> AST -> AudioAdapter -> z_a ------------------------+-> (EmotionEnhancer) -> LLM
    joint [z_a; z_v] -------------------------------------------'

Audio tokens sit at the video placeholders and reuse the video's M-RoPE grid (section 3.2).
Stage 2 adds the EmotionEnhancer (eq. 2) on every pathway's tokens and the EmotionSupervisor
(eqs. 3-4) on their mean; LoRA lives inside the backbone's attention (models/lora.py).
Params: {"backbone", "audio_encoder", "audio_adapter"[, "emotion_enhancer",
"emotion_supervisor"]}; which of them train is the trainer's business.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaemotion_jax.models.adapters import AudioAdapterConfig, make_audio_adapter
from vaemotion_jax.models.ast import ASTConfig, ASTModel
from vaemotion_jax.models.emotion import EmotionEnhancer, EmotionSupervisor
from vaemotion_jax.models.qwen2_5_vl.config import Qwen2_5_VLConfig
from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL, causal_mask

# Modality codes of an example's LLM input (stage 2): which tokens fill the placeholders.
AUDIO, VIDEO, JOINT = 0, 1, 2
MODALITY_CODES = {"a": AUDIO, "v": VIDEO, "av": JOINT}


@dataclass(frozen=True)
class EmotionConfig:
    """The EmoAdapter of stage 2; hidden widths are ours (the paper gives none)."""
    enhancer: bool = True
    supervisor: bool = True
    enhancer_hidden: int = 1024
    supervisor_hidden: int = 256


@dataclass(frozen=True)
class VAEmotionConfig:
    qwen: Qwen2_5_VLConfig
    ast: ASTConfig
    adapter: AudioAdapterConfig
    audio_dtype: Any = jnp.float32   # compute dtype of the AST
    emotion: EmotionConfig | None = None


class VAEmotionLLM(nn.Module):
    config: VAEmotionConfig

    def setup(self):
        c = self.config
        self.backbone = Qwen2_5_VL(c.qwen)
        self.audio_encoder = ASTModel(c.ast, dtype=c.audio_dtype)
        self.audio_adapter = make_audio_adapter(c.adapter, c.ast.num_tokens, c.ast.hidden_size)
        e, d = c.emotion, c.qwen.text.hidden_size
        if e is not None and e.enhancer:
            self.emotion_enhancer = EmotionEnhancer(d, e.enhancer_hidden)
        if e is not None and e.supervisor:
            self.emotion_supervisor = EmotionSupervisor(d, e.supervisor_hidden)

    def video_tokens(self, pixel_values, vision_layout) -> jnp.ndarray:
        """z_v (B, N, D) from the frozen vision tower."""
        return jax.lax.stop_gradient(self.backbone.encode_video(pixel_values, vision_layout))

    def audio_features(self, fbank, fbank_mask) -> jnp.ndarray:
        """Frozen AST features (B, T_a, d_a) of a clip's normalised fbank windows
        (B, K, frames, 128), averaged over its valid windows (B, K) (data/media.py)."""
        b, k = fbank.shape[:2]
        h = self.audio_encoder(fbank.reshape((b * k,) + fbank.shape[2:])).last_hidden_state
        h = h.reshape((b, k) + h.shape[1:])
        w = fbank_mask.astype(h.dtype)[:, :, None, None]
        mean = jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1)
        return jax.lax.stop_gradient(mean)

    def audio_tokens(self, fbank, fbank_mask, utterance_mask=None, features=None) -> jnp.ndarray:
        """z_a (B, L_v, D): the adapter maps AST features into the visual token space.
        utterance_mask (B, N_max, T_a) bool: the local windows of kind="qformer" adapters
        (data/utterances.py); other adapters ignore it. `features` (B, T_a, d_a): the AST
        features read from the feature cache (training/frozen_cache.py), used instead of
        running the encoder on fbank."""
        if features is None:
            features = self.audio_features(fbank, fbank_mask)
        return self.audio_adapter(features, utterance_mask)

    def enhance(self, tokens) -> jnp.ndarray:
        """Eq. (2), position-wise; the identity when the enhancer is off."""
        if self.config.emotion is None or not self.config.emotion.enhancer:
            return tokens
        return self.emotion_enhancer(tokens)

    def emotion(self, tokens, mask=None) -> jnp.ndarray:
        """Eqs. (3)-(4): (valence, arousal) (B, 2) from the mean of the valid tokens."""
        return self.emotion_supervisor(tokens, mask)

    def enhanced_tokens(self, fbank, fbank_mask, pixel_values, vision_layout,
                        utterance_mask=None, features=None):
        """(Enh(z_a), Enh(z_v)), each (B, N, D). The adapter is frozen from Stage 2 on, so z_a
        is a constant here (no gradient reaches the adapter or the encoders)."""
        z_a = jax.lax.stop_gradient(self.audio_tokens(fbank, fbank_mask, utterance_mask,
                                                      features))
        return self.enhance(z_a), self.enhance(self.video_tokens(pixel_values, vision_layout))

    def emotions(self, e_a, e_v) -> jnp.ndarray:
        """(valence, arousal) of the audio, video and joint pathways: (B, 3, 2)."""
        return jnp.stack([self.emotion(e_a), self.emotion(e_v),
                          self.emotion(jnp.concatenate([e_a, e_v], 1))], 1)

    def pathway_tokens(self, z_a, z_v, modality) -> jnp.ndarray:
        """The placeholder tokens (B, 2N, D) of each example's input: [z_a; *] for audio,
        [z_v; *] for video, [z_a; z_v] for joint (the paper's order); * is unused padding."""
        first = jnp.where((modality == VIDEO)[:, None, None], z_v, z_a)
        return jnp.concatenate([first, z_v], axis=1)

    def hidden(self, input_ids, position_ids, attention_mask, tokens,
               deterministic: bool = True) -> jnp.ndarray:
        """Final hidden states (B, S, D) with `tokens` (B, N, D) at the video placeholders."""
        x = self.backbone.embed(input_ids, tokens)
        h, _ = self.backbone.decode(x, position_ids, causal_mask(attention_mask),
                                    deterministic=deterministic)
        return h

    def logits(self, hidden) -> jnp.ndarray:
        return self.backbone.logits(hidden)

    def __call__(self, fbank, fbank_mask, pixel_values, vision_layout, input_ids, position_ids,
                 attention_mask, utterance_mask=None) -> Any:
        """Every submodule once (used to create params): (teacher, student) logits and, with
        the EmoAdapter, the joint pathway's emotion prediction."""
        zv = self.video_tokens(pixel_values, vision_layout)
        za = self.audio_tokens(fbank, fbank_mask, utterance_mask)
        out = [self.logits(self.hidden(input_ids, position_ids, attention_mask, self.enhance(zv))),
               self.logits(self.hidden(input_ids, position_ids, attention_mask, za))]
        if self.config.emotion is not None and self.config.emotion.supervisor:
            out.append(self.emotion(self.enhance(jnp.concatenate([za, zv], 1))))
        return tuple(out)
