"""The engine beside the event loop.

- The engine thread owns `engine.step()`; the events of each step are handed to the event loop
  with `call_soon_threadsafe` and routed to their sessions there.
- The feeder thread runs `engine.feed` / `engine.finish` (feature extraction: torch work that must
  not run on the loop). The loop only enqueues; the feeder drains the queue in order and joins the
  pieces of each session into one `feed` call, so under load the per-call cost is amortized.
- Offline HTTP transcriptions run on a worker thread.
Opening and aborting sessions stay synchronous (cheap, and admission must answer at once).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..streaming.engine import EngineConfig, EngineFull, Event
from .config import ServerConfig
from .errors import ApiError
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from ..recognizer import Recognizer
    from .live import LiveSession

log = logging.getLogger("babelcast.server")


class EngineHub:
    def __init__(self, rec: "Recognizer", cfg: ServerConfig, metrics: ServerMetrics):
        self.rec, self.cfg, self.metrics = rec, cfg, metrics
        self.engine = rec.engine(EngineConfig(max_sessions=cfg.max_sessions, precision=cfg.precision,
                                              endpoint_ms=cfg.endpoint_ms, max_lag_ms=cfg.max_lag_ms,
                                              threads=cfg.threads))
        metrics.bind_engine(self.engine)
        self.sessions: dict[str, LiveSession] = {}  # engine session id -> session (loop thread only)
        self.live: set[LiveSession] = set()  # every connected live session, opened or not
        self.loop: asyncio.AbstractEventLoop | None = None
        self.draining = False
        self.healthy = True
        self.pending_transcriptions = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._feeder: threading.Thread | None = None
        self._commands: deque[tuple[str, str, object]] = deque()
        self._commands_ready = threading.Event()
        self._offline: ThreadPoolExecutor | None = None

    # ---- lifecycle (loop) -----------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._offline = ThreadPoolExecutor(1, thread_name_prefix="babelcast-offline", initializer=self._init_thread)
        self._thread = threading.Thread(target=self._run, name="babelcast-engine", daemon=True)
        self._feeder = threading.Thread(target=self._feed_loop, name="babelcast-feeder", daemon=True)
        self._thread.start()
        self._feeder.start()

    async def stop(self) -> None:
        self._stop.set()
        self._commands_ready.set()
        for thread in (self._thread, self._feeder):
            if thread is not None:
                await asyncio.to_thread(thread.join, 5.0)
        if self._offline is not None:
            self._offline.shutdown(wait=False, cancel_futures=True)

    async def drain(self, timeout_s: float) -> bool:
        """Stop admitting; ask every live session to deliver its pending final and close; wait for
        them (and for running offline transcriptions). True when everything finished in time."""
        self.draining = True
        self.metrics.ready.set(0)
        for session in list(self.live):
            session.drain()
        deadline = time.monotonic() + timeout_s
        while (self.live or self.pending_transcriptions) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not self.live and not self.pending_transcriptions

    @property
    def alive(self) -> bool:
        return (self.healthy and self._thread is not None and self._thread.is_alive()
                and self._feeder is not None and self._feeder.is_alive())

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

    # ---- sessions (loop) --------------------------------------------------------------------
    def open(self, session: "LiveSession", opts, interim: bool, endpoint_ms: int | None) -> str:
        if self.draining:
            raise ApiError("shutting_down", "the server is shutting down; reconnect to another instance")
        try:
            sid = self.engine.open(opts, interim=interim, endpoint_ms=endpoint_ms)
        except EngineFull as e:
            reason = "full" if "limit" in str(e) else "behind"
            self.metrics.sessions_refused.labels(reason).inc()
            raise ApiError("server_full" if reason == "full" else "server_busy", str(e)) from None
        self.sessions[sid] = session
        return sid

    def feed(self, sid: str, samples: np.ndarray) -> None:
        """Queue 16 kHz samples for a session (the feeder thread computes their features)."""
        self._commands.append(("feed", sid, samples))
        self._commands_ready.set()

    def finish(self, sid: str, close: bool) -> None:
        """Queue a flush after the session's queued audio."""
        self._commands.append(("finish", sid, close))
        self._commands_ready.set()

    def release(self, sid: str | None, abort: bool) -> None:
        if sid is None:
            return
        self.sessions.pop(sid, None)
        if abort:
            self.engine.abort(sid)

    # ---- the engine thread ----------------------------------------------------------------
    def _init_thread(self) -> None:
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)  # per thread: leaves the loop thread's setting alone

    def _run(self) -> None:
        self._init_thread()
        engine = self.engine
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

    def _feed_loop(self) -> None:
        torch.set_num_threads(1)  # small ops: more threads only add overhead (and contention)
        while not self._stop.is_set():
            self._commands_ready.wait(0.1)
            self._commands_ready.clear()
            commands = []
            while self._commands:
                commands.append(self._commands.popleft())
            if commands:
                try:
                    self._apply(commands)
                except Exception:
                    log.exception("feeding the engine failed", extra={"event": "engine_error"})

    def _apply(self, commands: list[tuple[str, str, object]]) -> None:
        """In order per session; consecutive pieces of a session become one feed."""
        audio: dict[str, list[np.ndarray]] = {}
        for kind, sid, arg in commands:
            if kind == "feed":
                audio.setdefault(sid, []).append(arg)
                continue
            self._feed_now(sid, audio.pop(sid, None))
            try:
                self.engine.finish(sid, close=bool(arg))
            except KeyError:
                pass  # aborted meanwhile
        for sid, parts in audio.items():
            self._feed_now(sid, parts)

    def _feed_now(self, sid: str, parts: list[np.ndarray] | None) -> None:
        if parts:
            try:
                self.engine.feed(sid, parts[0] if len(parts) == 1 else np.concatenate(parts))
            except KeyError:
                pass  # aborted meanwhile
            except RuntimeError as e:  # audio during a flush: the session should have held it back
                log.warning("audio refused by the engine", extra={"event": "feed_refused", "error": str(e)})

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

    # ---- offline (worker thread) -----------------------------------------------------------
    async def offline(self, fn: Callable, *args):
        """Run fn(*args) on the offline worker; ApiError server_busy when too many are queued."""
        if self.draining:
            raise ApiError("shutting_down", "the server is shutting down")
        if self.pending_transcriptions >= self.cfg.max_pending_transcriptions:
            self.metrics.sessions_refused.labels("transcriptions_busy").inc()
            raise ApiError("server_busy", f"{self.pending_transcriptions} transcriptions are already queued; "
                                          "retry later")
        self.pending_transcriptions += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._offline, fn, *args)
        finally:
            self.pending_transcriptions -= 1
