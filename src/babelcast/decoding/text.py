"""Token ids → Transcript: language tags, detected language, text, word timestamps, confidence."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from ..checkpoint.tokenizer import WORD_START, Tokenizer
from .result import Transcript, Word


@dataclass(frozen=True)
class TextOptions:
    frame_s: float  # seconds per encoder frame (0.08 for factor 8 × 10 ms)
    keep_lang_tags: bool = False
    language: str | None = None  # the language given, None for auto / no prompt
    offset_s: float = 0.0  # stream time of frame 0 (utterances after the first on a live session)


def split_tags(tok: Tokenizer, ids: list[int]) -> tuple[list[int], str | None]:
    """Indices of the tokens that are not language tags, and the last tag's locale (spec §6)."""
    spans = tok.find_tags(ids)
    tagged = {i for s in spans for i in range(s.start, s.start + s.length)}
    keep = [i for i in range(len(ids)) if i not in tagged]
    return keep, (spans[-1].locale if spans else None)


def has_words(text: str) -> bool:
    """Whether a text holds any letter or digit (any script). Silence and noise can decode to punctuation
    alone (the demo model gives '"'): such a transcript has no words to show and becomes empty."""
    return any(ch.isalnum() for ch in text)


def strip_punctuation(text: str) -> str:
    """The text without punctuation marks (Unicode category P), except inside a word or number ("it's",
    "e-mail", "3.5"): what a client that turned automatic punctuation off gets from a model that always
    writes it."""
    keep = []
    for i, ch in enumerate(text):
        inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        if inner or not unicodedata.category(ch).startswith("P"):
            keep.append(ch)
    return " ".join("".join(keep).split())


def words(tok: Tokenizer, ids: list[int], frames: list[int], probs: list[float], frame_s: float,
          offset_s: float = 0.0) -> list[Word]:
    """Group pieces into words at `▁` boundaries; a word spans its first to last token's frame."""
    groups: list[list[int]] = []
    for i, tid in enumerate(ids):
        if not groups or tok.pieces[tid].startswith(WORD_START):
            groups.append([])
        groups[-1].append(i)
    out = []
    for g in groups:
        text = tok.decode([ids[i] for i in g]).strip()
        if text:
            out.append(Word(text, round(offset_s + frames[g[0]] * frame_s, 3),
                            round(offset_s + (frames[g[-1]] + 1) * frame_s, 3),
                            round(min(probs[i] for i in g), 4)))
    return out


def to_transcript(tok: Tokenizer, ids: list[int], frames: list[int], probs: list[float],
                  opts: TextOptions, **meta) -> Transcript:
    """Assemble the typed result of one utterance (tags stripped unless keep_lang_tags)."""
    keep, detected = split_tags(tok, ids)
    if not opts.keep_lang_tags:
        ids, frames, probs = [ids[i] for i in keep], [frames[i] for i in keep], [probs[i] for i in keep]
    text = " ".join(tok.decode(ids).split())
    spoken = tok.decode([ids[i] for i in keep]) if opts.keep_lang_tags else text  # the text less its tags
    if not has_words(spoken):
        ids, frames, probs, text = [], [], [], ""
    conf = sum(probs) / len(probs) if probs else 1.0
    return Transcript(text=text, tokens=list(ids), language=opts.language or detected,
                      words=words(tok, ids, frames, probs, opts.frame_s, opts.offset_s), token_frames=list(frames),
                      confidence=round(conf, 4), **meta)
