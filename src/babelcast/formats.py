"""Render Transcripts as plain text, JSON, SRT or WebVTT.

Subtitle cues are built from the word timestamps: a cue ends after
sentence-final punctuation, before a pause of a second or more, or before it
would grow past ~42 characters (one comfortable subtitle line).
"""
from __future__ import annotations

from dataclasses import dataclass

from babelcast.decoding.result import Transcript, Word

MAX_CUE_CHARS = 42
CUE_BREAK_PAUSE_S = 1.0
SENTENCE_END_CHARS = (".", "?", "!", "。", "？", "！")
_CLOSING_QUOTES = "\"'”’»)]」』）"
_ATTACH_LEFT_CHARS = ".,;:!?%)]}”’»。，、；：！？」』）"  # punctuation that takes no space before it
_NO_SPACE_SCRIPTS = (  # scripts written without spaces between words
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3000, 0x30FF),  # CJK punctuation, Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0xFF00, 0xFFEF),  # fullwidth forms
)


@dataclass(frozen=True)
class Cue:
    """One subtitle: a time span in seconds and its text."""

    start_s: float
    end_s: float
    text: str


def to_text(transcript: Transcript) -> str:
    """The transcript's text on one line (runs of whitespace, newlines included, become one space)."""
    return " ".join(transcript.text.split())


def to_json_dict(transcript: Transcript, source: str) -> dict:
    """A JSON-serializable dict of the transcript, tagged with its source (file name)."""
    return {
        "source": source,
        "text": transcript.text,
        "language": transcript.language,
        "duration_s": round(transcript.duration_s, 3),
        "confidence": round(transcript.confidence, 4),
        "latency_ms": transcript.latency_ms,
        "mode": transcript.mode,
        "trained_latency": transcript.trained_latency,
        "words": word_dicts(transcript.words),
        "tokens": list(transcript.tokens),
    }


def word_dicts(words: list[Word]) -> list[dict]:
    """Words as every JSON output gives them (CLI, WebSocket, OpenAI verbose_json): seconds to the ms."""
    return [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "confidence": round(w.confidence, 4)}
            for w in words]


def to_srt(transcript: Transcript) -> str:
    """SubRip subtitles: numbered cues with HH:MM:SS,mmm timestamps."""
    blocks = [
        f"{i}\n{format_timestamp(c.start_s, ',')} --> {format_timestamp(c.end_s, ',')}\n{c.text}\n"
        for i, c in enumerate(build_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT subtitles: a header then cues with HH:MM:SS.mmm timestamps."""
    blocks = [
        f"{format_timestamp(c.start_s, '.')} --> {format_timestamp(c.end_s, '.')}\n{_escape_vtt(c.text)}\n"
        for c in build_cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def format_timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """Format seconds as HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (VTT), rounded to the millisecond."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest_ms = divmod(total_ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    secs, ms = divmod(rest_ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def build_cues(transcript: Transcript) -> list[Cue]:
    """Group the transcript's words into cues; one whole-duration cue when it has text but no words."""
    words = [w for w in transcript.words if w.word.strip()]
    if not words:
        text = to_text(transcript)
        return [Cue(0.0, transcript.duration_s, text)] if text else []
    cues: list[Cue] = []
    current: list[Word] = []
    for word in words:
        if current and _starts_new_cue(current, word):
            cues.append(_make_cue(current))
            current = []
        current.append(word)
    cues.append(_make_cue(current))
    return cues


def join_words(words: list[Word]) -> str:
    """Join words with spaces, except inside space-less scripts (CJK, Thai...) and before punctuation."""
    text = ""
    for word in words:
        piece = word.word.strip()
        if not piece:
            continue
        if text and _needs_space(text[-1], piece[0]):
            text += " "
        text += piece
    return text


def _starts_new_cue(current: list[Word], word: Word) -> bool:
    """Whether `word` must open a new cue rather than extend `current`."""
    last = current[-1]
    if last.word.strip().rstrip(_CLOSING_QUOTES).endswith(SENTENCE_END_CHARS):
        return True
    if word.start - last.end >= CUE_BREAK_PAUSE_S:
        return True
    return len(join_words(current + [word])) > MAX_CUE_CHARS


def _make_cue(words: list[Word]) -> Cue:
    """A cue spanning its words."""
    start_s = words[0].start
    return Cue(start_s, max(start_s, words[-1].end), join_words(words))


def _needs_space(left: str, right: str) -> bool:
    """Whether a space goes between two adjacent words ending/starting with these characters."""
    if right in _ATTACH_LEFT_CHARS:
        return False
    return not (_is_space_less(left) or _is_space_less(right))


def _is_space_less(char: str) -> bool:
    """Whether the character belongs to a script written without spaces between words."""
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _NO_SPACE_SCRIPTS)


def _escape_vtt(text: str) -> str:
    """Escape the characters WebVTT cue text reserves for markup (e.g. a kept <en-US> tag)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
