"""Data: JSONL manifests and importers, media decoding, what a clip becomes, the Grain pipeline,
sequence buckets and utterance windows."""
