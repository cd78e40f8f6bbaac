"""One live stream as the event loop sees it, shared by /v1/listen and /v1/realtime.

Audio at the client's rate comes in, is resampled to 16 kHz and fed to the engine; engine events
come back through `on_events` (called on the loop by the hub) and leave through `queue` as `Out`s.

Whatever the client sends while a finalize is in flight (audio, another finalize, a close) goes to the
engine at once: the engine holds it, in order, for the next utterance, so nothing is dropped and the
client never has to wait for a final.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np
import soxr

from ..audio.io import SAMPLE_RATE_HZ, AudioError, pcm_to_float
from ..errors import UnsupportedDecoder, UnsupportedLanguage, UnsupportedLatency
from ..streaming.engine import Event
from ..streaming.stream import StreamOptions
from .errors import ApiError
from .hub import EngineHub
from .settings import StreamSettings

log = logging.getLogger("babelcast.server")
F32_LIMIT = 8.0  # |sample| above this in f32le is not audio in [-1, 1]: most likely s16 sent as f32
_ids = itertools.count(1)


@dataclass
class Out:
    """What a protocol handler gets: an engine event, an error, or the end of the session."""

    kind: str  # partial | final | endpoint | language | error | closed | send (a protocol message in `payload`)
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


def engine_options(hub: EngineHub, settings: StreamSettings, mode: str = "streaming") -> StreamOptions:
    """The hub's engine options for these settings (ApiError naming a bad language, latency or decoder);
    mode="offline": a file, at the largest trained latency unless one is given."""
    rec = hub.rec
    try:
        return rec.stream_options(settings.language, settings.latency_ms, settings.keep_lang_tags, mode=mode,
                                  lock_language=settings.lock_language, decoder=settings.decoder,
                                  boost=settings.boost, beam=hub.session_beam(settings.beam))
    except UnsupportedDecoder as e:
        raise ApiError("unsupported_decoder", str(e), "decoder") from None
    except UnsupportedLanguage as e:
        raise ApiError("unsupported_language", str(e), "language") from None
    except UnsupportedLatency as e:
        raise ApiError("invalid_latency", f"{e}; this model supports latencies "
                                          f"{', '.join(map(str, rec.latencies_ms))} ms", "latency_ms") from None


class LiveSession:
    def __init__(self, hub: EngineHub, api: str, peer: str = ""):
        self.hub, self.api, self.peer = hub, api, peer
        self.id = f"{api}-{next(_ids)}"
        self.warning: str | None = None  # set when the session asks for a locale the model was not trained on
        self.queue: asyncio.Queue[Out] = asyncio.Queue()
        self.settings: StreamSettings | None = None
        self.sid: str | None = None  # engine session id
        self.started = time.monotonic()
        self.samples = 0  # 16 kHz samples accepted over the session
        self.utterance_samples = 0  # since the last final that answered a finalize
        self.pending_finals = 0  # finalizes/closes in the engine whose final is not back yet
        self.closing = False
        self.ended = False
        self.close_reason = ""
        self.close_code = 1000  # the WebSocket close code once `closed` is sent
        self.finals = 0
        self._finalize_times: list[float] = []  # when each pending finalize was asked for
        self._resampler: soxr.ResampleStream | None = None
        self._counted = False
        hub.live.add(self)

    # ---- setup --------------------------------------------------------------------------------
    def _options(self, settings: StreamSettings) -> StreamOptions:
        return engine_options(self.hub, settings)

    def start(self, settings: StreamSettings) -> None:
        """Validate the settings against the model and open an engine session (ApiError if not)."""
        opts = self._options(settings)
        endpoint = settings.endpoint_ms if settings.endpoint_ms is not None else self.hub.cfg.endpoint_ms
        sid = self.hub.open(self, opts, settings.interim_results, endpoint)
        self.sid, self.settings = sid, settings
        self._resampler = (None if settings.sample_rate == SAMPLE_RATE_HZ else
                           soxr.ResampleStream(settings.sample_rate, SAMPLE_RATE_HZ, 1, dtype="float32"))
        self.latency_ms = opts.latency_ms
        self.trained_latency = opts.trained
        self.warning = self.hub.untrained_warning(settings.language)
        if not self._counted:
            self._counted = True
            self.hub.metrics.sessions_active.labels(self.api).inc()
            self.hub.metrics.sessions_opened.labels(self.api).inc()

    def restart(self, settings: StreamSettings) -> None:
        """New settings. A new language alone takes effect from the next chunk, at any time (the prompt
        acts after the encoder: nothing to reset); other changes need a fresh engine session, so they
        come before any audio of the current utterance."""
        if self.sid is not None and not self.closing and self.settings is not None \
                and self.settings.only_language_differs(settings):
            self.hub.engine.set_language(self.sid, self._options(settings))
            self.settings = settings
            self.warning = self.hub.untrained_warning(settings.language)
            return
        if self.utterance_samples or self.pending_finals or self.closing:
            raise ApiError("invalid_message", "settings other than the language (and lock_language) can only "
                                              "change before audio is sent (or right after a final)")
        self._options(settings)  # refused settings leave the current session as it is
        self.hub.release(self.sid, abort=True)
        self.sid = None
        self.start(settings)

    def discard(self) -> None:
        """Drop the audio of the current utterance that has no final asked for yet."""
        if self.pending_finals:
            if self.sid is not None:
                self.hub.engine.drop_held(self.sid)  # audio after the last finalize, held by the engine
            self.utterance_samples = 0
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
        return not self.utterance_samples and not self.pending_finals

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
        self._engine_feed(y)
        if self.pending_finals and self.hub.engine.held_samples(self.sid) > self.hub.cfg.max_backlog_s * SAMPLE_RATE_HZ:
            raise ApiError("backlog_full", "too much audio arrived while a final was pending "
                                           f"(> {self.hub.cfg.max_backlog_s:g} s)")

    def finalize(self) -> None:
        """End the current utterance: its final comes even mid-sentence; the session goes on."""
        if self.closing or self.sid is None:
            return
        self._finish(close=False)

    def close(self, reason: str = "client") -> None:
        """Deliver the final of the audio so far, then end the session (`closed`)."""
        if self.closing:
            return
        self.closing, self.close_reason = True, reason
        if self.sid is None:
            self._closed()
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
        for e in events:
            if e.kind == "final":
                answered = e.reason == "flush"
                self.finals += 1
                self.hub.metrics.finals.labels(self.api).inc()
                if answered and self.pending_finals:
                    self.hub.metrics.final_latency.observe(time.monotonic() - self._finalize_times.pop(0))
                    self.pending_finals -= 1
                self.queue.put_nowait(Out("final", e, from_finalize=answered))
            elif e.kind == "closed":
                self.hub.release(self.sid, abort=False)
                self.sid = None
                self._closed()
            elif e.kind in ("partial", "endpoint", "language"):
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
        self.pending_finals += 1
        self._finalize_times.append(time.monotonic())
        self.utterance_samples = 0  # what comes next is the next utterance
        self.hub.finish(self.sid, close)

    def _engine_feed(self, y: np.ndarray) -> None:
        if len(y):
            self.utterance_samples += len(y)
            self.hub.feed(self.sid, y)

    def _closed(self) -> None:
        self.queue.put_nowait(Out("closed", reason=self.close_reason or "client"))
