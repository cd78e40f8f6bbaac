"""`/v1/listen`: babelcast's streaming WebSocket protocol (docs/streaming-protocol.md).

Binary frames carry raw PCM; text frames carry JSON control messages; the server answers with JSON
events. Every client mistake ends in an `error` event naming the problem, the final of the audio
received so far, a `closed` event and a WebSocket close, in that order.
"""
from __future__ import annotations

import json
import logging

from starlette.websockets import WebSocket

from ..audio.io import SAMPLE_RATE_HZ
from ..decoding.result import Transcript
from ..formats import word_dicts
from . import auth
from .errors import ApiError
from .live import LiveSession, Out, decode_pcm
from .settings import StreamSettings, parse_settings
from .wsloop import drive, log_end

log = logging.getLogger("babelcast.server")
CONTROL = ("finalize", "close", "configure", "keepalive")


def transcript_fields(t: Transcript | None) -> dict:
    """Text, language, confidence, start/end and words of a partial or final."""
    if t is None:
        return {"text": "", "language": None, "confidence": 0.0, "start": None, "end": None, "words": []}
    words = word_dicts(t.words)
    return {"text": t.text, "language": t.language, "confidence": round(t.confidence, 4),
            "start": words[0]["start"] if words else None, "end": words[-1]["end"] if words else None,
            "words": words}


async def listen_endpoint(ws: WebSocket) -> None:
    hub = ws.app.state.hub
    await ws.accept()
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else ""
    session = LiveSession(hub, "listen", peer)
    try:
        try:
            auth.check(hub.cfg.api_keys, ws.headers, ws.query_params)
            session.start(parse_settings(ws.query_params))
        except ApiError as e:
            await _refuse(ws, session, e)
            return
        log.info("session opened", extra={"event": "session_opened", "session": session.id, "api": "listen",
                                          "peer": peer, "settings": session.settings.to_dict()})
        session.queue.put_nowait(Out("send", payload=_ready_json(session)))

        async def render(out: Out) -> None:
            await ws.send_json(_render(session, out))

        await drive(ws, session, lambda msg: _on_message(session, msg), render)
    finally:
        session.end()
        log_end(session)


async def _refuse(ws: WebSocket, session: LiveSession, e: ApiError) -> None:
    """Refused before a session existed: error, closed, close."""
    session.hub.metrics.errors.labels(e.code).inc()
    session.close_reason = "error"
    log.info("session refused", extra={"event": "session_refused", "session": session.id, "api": "listen",
                                       "code": e.code, "error": e.message, "peer": session.peer})
    try:
        for event in e.listen_ending():
            await ws.send_json(event)
        await ws.close(e.close_code, reason=e.code)
    except Exception:
        pass


def _ready_json(session: LiveSession) -> dict:
    s, cfg = session.settings, session.hub.cfg
    settings = s.to_dict()
    settings["latency_ms"] = session.latency_ms
    settings["endpoint_ms"] = s.endpoint_ms if s.endpoint_ms is not None else cfg.endpoint_ms
    ready = {"type": "ready", "session_id": session.id, "model": cfg.model_name, "settings": settings,
             "trained_latency": session.trained_latency,
             "limits": {"max_session_s": cfg.max_session_s, "idle_timeout_s": cfg.idle_timeout_s,
                        "max_frame_bytes": cfg.max_frame_bytes}}
    if session.warning:
        ready["warning"] = session.warning  # e.g. a locale the model was not trained on
    return ready


def event_json(out: Out) -> dict:
    e = out.event
    if out.kind == "endpoint":
        return {"type": "endpoint", "segment": e.segment}
    if out.kind == "language":
        return {"type": "language", "segment": e.segment, "language": e.language, "locked": e.locked}
    body = {"type": out.kind, "segment": e.segment, **transcript_fields(e.transcript)}
    if out.kind == "final":
        body["from_finalize"] = out.from_finalize
        if e.transcript is not None:
            body["latency_ms"] = e.transcript.latency_ms
    return body


def _render(session: LiveSession, out: Out) -> dict:
    if out.kind == "send":
        return out.payload
    if out.kind == "error":
        return out.error.listen_event()
    if out.kind == "closed":
        return {"type": "closed", "reason": out.reason, "segments": session.finals,
                "audio_s": round(session.samples / SAMPLE_RATE_HZ, 3)}
    return event_json(out)


def _on_message(session: LiveSession, msg: dict) -> None:
    if msg.get("bytes") is not None:
        session.feed(decode_pcm(msg["bytes"], session.settings.encoding))
    elif msg.get("text") is not None:
        _control(session, msg["text"])


def _control(session: LiveSession, text: str) -> None:
    try:
        message = json.loads(text)
    except ValueError as e:
        raise ApiError("invalid_message", f"text frame is not valid JSON ({e.msg} at position {e.pos}); "
                                          "audio goes in binary frames") from None
    if not isinstance(message, dict):
        raise ApiError("invalid_message", "a control message must be a JSON object with a 'type'")
    kind = message.get("type")
    if kind == "finalize":
        session.finalize()
    elif kind == "close":
        session.close("client")
    elif kind == "keepalive":
        pass
    elif kind == "configure":
        if message.get("model") not in (None, session.hub.cfg.model_name):
            raise ApiError("invalid_settings", f"the model is chosen when connecting (/v1/listen?model=NAME); "
                                               f"this session is on {session.hub.cfg.model_name!r}", "model")
        session.restart(parse_settings(message, base=session.settings or StreamSettings()))
        log.info("session configured", extra={"event": "session_configured", "session": session.id,
                                              "settings": session.settings.to_dict()})
        session.queue.put_nowait(Out("send", payload=_ready_json(session)))
    else:
        raise ApiError("unknown_message", f"unknown message type {kind!r}; expected one of {', '.join(CONTROL)}",
                       "type")
