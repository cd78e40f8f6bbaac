"""Sentence extraction from fortune files and the hash-based train/test split."""
from __future__ import annotations

import pytest

from babelcast.data import split as split_mod
from babelcast.data import text_sources as ts
from babelcast.data.split import (
    TEST_SENTENCE_SHARE, VARIANTS, sentence_key, sentence_split, split_variants, stable_hash, voice_split,
)


def test_read_fortune_file_cleans_entries(tmp_path):
    path = tmp_path / "quotes"
    path.write_text(
        "Die Zeit ist der beste Lehrer.\nLeider tötet sie ihre Schüler.\n\t\t-- Sprichwort\n%\n"
        "\x1b[32mColoured\x1b[m text with a hyph-\nenated word.\n%\n%\n"
        "Last entry without a trailing separator.\n",
        encoding="utf-8",
    )
    assert ts.read_fortune_file(path) == [
        "Die Zeit ist der beste Lehrer. Leider tötet sie ihre Schüler.",
        "Coloured text with a hyphenated word.",
        "Last entry without a trailing separator.",
    ]


def test_split_sentences():
    assert ts.split_sentences("Eins ist gut. Zwei? «Drei» ist mehr! vier.", "latin") == [
        "Eins ist gut.", "Zwei?", "«Drei» ist mehr! vier."]
    assert ts.split_sentences("人生得意须尽欢，莫使金樽空对月。天生我材必有用！", "han") == [
        "人生得意须尽欢，莫使金樽空对月。", "天生我材必有用！"]


@pytest.mark.parametrize("sentence, ok", [
    ("Money can't buy love, but it improves your bargaining position.", True),
    ("Kein Mensch ist so schlecht wie sein Ruf.", True),
    ("There are 10 kinds of people.", False),  # digits
    ("Visit http://example.com today.", False),  # URL characters
    ("The IBM machine broke again.", False),  # acronym
    ("Short one.", False),  # too short
    ("lower case start is odd.", False),
    ("No terminal punctuation here", False),
    ('He said "hello and left.', False),  # unbalanced quote
    ("Q: What is this thing?", False),  # speaker label
    ("This (aside) is bracketed.", False),
    ("Soy el único que lo tiene. ¡¡ Y lo pierdo !!", False),  # doubled and detached punctuation
])
def test_is_usable_latin(sentence, ok):
    assert ts.is_usable(sentence, "latin") is ok


def test_is_usable_rejects_english_in_other_languages_and_checks_scripts():
    assert not ts.is_usable("What is the meaning of this?", "latin", english=False)
    assert ts.is_usable("Что такое хорошо и что такое плохо?", "cyrillic")
    assert not ts.is_usable("Что такое OK и что такое плохо?", "cyrillic")
    assert ts.is_usable("人生得意须尽欢，莫使金樽空对月。", "han")
    assert not ts.is_usable("從孫子仲，平陳與宋。", "han")  # traditional characters: not GB 2312
    assert not ts.is_usable("子曰：“学而时习之，不亦说乎？", "han")  # unbalanced quote
    assert not ts.is_usable("短句。", "han")
    assert not ts.is_usable("Vide le luci e penso' alle notti.", "latin", english=False, language="it")
    assert ts.is_usable("Aspetta un po' qui con me.", "latin", english=False, language="it")


def test_sentence_split_is_a_function_of_the_text_only():
    assert sentence_key("  Hello   World. ") == "hello world."
    assert sentence_split("Hello World.") == sentence_split("hello   world.")
    assert stable_hash("a", 1) == stable_hash("a", 1) != stable_hash("a", 2)
    texts = [f"Sentence number {i} here." for i in range(4000)]
    share = sum(sentence_split(t) == "test" for t in texts) / len(texts)
    assert abs(share - TEST_SENTENCE_SHARE) < 0.03


def test_voice_split_is_disjoint_and_covers_all_variants():
    test, train = set(split_variants("test")), set(split_variants("train"))
    assert not test & train and test | train == set(VARIANTS)
    assert len(test) == round(split_mod.TEST_VOICE_SHARE * len(VARIANTS))
    assert all(voice_split(v) == "test" for v in test)
    with pytest.raises(ValueError):
        split_variants("dev")


def test_sources_cover_six_languages():
    languages = {locale.split("-")[0] for locale in ts.SOURCES}
    assert len(languages) >= 6
    for source in ts.SOURCES.values():
        assert source.package.startswith("fortunes")


@pytest.mark.skipif(not ts.available_locales(), reason="no fortunes package installed")
def test_real_sentences_are_clean_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    locale = ts.available_locales()[0]
    ts.load_sentences.cache_clear()
    first = ts.load_sentences(locale)
    assert len(first) > 100
    assert list((tmp_path / "babelcast" / "sentences").glob(f"{locale}-*.json"))
    ts.load_sentences.cache_clear()
    assert ts.load_sentences(locale) == first  # read back from the disk cache
    script = ts.SOURCES[locale].script
    assert all(ts.is_usable(s.text, script, english=locale.startswith("en")) for s in first[:500])
    assert len({s.text.casefold() for s in first}) == len(first)
