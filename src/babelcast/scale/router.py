"""The Ray Serve request router of babelcast's replicas (imported by Serve by name, in its proxies)."""
from __future__ import annotations

import random

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

PIN = "replica"  # the keyword of a call that must reach one replica: a session's `push` names the session's


class RoomRouter(RequestRouter):
    """Replicas that admit new sessions first, the one with the most free sessions first (ties at random); the
    refusing ones last, so a request still reaches a replica that says why it cannot take it. A call that
    names its replica (PIN) goes there; when that replica is no longer running (dead, or being removed), it
    goes to another, which answers that it does not hold the session (the caller then ends it)."""

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """Serve's hook: ranks of replicas, most preferred first."""
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True  # none of these took it: wait, then ask again
            pinned = [r for r in candidate_replicas if r.replica_id.unique_id == pending_request.kwargs.get(PIN)]
            if pinned:
                return [pinned]

        def free(replica: RunningReplica) -> int:
            return -int(replica.routing_stats.get("free", 0))

        admitting = [r for r in candidate_replicas if r.routing_stats.get("admits", True)]
        random.shuffle(admitting)
        admitting.sort(key=free)
        refusing = [r for r in candidate_replicas if not r.routing_stats.get("admits", True)]
        return [rank for rank in ([admitting[0]] if admitting else [], admitting[1:], refusing) if rank]
