"""One live stream as the event loop sees it, shared by /v1/listen and /v1/realtime.

Audio at the client's rate comes in, is resampled to 16 kHz and fed to the engine; engine events
come back through `on_events` (called on the loop by the hub) and leave through `queue` as `Out`s.

While a finalize is in flight the engine takes no audio for that session, so whatever the client
sends meanwhile (audio, another finalize, a close) is kept in order in a backlog and replayed when
the final arrives: nothing is dropped and the client never has to wait for a final.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import soxr

from ..audio.io import SAMPLE_RATE_HZ, AudioError, pcm_to_float
from ..streaming.engine import Event
from .errors import ApiError
from .settings import StreamSettings

if TYPE_CHECKING:
    from .hub import EngineHub

log = logging.getLogger("babelcast.server")
F32_LIMIT = 8.0  # |sample| above this in f32le is not audio in [-1, 1]: most likely s16 sent as f32
_ids = itertools.count(1)


@dataclass
class Out:
    """What a protocol handler gets: an engine event, an error, or the end of the session."""

    kind: str  # partial | final | endpoint | error | closed | send (a protocol message in `payload`)
    event: Event | None = None
    payload: dict | None = None
    from_finalize: bool = False  # a final that answers a finalize/commit/close (not an endpoint)
    error: ApiError | None = None
    reason: str = ""  # closed: client | error | shutdown | limit


def decode_pcm(data: bytes, encoding: str) -> np.ndarray:
    """Raw little-endian PCM -> float32, with an error naming the problem."""
    try:
        x = pcm_to_float(data, encoding, name="audio frame")
    except AudioError as e:
        raise ApiError("invalid_audio", str(e)) from None
    if encoding == "f32le" and x.size:
        if not np.isfinite(x).all():
            raise ApiError("invalid_audio", "audio frame: f32le samples include NaN or infinity; "
                                            "is the stream pcm_s16le rather than f32le?")
        peak = float(np.abs(x).max())
        if peak > F32_LIMIT:
            raise ApiError("invalid_audio", f"audio frame: f32le samples reach {peak:.3g}, far outside [-1, 1]; "
                                            "is the stream pcm_s16le rather than f32le?")
    return x


class LiveSession:
    def __init__(self, hub: "EngineHub", api: str, peer: str = ""):
        self.hub, self.api, self.peer = hub, api, peer
        self.id = f"{api}-{next(_ids)}"
        self.queue: asyncio.Queue[Out] = asyncio.Queue()
        self.settings: StreamSettings | None = None
        self.sid: str | None = None  # engine session id
        self.started = time.monotonic()
        self.samples = 0  # 16 kHz samples accepted over the session
        self.utterance_samples = 0  # since the last final that answered a finalize
        self.finishing = False  # a finalize/close is in the engine, its final not yet back
        self.closing = False
        self.ended = False
        self.close_reason = ""
        self.close_code = 1000  # the WebSocket close code once `closed` is sent
        self.finals = 0
        self._backlog: deque[tuple[str, np.ndarray | None]] = deque()
        self._backlog_samples = 0
        self._finalize_t = 0.0
        self._resampler: soxr.ResampleStream | None = None
        self._counted = False
        hub.live.add(self)

    # ---- setup --------------------------------------------------------------------------------
    def start(self, settings: StreamSettings) -> None:
        """Validate the settings against the model and open an engine session (ApiError if not)."""
        rec = self.hub.rec
        try:
            opts = rec.stream_options(settings.language, settings.latency_ms, settings.keep_lang_tags)
        except ValueError as e:
            msg = str(e)
            if "language" in msg:
                raise ApiError("unsupported_language", msg, "language") from None
            raise ApiError("invalid_latency", f"{msg}; this model supports latencies "
                                              f"{', '.join(map(str, rec.latencies_ms))} ms", "latency_ms") from None
        endpoint = settings.endpoint_ms if settings.endpoint_ms is not None else self.hub.cfg.endpoint_ms
        sid = self.hub.open(self, opts, settings.interim_results, endpoint)
        self.sid, self.settings = sid, settings
        self._resampler = (None if settings.sample_rate == SAMPLE_RATE_HZ else
                           soxr.ResampleStream(settings.sample_rate, SAMPLE_RATE_HZ, 1, dtype="float32"))
        self.latency_ms = opts.latency_ms
        self.trained_latency = opts.trained
        if not self._counted:
            self._counted = True
            self.hub.metrics.sessions_active.labels(self.api).inc()
            self.hub.metrics.sessions_opened.labels(self.api).inc()

    def restart(self, settings: StreamSettings) -> None:
        """New settings before any audio of the current utterance: a fresh engine session."""
        if self.utterance_samples or self.finishing or self.closing:
            raise ApiError("invalid_message", "settings can only change before audio is sent "
                                              "(or right after a final)")
        self.hub.release(self.sid, abort=True)
        self.sid = None
        self.start(settings)

    def discard(self) -> None:
        """Drop the audio of the current utterance that has no final asked for yet."""
        if self.finishing:
            while self._backlog and self._backlog[-1][0] == "audio":
                self._backlog_samples -= len(self._backlog.pop()[1])
            return
        if self.utterance_samples and self.sid is not None:
            self.hub.release(self.sid, abort=True)
            self.sid = None
            self.utterance_samples = 0
            self.start(self.settings)
        elif self._resampler is not None:
            self._resampler.clear()

    @property
    def idle(self) -> bool:
        """No audio since the last final (nothing would be lost by reopening)."""
        return not self.utterance_samples and not self.finishing and not self._backlog

    # ---- client actions -------------------------------------------------------------------------
    def feed(self, x: np.ndarray) -> None:
        """Samples at the session's rate. ApiError when a limit is passed."""
        if self.closing or self.sid is None:
            return
        rate = self.settings.sample_rate
        if (self.samples + len(x) * SAMPLE_RATE_HZ / rate) / SAMPLE_RATE_HZ > self.hub.cfg.max_session_s:
            raise ApiError("session_too_long", f"the session passed the limit of {self.hub.cfg.max_session_s:g} s "
                                               "of audio")
        y = x if self._resampler is None else self._resampler.resample_chunk(x)
        self.samples += len(y)
        self.hub.metrics.audio_seconds.labels(self.api).inc(len(y) / SAMPLE_RATE_HZ)
        if self.finishing:
            self._backlog.append(("audio", y))
            self._backlog_samples += len(y)
            if self._backlog_samples > self.hub.cfg.max_backlog_s * SAMPLE_RATE_HZ:
                raise ApiError("backlog_full", "too much audio arrived while a final was pending "
                                               f"(> {self.hub.cfg.max_backlog_s:g} s)")
            return
        self._engine_feed(y)

    def finalize(self) -> None:
        """End the current utterance: its final comes even mid-sentence; the session goes on."""
        if self.closing or self.sid is None:
            return
        if self.finishing:
            self._backlog.append(("finalize", None))
            return
        self._finish(close=False)

    def close(self, reason: str = "client") -> None:
        """Deliver the final of the audio so far, then end the session (`closed`)."""
        if self.closing:
            return
        self.closing, self.close_reason = True, reason
        if self.sid is None:
            self._closed()
        elif self.finishing:
            self._backlog.append(("close", None))
        else:
            self._finish(close=True)

    def drain(self) -> None:
        """Server shutdown: finish like a close, with reason `shutdown`."""
        self.close("shutdown")

    def fail(self, error: ApiError) -> None:
        """A server-side failure: report it and end the session without a final."""
        self.hub.metrics.errors.labels(error.code).inc()
        self.queue.put_nowait(Out("error", error=error))
        self.hub.release(self.sid, abort=True)
        self.sid = None
        self.closing, self.close_reason = True, "error"
        self._closed()

    def end(self) -> None:
        """The connection is gone: drop whatever is left (idempotent)."""
        if self.sid is not None:
            self.hub.release(self.sid, abort=True)
            self.sid = None
        self.hub.live.discard(self)
        if self._counted:
            self._counted = False
            self.hub.metrics.sessions_active.labels(self.api).dec()
        self.ended = True

    async def pace(self) -> None:
        """Hold a client that runs ahead of real time while the engine lags (protects real-time clients)."""
        cfg = self.hub.cfg
        while (not self.closing and self.samples / SAMPLE_RATE_HZ > time.monotonic() - self.started + 1.0
               and self.hub.engine.lag_ms() > cfg.pace_lag_ms):
            await asyncio.sleep(0.02)

    # ---- engine events (loop thread, from the hub) --------------------------------------------
    def on_events(self, events: list[Event]) -> None:
        for i, e in enumerate(events):
            if e.kind == "final":
                by_endpoint = i + 1 < len(events) and events[i + 1].kind == "endpoint"
                answered = self.finishing and not by_endpoint
                self.finals += 1
                self.hub.metrics.finals.labels(self.api).inc()
                if answered:
                    self.hub.metrics.final_latency.observe(time.monotonic() - self._finalize_t)
                    self.finishing = False
                    self.utterance_samples = 0
                self.queue.put_nowait(Out("final", e, from_finalize=answered))
                if answered:
                    self._replay()
            elif e.kind == "closed":
                self.hub.release(self.sid, abort=False)
                self.sid = None
                self._closed()
            elif e.kind in ("partial", "endpoint"):
                self.queue.put_nowait(Out(e.kind, e))
            else:  # "error" or anything newer: report, keep going
                self.queue.put_nowait(Out("error", e, error=ApiError("internal_error", e.text or e.kind)))

    # ---- internals --------------------------------------------------------------------------------
    def _finish(self, close: bool) -> None:
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            self._resampler.clear()
            if len(tail):
                self.samples += len(tail)
                self._engine_feed(tail)
        self.finishing = True
        self._finalize_t = time.monotonic()
        self.hub.finish(self.sid, close)

    def _replay(self) -> None:
        """Feed what arrived while the final was pending, up to the next finalize/close."""
        while self._backlog and not self.finishing:
            kind, samples = self._backlog.popleft()
            if kind == "audio":
                self._backlog_samples -= len(samples)
                self._engine_feed(samples)
            else:
                self._finish(close=kind == "close")

    def _engine_feed(self, y: np.ndarray) -> None:
        if len(y):
            self.utterance_samples += len(y)
            self.hub.feed(self.sid, y)

    def _closed(self) -> None:
        self.queue.put_nowait(Out("closed", reason=self.close_reason or "client"))
