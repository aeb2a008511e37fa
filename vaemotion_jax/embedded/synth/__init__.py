"""A synthetic audio-visual world: real mp4 clips whose picture and sound share latent factors.

  factors.py  the factors, their picture/sound mapping, emotion labels and words, clip specs
  render.py   frames, melody, mp4
  text.py     captions, benchmark items, Stage 2 conversations, the manifests' lines
  build.py    a world folder, the default world in the cache, the CLI
  utterances.py  the second world, whose clips need utterance windows (AcoustEmo)

Each clip shows one object bouncing over a plain background, with a melody as its soundtrack.
Four discrete factors drive both senses (the full mapping is in `world.json` and
docs/synthetic_world.md):

  shape      circle | square | triangle | star      <-> timbre    sine | square | sawtooth | bell
  colour     red | blue | green | yellow             <-> register  low | middle | high | very high
  motion     still | slow | fast                     <-> tempo     slow | moderate | fast
  brightness dark | bright                           <-> mode      minor and quiet | major and loud

In a "matched" clip the sound is made from the picture's factors, so hearing can be learned from
seeing. In a `mismatch` fraction of clips the sound's factors are drawn independently. Valence and
arousal for `a`, `v` and `av` are computed from the factors (`emotion_labels`); `av` follows a
rule that is not the average of `a` and `v`: agreeing moods reinforce each other, and when the
music's and the picture's valence disagree the music sets the mood and the conflict adds tension.

`python -m vaemotion_jax.embedded.synth --out DIR [--num-clips N --seed S --workers W]` writes
clips/*.mp4 (H.264 + AAC), stage1.jsonl, stage2.jsonl, captions.jsonl, benchmark.jsonl, mc_train.jsonl and
world.json. Output is a pure function of the seed and the options (the same bytes twice).
"""

from vaemotion_jax.embedded.synth.factors import (
    WORLD_VERSION, SHAPES, COLOURS, MOTIONS, BRIGHTNESS, FACTORS, TIMBRE, REGISTER, TONIC_HZ,
    TEMPO, NOTES_PER_SECOND, SPEED_PX_PER_S, MODE, LOUDNESS, PEAK, SCALE, RGB, BACKGROUND,
    CONTRIBUTION, WEIGHTS, AV_RULE, WorldConfig, ClipSpec, pathway_label, joint_label,
    emotion_labels, EMOTION_WORDS, VALENCE_BINS, AROUSAL_BINS, emotion_word, level_bin,
    sample_specs, world_description)
from vaemotion_jax.embedded.synth.render import (
    render_frames, tone, render_audio, write_mp4, render_clip)
from vaemotion_jax.embedded.synth.text import (
    caption, sound_description, feel, SOUND_QUESTIONS, PICTURE_QUESTIONS, benchmark_items,
    SOUND_CONTENT, PICTURE_CONTENT, JOINT_CONTENT, EMOTION_QUESTIONS, HELDOUT_EMOTION_QUESTION,
    content_answer, emotion_answer, CONTENT_QUESTIONS, conversations, manifests)
from vaemotion_jax.embedded.synth.build import (
    generate, default_world_dir, main)

__all__ = [
    "WORLD_VERSION", "SHAPES", "COLOURS", "MOTIONS", "BRIGHTNESS", "FACTORS", "TIMBRE", "REGISTER",
    "TONIC_HZ", "TEMPO", "NOTES_PER_SECOND", "SPEED_PX_PER_S", "MODE", "LOUDNESS", "PEAK", "SCALE",
    "RGB", "BACKGROUND", "CONTRIBUTION", "WEIGHTS", "AV_RULE", "WorldConfig", "ClipSpec",
    "pathway_label", "joint_label", "emotion_labels", "EMOTION_WORDS", "VALENCE_BINS",
    "AROUSAL_BINS", "emotion_word", "level_bin", "sample_specs", "world_description",
    "render_frames", "tone", "render_audio", "write_mp4", "render_clip", "caption",
    "sound_description", "feel", "SOUND_QUESTIONS", "PICTURE_QUESTIONS", "benchmark_items",
    "SOUND_CONTENT", "PICTURE_CONTENT", "JOINT_CONTENT", "EMOTION_QUESTIONS",
    "HELDOUT_EMOTION_QUESTION", "content_answer", "emotion_answer", "CONTENT_QUESTIONS",
    "conversations", "manifests", "generate", "default_world_dir", "main"]
