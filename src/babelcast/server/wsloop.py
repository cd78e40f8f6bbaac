"""The connection loop shared by the WebSocket APIs: one reader, one writer, clean endings.

The writer is the only task that touches the socket's send side: it takes `Out`s from the
session's queue in order and renders them with the protocol's `render`. The reader applies the
idle and duration limits and hands every frame to the protocol's `on_message`; an ApiError from it
ends the session cleanly (error, final of the audio so far, closed, close).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..audio.io import SAMPLE_RATE_HZ
from .errors import WS_GOING_AWAY, ApiError
from .live import LiveSession, Out

log = logging.getLogger("babelcast.server")


async def drive(ws: WebSocket, session: LiveSession, on_message: Callable[[dict], None],
                render: Callable[[Out], Awaitable[None]]) -> None:
    """Run reader and writer until the session is closed (or the client is gone)."""
    cfg = session.hub.cfg
    sender = asyncio.create_task(_send_loop(ws, session, render))
    receiver = asyncio.create_task(_receive_loop(ws, session, on_message))
    done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    if receiver in done and not session.closing:
        sender.cancel()  # the client went away without asking for anything: nobody to deliver to
    elif sender not in done:
        try:
            await asyncio.wait_for(asyncio.shield(sender), cfg.drain_timeout_s + 5)
        except (asyncio.TimeoutError, Exception):
            sender.cancel()
    receiver.cancel()
    for task in (sender, receiver):
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


def fatal(session: LiveSession, e: ApiError) -> None:
    """Report, then close cleanly: the final of what was received still comes, then `closed`."""
    session.hub.metrics.errors.labels(e.code).inc()
    log.info("session error", extra={"event": "session_error", "session": session.id, "api": session.api,
                                     "code": e.code, "error": e.message})
    session.queue.put_nowait(Out("error", error=e))
    session.close_code = e.close_code
    session.close("error")


def log_end(session: LiveSession) -> None:
    log.info("session closed", extra={
        "event": "session_closed", "session": session.id, "api": session.api, "peer": session.peer,
        "reason": session.close_reason or "disconnect", "audio_s": round(session.samples / SAMPLE_RATE_HZ, 2),
        "finals": session.finals, "duration_s": round(time.monotonic() - session.started, 2)})


async def _send_loop(ws: WebSocket, session: LiveSession, render: Callable[[Out], Awaitable[None]]) -> None:
    while True:
        out = await session.queue.get()
        await render(out)
        if out.kind == "closed":
            await ws.close(WS_GOING_AWAY if out.reason == "shutdown" else session.close_code)
            return


async def _receive_loop(ws: WebSocket, session: LiveSession, on_message: Callable[[dict], None]) -> None:
    cfg = session.hub.cfg
    while True:
        if not session.closing:
            await session.pace()
        remaining = cfg.max_session_s - (time.monotonic() - session.started)
        timeout = None if session.closing else max(0.0, min(cfg.idle_timeout_s, remaining))
        try:
            msg = await asyncio.wait_for(ws.receive(), timeout)
        except asyncio.TimeoutError:
            if remaining <= cfg.idle_timeout_s:
                fatal(session, ApiError("session_too_long", f"the session passed the limit of "
                                                            f"{cfg.max_session_s:g} s"))
            else:
                fatal(session, ApiError("idle_timeout", f"no message for {cfg.idle_timeout_s:g} s; "
                                                        "send audio or a keepalive"))
            continue
        except (WebSocketDisconnect, RuntimeError):
            return
        if msg["type"] == "websocket.disconnect":
            return
        if session.closing:
            continue  # the session is ending: later frames are ignored
        size = len(msg.get("bytes") or b"") + len((msg.get("text") or "").encode())
        try:
            if size > cfg.max_frame_bytes:
                raise ApiError("frame_too_large", f"a message of {size} bytes is over the limit of "
                                                  f"{cfg.max_frame_bytes} bytes; send smaller frames")
            on_message(msg)
        except ApiError as e:
            fatal(session, e)
