"""Typed transcription results shared by offline, streaming, CLI and server."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    """One word with its time span in seconds and a confidence in [0, 1]."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Transcript:
    """The result for one utterance (a file offline, or a stream's final)."""

    text: str  # detokenized, language tags removed unless keep_lang_tags
    tokens: list[int]  # emitted token ids, blank excluded (tags included unless stripped)
    language: str | None  # detected (auto) or given locale; None for a non-prompt model
    words: list[Word] = field(default_factory=list)
    token_frames: list[int] = field(default_factory=list)  # encoder frame index of each token
    confidence: float = 1.0  # mean token confidence
    latency_ms: int = 0
    mode: str = "offline"  # "offline" | "streaming"
    trained_latency: bool = True  # False for a context not in the checkpoint's list (e.g. 160 ms on 3.5)
    duration_s: float = 0.0
