"""The embedded default's language and instruction data (embedded/), and the emotion-word
read-out of free replies (evaluation/emotion_words.py)."""
import numpy as np
import pytest

from vaemotion_jax.embedded import synth
from vaemotion_jax.embedded import language
from vaemotion_jax.evaluation import emotion_words as ew
from vaemotion_jax.evaluation.prompts import choice_answer
from vaemotion_jax.evaluation.scoring import extract_letter


def test_text_chats_are_reproducible_and_of_every_kind():
    a, b = language.text_chats(200, 3), language.text_chats(200, 3)
    assert a == b and language.text_chats(200, 4) != a
    users = [c[0]["content"] for c in a]
    assert all(u.startswith(language.CONTEXT) for u in users)
    assert any("Choose the most suitable answer" in u for u in users)
    assert any("Which is it?" in u for u in users)


def test_text_never_pairs_a_description_with_its_emotion():
    """The link from what is heard to the emotion is Stage 2's to teach: where a text context
    holds both a sound description and a music emotion, the emotion is drawn independently of
    the description (agreement with the world's rule near chance, not 1)."""
    import itertools
    sounds = {}
    for values in itertools.product(*synth.FACTORS.values()):
        sound = dict(zip(synth.FACTORS, values))
        sounds[synth.sound_description(sound)] = synth.emotion_word(synth.pathway_label(sound, "a"))
    agree = total = 0
    for chat in language.text_chats(3000, 5, {"choice": 1.0}):
        context = chat[0]["content"].split("\n")[0][len(language.CONTEXT):]
        if context.startswith("I hear ") and "The music feels " in context:
            heard = context[len("I hear "):].split(". The music feels ")[0]
            said = context.split("The music feels ")[1].split(":")[0]
            agree, total = agree + (sounds[heard] == said), total + 1
    assert total > 100 and agree / total < 0.45


def test_named_answers_are_read_by_the_airbench_rule():
    options = ["blue", "red", "green", "yellow"]
    for letter in "ABCD":
        reply = choice_answer(options, letter, "named")
        assert reply.startswith("It is ") and extract_letter(reply, 4) == letter
    assert choice_answer(options, "C") == "C"
    with pytest.raises(ValueError, match="answer style"):
        choice_answer(options, "C", "essay")


def test_emotion_word_scoring():
    words = synth.EMOTION_WORDS
    assert ew.named_word("The music feels calm: very positive.", words) == "calm"
    assert ew.named_word("Together the clip feels tense.", words) == "tense"
    assert ew.named_word("", words) is None and ew.named_word(None, words) is None
    assert ew.well_formed("The video feels sad: very negative and fairly calm.")
    for bad in ("", "a darkB", "in a slow green triangle in ae a slow", "Sad sad sad music.",
                "The music. Feels calm."):
        assert not ew.well_formed(bad), bad
    s = ew.score(["The music feels calm.", "The music feels sad.", None], ["calm", "joyful", "calm"],
                 words)
    assert s["accuracy"] == pytest.approx(1 / 3) and s["well_formed"] == pytest.approx(2 / 3)
    assert s["chance"] == pytest.approx(2 / 3) and s["uniform_chance"] == pytest.approx(0.2)


def test_emotion_word_report_asks_each_pathway_its_question():
    asked = []

    def ask(media, pathway, question):
        asked.append((pathway, question))
        return ["The music feels joyful: very positive and very energetic."] * len(media)

    clips = [("a.mp4", {"a": [0.6, 0.6], "v": [-0.6, -0.6], "av": [0.0, 0.9]})]
    rep = ew.emotion_word_report(ask, clips, {p: q[0] for p, q in synth.EMOTION_QUESTIONS.items()},
                                 synth.emotion_word, words := synth.EMOTION_WORDS,
                                 paraphrase=synth.HELDOUT_EMOTION_QUESTION)
    assert [p for p, _ in asked] == ["a", "v", "av", "av"]
    assert rep["a"]["accuracy"] == 1.0 and rep["v"]["accuracy"] == 0.0
    assert rep["paraphrase"]["well_formed"] == 1.0
    assert "right word" in ew.format_report(rep) and words


def test_backbone_chats_pad_to_buckets():
    from vaemotion_jax.embedded.backbone import encode, pad_chats
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
    from vaemotion_jax.processing.tokenizer import cached_tokenizer
    qwen, tok = qwen_config.tiny(), cached_tokenizer(default_tiny_tokenizer_dir())
    chats = [encode(tok, qwen, c) for c in language.text_chats(4, 0)]
    batch = pad_chats(chats, qwen.pad_token_id, (64, 128, 256), (8, 16, 32, 64))
    longest = max(len(c["input_ids"]) for c in chats)
    assert batch["input_ids"].shape[1] == min(b for b in (64, 128, 256) if b >= longest)
    for i, c in enumerate(chats):
        n = int(batch["target_mask"][i].sum())
        assert n == len(c["target_ids"])
        np.testing.assert_array_equal(batch["input_ids"][i][batch["target_index"][i, :n] + 1],
                                      batch["target_ids"][i, :n])


def test_frame_windows_take_the_runs_spacing_from_each_offset():
    frames = np.arange(2 * 24).reshape(2, 24, 1, 1, 1)
    r = {"num_frames": 4}
    from vaemotion_jax.embedded.backbone import frame_windows
    got = frame_windows(frames, np.array([0, 5]), r)[..., 0, 0, 0]
    # 24 frames, 4 per window: every 6th frame; the run's centred sampling is offset 3
    np.testing.assert_array_equal(got, [[0, 6, 12, 18], [24 + 5, 24 + 11, 24 + 17, 24 + 23]])


def test_vision_pretraining_reads_training_frames_and_moves_the_tower(tmp_path):
    """The vision tower's pretraining reads the world's training clips (every frame) with their
    picture factors and returns the tower's params, trained (a few steps on a 20-clip world)."""
    import jax
    from flax import linen as nn
    from vaemotion_jax.embedded.synth import WorldConfig, generate
    from vaemotion_jax.embedded import backbone
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL, init_params
    world = str(tmp_path / "world")
    generate(world, WorldConfig(num_clips=20, heldout=0.2), workers=1)
    frames, labels, seconds = backbone.picture_frames(world, "train")
    assert frames.shape == (16, 24, 112, 112, 3) and labels.shape == (16, 4) and seconds == 3.0
    qwen = qwen_config.tiny()
    visual = nn.meta.unbox(init_params(qwen, jax.random.key(0)))["visual"]
    r = {**backbone.RECIPE, "vision_steps": 3, "vision_batch_size": 4}
    trained = backbone.pretrain_vision(visual, Qwen2_5_VL(qwen), qwen, world, r)
    assert jax.tree.structure(trained) == jax.tree.structure(visual)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), trained, visual))
    assert max(moved) > 0


def test_a_frozen_tower_gets_no_gradient_from_the_language_loss(tmp_path):
    """`freeze_vision`: the LM phase's loss reaches the LLM but not the pretrained tower."""
    import jax
    import optax
    from flax import linen as nn
    from vaemotion_jax.embedded.synth import WorldConfig, generate
    from vaemotion_jax.embedded import backbone
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL, init_params
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
    world = str(tmp_path / "world")
    generate(world, WorldConfig(num_clips=6, heldout=0.2), workers=1)
    qwen = qwen_config.tiny()
    r = {**backbone.RECIPE, "batch_size": 2}
    clips = backbone.load_clips(world, default_tiny_tokenizer_dir(), qwen, ("Describe the clip.",), r)
    batch = backbone.video_batch(clips, np.random.default_rng(0), r, qwen.pad_token_id)
    params = nn.meta.unbox(init_params(qwen, jax.random.key(0)))
    norms = {}
    for freeze in (False, True):
        grads = jax.grad(backbone.lm_loss)(params, batch, Qwen2_5_VL(qwen), freeze)
        norms[freeze] = {k: float(optax.tree.norm(v)) for k, v in grads.items()}
    assert norms[False]["visual"] > 0 and norms[True]["visual"] == 0.0
    assert norms[True]["llm"] > 0
    assert norms[True]["llm"] == pytest.approx(norms[False]["llm"], rel=1e-5)


def test_emotion_wordings_vary_and_never_give_away_the_held_out_paraphrase():
    rng = np.random.default_rng(0)
    asked = {p: {language.emotion_question(rng, p) for _ in range(400)} for p in ("a", "v", "av")}
    for p, questions in asked.items():
        assert set(synth.EMOTION_QUESTIONS[p]) < questions and len(questions) > 15
        assert not any("scene" in q for q in questions)
    assert synth.HELDOUT_EMOTION_QUESTION not in set().union(*asked.values())
