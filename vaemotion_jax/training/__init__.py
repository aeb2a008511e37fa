"""The method: Stage 1 (VG-Align) and Stage 2 (EmoAdapter) trainers, their losses, steps, train
state, checkpoints, weights and caches of frozen work."""
