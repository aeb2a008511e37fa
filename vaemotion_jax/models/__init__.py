"""The models as Flax Linen modules: Qwen2.5-VL, the AST, the audio adapters (MLP, Q-Former), the
EmoAdapter (Enhancer, Supervisor), LoRA and the VAEmotionLLM that joins them."""
