"""The built-in English corpus the tiny byte-level BPE tokenizer is trained on.

Deterministic (no randomness, fixed order). It covers the words of the synthetic audio-visual
world (colours, shapes, motion, brightness, sound, emotion), multiple-choice phrasing, the chat
roles and default system prompt, generic English, and digits.
"""
from __future__ import annotations

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black",
           "white", "grey", "gray", "gold", "silver", "cyan", "magenta", "teal", "navy", "crimson")
SHAPES = ("circle", "square", "triangle", "star", "rectangle", "diamond", "hexagon", "ring",
          "dot", "line", "ball", "cross", "heart", "oval", "disc", "box", "wave", "spiral")
MOTIONS = ("slow", "fast", "bouncing", "drifting", "moving", "spinning", "rotating", "sliding",
           "falling", "rising", "still", "static", "shaking", "pulsing", "floating", "jumping",
           "zooming", "growing", "shrinking", "swaying", "orbiting", "flickering", "steady")
DIRECTIONS = ("left", "right", "up", "down", "across the screen", "toward the centre",
              "away from the centre", "in a circle", "back and forth", "diagonally")
SPEED_WORDS = ("slowly", "quickly", "gently", "rapidly", "smoothly", "suddenly", "calmly",
               "wildly", "gradually", "steadily")
BRIGHTNESS = ("bright", "dark", "dim", "glowing", "flashing", "fading", "light", "shadowy",
              "vivid", "pale", "brilliant", "muted", "high contrast", "low contrast")
BACKGROUNDS = ("background", "sky", "floor", "wall", "scene", "frame", "canvas", "field")
INSTRUMENTS = ("piano", "flute", "drum", "drums", "strings", "violin", "cello", "guitar", "bass",
               "trumpet", "bell", "bells", "synth", "organ", "choir", "harp", "clarinet", "horn",
               "sine", "sine tone", "square wave", "sawtooth", "noise")
SOUND_WORDS = ("tone", "pitch", "tempo", "rhythm", "beat", "melody", "chord", "harmony", "note",
               "notes", "key", "loud", "soft", "quiet", "volume", "high", "low", "music", "audio",
               "song", "sound", "silence", "frequency", "loudness", "timbre", "bpm", "hertz",
               "register", "middle register", "very high", "mode", "soundtrack", "played")
MODES = ("major", "minor")
TEMPOS = ("slow", "moderate", "fast", "very slow", "very fast", "steady", "lively")
LOUDNESS = ("loud", "soft", "quiet", "very loud", "gentle", "booming", "faint")
EMOTIONS = ("happy", "sad", "calm", "tense", "excited", "angry", "fearful", "peaceful",
            "joyful", "gloomy", "relaxed", "anxious", "cheerful", "melancholic", "somber",
            "energetic", "serene", "dramatic", "hopeful", "nervous", "bored", "content",
            "playful", "lonely", "triumphant", "mysterious", "warm", "cold", "gentle", "intense")
EMOTION_TERMS = ("valence", "arousal", "positive", "negative", "neutral", "emotion", "emotions",
                 "mood", "feeling", "feelings", "intensity", "pleasant", "unpleasant",
                 "high arousal", "low arousal", "high valence", "low valence", "atmosphere",
                 "very negative", "somewhat negative", "somewhat positive", "very positive",
                 "very calm", "fairly calm", "fairly energetic", "very energetic")
MC_LETTERS = ("A", "B", "C", "D")

MULTIPLE_CHOICE_PROMPT = (
    "Choose the most suitable answer from options A, B, C, and D to respond the question in "
    "next line, you may only choose A or B or C or D.")

GENERIC_ENGLISH = (
    "system\nYou are a helpful assistant.",
    "system", "user", "assistant", "user\n", "assistant\n", "system\n",
    "The quick brown fox jumps over the lazy dog.",
    "Describe the video in detail.",
    "Describe the audio in detail.",
    "What do you see in this clip? What do you hear in this clip?",
    "What is the overall emotion of this clip? How does the music make you feel?",
    "Which instrument is playing? Which object is moving the fastest?",
    "The video shows a simple scene with a few coloured shapes moving on a plain background.",
    "The audio contains a short piece of music with a clear melody and a steady beat.",
    "The mood of the scene is calm and peaceful, with soft colours and gentle motion.",
    "The music is tense and dramatic, with a fast tempo and loud drums in a minor key.",
    "In this clip, the sight and the sound agree: both are bright, lively and cheerful.",
    "In this clip, the sound contradicts the scene: the picture is bright but the music is sad.",
    "Yes. No. Maybe. I think so. I am not sure. It is hard to tell.",
    "There is one object. There are two objects. There are three objects. There are many.",
    "It starts quiet and becomes louder. It starts loud and becomes quieter.",
    "First, then, next, finally, because, although, however, while, during, after, before.",
    "This is a test of the tokenizer. It should handle words, numbers and punctuation: "
    "commas, full stops; colons, question marks? exclamation marks! (brackets) \"quotes\" "
    "'apostrophes' - dashes / slashes.",
    "Please answer with a single letter.",
    "Which description fits the audio best? Which description fits the video best?",
    "What emotion does the music convey? What emotion does the video convey?",
    "What emotion does the clip convey, picture and music together?",
    "Which timbre does the melody have? In which register is the melody played?",
    "What is the tempo of the music? Which mode and loudness does the music have?",
    "What shape is the object? What colour is the object? How does the object move?",
    "Is the background dark or bright? It stays still. It drifts slowly. It moves fast.",
    "How positive or negative is the mood of the music? How energetic is the video?",
    "Listen to the soundtrack. Look at the picture.",
    "Which pairing of picture and sound is in this clip? A striped or checkered background.",
    "The answer is",
    "Options:",
    "Question:",
    "Answer:",
    "Explain your reasoning in one or two sentences.",
    "An artwork conveys emotion through the joint design of visual and auditory elements.",
    "A film scene with background music, where emotion is crafted by sight and sound together.",
    "The person in the scene looks happy, the light is warm, and the strings play softly.",
    "Listen to the audio and look at the video, then answer the question about both.",
    "hello world, good morning, good evening, thank you, you are welcome, goodbye.",
    "I can see a red circle bouncing on the left and a blue square drifting to the right.",
    "I can hear a piano playing a slow melody in a major key, soft and warm.",
    "the of and to in is it that for on with as was by at be this are from or an have not "
    "but what all were when we there can one has more if which their will about do would so "
    "into some them these then its time two way could people than first been call who oil "
    "now find long down day did get come made may part over new sound take only little work "
    "know place year live me back give most very after thing our just name good sentence man "
    "think say great where help through much before line right too mean old any same tell "
    "boy follow came want show also around form three small set put end does another well "
    "large must big even such turn here why ask went men read need land different home us "
    "move try kind hand picture again change off play spell air away animal house point "
    "page letter mother answer found study still learn should world high every near add food "
    "between own below country plant last school father keep tree never start city earth eye "
    "light thought head under story saw left few while along might close something seem next "
    "hard open example begin life always those both paper together got group often run "
    "important until children side feet car mile night walk white sea began grow took river "
    "four carry state once book hear stop without second later miss idea enough eat face "
    "watch far really almost let above girl sometimes mountain cut young talk soon list song "
    "being leave family",
)


# The synthetic world's conversation phrasing (embedded/synth/, embedded/language.py), so that its
# frequent words are single tokens: shorter sequences, and one token per word to match.
CONVERSATION_SENTENCES = (
    "I see a fast red circle on a bright background.",
    "I hear a slow low sine melody in a minor key, played quiet.",
    "I see a still blue star on a dark background, and I hear a moderate high bell melody in a "
    "major key, played loud.",
    "The music feels sad: very negative and fairly calm.",
    "The video feels joyful: somewhat positive and very energetic.",
    "The music matches the picture; together the clip feels calm: very positive and very calm.",
    "The music sets a different mood from the picture; together the clip feels tense: "
    "somewhat negative and fairly energetic.",
    "What do you see? What do you hear? Describe the video. Describe the music. What is shown in "
    "the video? What does the soundtrack sound like? Describe the picture and the sound. What do "
    "you see and hear?",
    "What emotion does the music convey? How does the music make you feel? What mood does the "
    "soundtrack have? What emotion does the video convey? What mood does the picture have? How "
    "does the video make you feel? How do the picture and the music feel together? What emotion "
    "does the clip convey, picture and music together? What mood does the whole clip have?",
    "Here is a description of a clip: Which is it? It is red (B)",
    "Which description fits the audio best? Which description fits the video best? Which timbre "
    "does the melody have? In which register is the melody played? What is the tempo of the "
    "music? Which mode and loudness does the music have? What shape is the object? What colour "
    "is the object? How does the object move? Is the background dark or bright?",
    "it stays still, it drifts slowly, it moves fast, it spins in place, striped, checkered",
    "How positive or negative is the mood of the music? How energetic is the video? Listen to "
    "the soundtrack. Look at the picture. Which pairing of picture and sound is in this clip? "
    "a red circle with a sine melody",
)


def _number_sentences() -> list[str]:
    """Digits and numbers in the forms the pipeline prints (counts, frames, seconds, scores)."""
    lines = [" ".join(str(i) for i in range(0, 101)),
             "0 1 2 3 4 5 6 7 8 9",
             "0.0 0.1 0.2 0.25 0.3 0.4 0.5 0.6 0.7 0.75 0.8 0.9 1.0 -0.5 -1.0 1.5 2.5 3.5",
             "16 kHz, 44.1 kHz, 440 Hz, 120 bpm, 60 bpm, 90 bpm, 2 fps, 25 fps, 30 fps",
             "512x512 pixels, 504x504 pixels, 10 seconds, 8 frames, 1024 tokens, 2025"]
    lines += [f"frame {i} of {n}" for n in (2, 4, 8, 16) for i in range(1, n + 1)]
    lines += [f"The clip lasts {s} seconds and shows {k} objects." for s in range(1, 11)
              for k in range(1, 6)]
    lines += [f"valence {v / 10:.1f}, arousal {a / 10:.1f}" for v in range(-10, 11, 2)
              for a in range(-10, 11, 5)]
    return lines


def _scene_sentences(count: int = 480) -> list[str]:
    """Sentences combining world words; strides coprime to the list lengths vary the mix."""
    lines = []
    for i in range(count):
        colour = COLOURS[i % len(COLOURS)]
        shape = SHAPES[(i * 7) % len(SHAPES)]
        motion = MOTIONS[(i * 5) % len(MOTIONS)]
        direction = DIRECTIONS[(i * 3) % len(DIRECTIONS)]
        speed = SPEED_WORDS[(i * 11) % len(SPEED_WORDS)]
        light = BRIGHTNESS[(i * 13) % len(BRIGHTNESS)]
        place = BACKGROUNDS[(i * 17) % len(BACKGROUNDS)]
        instrument = INSTRUMENTS[(i * 19) % len(INSTRUMENTS)]
        tempo = TEMPOS[(i * 23) % len(TEMPOS)]
        mode = MODES[i % 2]
        loud = LOUDNESS[(i * 29) % len(LOUDNESS)]
        emotion = EMOTIONS[(i * 31) % len(EMOTIONS)]
        term = EMOTION_TERMS[(i * 37) % len(EMOTION_TERMS)]
        sound = SOUND_WORDS[(i * 41) % len(SOUND_WORDS)]
        lines.append(f"A {colour} {shape} is {motion} {speed} {direction} on a {light} {place}.")
        lines.append(f"A {loud} {instrument} plays a {tempo} melody in a {mode} key; "
                     f"the {sound} feels {emotion}.")
        lines.append(f"The overall emotion is {emotion}, with {term} that matches the {light} "
                     f"{colour} colours and the {tempo} tempo.")
    return lines


def _multiple_choice_items(count: int = 120) -> list[str]:
    """Four-option questions in the benchmark style, with answers."""
    items = []
    for i in range(count):
        options = [EMOTIONS[(i + 7 * k) % len(EMOTIONS)] for k in range(4)]
        subject = ("music", "video", "scene", "clip", "sound", "animation")[i % 6]
        question = (f"What is the emotion of the {subject}?" if i % 3 == 0 else
                    f"Which instrument is heard in the {subject}?" if i % 3 == 1 else
                    f"What shape is moving in the {subject}?")
        if i % 3 == 1:
            options = [INSTRUMENTS[(i + 5 * k) % len(INSTRUMENTS)] for k in range(4)]
        elif i % 3 == 2:
            options = [f"{COLOURS[(i + k) % len(COLOURS)]} {SHAPES[(i + 3 * k) % len(SHAPES)]}"
                       for k in range(4)]
        lettered = "\n".join(f"{letter}. {text}" for letter, text in zip(MC_LETTERS, options))
        answer = MC_LETTERS[i % 4]
        items.append(f"user\n{MULTIPLE_CHOICE_PROMPT}\n{question}\n{lettered}")
        items.append(f"assistant\n{answer}. {options[i % 4]}")
        items.append(f"assistant\nThe answer is {answer}.")
    return items


def tiny_corpus() -> list[str]:
    """The full built-in corpus, one string per line, in a fixed order."""
    word_lists = (COLOURS, SHAPES, MOTIONS, DIRECTIONS, SPEED_WORDS, BRIGHTNESS, BACKGROUNDS,
                  INSTRUMENTS, SOUND_WORDS, MODES, TEMPOS, LOUDNESS, EMOTIONS, EMOTION_TERMS)
    lines = [" ".join(words) for words in word_lists]
    lines += [", ".join(w.capitalize() for w in words) for words in word_lists]
    lines += list(GENERIC_ENGLISH)
    lines += [line for line in CONVERSATION_SENTENCES for _ in range(8)]  # weight: frequent words
    lines += _number_sentences()
    scenes = _scene_sentences()
    lines += scenes
    # Heading-like blocks separated by blank lines (so "\n\n" itself becomes a token).
    lines += ["\n\n".join(line.rstrip(".") for line in scenes[i:i + 3])
              for i in range(0, len(scenes), 3)]
    lines += _multiple_choice_items()
    return lines
