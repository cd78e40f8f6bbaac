"""The engine beside the event loop.

- The engine thread owns `engine.step()`; the events of each step are handed to the event loop
  with `call_soon_threadsafe` and routed to their sessions there.
- The loop calls `engine.feed` / `engine.finish` directly: they only queue samples under the engine's
  lock (features are computed on the engine thread), and the engine holds audio sent during a flush.
- HTTP uploads are decoded on a worker thread, then run by the engine as fast-forward streams.
Opening and aborting sessions stay synchronous (cheap, and admission must answer at once).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
import torch

from ..audio.io import SAMPLE_RATE_HZ
from ..decoding.result import Transcript
from ..streaming.engine import EngineConfig, EngineFull, Event
from .config import ServerConfig
from .errors import ApiError
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from ..recognizer import Recognizer

log = logging.getLogger("babelcast.server")


class Subscriber(Protocol):
    """What the hub needs of a live session (server/live.py's LiveSession; the hub does not import it)."""

    def on_events(self, events: list[Event]) -> None: ...

    def fail(self, error: ApiError) -> None: ...

    def drain(self) -> None: ...


class EngineHub:
    def __init__(self, rec: "Recognizer", cfg: ServerConfig, metrics: ServerMetrics):
        self.rec, self.cfg, self.metrics = rec, cfg, metrics
        self.engine = rec.engine(EngineConfig(max_sessions=cfg.max_sessions, precision=cfg.precision,
                                              endpoint_ms=cfg.endpoint_ms, max_lag_ms=cfg.max_lag_ms,
                                              max_files=cfg.max_pending_transcriptions,
                                              threads=cfg.threads, phase_align=cfg.phase_align,
                                              beam_size=cfg.beam_size))
        metrics.bind_engine(self.engine)
        self.sessions: dict[str, Subscriber] = {}  # engine session id -> session (loop thread only)
        self.live: set[Subscriber] = set()  # every connected live session, opened or not
        self.loop: asyncio.AbstractEventLoop | None = None
        self.draining = False
        self.healthy = True
        self.pending_transcriptions = 0
        self.warned_locales: set[str] = set()  # untrained locales already logged (every API)
        self.drain_hooks: list[Callable[[], None]] = []  # told when draining starts (e.g. gRPC health)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offline: ThreadPoolExecutor | None = None

    # ---- lifecycle (loop) -----------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._offline = ThreadPoolExecutor(1, thread_name_prefix="babelcast-offline", initializer=_one_thread)
        self._thread = threading.Thread(target=self._run, name="babelcast-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        if self._offline is not None:
            self._offline.shutdown(wait=False, cancel_futures=True)

    async def drain(self, timeout_s: float) -> bool:
        """Stop admitting; ask every live session to deliver its pending final and close; wait for
        them (and for running offline transcriptions). True when everything finished in time."""
        self.draining = True
        self.metrics.ready.set(0)
        for hook in self.drain_hooks:
            hook()
        for session in list(self.live):
            session.drain()
        deadline = time.monotonic() + timeout_s
        while (self.live or self.pending_transcriptions) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not self.live and not self.pending_transcriptions

    def session_beam(self, beam: bool | None) -> bool | None:
        """A session's beam choice in this server: off when the engine has no beam search (serve --beam-size
        1), so its phrases get greedy decoding's default weight; else as asked (None: when boosting)."""
        return False if self.cfg.beam_size < 2 else beam

    @property
    def alive(self) -> bool:
        return self.healthy and self._thread is not None and self._thread.is_alive()

    def ready_problem(self) -> str | None:
        """Why the server does not take new sessions now, or None."""
        if self.draining:
            return "shutting down"
        if not self.alive:
            return "engine thread is not running"
        if self.engine.n_sessions >= self.cfg.max_sessions:
            return f"at the limit of {self.cfg.max_sessions} concurrent sessions"
        lag = self.engine.lag_ms()
        if lag > self.cfg.max_lag_ms:
            return f"engine is {lag:.0f} ms behind real time"
        return None

    def untrained_warning(self, language: str | None) -> str | None:
        """A warning for a locale the model was not trained on (logged once per locale); None for a
        trained one, auto, or a model that does not say what it was trained on."""
        message = self.rec.language_note(language)  # the language was validated when the options were built
        locale = self.rec.canonical_language(language) if message else None
        if message and locale not in self.warned_locales:
            self.warned_locales.add(locale)
            log.warning(message, extra={"event": "untrained_language", "language": locale})
        return message

    # ---- sessions (loop) --------------------------------------------------------------------
    def open(self, session: Subscriber, opts, interim: bool, endpoint_ms: int | None) -> str:
        if self.draining:
            raise ApiError("shutting_down", "the server is shutting down; reconnect to another instance")
        try:
            sid = self.engine.open(opts, interim=interim, endpoint_ms=endpoint_ms)
        except EngineFull as e:
            self.metrics.sessions_refused.labels(e.reason).inc()
            raise ApiError("server_full" if e.reason == "full" else "server_busy", str(e)) from None
        self.sessions[sid] = session
        return sid

    def feed(self, sid: str, samples: np.ndarray) -> None:
        """16 kHz samples for a session (queued in the engine; audio during a flush is held there)."""
        try:
            self.engine.feed(sid, samples)
        except KeyError:
            pass  # closed by the engine meanwhile; its `closed` event is on its way

    def finish(self, sid: str, close: bool) -> None:
        """A flush after the session's audio so far."""
        try:
            self.engine.finish(sid, close)
        except KeyError:
            pass

    def release(self, sid: str | None, abort: bool) -> None:
        if sid is None:
            return
        self.sessions.pop(sid, None)
        if abort:
            self.engine.abort(sid)

    # ---- the engine thread ----------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine  # its step() sets the engine's threads on this thread
        while not self._stop.is_set():
            steps = engine.metrics.steps
            try:
                events = engine.step()
            except Exception:  # a bug must not leave every client hanging silently
                log.exception("engine step failed", extra={"event": "engine_error"})
                self.healthy = False
                self._post(self._fail_all, "the recognition engine failed; the session cannot continue")
                time.sleep(0.5)
                continue
            self.metrics.record_steps(engine)
            if events:
                self._post(self._dispatch, events)
            elif engine.metrics.steps == steps:
                engine.wait_for_work(0.05)

    def _post(self, fn: Callable, *args) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # loop closed between the check and the call
                pass

    # ---- on the loop ------------------------------------------------------------------------
    def _dispatch(self, events: list[Event]) -> None:
        by_session: dict[str, list[Event]] = {}
        for e in events:
            by_session.setdefault(e.session_id, []).append(e)
        for sid, evs in by_session.items():
            session = self.sessions.get(sid)
            if session is not None:
                session.on_events(evs)

    def _fail_all(self, message: str) -> None:
        for session in list(self.sessions.values()):
            session.fail(ApiError("internal_error", message))

    # ---- uploads ------------------------------------------------------------------------------
    async def transcribe(self, decode: Callable[[], np.ndarray], opts, source: str = "file",
                         param: str = "file") -> Transcript:
        """An upload: decoded on the worker thread (16 kHz samples; ApiError audio_too_long past max_upload_s),
        then run by the engine as a fast-forward stream on the live streams' chunk grid (tokens equal to
        offline at that latency), live chunks first, files round-robin by chunk; ApiError server_busy past
        max_pending_transcriptions."""
        if self.draining:
            raise ApiError("shutting_down", "the server is shutting down")
        if self.pending_transcriptions >= self.cfg.max_pending_transcriptions:
            self.metrics.sessions_refused.labels("transcriptions_busy").inc()
            raise ApiError("server_busy", f"{self.pending_transcriptions} transcriptions are already running; "
                                          "retry later")
        self.pending_transcriptions += 1
        try:
            loop = asyncio.get_running_loop()
            audio = await loop.run_in_executor(self._offline, decode)
            seconds = len(audio) / SAMPLE_RATE_HZ
            if seconds > self.cfg.max_upload_s:
                raise ApiError("audio_too_long", f"{source}: {seconds:.0f} s of audio is over the limit of "
                                                 f"{self.cfg.max_upload_s:g} s", param)
            return await self._run_file(opts, audio, loop)
        finally:
            self.pending_transcriptions -= 1

    async def _run_file(self, opts, audio: np.ndarray, loop: asyncio.AbstractEventLoop) -> Transcript:
        """The engine's final for one file (the request gone: the file is dropped from the engine)."""
        job = _FileJob(loop.create_future())
        try:
            sid = self.engine.open_file(opts, audio)
        except EngineFull as e:
            raise ApiError("server_busy", str(e)) from None
        self.sessions[sid] = job
        try:
            return await job.future
        except asyncio.CancelledError:
            self.engine.abort(sid)
            raise
        finally:
            self.sessions.pop(sid, None)


class _FileJob:
    """The hub's subscriber for one upload: its future gets the final transcript (or the engine's failure)."""

    def __init__(self, future: asyncio.Future):
        self.future = future

    def on_events(self, events: list[Event]) -> None:
        for e in events:
            if e.kind == "final" and not self.future.done():
                self.future.set_result(e.transcript)

    def fail(self, error: ApiError) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def drain(self) -> None:
        """A file finishes on its own."""


def _one_thread() -> None:
    """Torch work outside the engine thread gets one intra-op thread: the engine thread owns the cores
    (a second thread with torch's default threads made engine steps 1.5x slower)."""
    torch.set_num_threads(1)
