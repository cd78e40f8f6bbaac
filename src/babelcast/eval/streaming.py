"""Real-time streaming simulation of one utterance: partials, time to first token and to final.

The audio is fed to a session in pieces of one chunk (latency_ms of audio), as a live source
would deliver it. A session is an engine of one (`streaming/session.py`): the same stream lifecycle and
engine step the server runs. Two clocks are kept apart:

- algorithmic (audio time): when a result can exist at all, as the audio time of the end of the
  piece after which it appeared. Time to first token (TTFT) = audio time of the first non-empty
  partial minus the start of speech (clamped at 0). The final has no algorithmic delay after
  the end of the audio: flush decodes the zero-padded last chunk at once.
- compute (wall clock on this machine): the time the session took for the piece that produced the
  first token, and for the last piece plus flush (time to final after the end of the audio).

Start of speech: the first 10 ms frame whose energy is within 30 dB of the loudest frame's (0 for
silence).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..audio.io import SAMPLE_RATE_HZ
from .metrics import partial_changes

FRAME_MS = 10  # the onset detector's energy frame
FRAME_SAMPLES = SAMPLE_RATE_HZ * FRAME_MS // 1000
ONSET_DB = 30.0


@dataclass
class StreamRun:
    """What one simulated live stream produced and how long it took."""

    final: object  # the flushed Transcript
    events: list[tuple[float, str]] = field(default_factory=list)  # (audio ms, partial text) at each change
    speech_start_ms: float = 0.0
    ttft_algo_ms: float | None = None  # None: no token at all
    ttft_compute_ms: float | None = None
    final_algo_ms: float = 0.0
    final_compute_ms: float = 0.0
    piece_compute_ms: list[float] = field(default_factory=list)
    compute_s: float = 0.0
    words_shown: int = 0
    words_changed: int = 0

    def to_record(self) -> dict:
        """The streaming fields of a results line."""
        pieces = np.asarray(self.piece_compute_ms or [0.0])
        return {
            "speech_start_ms": round(self.speech_start_ms, 1),
            "ttft_algo_ms": _round(self.ttft_algo_ms),
            "ttft_compute_ms": _round(self.ttft_compute_ms),
            "final_algo_ms": round(self.final_algo_ms, 1),
            "final_compute_ms": round(self.final_compute_ms, 2),
            "chunk_compute_ms_p50": round(float(np.percentile(pieces, 50)), 2),
            "chunk_compute_ms_p95": round(float(np.percentile(pieces, 95)), 2),
            "compute_s": round(self.compute_s, 4),
            "partial_words_shown": self.words_shown,
            "partial_words_changed": self.words_changed,
            "partials": encode_partials(self.events),
        }


def encode_partials(events: list[tuple[float, str]]) -> list[list]:
    """Partials as [audio ms, kept, added]: each text is the previous one's first `kept` characters + `added`.

    Linear in the text length (full texts would grow with the square of the utterance length).
    """
    out, previous = [], ""
    for ms, text in events:
        kept = len(os.path.commonprefix([previous, text]))
        out.append([round(ms, 1), kept, text[kept:]])
        previous = text
    return out


def decode_partials(encoded: list[list]) -> list[tuple[float, str]]:
    """The (audio ms, text) events back from encode_partials."""
    events, previous = [], ""
    for ms, kept, added in encoded:
        previous = previous[:kept] + added
        events.append((ms, previous))
    return events


def speech_onset_ms(audio: np.ndarray, threshold_db: float = ONSET_DB) -> float:
    """Start of speech in ms: first 10 ms frame within threshold_db of the loudest (0 if silent)."""
    n = len(audio) // FRAME_SAMPLES
    if n == 0:
        return 0.0
    energy = (np.asarray(audio[: n * FRAME_SAMPLES], dtype=np.float64).reshape(n, FRAME_SAMPLES) ** 2).mean(axis=1)
    peak = energy.max()
    if peak <= 1e-12:
        return 0.0
    first = int(np.argmax(energy >= peak * 10 ** (-threshold_db / 10)))
    return float(first * FRAME_MS)


def simulate(recognizer, audio: np.ndarray, language: str, latency_ms: int,
             clock=time.perf_counter) -> StreamRun:
    """Feed `audio` to a new session in latency_ms pieces, then flush; record partials and timing."""
    session = recognizer.stream(language=language, latency_ms=latency_ms)
    piece = max(1, int(round(latency_ms * SAMPLE_RATE_HZ / 1000)))
    run = StreamRun(final=None, speech_start_ms=speech_onset_ms(audio))
    audio = np.asarray(audio, dtype=np.float32)
    shown = ""
    pos = 0
    last_piece_s = 0.0
    while pos < len(audio):
        chunk = audio[pos : pos + piece]
        pos += len(chunk)
        start = clock()
        partial = session.accept_audio(chunk)
        last_piece_s = clock() - start
        run.piece_compute_ms.append(last_piece_s * 1000)
        run.compute_s += last_piece_s
        if partial.text != shown:
            shown = partial.text
            audio_ms = pos * 1000 / SAMPLE_RATE_HZ
            run.events.append((audio_ms, shown))
            if run.ttft_algo_ms is None and shown.strip():
                run.ttft_algo_ms = max(0.0, audio_ms - run.speech_start_ms)
                run.ttft_compute_ms = last_piece_s * 1000
    start = clock()
    run.final = session.flush()
    flush_s = clock() - start
    run.compute_s += flush_s
    run.final_compute_ms = (last_piece_s + flush_s) * 1000  # the last piece arrives with the end of the audio
    if run.ttft_algo_ms is None and run.final.text.strip():
        run.ttft_algo_ms = max(0.0, len(audio) * 1000 / SAMPLE_RATE_HZ - run.speech_start_ms)
        run.ttft_compute_ms = run.final_compute_ms
    run.words_shown, run.words_changed = partial_changes([text for _, text in run.events], run.final.text)
    return run


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
