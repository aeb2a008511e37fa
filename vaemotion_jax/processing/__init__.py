"""Turning raw inputs into model inputs: video frames to patches, audio to Kaldi fbank, chats to
tokens (the tiny tokenizer's recipe included)."""
