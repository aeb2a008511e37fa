"""Reading and writing checkpoints: safetensors I/O, Hugging Face key maps, loaders and exporters
of the backbone, the AST, the small trained modules and LoRA (PEFT)."""
