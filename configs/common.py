"""Fields shared by every stage (model presets: vaemotion_jax/presets.py).

A config is plain data; `vaemotion_jax.train` reads it. `--config=stage1:qwen2_5_vl_7b` or
`--config.model=qwen2_5_vl_7b` picks the 7B preset (checkpoint paths still come from flags).
"""
import ml_collections



def base_config(stage: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = stage
    c.model = "tiny"
    c.seed = 0
    c.workdir = f"runs/{stage}"     # checkpoints, TensorBoard events, teacher-response cache
    c.steps = 100
    c.log_every = 10
    c.checkpoint_every = 50
    c.keep_checkpoints = 3

    # Weights: local Hugging Face directories. Empty with model=tiny: the project builds them.
    c.backbone_path = ""
    c.audio_encoder_path = ""

    c.data = ml_collections.ConfigDict()
    c.data.world_dir = ""           # synthetic world; "" = the default cache folder
    c.data.train_manifest = ""      # "" = the world's manifest for this stage
    c.data.heldout_manifest = ""    # "" = the world's held-out clips
    c.data.batch_size = 8
    c.data.num_workers = 0          # grain worker processes (0: decode in the main process)
    c.data.strict = False           # fail at the first bad example instead of skipping it
    # How the backbone answers multiple choice ("letter" | "named", evaluation/prompts.py):
    # instruction data is written in it, and generation is given room for it.
    c.data.mc_answer_style = ml_collections.FieldReference(None, field_type=str)
    c.eval_max_new_tokens = ml_collections.FieldReference(None, field_type=int)
    # Frames: fps with a max_frames cap, or a fixed num_frames (exactly one; data/media.py).
    c.data.fps = ml_collections.FieldReference(None, field_type=float)
    c.data.max_frames = ml_collections.FieldReference(None, field_type=int)
    c.data.num_frames = ml_collections.FieldReference(None, field_type=int)
    c.data.resized_hw = ml_collections.FieldReference(None, field_type=tuple)
    c.data.min_pixels = ml_collections.FieldReference(None, field_type=int)
    c.data.max_pixels = ml_collections.FieldReference(None, field_type=int)
    c.data.audio_max_length = ml_collections.FieldReference(None, field_type=int)  # per AST window
    c.data.audio_windows = ml_collections.FieldReference(None, field_type=int)     # AST windows per clip
    # Padded sequence lengths. Finer ones (length_buckets(64, 2048, per_octave=4): 158 tokens pad
    # to 160, not 192) are not the default yet: each process picks its batch's bucket, and two
    # processes that pick different ones run different programs (a collective mismatch).
    c.data.seq_buckets = (128, 192, 256, 384, 512, 768, 1024, 2048)
    # Loss targets per example: every assistant token, padded to the smallest of these
    # (static shapes without cutting responses).
    c.data.target_buckets = (16, 32, 64, 128, 256, 512, 1024, 2048)

    # Caches of frozen work on disk, keyed by the weights' fingerprints and the media settings
    # (training/frozen_cache.py; README "Caches of frozen work"). Off: every step runs them.
    c.cache = ml_collections.ConfigDict()
    c.cache.dir = ""                # "" = <workdir>/frozen_cache; one dir can serve many runs
    c.cache.audio_features = False  # the frozen AST's features per clip (both stages)

    c.adapter = ml_collections.ConfigDict()
    c.adapter.kind = "mlp"
    c.adapter.seq_hidden = ml_collections.FieldReference(None, field_type=int)
    c.adapter.channel_hidden = ml_collections.FieldReference(None, field_type=int)
    c.adapter.activation = "gelu"
    # kind="qformer": AcoustEmo's utterance-aware acoustic Q-Former (models/qformer.py; README
    # "Q-Former audio adapter"). Queries K, width and heads: None takes the model preset's.
    c.adapter.queries = ml_collections.FieldReference(None, field_type=int)
    c.adapter.qformer_dim = ml_collections.FieldReference(None, field_type=int)
    c.adapter.qformer_heads = ml_collections.FieldReference(None, field_type=int)
    c.adapter.qformer_layers = 2          # Video-LLaMA's audio Q-Former depth (AcoustEmo: silent)
    c.adapter.qformer_mlp = ml_collections.FieldReference(None, field_type=int)  # None: 4 x width
    c.adapter.max_utterances = 8          # N_max windows per clip (static shape)
    # AcoustEmo Table 2 ablations: "w/o Global Acoustic Q-Former", "w/o Utterance-Aware A-QF",
    # "w/ fixed-length windows" (windows="fixed" of window_seconds); a clip whose record has no
    # utterance gets fixed windows ("fixed") or the global Q-Former alone ("global").
    c.adapter.global_qformer = True
    c.adapter.utterance_qformer = True
    c.adapter.windows = "utterances"      # utterances (the manifest's timestamps) | fixed
    c.adapter.window_seconds = 2.0
    c.adapter.no_utterances = "fixed"

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-5
    c.optim.warmup_steps = 0
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999

    # Scale: (data, fsdp, tensor) mesh; -1 takes the remaining devices.
    c.mesh = ml_collections.FieldReference(None, field_type=tuple)
    c.dtype = ml_collections.FieldReference(None, field_type=str)        # activations
    c.param_dtype = ml_collections.FieldReference(None, field_type=str)  # frozen weights
    c.remat = ml_collections.FieldReference(None, field_type=str)        # none | full | dots
    c.scan_layers = ml_collections.FieldReference(None, field_type=bool)  # scan over layers
    c.compilation_cache = "~/.cache/vaemotion_jax/xla"

    # Multi-process runs: a coordinator "host:port" with this process's id (local / GPU nodes),
    # or auto=True to let jax.distributed.initialize() read the TPU / SLURM environment.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator = ""
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.distributed.auto = False
    c.distributed.cpu_collectives = False   # gloo collectives for multi-process CPU runs
    return c


def override(c: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
    """Sets dotted fields ("data.batch_size": 4) like command-line overrides do; returns c."""
    with c.unlocked():
        for key, value in values.items():
            node = c
            *path, leaf = key.split(".")
            for part in path:
                node = node[part]
            node[leaf] = value
    return c


def apply_preset(c: ml_collections.ConfigDict, arg: str | None) -> None:
    """`--config=stage1:qwen2_5_vl_7b` selects the preset; unset fields are filled later from
    `c.model` by `vaemotion_jax.presets.resolve`."""
    if arg:
        c.model = arg
