"""One live stream for the Python API: an engine of one (audio pieces in, partial text after every
step, final text on finalize or flush, the detected language as it changes).

A Session runs the same code as the server's streams (`Stream` for the lifecycle, `Engine` for the
steps), with one slot, endpointing off and fp32 weights, stepping in the caller's thread as soon as a
chunk is whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import Tensor

from ..audio.io import AudioPieces
from ..checkpoint.tokenizer import Tokenizer
from ..decoding.result import Transcript
from ..model.asr import AsrModel
from .engine import Engine, EngineConfig, Event
from .stream import StreamOptions

__all__ = ["LanguageChange", "Partial", "Session", "StreamOptions"]

SESSION_CONFIG = EngineConfig(max_sessions=1, precision="fp32", endpoint_ms=0, max_lag_ms=float("inf"),
                              max_segment_ms=0, phase_align=False)  # finals only at finalize() and flush()


@dataclass(frozen=True)
class Partial:
    text: str
    tokens: list[int]
    language: str | None


@dataclass(frozen=True)
class LanguageChange:
    """A `language` event: a final (segment) detected a language other than the stream's last one."""

    language: str
    locked: bool  # lock_language: the stream's prompt is fixed to it from now on
    segment: int


class Session:
    """A single stream decoded with the encoder's cache-aware step (spec §3.6)."""

    def __init__(self, model: AsrModel, tokenizer: Tokenizer, opts: StreamOptions,
                 cfg: EngineConfig = SESSION_CONFIG,
                 options_for: Callable[[str | None], StreamOptions] | None = None):
        self.opts = opts
        self._options_for = options_for  # language -> this stream's options in it (Recognizer.stream gives it)
        self._engine = Engine(model, tokenizer, cfg)
        self._sid = self._engine.open(opts, interim=False, endpoint_ms=0)
        self._pieces = AudioPieces()
        self._final: Transcript | None = None
        self.language: LanguageChange | None = None  # the last language event (auto mode), None before one

    def accept_audio(self, samples: np.ndarray | Tensor, sample_rate: int | None = None) -> Partial:
        """Feed samples of any count: mono [n] or [n, channels], any dtype, at `sample_rate` (default
        16000, one rate per stream); runs every chunk that is now complete."""
        if self._final is not None:
            raise RuntimeError("session is closed")
        self._engine.feed(self._sid, self._pieces.convert(samples, sample_rate))
        self._run()
        return self.partial()

    def set_language(self, language: str | None) -> None:
        """Decode in another language (a locale, or "auto") from the next chunk on, mid-utterance: the
        prompt acts after the encoder, so nothing is reset (UnsupportedLanguage for an unknown one)."""
        if self._options_for is None:
            raise RuntimeError("this session was not made by Recognizer.stream(); it cannot resolve languages")
        self.opts = self._options_for(language)
        self._engine.set_language(self._sid, self.opts)

    def finalize(self) -> Transcript:
        """End the current utterance now (its final) and go on: the next audio starts a new utterance
        (fresh caches, stream time going on); a lock_language stream locks at its first such final."""
        if self._final is not None:
            raise RuntimeError("session is closed")
        return self._end(close=False)

    def flush(self) -> Transcript:
        """End of stream: the last partial chunk is zero-padded and decoded, never dropped."""
        if self._final is None:
            self._final = self._end(close=True)
        return self._final

    def _end(self, close: bool) -> Transcript:
        """The final of the audio so far (the resampler's last samples included)."""
        tail = self._pieces.flush()
        if len(tail):
            self._engine.feed(self._sid, tail)
        self._engine.finish(self._sid, close=close)
        return [e.transcript for e in self._run() if e.kind == "final"][-1]

    def _run(self) -> list[Event]:
        """Step every whole chunk (or pending flush); language events update `language`."""
        events = self._engine.drain()
        for e in events:
            if e.kind == "language":
                self.language = LanguageChange(e.language, e.locked, e.segment)
        return events

    def partial(self) -> Partial:
        """Text so far; a possibly unfinished multi-piece language tag is held back."""
        t = self._engine.partial(self._sid) if self._final is None else self._final
        return Partial(t.text, t.tokens, t.language)

    @property
    def closed(self) -> bool:
        return self._final is not None
