"""Serving on a Ray cluster with Ray Serve: one deployment whose replicas each run the whole server app (one
engine each) behind Serve's HTTP proxy. A WebSocket is one long request, so it stays on the replica that
accepted it. Each replica reports whether it admits new sessions and how many more it holds; the router sends
a new request to the admitting replica with the most room, and to the others only when none admits (they then
refuse it cleanly: 503, or a WebSocket error). /metrics answers for all replicas (metrics.py)."""
from __future__ import annotations

import time
from collections.abc import Callable

from .cluster import connect
from .metrics import board, merged, remove_board

APP_NAME = "babelcast"
STATS_PERIOD_S = 1.0  # how often the router asks each replica for its room (a new session's wait for news)


def serve_on_ray(address: str, build_app: Callable[[], object], room: Callable[[object], dict], host: str,
                 port: int, replicas: int, max_ongoing: int, num_cpus: float = 1.0, num_gpus: float = 0.0) -> None:
    """Deploy `replicas` copies of the app `build_app()` makes (called on each replica) behind one HTTP proxy
    at host:port on the head node, then wait until interrupted and stop Ray Serve on the cluster (so the next
    run's --host and --port apply: Serve keeps its first HTTP options while it runs). room(app) →
    {"admits": bool, "free": int} for the router."""
    from ray import serve

    connect(address)
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    serve.run(replica_deployment(build_app, room, replicas, max_ongoing, num_cpus, num_gpus).bind(),
              name=APP_NAME, route_prefix="/")
    try:
        while True:
            time.sleep(3600)
    finally:
        remove_board()
        serve.shutdown()


def replica_deployment(build_app: Callable[[], object], room: Callable[[object], dict], replicas: int,
                       max_ongoing: int, num_cpus: float, num_gpus: float):
    """The Serve deployment: an ASGI ingress built on the replica, reporting its room to the router."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    @serve.deployment(name=APP_NAME, num_replicas=replicas, max_ongoing_requests=max_ongoing,
                      ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
                      request_router_config=RequestRouterConfig(
                          request_router_class="babelcast.scale.router:RoomRouter",
                          request_routing_stats_period_s=STATS_PERIOD_S))
    @serve.ingress(build_app)
    class Replica:
        def record_routing_stats(self) -> dict:
            """What the router ranks this replica by (Serve calls it every STATS_PERIOD_S); also posts this
            replica's metrics to the board."""
            self._post_metrics()
            return room(self.app)

        def _post_metrics(self) -> None:
            """Post this replica's exposition; from the first post on, /metrics answers for every replica."""
            import ray

            state = self.app.state
            if not hasattr(self, "_own_exposition"):
                self._board, self._own_exposition = board(), state.exposition
                self._id = serve.get_replica_context().replica_id.unique_id
                state.exposition = lambda: merged(ray.get(self._board.live.remote(), timeout=10))
            self._board.post.remote(self._id, self._own_exposition().decode())

    return Replica
