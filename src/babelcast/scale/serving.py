"""Serving on a Ray cluster with Ray Serve (`serve --ray`): for each model a deployment of replicas that each
run the whole server app (one engine each), and in front of them one ingress deployment, behind Serve's HTTP
proxy, that relays every request to a replica of the model it names (server/ingress.py).

- Routing by room: each model replica reports whether it admits new sessions and how many more it holds;
  the router (router.py) sends a new request to the admitting replica with the most room, and to the others
  only when none admits (they then refuse it cleanly: 503, or a WebSocket error).
- A WebSocket session is one long streaming call on the replica that admitted it (the app's messages come
  back through it); the client's messages follow in `push` calls pinned to that replica. If the replica
  dies, the call fails and the ingress ends the session with the protocol's `replica_lost` error.
- A replica count, or an autoscaling range (Serve adds replicas while the mean ongoing requests per replica
  are over SESSION_SHARE of --max-sessions).
- /metrics: each model replica posts its exposition to a board (metrics.py); the ingress answers for all.
"""
from __future__ import annotations

import asyncio
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..server.config import ServerConfig
from ..server.fleet import Replicas
from ..server.ingress import ReplicaLost, create_ingress
from .cluster import ClusterError, connect
from .metrics import board, merged, remove_board
from .router import PIN

APP_NAME = "babelcast"
INGRESS = "ingress"
STATS_PERIOD_S = 1.0  # how often the router asks each replica for its room (a new session's wait for news)
SESSION_SHARE = 0.7  # autoscaling target: ongoing requests per replica, as a share of --max-sessions
SPARE_REQUESTS = 8  # requests a replica takes beyond its sessions and uploads: /health, /v1/info...


@dataclass(frozen=True)
class ModelReplicas:
    """One model's deployment: its name, how a replica builds its app (`build_app()` runs on the replica),
    how many replicas, what each holds (sessions, uploads) and what each takes of a node."""

    name: str
    build_app: Callable[[], object]
    replicas: Replicas
    max_sessions: int
    max_pending: int
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def deployment_options(model: ModelReplicas, drain_timeout_s: float) -> dict:
    """serve.deployment options of one model: a fixed count or autoscaling over the range, with a target of
    SESSION_SHARE x --max-sessions ongoing requests per replica (a session or an upload counts one), so a
    replica is added before the others are full; the requests a replica takes at once (each session is its
    stream plus at most one push of audio); how long a removed replica waits for its sessions to end."""
    r = model.replicas
    options = {"name": f"model-{model.name}",
               "max_ongoing_requests": 2 * model.max_sessions + model.max_pending + SPARE_REQUESTS,
               "ray_actor_options": {"num_cpus": model.num_cpus, "num_gpus": model.num_gpus},
               "graceful_shutdown_timeout_s": drain_timeout_s}
    if r.autoscaled:
        options["autoscaling_config"] = {"min_replicas": r.low, "initial_replicas": r.low, "max_replicas": r.high,
                                         "target_ongoing_requests": max(1.0, SESSION_SHARE * model.max_sessions)}
    else:
        options["num_replicas"] = r.low
    return options


def serve_on_ray(address: str, models: list[ModelReplicas], cfg: ServerConfig,
                 room: Callable[[object], dict]) -> None:
    """Deploy `models` (the first is the default) behind one ingress and one HTTP proxy at cfg.host:cfg.port
    on the head node, then wait until interrupted and stop Ray Serve on the cluster (so the next run's --host
    and --port apply: Serve keeps its first HTTP options while it runs). room(app) → {"admits", "free"}."""
    from ray import serve

    connect(address)
    serve.start(proxy_location="HeadOnly", http_options={"host": cfg.host, "port": cfg.port})
    replicas = [model_deployment(m, room, cfg.drain_timeout_s).bind() for m in models]
    ongoing = sum(m.replicas.high * (m.max_sessions + m.max_pending) for m in models) + SPARE_REQUESTS
    try:
        try:
            serve.run(ingress_deployment(cfg, [m.name for m in models], ongoing).bind(*replicas), name=APP_NAME,
                      route_prefix="/")
        except RuntimeError as e:  # Serve gave up starting a deployment: say why, not where
            raise ClusterError(deploy_failure(str(e))) from None
        print(f"serving at http://{cfg.host}:{cfg.port}: " + "; ".join(describe(m, i == 0)
                                                                       for i, m in enumerate(models)),
              file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    finally:
        remove_board()
        serve.shutdown()


def deploy_failure(failure: str) -> str:
    """Why the deployment failed, from Serve's status: the last line of each failed deployment's error (e.g. a
    replica that could not load its model)."""
    from ray import serve

    def last_error(message: str) -> str:
        line = next((line for line in reversed(message.splitlines()) if line.strip()), "")
        return re.sub(r"^[\w.]*(Error|Exception): ", "", line.strip())

    app = serve.status().applications.get(APP_NAME)
    reasons = [f"{name}: {last_error(d.message)}" for name, d in (app.deployments.items() if app else ())
               if d.status == "DEPLOY_FAILED"]
    return (f"Ray Serve could not start {'; '.join(reasons) or failure.splitlines()[0]} "
            "(the replicas' logs: Ray's session logs, serve/ folder)")


def describe(model: ModelReplicas, default: bool) -> str:
    """One model's line of the startup message."""
    r = model.replicas
    scale = (f"{r} replicas, autoscaled at {max(1.0, SESSION_SHARE * model.max_sessions):g} ongoing requests "
             f"per replica" if r.autoscaled else f"{r} replica{'s' if r.high > 1 else ''}")
    return f"{model.name}{' (default)' if default else ''}: {scale}"


def model_deployment(model: ModelReplicas, room: Callable[[object], dict], drain_timeout_s: float):
    """The Serve deployment of one model: replicas that run relayed requests through their app (server/relay.py)
    and report their room to the router."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from ..server.relay import AppSocket, call_http

    @serve.deployment(request_router_config=RequestRouterConfig(
                          request_router_class="babelcast.scale.router:RoomRouter",
                          request_routing_stats_period_s=STATS_PERIOD_S),
                      **deployment_options(model, drain_timeout_s))
    class ModelReplica:
        async def __init__(self):
            self.app = model.build_app()
            self.lifespan = self.app.router.lifespan_context(self.app)  # starts the engine; its end drains it
            await self.lifespan.__aenter__()
            self.sockets: dict[str, AppSocket] = {}
            self.id = serve.get_replica_context().replica_id.unique_id
            self.board = board()

        async def __del__(self):
            await self.lifespan.__aexit__(None, None, None)

        async def http(self, scope: dict, body: bytes) -> dict:
            """One relayed HTTP request."""
            return await call_http(self.app, scope, body)

        async def session(self, sid: str, scope: dict):
            """One relayed WebSocket session: first this replica's id (the session's pushes are pinned to
            it), then the app's messages in batches until it returns."""
            socket = self.sockets[sid] = AppSocket(self.app, scope)
            try:
                yield self.id
                async for batch in socket.batches():
                    yield batch
            finally:
                del self.sockets[sid]
                await socket.end()

        async def push(self, sid: str, messages: list[dict], **pin) -> bool:
            """The client's messages of session `sid` (`pin` names its replica, for the router); False when
            the session is not here (the router sent them elsewhere: its replica is gone)."""
            socket = self.sockets.get(sid)
            if socket is None:
                return False
            await socket.put(messages)
            return True

        def record_routing_stats(self) -> dict:
            """What the router ranks this replica by (Serve calls it every STATS_PERIOD_S); also posts this
            replica's metrics to the board."""
            self.board.post.remote(self.id, model.name, self.app.state.exposition().decode())
            return room(self.app)

    return ModelReplica


def ingress_deployment(cfg: ServerConfig, names: list[str], max_ongoing: int):
    """The Serve deployment behind the proxy: the ingress app (server/ingress.py) over the models' replicas,
    whose handles its constructor gets in the order of `names`. It takes no CPU: it moves bytes."""
    from ray import serve

    @serve.deployment(name=INGRESS, num_replicas=1, max_ongoing_requests=max_ongoing,
                      ray_actor_options={"num_cpus": 0})
    @serve.ingress()
    class Ingress:
        def __init__(self, *handles):
            self.backends = {name: RayBackend(handle) for name, handle in zip(names, handles)}
            self.board = board()

        def __serve_build_asgi_app__(self):
            async def exposition() -> bytes:
                return merged(await self.board.live.remote())

            return create_ingress(self.backends, cfg, exposition)

    return Ingress


def _lost(call):
    """Run the awaitable `call`; a dead replica (Ray's actor errors) becomes ReplicaLost."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import ReplicaUnavailableError

    async def checked():
        try:
            return await call
        except (RayActorError, ReplicaUnavailableError) as e:
            raise ReplicaLost(str(e).splitlines()[0]) from None

    return checked()


class RayBackend:
    """A model's replicas through its Serve deployment handle (server/ingress.py's Backend)."""

    def __init__(self, handle):
        self.handle = handle

    async def http(self, scope: dict, body: bytes) -> dict:
        return await _lost(self.handle.http.remote(scope, body))

    def open(self, scope: dict) -> "RayLink":
        return RayLink(self.handle, scope)


class RayLink:
    """One session on a replica: its streaming `session` call, and `push` calls pinned to that replica."""

    def __init__(self, handle, scope: dict):
        self.handle, self.sid = handle, secrets.token_hex(8)
        self.stream = handle.options(stream=True).session.remote(self.sid, scope)
        self.replica: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def events(self):
        try:
            self.replica.set_result(await _lost(self.stream.__anext__()))
            while True:
                try:
                    batch = await _lost(self.stream.__anext__())
                except StopAsyncIteration:
                    return
                yield batch
        finally:
            if not self.replica.done():
                self.replica.cancel()

    async def push(self, messages: list[dict]) -> None:
        replica = await self.replica
        if not await _lost(self.handle.push.remote(self.sid, messages, **{PIN: replica})):
            raise ReplicaLost("the session's replica no longer runs (dead, or removed by a scale-down)")

    async def close(self) -> None:
        self.stream.cancel()
