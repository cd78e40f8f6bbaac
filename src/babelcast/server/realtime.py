"""`/v1/realtime`: the transcription subset of the OpenAI Realtime WebSocket API.

Client events: `session.update` (or the beta `transcription_session.update`) with the
transcription settings, `input_audio_buffer.append` (base64 PCM16, 24 kHz unless the session says
otherwise), `input_audio_buffer.commit` and `input_audio_buffer.clear`.
Server events: `session.created` / `session.updated`, `input_audio_buffer.committed` / `.cleared`,
`conversation.item.input_audio_transcription.delta` / `.completed`, `error`, and the extension
`babelcast.language` (the detected language changed, or was locked with `lock_language`).

Items: the audio appended since the last commit (or, with turn detection on, since the last
endpoint) is one conversation item; its transcript is the final of that stretch. As in OpenAI's
API, a mistaken client event gets an `error` and the session goes on; limits (duration, idle time,
frame size) end it cleanly after the pending transcript.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import json
import logging
import math
from collections import deque
from dataclasses import dataclass, field

from starlette.websockets import WebSocket

from . import auth
from .errors import ApiError
from .live import LiveSession, Out, decode_pcm
from .settings import MAX_RATE_HZ, MIN_RATE_HZ, StreamSettings, convert_setting, parse_boost
from .wsloop import drive, log_end

log = logging.getLogger("babelcast.server")
OPENAI_RATE_HZ = 24000
CLIENT_EVENTS = ("session.update", "transcription_session.update", "input_audio_buffer.append",
                 "input_audio_buffer.commit", "input_audio_buffer.clear")
_counter = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_counter):012x}"


@dataclass
class _Item:
    id: str
    samples: int = 0  # at the session rate
    committed: bool = False
    flushing: bool = False  # its final is being computed after a commit (or close)
    parts: list[str] = field(default_factory=list)
    delta_text: str = ""  # the partial text already sent as deltas, current segment


class RealtimeConnection:
    def __init__(self, ws: WebSocket, session: LiveSession):
        self.ws, self.session = ws, session
        self.model = ws.query_params.get("model") or session.hub.cfg.model_name
        self.turn_detection: dict | None = {"type": "server_vad",
                                            "silence_duration_ms": session.hub.cfg.endpoint_ms}
        self.items: deque[_Item] = deque()
        self.current: _Item | None = None  # the item taking appended audio
        self.previous_id: str | None = None

    # ---- settings -----------------------------------------------------------------------------
    def initial_settings(self) -> StreamSettings:
        q = self.ws.query_params
        latency = q.get("latency_ms") or q.get("latency")
        try:
            latency_ms = int(latency) if latency else None
        except ValueError:
            raise ApiError("invalid_latency", f"latency_ms must be an integer, got {latency!r}",
                           "latency_ms") from None
        return StreamSettings(language=q.get("language") or "auto", latency_ms=latency_ms,
                              sample_rate=OPENAI_RATE_HZ, encoding="pcm_s16le", interim_results=True,
                              endpoint_ms=self._endpoint_ms(self.turn_detection),
                              lock_language=convert_setting("lock_language", "lock_language",
                                                            q.get("lock_language", False)),
                              decoder=q.get("decoder") or "rnnt")

    def _endpoint_ms(self, td: dict | None) -> int:
        if td is None:
            return 0  # manual commits only
        ms = td.get("silence_duration_ms")
        return int(ms) if isinstance(ms, (int, float)) and ms > 0 else self.session.hub.cfg.endpoint_ms

    def session_json(self) -> dict:
        s = self.session.settings
        return {"type": "transcription", "object": "realtime.transcription_session", "id": self.session.id,
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": s.sample_rate},
                                    "transcription": {"model": self.model,
                                                      "language": None if s.language == "auto" else s.language,
                                                      "latency_ms": self.session.latency_ms,
                                                      "lock_language": s.lock_language, "decoder": s.decoder,
                                                      "boost": list(s.boost), "beam": s.beam},
                                    "turn_detection": self.turn_detection, "noise_reduction": None}},
                "include": []}

    def update_session(self, event: dict) -> None:
        beta = event.get("type") == "transcription_session.update"
        body = event.get("session")
        if not isinstance(body, dict):
            raise ApiError("invalid_message", "session.update needs a 'session' object", "session")
        if beta:
            rate = _beta_format(body.get("input_audio_format"))
            transcription = body.get("input_audio_transcription") or {}
            td_given, td = "turn_detection" in body, body.get("turn_detection")
        else:
            if body.get("type", "transcription") != "transcription":
                raise ApiError("invalid_settings", "only transcription sessions are supported "
                                                   "(session.type = 'transcription')", "session.type")
            audio_in = (body.get("audio") or {}).get("input") or {}
            rate = _format_rate(audio_in.get("format"))
            transcription = audio_in.get("transcription") or {}
            td_given, td = "turn_detection" in audio_in, audio_in.get("turn_detection")
        if not isinstance(transcription, dict):
            raise ApiError("invalid_settings", "transcription must be an object", "transcription")
        if td_given and td is not None and (not isinstance(td, dict) or td.get("type") not in
                                            ("server_vad", "semantic_vad")):
            raise ApiError("invalid_settings", "turn_detection must be null, server_vad or semantic_vad",
                           "turn_detection")
        old = self.session.settings
        changes = {}
        if rate is not None:
            changes["sample_rate"] = rate
        if "language" in transcription:
            changes["language"] = transcription["language"] or "auto"
        if "latency_ms" in transcription:
            changes["latency_ms"] = transcription["latency_ms"]
        if "lock_language" in transcription:
            changes["lock_language"] = convert_setting("lock_language", "transcription.lock_language",
                                                       transcription["lock_language"])
        if "decoder" in transcription:
            changes["decoder"] = transcription["decoder"]
        for key in ("boost", "keyterm"):  # babelcast's extension (Deepgram's name too)
            if key in transcription:
                changes["boost"] = parse_boost(key, transcription[key])
        if transcription.get("beam") is not None:  # babelcast's extension: beam search on or off
            changes["beam"] = convert_setting("beam", "transcription.beam", transcription["beam"])
        if td_given:
            changes["endpoint_ms"] = self._endpoint_ms(td)
        new = dataclasses.replace(old, **changes)
        if new != old:
            if not self.session.idle and not old.only_language_differs(new):
                raise ApiError("invalid_message", "transcription settings other than the language (and "
                                                  "lock_language) cannot change while audio is buffered: commit or "
                                                  "clear first")
            self.session.restart(new)  # a new language alone applies from the next chunk
        if td_given:
            self.turn_detection = td
        if transcription.get("model"):
            self.model = str(transcription["model"])
        kind = "transcription_session.updated" if beta else "session.updated"
        self.send({"type": kind, "session": self.session_json()})

    # ---- client events ----------------------------------------------------------------------------
    def on_message(self, msg: dict) -> None:
        """Fatal problems raise ApiError; the rest get an error event and the session goes on."""
        client_event_id = None
        try:
            if msg.get("text") is None:
                raise ApiError("invalid_message", "binary frames are not part of this API; send audio as "
                                                  "base64 in input_audio_buffer.append")
            try:
                event = json.loads(msg["text"])
            except ValueError as e:
                raise ApiError("invalid_message", f"message is not valid JSON ({e.msg} at position {e.pos})")
            if not isinstance(event, dict):
                raise ApiError("invalid_message", "a client event must be a JSON object with a 'type'")
            client_event_id = event.get("event_id")
            kind = event.get("type")
            if kind in ("session.update", "transcription_session.update"):
                self.update_session(event)
            elif kind == "input_audio_buffer.append":
                self.append(event)
            elif kind == "input_audio_buffer.commit":
                self.commit()
            elif kind == "input_audio_buffer.clear":
                self.clear()
            else:
                raise ApiError("unknown_message", f"unknown or unsupported client event type {kind!r}; this "
                                                  f"server supports {', '.join(CLIENT_EVENTS)}", "type")
        except ApiError as e:
            if e.code in ("session_too_long", "backlog_full", "server_full", "server_busy", "frame_too_large"):
                raise
            self.session.hub.metrics.errors.labels(e.code).inc()
            self.send(e.realtime_event(client_event_id))

    def append(self, event: dict) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ApiError("invalid_message", "input_audio_buffer.append needs 'audio': base64 PCM16", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("invalid_audio", "'audio' is not valid base64", "audio") from None
        x = decode_pcm(data, "pcm_s16le")
        if not len(x):
            return
        if self.current is None:
            self.current = _Item(_id("item"))
            self.items.append(self.current)
        self.current.samples += len(x)
        self.session.feed(x)

    def commit(self) -> None:
        item = self.current
        if item is None or not item.samples:
            raise ApiError("input_audio_buffer_commit_empty", "buffer too small: no audio was appended since the last commit", "audio")
        self._committed(item)
        item.flushing = True
        self.current = None
        self.session.finalize()

    def clear(self) -> None:
        item = self.current
        if item is not None and not item.committed:
            self.items.remove(item)
            self.current = None
            self.session.discard()
        self.send({"type": "input_audio_buffer.cleared"})

    # ---- server events ---------------------------------------------------------------------------
    def send(self, body: dict) -> None:
        self.session.queue.put_nowait(Out("send", payload={"event_id": _id("event"), **body}))

    def _committed(self, item: _Item) -> None:
        if not item.committed:
            item.committed = True
            self.send({"type": "input_audio_buffer.committed", "item_id": item.id,
                       "previous_item_id": self.previous_id})
            self.previous_id = item.id

    async def render(self, out: Out) -> None:
        for body in self._bodies(out):
            await self.ws.send_json(body)

    def _bodies(self, out: Out) -> list[dict]:
        if out.kind == "send":
            return [out.payload]
        if out.kind == "error":
            return [{"event_id": _id("event"), **out.error.realtime_event()}]
        if out.kind == "partial" and self.items:
            item = self.items[0]
            text = out.event.text
            if not text.startswith(item.delta_text) or text == item.delta_text:
                return []
            delta = text[len(item.delta_text):]
            if not item.delta_text and item.parts:
                delta = " " + delta
            item.delta_text = text
            return [{"event_id": _id("event"), "type": "conversation.item.input_audio_transcription.delta",
                     "item_id": item.id, "content_index": 0, "delta": delta}]
        if out.kind == "language":  # before the final that detected it: its item is the first one
            return [{"event_id": _id("event"), "type": "babelcast.language",
                     "item_id": self.items[0].id if self.items else None, "content_index": 0,
                     "language": out.event.language, "locked": out.event.locked}]
        if out.kind == "final" and self.items:
            item = self.items[0]
            item.delta_text = ""
            if out.event.text:
                item.parts.append(out.event.text)
            if item.flushing and not out.from_finalize:
                return []  # an endpoint inside a committed item: its transcript completes at the commit
            self.items.popleft()
            if item is self.current:
                self.current = None
            bodies = []
            if not item.committed:  # turn detection (or a close) ended the item
                item.committed = True
                bodies.append({"event_id": _id("event"), "type": "input_audio_buffer.committed",
                               "item_id": item.id, "previous_item_id": self.previous_id})
                self.previous_id = item.id
            t = out.event.transcript
            rate = self.session.settings.sample_rate
            bodies.append({"event_id": _id("event"),
                           "type": "conversation.item.input_audio_transcription.completed",
                           "item_id": item.id, "content_index": 0, "transcript": " ".join(item.parts),
                           "language": t.language if t is not None else None,
                           "usage": {"type": "duration", "seconds": math.ceil(item.samples / rate)}})
            return bodies
        return []


def _format_rate(fmt) -> int | None:
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise ApiError("invalid_settings", "audio.input.format must be an object", "audio.input.format")
    kind = fmt.get("type", "audio/pcm")
    if kind != "audio/pcm":
        raise ApiError("invalid_settings", f"unsupported audio format {kind!r}; this server takes audio/pcm "
                                           "(16-bit little-endian mono)", "audio.input.format.type")
    rate = fmt.get("rate", OPENAI_RATE_HZ)
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise ApiError("invalid_settings", f"unsupported sample rate {rate!r}; use {OPENAI_RATE_HZ} "
                                           f"(or any {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz)", "audio.input.format.rate")
    return rate


def _beta_format(fmt) -> int | None:
    if fmt is None:
        return None
    if fmt != "pcm16":
        raise ApiError("invalid_settings", f"unsupported input_audio_format {fmt!r}; use 'pcm16'",
                       "input_audio_format")
    return OPENAI_RATE_HZ


async def realtime_endpoint(ws: WebSocket) -> None:
    hub = ws.app.state.hub
    await ws.accept()
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else ""
    session = LiveSession(hub, "realtime", peer)
    conn = RealtimeConnection(ws, session)
    try:
        try:
            auth.check(hub.cfg.api_keys, ws.headers, ws.query_params)
            intent = ws.query_params.get("intent")
            if intent not in (None, "", "transcription"):
                raise ApiError("invalid_settings", f"only intent=transcription is supported, got {intent!r}",
                               "intent")
            session.start(conn.initial_settings())
        except ApiError as e:
            hub.metrics.errors.labels(e.code).inc()
            session.close_reason = "error"
            try:
                await ws.send_json({"event_id": _id("event"), **e.realtime_event()})
                await ws.close(e.close_code, reason=e.code)
            except Exception:
                pass
            return
        log.info("session opened", extra={"event": "session_opened", "session": session.id, "api": "realtime",
                                          "peer": peer, "settings": session.settings.to_dict()})
        conn.send({"type": "session.created", "session": conn.session_json()})

        def on_message(msg: dict) -> None:
            conn.on_message(msg)

        await drive(ws, session, on_message, conn.render)
    finally:
        session.end()
        log_end(session)

