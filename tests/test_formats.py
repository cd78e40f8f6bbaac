"""Rendering transcripts as text, JSON, SRT and WebVTT."""
from __future__ import annotations

import json

import pytest

from babelcast.decoding.result import Transcript, Word
from babelcast.formats import Cue, build_cues, format_timestamp, join_words, to_json_dict, to_srt, to_text, to_vtt


def words(*spec: tuple[str, float, float]) -> list[Word]:
    """Words from (text, start, end) with confidence 0.9."""
    return [Word(w, start, end, 0.9) for w, start, end in spec]


def transcript(ws: list[Word], text: str | None = None, duration_s: float = 10.0) -> Transcript:
    """A transcript whose text is its words joined, unless given."""
    return Transcript(
        text=text if text is not None else join_words(ws),
        tokens=[5, 6, 7],
        language="en-US",
        words=ws,
        confidence=0.87654,
        latency_ms=560,
        mode="streaming",
        trained_latency=False,
        duration_s=duration_s,
    )


@pytest.mark.parametrize(
    "seconds, srt, vtt",
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (1.5, "00:00:01,500", "00:00:01.500"),
        (3661.007, "01:01:01,007", "01:01:01.007"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
        (-0.2, "00:00:00,000", "00:00:00.000"),
        (360000.0, "100:00:00,000", "100:00:00.000"),
    ],
)
def test_format_timestamp(seconds, srt, vtt):
    assert format_timestamp(seconds, ",") == srt
    assert format_timestamp(seconds, ".") == vtt


def test_cue_breaks_after_sentence_end_and_on_pause():
    ws = words(
        ("Hello", 0.0, 0.4), ("there.", 0.5, 0.9),  # sentence end
        ("How", 1.0, 1.2), ("are", 1.3, 1.5),  # pause of 1.0 s follows
        ("you?\"", 2.5, 2.9), ("Fine", 3.0, 3.4),  # sentence end inside a closing quote
    )
    assert build_cues(transcript(ws)) == [
        Cue(0.0, 0.9, "Hello there."),
        Cue(1.0, 1.5, "How are"),
        Cue(2.5, 2.9, 'you?"'),
        Cue(3.0, 3.4, "Fine"),
    ]


def test_pause_just_under_a_second_does_not_break():
    ws = words(("a", 0.0, 0.1), ("b", 1.09, 1.2))
    assert [c.text for c in build_cues(transcript(ws))] == ["a b"]


def test_cues_stay_within_42_characters():
    ws = [Word(f"word{i:02d}", i * 0.5, i * 0.5 + 0.4, 1.0) for i in range(20)]  # 6 chars each
    cues = build_cues(transcript(ws))
    assert all(len(c.text) <= 42 for c in cues)
    assert [len(c.text.split()) for c in cues] == [6, 6, 6, 2]
    assert " ".join(c.text for c in cues) == join_words(ws)
    assert cues[1].start_s == 3.0 and cues[1].end_s == 5.9


def test_cjk_words_join_without_spaces_and_break_at_ideographic_stop():
    ws = words(("你好", 0.0, 0.5), ("世界。", 0.5, 1.0), ("再见", 1.2, 1.6), ("！", 1.6, 1.7), ("ok", 1.8, 2.0))
    assert [c.text for c in build_cues(transcript(ws))] == ["你好世界。", "再见！", "ok"]
    assert join_words(words(("Hi", 0, 1), (",", 1, 1), ("Bob", 1, 2))) == "Hi, Bob"


def test_no_words_gives_one_cue_over_the_whole_duration():
    t = transcript([], text="bonjour tout le monde", duration_s=3.25)
    assert build_cues(t) == [Cue(0.0, 3.25, "bonjour tout le monde")]
    assert to_srt(t) == "1\n00:00:00,000 --> 00:00:03,250\nbonjour tout le monde\n"
    assert build_cues(transcript([], text="  ")) == []
    assert to_srt(transcript([], text="")) == ""
    assert to_vtt(transcript([], text="")) == "WEBVTT\n\n"


def test_srt_exact():
    t = transcript(words(("Hello", 0.0, 0.4), ("world.", 0.5, 1.0), ("Again", 2.25, 2.5)))
    assert to_srt(t) == (
        "1\n00:00:00,000 --> 00:00:01,000\nHello world.\n"
        "\n"
        "2\n00:00:02,250 --> 00:00:02,500\nAgain\n"
    )


def test_vtt_exact_and_escapes_markup():
    t = transcript(words(("<en-US>", 0.0, 0.1), ("Tom", 0.1, 0.4), ("&", 0.5, 0.6), ("Jerry.", 0.6, 1.0)))
    assert to_vtt(t) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n&lt;en-US&gt; Tom &amp; Jerry.\n"


def test_to_text_is_one_line():
    assert to_text(transcript([], text=" line one\nline two ")) == "line one line two"


def test_json_dict():
    t = transcript(words(("Hi", 0.12345, 0.5), ("there", 0.6, 1.0)))
    d = to_json_dict(t, "a.wav")
    assert json.loads(json.dumps(d)) == d
    assert d["source"] == "a.wav" and d["text"] == "Hi there" and d["tokens"] == [5, 6, 7]
    assert d["language"] == "en-US" and d["latency_ms"] == 560 and d["mode"] == "streaming"
    assert d["trained_latency"] is False and d["duration_s"] == 10.0 and d["confidence"] == 0.8765
    assert d["words"] == [
        {"word": "Hi", "start": 0.123, "end": 0.5, "confidence": 0.9},
        {"word": "there", "start": 0.6, "end": 1.0, "confidence": 0.9},
    ]


def test_punctuation_alone_is_an_empty_transcript():
    """Silence can decode to a lone '"' (the demo model): no letter or digit in any script, so no words."""
    import babelcast
    from babelcast.decoding.text import TextOptions, has_words, to_transcript

    assert not has_words('" . ,') and has_words("1") and has_words("日本") and has_words("ß")
    tok = babelcast.load_model(babelcast.DEFAULT_MODEL).tokenizer
    quote = tok.encode('"')
    for keep_tags in (False, True):
        t = to_transcript(tok, quote, list(range(len(quote))), [0.9] * len(quote), TextOptions(0.08, keep_tags))
        assert t.text == "" and t.tokens == [] and t.words == []
    word = tok.encode("Nein.")
    assert to_transcript(tok, word, list(range(len(word))), [0.9] * len(word), TextOptions(0.08)).text == "Nein."
