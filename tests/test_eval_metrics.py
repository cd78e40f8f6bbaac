"""Error rates, normalization, LID matching, partial stability and the streaming clock, on hand-checked cases."""
from __future__ import annotations

import numpy as np
import pytest

from babelcast.eval.metrics import (
    Counts, align, base_language, error_rate, normalize, partial_changes, same_language, score, units, uses_cer,
)
from babelcast.eval.streaming import decode_partials, encode_partials, simulate, speech_onset_ms


# ---------------------------------------------------------------- normalization and units


def test_english_normalizer_is_whispers():
    assert normalize("Hello, World!", "en-US") == "hello world"
    assert normalize("Mr. Smith paid twenty-five dollars.", "en-US") == "mister smith paid $25"
    assert normalize("It's colour.", "en-GB") == "it is color"


def test_basic_normalizer_keeps_letters_and_diacritics():
    assert normalize("Über den Wolken, sagte er.", "de-DE") == "über den wolken sagte er"
    assert normalize("¿Qué tal?", "es-ES") == "qué tal"
    assert normalize("Привет, мир!", "ru-RU") == "привет мир"
    assert normalize("[noise] (um) ok", "fr-FR") == "ok"  # bracketed and parenthesized spans go


def test_marks_are_preserved_for_thai():
    # Whisper's default basic normalizer would turn the vowel marks (category M) into spaces.
    assert normalize("สวัสดีครับ", "th-TH") == "สวัสดีครับ"


def test_cer_languages_and_units():
    assert [uses_cer(x) for x in ("zh-CN", "ja-JP", "ko-KR", "th-TH", "en-US", None)] == [True] * 4 + [False] * 2
    assert uses_cer("de-DE", cer_langs=("de",))
    assert units("今天天气很好。", "zh-CN") == list("今天天气很好")
    assert units("こんにちは、世界。", "ja-JP") == list("こんにちは世界")  # spaces never count
    assert units("今天 天气。", "zh-CN", raw=True) == list("今天天气。")
    assert units("The cat, sat.", "en-US", raw=True) == ["The", "cat,", "sat."]
    assert base_language("pt_BR") == "pt" and base_language(None) == ""


# ---------------------------------------------------------------- error counts


def test_wer_hand_checked():
    c = score("The cat sat on the mat.", "the cat sat on mat", "en-US")
    assert c == Counts(substitutions=0, deletions=1, insertions=0, ref=6)
    assert c.rate == pytest.approx(1 / 6)
    c = score("a b c d", "a x c d e", "en-US")
    assert (c.substitutions, c.deletions, c.insertions, c.ref) == (1, 0, 1, 4)


def test_raw_wer_counts_case_and_punctuation():
    assert score("The cat sat.", "the cat sat", "en-US").errors == 0
    raw = score("The cat sat.", "the cat sat", "en-US", raw=True)
    assert (raw.substitutions, raw.ref) == (2, 3)  # "The"/"the" and "sat."/"sat"


def test_cer_hand_checked():
    c = score("今天天气很好。", "今天天气不好", "zh-CN")
    assert (c.substitutions, c.deletions, c.insertions, c.ref) == (1, 0, 0, 6)
    raw = score("今天天气很好。", "今天天气不好", "zh-CN", raw=True)
    assert (raw.substitutions, raw.deletions, raw.ref) == (1, 1, 7)  # the 。 counts when raw
    ko = score("안녕하세요, 세계!", "안녕하세요 세게", "ko-KR")
    assert (ko.errors, ko.ref) == (1, 7)


def test_empty_references_and_hypotheses():
    assert align([], ["a", "b"]) == Counts(insertions=2, ref=0)
    assert align(["a", "b"], []) == Counts(deletions=2, ref=2)
    assert align([], []) == Counts()
    assert Counts().rate is None
    assert score("", "", "zh-CN").rate is None
    # corpus level: an empty reference adds its insertions to the errors, nothing to the reference
    assert error_rate([("a b c", "a b c"), ("", "x")], "en-US") == pytest.approx(1 / 3)
    assert error_rate([("", "")], "en-US") is None
    assert error_rate([("!?", "")], "de-DE") is None  # normalizes to nothing


def test_language_id_matching():
    assert same_language("es-US", "es-ES")
    assert same_language("de-DE", "de-DE")
    assert not same_language("en-US", "de-DE")
    assert not same_language(None, "de-DE")


# ---------------------------------------------------------------- partial stability


def test_partial_changes_counts_extended_and_replaced_words():
    # "hel" → "hello": changed; "wor" → "world": changed; "world" → "world.": changed
    assert partial_changes(["hel", "hello wor", "hello world"], "hello world.") == (5, 3)
    # append-only partials whose words never change
    assert partial_changes(["one", "one two", "one two three"], "one two three") == (6, 0)
    # a later partial retracts: "a b c" → "a x" changes b and c, and the final keeps "a x"
    assert partial_changes(["a b c", "a x"], "a x y") == (5, 2)
    # a word changed only by the final counts for every partial that showed it, and so do the words
    # after it (the display is re-rendered from the first changed word): b; b and c
    assert partial_changes(["a b", "a b c"], "a B c") == (5, 3)
    assert partial_changes([], "anything") == (0, 0)


def test_partial_changes_matches_brute_force():
    rng = np.random.default_rng(0)
    vocab = ["a", "b", "c"]
    for _ in range(200):
        seq = [" ".join(rng.choice(vocab, rng.integers(0, 5))) for _ in range(rng.integers(1, 6))]
        final = " ".join(rng.choice(vocab, rng.integers(0, 5)))
        shown = changed = 0
        texts = [s.split() for s in seq] + [final.split()]
        for k, words in enumerate(texts[:-1]):
            stable = min(_lcp(words, later) for later in texts[k + 1 :])
            shown += len(words)
            changed += len(words) - stable
        assert partial_changes(seq, final) == (shown, changed)


def _lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# ---------------------------------------------------------------- streaming clock


def test_speech_onset():
    audio = np.zeros(16000, dtype=np.float32)
    audio[8000:] = 0.5 * np.sin(np.arange(8000) * 0.3)
    assert speech_onset_ms(audio) == pytest.approx(500.0)
    assert speech_onset_ms(np.zeros(1000, dtype=np.float32)) == 0.0
    assert speech_onset_ms(np.zeros(10, dtype=np.float32)) == 0.0


class _Partial:
    def __init__(self, text):
        self.text, self.tokens, self.language = text, [], None


class _Final:
    def __init__(self, text):
        self.text, self.language, self.trained_latency = text, None, True


class _Session:
    """Shows one word per 160 ms of audio fed, the word after 480 ms is first shown as 'wo'."""

    def __init__(self):
        self.samples = 0

    def _words(self):
        n = self.samples // 2560
        return ["w%d" % i for i in range(n)]

    def accept_audio(self, samples):
        self.samples += len(samples)
        words = self._words()
        if self.samples % 2560 and len(words) >= 3:
            words = words + ["wo"]
        return _Partial(" ".join(words))

    def flush(self):
        return _Final(" ".join(self._words() + ["end."]))


class _Recognizer:
    def stream(self, language="auto", latency_ms=80):
        return _Session()


def test_simulate_clocks_and_stability():
    audio = np.zeros(16000, dtype=np.float32)
    audio[4000:] = 0.3  # speech starts at 250 ms
    ticks = iter(np.arange(0, 1000, 0.001))  # a fake clock: each call advances 1 ms
    run = simulate(_Recognizer(), audio, "auto", 80, clock=lambda: next(ticks))
    # pieces of 1280 samples (80 ms): the first word shows after 2 pieces = 160 ms of audio
    assert run.speech_start_ms == pytest.approx(250.0)
    assert run.events[0] == (160.0, "w0")
    assert run.ttft_algo_ms == 0.0  # shown before the detected start of speech: clamped
    assert run.ttft_compute_ms == pytest.approx(1.0)
    assert run.final_algo_ms == 0.0
    assert run.final_compute_ms == pytest.approx(2.0)  # the last piece + flush, 1 ms each on the fake clock
    assert run.final.text.endswith("end.")
    assert run.words_shown > 0 and 0 < run.words_changed < run.words_shown  # the 'wo' words changed
    record = run.to_record()
    assert record["partials"][0] == [160.0, 0, "w0"] and record["partial_words_changed"] == run.words_changed
    assert decode_partials(record["partials"]) == run.events


def test_partials_encoding_round_trip():
    events = [(80.0, "Hel"), (160.0, "Hello wor"), (240.0, "Hello world."), (320.0, "Hello")]
    encoded = encode_partials(events)
    assert encoded == [[80.0, 0, "Hel"], [160.0, 3, "lo wor"], [240.0, 9, "ld."], [320.0, 5, ""]]
    assert decode_partials(encoded) == events
