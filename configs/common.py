"""Fields shared by every stage (model presets: vaemotion_jax/presets.py).

A config is plain data and complete when made: `--config=stage1:qwen2_5_vl_7b` picks the 7B
preset and writes its sizes in (vaemotion_jax/presets.py); checkpoint paths still come from
flags. `vaemotion_jax.train` reads it as it is.
"""
import ml_collections

from vaemotion_jax.data.buckets import length_buckets
from vaemotion_jax.presets import fill


def base_config(stage: str) -> ml_collections.ConfigDict:
    """The fields every stage has; the model preset's sizes come in with `apply_preset`."""
    c = ml_collections.ConfigDict()
    c.stage = stage
    c.model = "tiny"                # the preset (set by the config argument; presets.fill)
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
    # From the model preset (vaemotion_jax/presets.py `fill`, at the end of get_config): frame
    # sampling (sampling = fps | num_frames, fps, max_frames, num_frames), resized_hw,
    # min/max_pixels, audio_max_length (fbank frames per AST window), audio_windows (per clip),
    # mc_answer_style (how the backbone answers multiple choice: letter | named), and
    # eval_max_new_tokens.

    # Padded sequence lengths, 4 per doubling: padding adds under 1/4 of a step's work, about
    # 1/8 on average (158 tokens pad to 160; the old (128, 192, 256, ...) padded them to 192,
    # +21%). Each length used compiles once; processes of a multi-process run pad their batches
    # to the largest length any of them picked (training/loop.agree_on_shapes).
    c.data.seq_buckets = length_buckets(64, 2048, per_octave=4)
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
    # seq_hidden, channel_hidden (the two FC pairs' hidden widths): the model preset's
    c.adapter.activation = "gelu"
    # kind="qformer": AcoustEmo's utterance-aware acoustic Q-Former (models/qformer.py; README
    # "Q-Former audio adapter"). Queries K, width and heads (queries, qformer_dim,
    # qformer_heads): the model preset's.
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

    # Scale, from the model preset: mesh (data, fsdp, tensor; -1 takes the remaining devices),
    # dtype (activations), param_dtype (frozen weights), remat (none | full | dots), scan_layers.
    # XLA's persistent compilation cache: "auto" = <cache root>/xla (~/.cache/vaemotion_jax,
    # or $VAEMOTION_CACHE, like everything else the project makes once), "" = off, else a folder.
    c.compilation_cache = "auto"

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
    """`--config=stage1:qwen2_5_vl_7b`: the preset named by the config argument (default tiny),
    its sizes written into `c`."""
    fill(c, arg or "tiny")
