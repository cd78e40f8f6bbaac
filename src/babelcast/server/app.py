"""The ASGI application: routes, the HTTP middleware (size limit, request log, metrics) and the
lifespan that starts the engine thread and drains it on shutdown."""
from __future__ import annotations

import contextlib
import logging
import time
from importlib import resources
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from ..streaming.memory import machine_ram_bytes, memory_plan
from .auth import requires_key
from .config import ServerConfig
from .errors import ApiError, error_response
from .hub import EngineHub
from .listen import listen_endpoint
from .metrics import ServerMetrics
from .openai_http import models_endpoint, transcriptions_endpoint
from .realtime import realtime_endpoint

if TYPE_CHECKING:
    from ..recognizer import Recognizer

log = logging.getLogger("babelcast.server")
WEB_DIR = resources.files("babelcast") / "web"
QUIET_PATHS = ("/health", "/ready", "/metrics")


def create_app(rec: "Recognizer", cfg: ServerConfig = ServerConfig()) -> Starlette:
    """An app serving `rec`; the engine thread starts with the app's lifespan."""
    cfg.validate()
    metrics = ServerMetrics()
    hub = EngineHub(rec, cfg, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await hub.start()
        grpc_server = None
        if cfg.grpc_port is not None:  # the Riva-compatible service, on this loop and this engine
            from .riva import start_grpc

            grpc_server, app.state.grpc_port = await start_grpc(hub, cfg)
        metrics.ready.set(1)
        log.info("server ready", extra={"event": "ready", "model": cfg.model_name, "max_sessions": cfg.max_sessions,
                                        "precision": hub.engine.precision.precision,
                                        "precision_reason": hub.engine.precision.reason, "auth": bool(cfg.api_keys),
                                        "grpc_port": getattr(app.state, "grpc_port", None)})
        try:
            yield
        finally:
            if not hub.draining:
                await hub.drain(cfg.drain_timeout_s)
            if grpc_server is not None:
                await grpc_server.stop(grace=1.0)
            await hub.stop()
            log.info("server stopped", extra={"event": "stopped"})

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/v1/info", info, methods=["GET"]),
        Route("/v1/models", models_endpoint, methods=["GET"]),
        Route("/v1/audio/transcriptions", transcriptions_endpoint, methods=["POST"]),
        WebSocketRoute("/v1/listen", listen_endpoint),
        WebSocketRoute("/v1/realtime", realtime_endpoint),
        Mount("/static", app=StaticFiles(directory=str(WEB_DIR)), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.hub = hub
    app.state.metrics = metrics
    app.state.exposition = lambda: generate_latest(metrics.registry)  # /metrics' body (replicas: all of theirs)
    app.state.cfg = cfg
    app.add_middleware(HttpMiddleware, cfg=cfg, metrics=metrics)
    return app


def room(app: Starlette) -> dict:
    """Whether the server admits a new session now and how many more it holds (for a router in front of
    several: babelcast serve --ray)."""
    hub = app.state.hub
    return {"admits": hub.ready_problem() is None, "free": max(0, hub.cfg.max_sessions - hub.engine.n_sessions)}


# ---- routes -----------------------------------------------------------------------------------
async def index(request: Request) -> Response:
    return FileResponse(str(WEB_DIR / "index.html"), media_type="text/html")


async def health(request: Request) -> Response:
    hub = request.app.state.hub
    alive = hub.alive
    body = {"status": "ok" if alive else "unhealthy", "sessions": hub.engine.n_sessions}
    return JSONResponse(body, status_code=200 if alive else 503)


async def ready(request: Request) -> Response:
    hub = request.app.state.hub
    problem = hub.ready_problem()
    hub.metrics.ready.set(0 if problem else 1)
    body = {"status": "not_ready" if problem else "ready", "sessions": hub.engine.n_sessions,
            "max_sessions": hub.cfg.max_sessions}
    if problem:
        body["reason"] = problem
    return JSONResponse(body, status_code=503 if problem else 200)


@requires_key
async def metrics_endpoint(request: Request) -> Response:
    return Response(await run_in_threadpool(request.app.state.exposition), media_type=CONTENT_TYPE_LATEST)


async def info(request: Request) -> Response:
    """What a client needs to offer choices: languages, latencies, limits, whether a key is needed."""
    hub = request.app.state.hub
    rec, cfg = hub.rec, hub.cfg
    return JSONResponse({
        "model": cfg.model_name, "languages": rec.supported_languages, "latencies_ms": rec.latencies_ms,
        "default_latency_ms": rec.stream_options().latency_ms, "decoders": rec.decoders,
        "auth_required": bool(cfg.api_keys),
        "encodings": ["pcm_s16le", "f32le"],
        "limits": {"max_sessions": cfg.max_sessions, "max_session_s": cfg.max_session_s,
                   "idle_timeout_s": cfg.idle_timeout_s, "max_frame_bytes": cfg.max_frame_bytes,
                   "max_upload_bytes": cfg.max_upload_bytes, "max_upload_s": cfg.max_upload_s},
        "precision": hub.engine.precision.precision, "memory": _memory(request.app.state),
        **_locales(rec.cfg.prompt)})


def _locales(prompt) -> dict:
    """Canonical locales (trained first), the trained ones, and short aliases apart (the caption page
    lists trained locales first)."""
    if prompt is None:
        return {"locales": [], "trained_locales": [], "aliases": {}}
    return {"locales": list(prompt.locales), "trained_locales": list(prompt.trained_locales or ()),
            "aliases": dict(prompt.aliases)}


def _memory(state) -> dict:
    """Cache bytes per session, resident weight bytes (the loaded model and the engine's runtime
    copy) and the sessions that fit in this machine's RAM; measured once (int8 weights are unpacked
    to be counted)."""
    if getattr(state, "memory", None) is None:
        hub = state.hub
        state.memory = memory_plan(hub.engine.model, hub.engine.left, machine_ram_bytes(), hub.rec.model).to_json()
    return state.memory


# ---- middleware ---------------------------------------------------------------------------------
class HttpMiddleware:
    """Pure ASGI: refuse bodies over the limit (declared or streamed), log and count requests."""

    def __init__(self, app, cfg: ServerConfig, metrics: ServerMetrics):
        self.app, self.cfg, self.metrics = app, cfg, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [0]
        limit = self.cfg.max_upload_bytes
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            if declared <= DRAIN_FACTOR * limit:
                await _drain(receive)  # read the rest so the client gets the 413, not a connection reset
            await self._too_large(send_wrapper, declared)
        else:
            received = [0]

            async def receive_wrapper():
                message = await receive()
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > limit:
                        raise ApiError("request_too_large", f"request body over the limit of {limit} bytes")
                return message

            await self.app(scope, receive_wrapper, send_wrapper)
        route = _route(scope["path"])
        self.metrics.http_requests.labels(route, str(status[0])).inc()
        level = logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO
        client = scope.get("client")
        log.log(level, "http request", extra={
            "event": "http", "method": scope["method"], "path": scope["path"], "status": status[0],
            "ms": round(1000 * (time.perf_counter() - t0), 1), "peer": f"{client[0]}:{client[1]}" if client else ""})

    async def _too_large(self, send, size: int) -> None:
        e = ApiError("request_too_large", f"request body of {size} bytes is over the limit of "
                                          f"{self.cfg.max_upload_bytes} bytes", "file")
        self.metrics.errors.labels(e.code).inc()
        await error_response(e, headers={"Connection": "close"})({"type": "http"}, None, send)


DRAIN_FACTOR = 16  # bodies up to this many times the limit are read and discarded before the 413


async def _drain(receive) -> None:
    """Consume a request body without keeping it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _route(path: str) -> str:
    known = ("/", "/health", "/ready", "/metrics", "/v1/info", "/v1/models", "/v1/audio/transcriptions")
    if path in known:
        return path
    return "/static" if path.startswith("/static/") else "other"
