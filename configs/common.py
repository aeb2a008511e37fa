"""Fields shared by every stage, model presets, and the prompt pools.

A config is plain data; `vaemotion_jax.train` reads it. `--config=stage1:qwen2_5_vl_7b` or
`--config.model=qwen2_5_vl_7b` picks the 7B preset (checkpoint paths still come from flags).
"""
import ml_collections

# Stage 1 prompt pool (the paper samples a prompt per clip from "a predefined pool" it does not
# publish). These ask for a description, which is what the teacher can answer from video alone.
STAGE1_PROMPTS = (
    "Describe what you perceive in this clip.",
    "What is happening in this clip?",
    "Describe the clip in one sentence.",
    "Tell me what this clip shows.",
)

# Model presets: sizes of the inputs that follow from the backbone and the audio encoder.
PRESETS = {
    # The embedded default: a tiny Qwen2.5-VL taught to caption the synthetic world, a tiny AST.
    # Frames: a fixed 4 per 3 s world clip (2 temporal groups of 8x8 patches -> 32 tokens per
    # clip): 2 fps would give 6 frames and 48 tokens for the same picture, 1.5x the cost of
    # every step on a 2-core CPU, and the world's objects move slowly enough for 4.
    "tiny": dict(
        qwen="tiny", ast="tiny", resized_hw=(112, 112), fps=None, max_frames=None, num_frames=4,
        audio_max_length=300, audio_windows=1, adapter_seq_hidden=64, adapter_channel_hidden=128,
        # kind="qformer": a Q-Former as narrow as the tiny AST (32) and LLM (128) it sits between
        adapter_queries=8, adapter_qformer_dim=64, adapter_qformer_heads=4,
        min_pixels=28 * 28, max_pixels=112 * 112, dtype="float32", param_dtype="float32",
        mesh=(1, -1, 1), remat="none",
        # layers unrolled: scanning keeps compile time flat in depth, but the scan's backward
        # zero-fills and copies stacked activation buffers (about 8% of a small model's step)
        scan_layers=False,
        # stage 2: a tiny model trained for minutes needs a larger rate than the paper's 1e-5
        stage2_lr=3e-3, enhancer_hidden=256, supervisor_hidden=64,
        # how the backbone answers multiple choice (evaluation/prompts.py `choice_answer`): the
        # tiny stand-in names the option, then its letter; generation needs room for that
        mc_answer_style="named", answer_tokens=32),
    # The paper's setting: 512x512 video (-> 504x504, 324 tokens per 2 frames), 16 kHz audio.
    # Frames: Qwen2.5-VL's native 2 fps, capped at 8 frames (4 temporal groups -> 1296 tokens
    # per clip, 2592 for the joint input): a 10 s VGGSound clip gets 8 frames at 0.8 fps, a 30 s
    # movie clip 8 frames at 0.27 fps. Uncapped 2 fps would be 3240 tokens per 10 s clip and
    # 9720 per 30 s clip (19440 joint), beyond a 24 GB GPU. AST: 1024 fbank frames (10.24 s)
    # per window, up to 3 windows averaged so that a 30 s clip's audio spans its frames.
    "qwen2_5_vl_7b": dict(
        qwen="qwen2_5_vl_7b", ast="ast_audioset", resized_hw=(512, 512), fps=2.0, max_frames=8,
        num_frames=None, audio_max_length=1024, audio_windows=3, adapter_seq_hidden=1024,
        adapter_channel_hidden=3584,
        # kind="qformer": AcoustEmo's K = 32 queries, d_model = 768 (BERT-base heads: 12)
        adapter_queries=32, adapter_qformer_dim=768, adapter_qformer_heads=12,
        min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28, dtype="bfloat16",
        param_dtype="bfloat16", mesh=(1, -1, 1), remat="full", scan_layers=True,
        stage2_lr=1e-5, enhancer_hidden=1024, supervisor_hidden=256,
        mc_answer_style="letter", answer_tokens=8),
}


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
    `c.model` by `resolve`."""
    if arg:
        c.model = arg


def resolve(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills every field left as None from the model preset (after command-line overrides)."""
    if c.model not in PRESETS:
        raise ValueError(f"unknown model preset {c.model!r}; known: {sorted(PRESETS)}")
    p = PRESETS[c.model]
    with c.unlocked():
        sampling = ("fps", "max_frames", "num_frames")
        if all(c.data[f] is None for f in sampling):  # the preset's frames, unless the user set any
            for f in sampling:
                c.data[f] = p[f]
        for field in ("resized_hw", "min_pixels", "max_pixels", "audio_max_length", "audio_windows",
                      "mc_answer_style"):
            if c.data[field] is None:
                c.data[field] = p[field]
        if c.eval_max_new_tokens is None:
            c.eval_max_new_tokens = p["answer_tokens"]
        from vaemotion_jax.data.media import MediaSpec
        MediaSpec.from_config(c.data)  # refuses a config that sets both fps and num_frames
        if c.adapter.seq_hidden is None:
            c.adapter.seq_hidden = p["adapter_seq_hidden"]
        if c.adapter.channel_hidden is None:
            c.adapter.channel_hidden = p["adapter_channel_hidden"]
        for field in ("queries", "qformer_dim", "qformer_heads"):
            if c.adapter[field] is None:
                c.adapter[field] = p[f"adapter_{field}"]
        for field in ("mesh", "dtype", "param_dtype", "remat", "scan_layers"):
            if c[field] is None:
                c[field] = p[field]
        c.qwen_preset, c.ast_preset = p["qwen"], p["ast"]
        if c.stage == "stage2":
            if c.optim.lr is None:
                c.optim.lr = p["stage2_lr"]
            for field in ("enhancer_hidden", "supervisor_hidden"):
                if c.emotion[field] is None:
                    c.emotion[field] = p[field]
    return c
