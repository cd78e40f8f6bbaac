"""The front of a replicated deployment (`serve --ray`): one app that takes every request, picks the model it
names and relays the request to a replica of that model (a Backend), so that

- models of different files or precisions share one address: the `model` form field of an upload, the
  `model` query parameter (/v1/listen, /v1/realtime, /v1/info, /ready ...) or a Realtime session.update's
  transcription model (before any audio: the session moves to that model's replica) pick one; none picks
  the first (server/fleet.py);
- a session whose replica is lost still ends the protocol's way: an `error` event (`replica_lost`) and a
  close code saying reconnect (1012), where a plain proxy drops the connection.

It answers GET /v1/models (every model) and GET /metrics (every replica, `exposition`) itself. It imports
no torch: it moves bytes, and reads a few small JSON events."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from . import auth
from .auth import requires_key
from .config import ServerConfig
from .errors import ApiError, error_response
from .fleet import models_body, pick_model, realtime_model
from .relay import forwarded_scope

log = logging.getLogger("babelcast.server")
LISTEN, REALTIME, TRANSCRIPTIONS = "/v1/listen", "/v1/realtime", "/v1/audio/transcriptions"
REALTIME_UPDATES = ("session.update", "transcription_session.update")
UPSTREAM_HIGH = 64  # client messages the ingress holds for a replica before it stops reading the client
MAX_FORM_FIELDS = 4096  # an upload's fields read here to find `model` (the replica checks them all)
LOST = ("the replica serving this {what} stopped (its process or node was lost, or the deployment scaled down); "
        "{retry}: new ones go to a live replica")


class ReplicaLost(Exception):
    """The replica holding a request stopped before answering it."""


class Link(Protocol):
    """One WebSocket session on a replica."""

    def events(self) -> AsyncIterator[list[dict]]:
        """The ASGI messages the replica's app sends, in batches, until it returns; ReplicaLost if it stops."""

    async def push(self, messages: list[dict]) -> None:
        """Hand the client's ASGI messages to the replica's app."""

    async def close(self) -> None:
        """The ingress is done with this session (the app is told the client left)."""


class Backend(Protocol):
    """The replicas of one model."""

    async def http(self, scope: dict, body: bytes) -> dict:
        """One HTTP request on a replica: {status, headers, body}; ReplicaLost if it stops."""

    def open(self, scope: dict) -> Link:
        """A WebSocket session on the replica with the most room."""


def create_ingress(backends: dict[str, Backend], cfg: ServerConfig, exposition: Callable[[], Awaitable[bytes]],
                   lifespan=None) -> Starlette:
    """The ingress app of `backends` (model name → Backend, the default first); `exposition()` is the body
    of /metrics."""
    fleet = Fleet(backends, cfg)

    @requires_key
    async def models(request: Request) -> Response:
        return JSONResponse(models_body(fleet.names))

    @requires_key
    async def metrics(request: Request) -> Response:
        return Response(await exposition(), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/v1/models", models, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
              Mount("", app=fleet.relay)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.cfg = cfg
    return app


class Fleet:
    """The models behind the ingress and how a request reaches one."""

    def __init__(self, backends: dict[str, Backend], cfg: ServerConfig):
        self.backends, self.cfg = backends, cfg
        self.names = tuple(backends)

    def pick(self, requested: str | None, headers, query) -> str:
        """The model a request names (fleet.pick_model); only a caller with a key learns the names."""
        try:
            return pick_model(self.names, requested)
        except ApiError:
            auth.check(self.cfg.api_keys, headers, query)
            raise

    async def relay(self, scope: dict, receive, send) -> None:
        """Every request but the ingress's own: to a replica of the model it names."""
        if scope["type"] == "websocket":
            await SocketRelay(self, scope, receive, send).run()
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: dict, receive, send) -> None:
        request = Request(scope, receive)
        try:
            body = await _body(request, self.cfg.max_upload_bytes)
            name = self.pick(await self._requested(request, body), request.headers, request.query_params)
            answer = await self.backends[name].http(forwarded_scope(scope), body)
        except ApiError as e:
            await error_response(e)(scope, receive, send)
        except ReplicaLost:
            log.warning("replica lost", extra={"event": "replica_lost", "path": scope["path"]})
            lost = ApiError("replica_lost", LOST.format(what="request", retry="retry it"))
            await error_response(lost)(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": answer["status"], "headers": answer["headers"]})
            await send({"type": "http.response.body", "body": answer["body"]})

    async def _requested(self, request: Request, body: bytes) -> str | None:
        """The model a request names: an upload's `model` field, else the `model` query parameter."""
        multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
        if len(self.names) > 1 and request.method == "POST" and request.url.path == TRANSCRIPTIONS and multipart:
            async def replay() -> dict:
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                form = await Request(request.scope, replay).form(max_files=1, max_fields=MAX_FORM_FIELDS)
            except MultiPartException:
                return None  # the replica answers with what is wrong with the body
            model = form.get("model")
            await form.close()
            return str(model) if model else None
        return request.query_params.get("model")


async def _body(request: Request, limit: int) -> bytes:
    """The request body, up to `limit` bytes (ApiError request_too_large beyond)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("request_too_large", f"request body over the limit of {limit} bytes", "file")
        chunks.append(chunk)
    return b"".join(chunks)


class SocketRelay:
    """One WebSocket between a client and a replica's app: ASGI messages both ways, in order. A Realtime
    session.update naming another model before any audio moves the session: the new replica gets every
    client message so far, and the client none of the answers it already has."""

    def __init__(self, fleet: Fleet, scope: dict, receive, send):
        self.fleet, self.scope, self.receive, self._send = fleet, scope, receive, send
        self.path = scope["path"]
        self.query, self.headers = QueryParams(scope.get("query_string", b"")), Headers(scope=scope)
        self.sending = asyncio.Lock()  # the replica's messages and the ingress's own share the socket
        self.accepted = self.closed = False
        self.tally = ListenTally()
        self.name = ""
        self.link: Link | None = None
        self.seen = 0  # messages of the replica(s) the client got
        self.moves = self.path == REALTIME and len(fleet.names) > 1  # a session.update may pick another model
        self.history: list[dict] | None = []  # the client's messages while the session may still move

    async def run(self) -> None:
        await self.receive()  # websocket.connect
        try:
            self.name = self.fleet.pick(self.query.get("model"), self.headers, self.query)
        except ApiError as e:
            await self.end(e)
            return
        self.link = self.fleet.backends[self.name].open(forwarded_scope(self.scope))
        upstream, downstream = asyncio.create_task(self._upstream()), asyncio.create_task(self._downstream())
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
            if not downstream.done():
                upstream.result()  # a failure to hand over the client's messages ends the session; else the
            await downstream  # client left and its app ends the session
        except ReplicaLost:
            log.warning("replica lost", extra={"event": "replica_lost", "model": self.name, "path": self.path})
            await self.end(ApiError("replica_lost", LOST.format(what="session", retry="reconnect")))
        except Exception:
            log.exception("relay failed", extra={"event": "relay_error", "model": self.name, "path": self.path})
            await self.end(ApiError("internal_error", "the connection to the model's replica failed; reconnect"))
        finally:
            for task in (upstream, downstream):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.link.close()

    async def send(self, message: dict) -> None:
        """To the client (once accepted, accepts are dropped; after the close, everything)."""
        async with self.sending:
            kind = message["type"]
            if self.closed or (kind == "websocket.accept" and self.accepted):
                return
            self.accepted |= kind == "websocket.accept"
            self.closed = kind == "websocket.close"
            await self._send(message)

    async def end(self, e: ApiError) -> None:
        """The protocol's ending of a session the replica cannot end: error (and closed), then the close."""
        if self.path == LISTEN:
            events = e.listen_ending(self.tally.segments, self.tally.audio_s)
        elif self.path == REALTIME:
            events = [{"event_id": _event_id(), **e.realtime_event()}]
        else:
            events = []
        with contextlib.suppress(Exception):  # the client may be gone too
            await self.send({"type": "websocket.accept"})
            for event in events:
                await self.send({"type": "websocket.send", "text": json.dumps(event)})
            await self.send({"type": "websocket.close", "code": e.close_code, "reason": e.code})

    async def _downstream(self) -> None:
        """The replica's messages to the client, until its app returns (following a move to another model)."""
        while True:
            link, skip = self.link, self.seen  # a moved session's new replica repeats what the client has
            try:
                async for batch in link.events():
                    if link is not self.link:
                        break
                    for message in batch:
                        if message["type"] == "websocket.send" and skip:
                            skip -= 1
                        else:
                            await self._deliver(message)
            except Exception:
                if link is self.link:
                    raise
            if link is self.link:
                return

    async def _deliver(self, message: dict) -> None:
        if message["type"] == "websocket.send":
            self.seen += 1
            if self.path == LISTEN and message.get("text"):
                self.tally.event(message["text"])
        await self.send(message)

    async def _upstream(self) -> None:
        """The client's messages to the replica, in batches (whatever came while the last one was handed)."""
        queue: asyncio.Queue[dict] = asyncio.Queue(UPSTREAM_HIGH)
        reader = asyncio.create_task(self._read(queue))
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                link, forward = self.link, []
                for message in batch:
                    keep = await self._intercept(message)
                    if self.link is not link:  # moved: the new replica got these with the history
                        link, forward = self.link, []
                    elif keep:
                        forward.append(message)
                if forward:
                    await link.push(forward)
                if batch[-1]["type"] == "websocket.disconnect":
                    return
        finally:
            reader.cancel()

    async def _read(self, queue: asyncio.Queue) -> None:
        while True:
            message = await self.receive()
            await queue.put(message)
            if message["type"] == "websocket.disconnect":
                return

    async def _intercept(self, message: dict) -> bool:
        """Look at a client message on its way: count listen audio; a Realtime model change is done here.
        False when the message is answered here instead of forwarded."""
        self.tally.client(message)
        if not self.moves:
            return True
        text = message.get("text") or ""
        if "input_audio_buffer.append" in text:
            self.history = None  # audio on this replica: the session stays
        event = _update_event(text)
        model = realtime_model(event) if event else None
        if model is not None and model != self.name:
            try:
                name = self.fleet.pick(model, self.headers, self.query)
                if self.history is None:
                    raise ApiError("invalid_settings", f"the transcription model cannot change once audio was "
                                                       f"appended; for {name}, connect with ?model={name}", "model")
            except ApiError as e:
                await self.send({"type": "websocket.send", "text": json.dumps(
                    {"event_id": _event_id(), **e.realtime_event(event.get("event_id"))})})
                return False
            await self._move(name, message)
            return False
        if self.history is not None:
            self.history.append(message)
        return True

    async def _move(self, name: str, update: dict) -> None:
        """The session to model `name` (no audio yet): a new replica gets every client message so far."""
        old, self.name = self.link, name
        self.link = self.fleet.backends[name].open(forwarded_scope(self.scope))
        self.history.append(update)
        await old.close()
        await self.link.push(list(self.history))
        log.info("session moved", extra={"event": "session_moved", "model": name, "path": self.path})


def _update_event(text: str) -> dict | None:
    """A Realtime session.update (or the beta transcription_session.update) in a text frame."""
    if "session.update" not in text:
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) and event.get("type") in REALTIME_UPDATES else None


def _event_id() -> str:
    return f"event_{secrets.token_hex(6)}"


class ListenTally:
    """What a /v1/listen `closed` event reports, kept for a session whose replica is lost: the finals the
    client got, and the audio relayed (its rate and encoding from the latest `ready`)."""

    SAMPLE_BYTES = {"pcm_s16le": 2, "f32le": 4}

    def __init__(self):
        self.segments = 0
        self.audio_s = 0.0
        self.bytes_per_s: float | None = None
        self.unrated_bytes = 0  # audio sent before the first `ready` told its rate

    def client(self, message: dict) -> None:
        """A client message: its audio bytes."""
        size = len(message.get("bytes") or b"")
        if self.bytes_per_s:
            self.audio_s += size / self.bytes_per_s
        else:
            self.unrated_bytes += size

    def event(self, text: str) -> None:
        """A server event: finals count, `ready` says the rate."""
        if '"final"' not in text and '"ready"' not in text:
            return
        event = json.loads(text)
        if event.get("type") == "final":
            self.segments += 1
        elif event.get("type") == "ready":
            settings = event["settings"]
            self.bytes_per_s = settings["sample_rate"] * self.SAMPLE_BYTES.get(settings["encoding"], 2)
            self.audio_s += self.unrated_bytes / self.bytes_per_s
            self.unrated_bytes = 0
