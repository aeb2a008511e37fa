"""Open-vocabulary emotion scoring in the style of EMER / AcoustEmo, offline.

EMER (Explainable Multimodal Emotion Recognition) asks a model for a free list of emotion words
per clip and compares it *by meaning* with a reference list: the words of both lists are grouped
into synonym clusters, and per item

    accuracy = |P ∩ R| / |P|      recall = |P ∩ R| / |R|      (P, R: the sets of clusters)

averaged over items; "avg" is the mean of the two (AcoustEmo's Table 1: Avg, Accuracy_S,
Recall_S). An empty prediction scores 0 and 0 and is counted; an item without reference words
cannot be scored and is refused.

The grouping. EMER groups words with an LLM; here nothing leaves the machine and no model is
loaded: `EMOTION_CLUSTERS` is a hand-written map of about 30 clusters (Ekman's six, calm and
neutral, the music/film vocabulary of ArtEmo-style descriptions: excited, tender, nostalgic,
lonely, hopeful, proud, solemn/majestic, ominous, mysterious, ...), written for this project from
common English usage. Each word belongs to exactly one cluster. Word forms are normalised by
`VARIANTS` (irregular nouns and adjectives: "joy" -> "joyful", "anxiety" -> "anxious") and a few
suffix rules ("happiness", "angrily", "amazement", "terrifying", plurals), which only apply when
they land on a known word. Any other word is its own cluster.

Limits: the map is small and English only, so rare synonyms count as misses and a few
border cases are forced into one cluster ("tense" and "anxious" are fear; "upset" is sadness;
"ominous" is not fear). Extraction from free sentences keeps known words only and skips a word
up to two words after a negation in the same clause ("not sad", "isn't very angry"), so "not
only sad" loses "sad" too; irony and hedges are read literally.
Absolute numbers are therefore not comparable with EMER's GPT-grouped scores; comparisons
between runs scored by this module are.
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence

EMOTION_CLUSTERS: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "joyful", "cheerful", "glad", "delighted", "pleased", "contented", "merry",
              "jolly", "joyous", "elated", "blissful", "gleeful", "upbeat", "lighthearted",
              "light-hearted", "satisfied"),
    "sad": ("sad", "sorrowful", "melancholic", "melancholy", "gloomy", "unhappy", "depressed",
            "downcast", "mournful", "grieving", "heartbroken", "miserable", "dejected",
            "despondent", "tearful", "upset", "distressed", "somber", "sombre", "doleful"),
    "angry": ("angry", "furious", "irritated", "annoyed", "enraged", "mad", "irate", "hostile",
              "resentful", "frustrated", "outraged", "indignant", "aggressive", "livid", "irked"),
    "fearful": ("fearful", "afraid", "scared", "frightened", "terrified", "horrified", "anxious",
                "nervous", "tense", "worried", "uneasy", "apprehensive", "panicked", "alarmed",
                "disturbed", "unsettled", "suspenseful", "jittery", "petrified"),
    "surprised": ("surprised", "astonished", "amazed", "shocked", "startled", "stunned",
                  "astounded", "awed", "awestruck", "dumbfounded"),
    "disgusted": ("disgusted", "revolted", "repulsed", "nauseated", "sickened", "appalled"),
    "contemptuous": ("contemptuous", "scornful", "disdainful", "mocking", "sarcastic", "sneering"),
    "calm": ("calm", "peaceful", "relaxed", "serene", "tranquil", "soothing", "placid", "restful",
             "mellow", "meditative", "dreamy", "untroubled"),
    "neutral": ("neutral", "indifferent", "impassive", "unemotional", "detached", "expressionless"),
    "excited": ("excited", "energetic", "lively", "thrilling", "thrilled", "exhilarated",
                "enthusiastic", "eager", "vibrant", "ecstatic", "euphoric", "exuberant",
                "rousing"),
    "tender": ("tender", "loving", "affectionate", "caring", "romantic", "gentle",
               "heartwarming", "touching", "touched", "compassionate", "sympathetic",
               "warmhearted", "intimate"),
    "nostalgic": ("nostalgic", "wistful", "sentimental", "reminiscent", "longing", "yearning",
                  "bittersweet"),
    "lonely": ("lonely", "lonesome", "isolated", "abandoned", "forlorn", "desolate"),
    "hopeful": ("hopeful", "optimistic", "encouraged", "uplifting", "uplifted", "inspired",
                "inspiring"),
    "proud": ("proud", "triumphant", "confident", "victorious", "self-assured", "assertive"),
    "bored": ("bored", "uninterested", "monotonous", "tedious", "listless"),
    "confused": ("confused", "puzzled", "perplexed", "bewildered", "baffled", "uncertain",
                 "unsure", "disoriented"),
    "solemn": ("solemn", "majestic", "grandiose", "epic", "stately", "dignified", "reverent",
               "noble", "ceremonious", "serious", "stern", "heroic"),
    "disappointed": ("disappointed", "dissatisfied", "discouraged", "disheartened",
                     "disillusioned"),
    "ashamed": ("ashamed", "guilty", "remorseful", "regretful", "repentant"),
    "embarrassed": ("embarrassed", "awkward", "shy", "sheepish", "bashful", "self-conscious"),
    "tired": ("tired", "exhausted", "weary", "fatigued", "sleepy", "drained", "lethargic"),
    "relieved": ("relieved", "reassured"),
    "grateful": ("grateful", "thankful", "appreciative"),
    "curious": ("curious", "interested", "intrigued", "inquisitive", "fascinated"),
    "determined": ("determined", "resolute", "steadfast", "persistent", "unwavering"),
    "mysterious": ("mysterious", "enigmatic", "mystical", "otherworldly"),
    "ominous": ("ominous", "menacing", "sinister", "eerie", "creepy", "spooky", "foreboding",
                "threatening"),
    "intense": ("intense", "dramatic", "passionate", "fervent", "vehement"),
    "playful": ("playful", "humorous", "funny", "whimsical", "amused", "comical", "mischievous",
                "silly", "teasing"),
    "jealous": ("jealous", "envious"),
    "despairing": ("despairing", "hopeless", "desperate", "helpless", "powerless"),
    "suspicious": ("suspicious", "doubtful", "skeptical", "distrustful", "wary"),
}

# Irregular forms -> a word of a cluster (regular ones are left to SUFFIX_RULES).
VARIANTS: dict[str, str] = {
    "joy": "joyful", "glee": "gleeful", "delight": "delighted", "pleasure": "pleased",
    "bliss": "blissful", "cheery": "cheerful", "elation": "elated", "satisfaction": "satisfied",
    "sorrow": "sorrowful", "grief": "grieving", "misery": "miserable", "melancholia": "melancholic",
    "depression": "depressed", "depressing": "depressed", "saddened": "sad", "saddening": "sad",
    "heartbreak": "heartbroken", "heartbreaking": "heartbroken", "distress": "distressed",
    "anger": "angry", "fury": "furious", "rage": "enraged", "irritation": "irritated",
    "annoyance": "annoyed", "frustration": "frustrated", "outrage": "outraged",
    "hostility": "hostile", "resentment": "resentful", "aggression": "aggressive",
    "indignation": "indignant", "infuriated": "furious", "infuriating": "furious",
    "fear": "fearful", "terror": "terrified", "fright": "frightened", "horror": "horrified",
    "panic": "panicked", "anxiety": "anxious", "worry": "worried", "dread": "fearful",
    "tension": "tense", "unease": "uneasy", "apprehension": "apprehensive", "suspense": "suspenseful",
    "scary": "scared", "unsettling": "unsettled", "disturbing": "disturbed",
    "surprise": "surprised", "shock": "shocked", "awe": "awed",
    "disgust": "disgusted", "revulsion": "revolted", "repulsion": "repulsed",
    "contempt": "contemptuous", "scorn": "scornful", "disdain": "disdainful",
    "sarcasm": "sarcastic", "mockery": "mocking",
    "peace": "peaceful", "relaxation": "relaxed", "serenity": "serene",
    "tranquility": "tranquil", "tranquillity": "tranquil",
    "calming": "calm", "calmed": "calm",
    "neutrality": "neutral", "indifference": "indifferent", "detachment": "detached",
    "energy": "energetic", "enthusiasm": "enthusiastic", "thrill": "thrilled",
    "exhilaration": "exhilarated", "exhilarating": "exhilarated", "ecstasy": "ecstatic",
    "euphoria": "euphoric", "exuberance": "exuberant", "vibrancy": "vibrant",
    "love": "loving", "affection": "affectionate", "compassion": "compassionate",
    "sympathy": "sympathetic", "romance": "romantic", "intimacy": "intimate",
    "warm-hearted": "warmhearted",
    "nostalgia": "nostalgic", "sentiment": "sentimental",
    "isolation": "isolated", "desolation": "desolate",
    "hope": "hopeful", "optimism": "optimistic", "inspiration": "inspired",
    "pride": "proud", "triumph": "triumphant", "confidence": "confident", "victory": "victorious",
    "boredom": "bored", "tedium": "tedious",
    "confusion": "confused", "uncertainty": "uncertain", "disorientation": "disoriented",
    "solemnity": "solemn", "majesty": "majestic", "grandeur": "grandiose", "reverence": "reverent",
    "dignity": "dignified", "nobility": "noble", "heroism": "heroic",
    "dissatisfaction": "dissatisfied",
    "shame": "ashamed", "guilt": "guilty", "remorse": "remorseful", "regret": "regretful",
    "exhaustion": "exhausted", "fatigue": "fatigued", "lethargy": "lethargic",
    "relief": "relieved", "gratitude": "grateful", "appreciation": "appreciative",
    "curiosity": "curious", "fascination": "fascinated",
    "determination": "determined", "persistence": "persistent",
    "intensity": "intense", "passion": "passionate", "fervor": "fervent", "fervour": "fervent",
    "humor": "humorous", "humour": "humorous", "fun": "playful", "mischief": "mischievous",
    "jealousy": "jealous", "envy": "envious",
    "despair": "despairing", "desperation": "desperate",
    "suspicion": "suspicious", "doubt": "doubtful", "skepticism": "skeptical",
    "scepticism": "skeptical", "sceptical": "skeptical", "distrust": "distrustful",
    "menace": "menacing",
}

# (suffix, replacement), tried in order; a rule applies only if it lands on a known word.
SUFFIX_RULES: tuple[tuple[str, str], ...] = (
    ("iness", "y"), ("ness", ""), ("ily", "y"), ("ly", ""), ("ement", "ed"), ("ment", "ed"),
    ("ment", ""),
    ("ying", "ied"), ("ing", "ed"), ("ing", ""), ("ies", "y"), ("s", ""),
)
NEGATIONS = frozenset({"not", "no", "never", "neither", "nor", "without", "hardly", "barely"})
NEGATION_WINDOW = 2  # a word is negated if one of the two words before it (same clause) is one
NOT_EMOTIONS = frozenset({"interesting"})  # forms the suffix rules would misread ("interested")
_TOKEN = re.compile(r"[a-z]+(?:['-][a-z]+)*")
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\n]")
_REFERENCE_SEPARATORS = re.compile(r"[,;]")
_QUOTES_AND_BRACKETS = "[]()'\"“”‘’ \t"

CLUSTER_OF: dict[str, str] = {w: name for name, words in EMOTION_CLUSTERS.items() for w in words}


def _known(word: str) -> str | None:
    """The cluster word `word` is, or names through VARIANTS; None if neither."""
    if word in CLUSTER_OF:
        return word
    return VARIANTS.get(word)


def normalize_word(word: str) -> str:
    """Lower case, no surrounding punctuation, and the cluster word of a known form
    ("Happiness!" -> "happy"); an unknown word comes back cleaned but otherwise as it is."""
    w = word.strip().lower().replace("’", "'")
    w = re.sub(r"^[^a-z]+|[^a-z]+$", "", w)
    if w in NOT_EMOTIONS:
        return w
    if (known := _known(w)) is not None:
        return known
    for suffix, replacement in SUFFIX_RULES:
        if w.endswith(suffix) and len(w) > len(suffix) + 2:
            if (known := _known(w[:-len(suffix)] + replacement)) is not None:
                return known
    return w


def cluster_of(word: str) -> str:
    """The synonym cluster of a word; an unknown word is its own cluster ("" for no word)."""
    w = normalize_word(word)
    return CLUSTER_OF.get(w, w)


def is_emotion_word(word: str) -> bool:
    """Whether the word (in any known form) belongs to the shipped map."""
    return normalize_word(word) in CLUSTER_OF


def _negated(tokens: Sequence[str], i: int) -> bool:
    before = tokens[max(0, i - NEGATION_WINDOW):i]
    return any(t in NEGATIONS or t.endswith("n't") for t in before)


def extract_emotion_words(text: str | None) -> list[str]:
    """The emotion words of a reply (a list such as "joyful, excited and tense" or a free
    sentence), normalised, in order of first occurrence, without repeats; negated ones
    ("not sad", "isn't very angry") are skipped."""
    words: list[str] = []
    for clause in _CLAUSE_BREAK.split((text or "").lower().replace("’", "'")):
        tokens = _TOKEN.findall(clause)
        for i, token in enumerate(tokens):
            w = normalize_word(token)
            if w in CLUSTER_OF and w not in words and not _negated(tokens, i):
                words.append(w)
    return words


def _clusters(words: Sequence[str]) -> list[str]:
    """The clusters of the non-empty words, in order of first occurrence, without repeats (an
    unknown phrase of several words stands for the known emotion words it contains, if any)."""
    if isinstance(words, str):
        raise TypeError(f"expected a list of words, got the string {words!r}")
    out: list[str] = []
    for w in words:
        c = cluster_of(w)
        inner = extract_emotion_words(w) if c not in EMOTION_CLUSTERS and " " in c else []
        for c in [CLUSTER_OF[x] for x in inner] or [c]:
            if c and c not in out:
                out.append(c)
    return out


def score_item(predicted_words: Sequence[str], reference_words: Sequence[str],
               name: str = "?") -> dict:
    """EMER's set-level scores of one item at the cluster level:
    {"accuracy", "recall", "empty", "predicted_clusters", "reference_clusters", "matched"}."""
    reference = _clusters(reference_words)
    if not reference:
        raise ValueError(f"item {name!r}: no reference emotion words, so it cannot be scored")
    predicted = _clusters(predicted_words)
    matched = [c for c in predicted if c in reference]
    return {"accuracy": len(matched) / len(predicted) if predicted else 0.0,
            "recall": len(matched) / len(reference),
            "empty": not predicted,
            "predicted_clusters": predicted, "reference_clusters": reference, "matched": matched}


def score(items: Iterable[Mapping]) -> dict:
    """Mean accuracy and recall over items ({"name", "predicted", "reference"} each), their
    average ("avg", EMER's headline number), n and n_empty (empty predictions score 0)."""
    scored = [score_item(it["predicted"], it["reference"], it.get("name", "?")) for it in items]
    if not scored:
        raise ValueError("no items to score")
    n = len(scored)
    accuracy = sum(s["accuracy"] for s in scored) / n
    recall = sum(s["recall"] for s in scored) / n
    return {"accuracy": accuracy, "recall": recall, "avg": (accuracy + recall) / 2, "n": n,
            "n_empty": sum(s["empty"] for s in scored)}


# ---- EMER-style label files -------------------------------------------------------------------

NAME_KEYS = ("name", "id", "clip")
MEDIA_KEYS = ("media", "path", "video", "audio", "clip", "file")
REFERENCE_KEYS = ("reference", "references", "labels", "label", "emotions", "openset")


class EmerFileError(ValueError):
    """A label file that cannot be read; the message names the file and line."""


def split_reference(value) -> list[str]:
    """Reference words from a list of strings or a comma/semicolon-separated string (brackets and
    quotes around words are dropped, so "['happy', 'sad']" works); raises TypeError otherwise."""
    if isinstance(value, str):
        parts = _REFERENCE_SEPARATORS.split(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value
    else:
        raise TypeError(f"reference words must be a list of strings or a comma/semicolon-separated "
                        f"string, got {value!r}")
    words = [p.strip(_QUOTES_AND_BRACKETS).lower() for p in parts]
    return [w for w in words if w]


def _first(row: Mapping, keys: Sequence[str]):
    for k in keys:
        v = row.get(k)
        if v not in (None, ""):
            return v
    return None


def _item(row, where: str, folder: str) -> dict:
    """One label row as {"name", "media", "reference", "where"}; raises EmerFileError."""
    if not isinstance(row, Mapping):
        raise EmerFileError(f"{where}: expected an object, got {type(row).__name__}")
    row = {str(k).strip().lower(): v for k, v in row.items()}
    name, media = _first(row, NAME_KEYS), _first(row, MEDIA_KEYS)
    if name is None and media is None:
        raise EmerFileError(f"{where}: no clip: one of {sorted(set(NAME_KEYS + MEDIA_KEYS))} is needed")
    raw = _first(row, REFERENCE_KEYS)
    if raw is None:
        raise EmerFileError(f"{where}: no reference words: one of {list(REFERENCE_KEYS)} is needed")
    try:
        reference = split_reference(raw)
    except TypeError as e:
        raise EmerFileError(f"{where}: {e}") from None
    if not reference:
        raise EmerFileError(f"{where}: the reference list is empty")
    media = str(media if media is not None else name)
    return {"name": str(name if name is not None else media),
            "media": os.path.normpath(os.path.join(folder, media)), "reference": reference,
            "where": where}


def _json_array(text: str, path: str) -> list[tuple[int, object]]:
    """(line, element) of each element of a top-level JSON array."""
    decoder, ws = json.JSONDecoder(), re.compile(r"\s*")
    i = ws.match(text, 0).end()
    if not text.startswith("[", i):
        raise EmerFileError(f"{path}:{text.count(chr(10), 0, i) + 1}: a JSON label file must be a "
                            "list of objects")
    elements, i = [], ws.match(text, i + 1).end()
    while not text.startswith("]", i):
        line = text.count("\n", 0, i) + 1
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise EmerFileError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        elements.append((line, value))
        i = ws.match(text, i).end()
        if text.startswith(",", i):
            i = ws.match(text, i + 1).end()
        elif not text.startswith("]", i):
            raise EmerFileError(f"{path}:{text.count(chr(10), 0, i) + 1}: expected ',' or ']' "
                                "between list elements")
    return elements


def _jsonl_rows(text: str, path: str) -> list[tuple[int, object]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), 1):
        if raw.strip():
            try:
                rows.append((line, json.loads(raw)))
            except json.JSONDecodeError as e:
                raise EmerFileError(f"{path}:{line}: invalid JSON ({e.msg})") from None
    return rows


def _csv_rows(text: str, path: str) -> list[tuple[int, object]]:
    reader = csv.DictReader(text.splitlines(keepends=True), skipinitialspace=True)
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if not header:
        raise EmerFileError(f"{path}:1: no header row")
    if not set(header) & set(NAME_KEYS + MEDIA_KEYS) or not set(header) & set(REFERENCE_KEYS):
        raise EmerFileError(f"{path}:1: the header {header} needs a clip column (one of "
                            f"{sorted(set(NAME_KEYS + MEDIA_KEYS))}) and a reference column "
                            f"(one of {list(REFERENCE_KEYS)})")
    rows = []
    for row in reader:
        if None in row:
            raise EmerFileError(f"{path}:{reader.line_num}: more fields than the header has "
                                "(quote reference lists that contain commas)")
        if any((v or "").strip() for v in row.values()):
            rows.append((reader.line_num, row))
    return rows


def load_emer(path: str) -> list[dict]:
    """The items of an EMER-style label file (.jsonl, .json or .csv), each {"name", "media",
    "reference", "where"}; media paths are relative to the file's folder unless absolute (a
    row without a media column uses its name as the path). Any bad row raises `EmerFileError`
    naming the file, the line and the problem."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as e:
        raise EmerFileError(f"{path}: cannot read ({e.strerror or e})") from None
    ext = os.path.splitext(path)[1].lower()
    readers = {".jsonl": _jsonl_rows, ".json": _json_array, ".csv": _csv_rows}
    if ext not in readers:
        raise EmerFileError(f"{path}: unknown label file type {ext!r} (expected .jsonl, .json or .csv)")
    folder = os.path.dirname(os.path.abspath(path))
    items, seen = [], {}
    for line, row in readers[ext](text, path):
        item = _item(row, f"{path}:{line}", folder)
        if item["name"] in seen:
            raise EmerFileError(f"{path}:{line}: clip {item['name']!r} repeats line {seen[item['name']]}")
        seen[item["name"]] = line
        items.append(item)
    if not items:
        raise EmerFileError(f"{path}: no items")
    return items


# ---- a benchmark run: replies -> per-item predictions -> summary --------------------------------

EMER_PROMPT = "Which emotions does this clip convey? Answer with a list of emotion words."


def predictions(items: Sequence[Mapping], responses: Sequence[str | None],
                problems: Sequence[str | None]) -> list[dict]:
    """One scored record per item from its reply (None, with a `problem`, when its media could
    not be used: an empty prediction, scored 0 and kept)."""
    if not len(items) == len(responses) == len(problems):
        raise ValueError(f"{len(items)} items, {len(responses)} replies, {len(problems)} problems")
    out = []
    for item, response, problem in zip(items, responses, problems):
        words = extract_emotion_words(response)
        out.append({"name": item["name"], "media": item["media"], "reference": list(item["reference"]),
                    "response": response, "predicted": words, "problem": problem,
                    **score_item(words, item["reference"], item["name"])})
    return out


def summarize(preds: Sequence[Mapping], model: str) -> dict:
    """`score` of the predictions plus the model name and the count of unreadable media."""
    return {"benchmark": "emer", "model": model, **score(preds),
            "unreadable_media": sum(p.get("problem") is not None for p in preds),
            "clusters": "shipped synonym map (vaemotion_jax/evaluation/emer.py)"}


def format_summary(summary: Mapping) -> str:
    """A short table of one summary, in percent."""
    s = summary
    return ("EMER open-vocabulary emotions (%, synonym clusters of the shipped map)\n"
            f"  {'model':<12} {'avg':>6} {'accuracy':>9} {'recall':>7} {'n':>6} {'empty':>6} "
            f"{'unreadable':>10}\n"
            f"  {s['model']:<12} {100 * s['avg']:6.2f} {100 * s['accuracy']:9.2f} "
            f"{100 * s['recall']:7.2f} {s['n']:6d} {s['n_empty']:6d} {s['unreadable_media']:10d}")


def write_results(path: str, summary: Mapping, preds: Sequence[Mapping], settings: Mapping) -> None:
    """{"summary", "settings", "predictions"} as one JSON file, written atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"summary": dict(summary), "settings": dict(settings), "predictions": list(preds)},
                  f, ensure_ascii=False, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
