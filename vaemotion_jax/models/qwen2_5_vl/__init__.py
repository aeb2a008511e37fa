"""Qwen2.5-VL in Flax Linen: config, vision tower, decoder, rope index, model."""
