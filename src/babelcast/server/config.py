"""Server settings: limits, keys and engine options, with the checks that keep a deployment safe."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..config import DEFAULT_BEAM, MAX_BEAM, PRECISIONS


@dataclass(frozen=True)
class ServerConfig:
    """Everything `babelcast serve` can set; defaults suit a single CPU host."""

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None  # the Riva-compatible gRPC service on this port too (0: any free port)
    model_name: str = "babelcast"  # how /v1/models and `ready` events name the model
    api_keys: tuple[str, ...] = ()  # Bearer keys; required when binding beyond loopback
    # engine
    max_sessions: int = 32  # concurrent live sessions (WebSocket streams), all APIs together
    precision: str = "auto"  # auto: probed once on this machine (model/precision.py)
    endpoint_ms: int = 800  # default endpointing window of a live session; 0 disables
    max_lag_ms: float = 2000.0  # the engine refuses new sessions while a stream is this far behind
    threads: int | None = None  # torch intra-op threads of the engine thread (None: torch's default)
    # live utterances start on their latency group's step clock (up to one chunk of leading silence):
    # concurrent streams share steps; off: each stream's tokens are exactly offline's, steps split more
    phase_align: bool = True
    beam_size: int = DEFAULT_BEAM  # hypotheses of sessions decoded with beam search (boosted ones by default); 1: none
    # live sessions
    max_session_s: float = 3600.0  # wall-clock and audio length limit of one session
    idle_timeout_s: float = 30.0  # no message for this long ends a session
    max_frame_bytes: int = 1 << 20  # one WebSocket message (binary audio, or JSON incl. base64 audio)
    max_backlog_s: float = 30.0  # audio held while a finalize is in flight
    pace_lag_ms: float = 1000.0  # when the engine lags this much, streams ahead of real time are paused
    # HTTP transcriptions
    max_upload_bytes: int = 100 * (1 << 20)
    max_upload_s: float = 3 * 3600.0  # decoded duration limit of one upload
    max_pending_transcriptions: int = 4  # queued + running offline requests; more get 503
    # shutdown
    drain_timeout_s: float = 15.0  # SIGTERM: how long to wait for pending finals

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.precision not in ("auto",) + PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; use one of auto, {', '.join(PRECISIONS)}")
        for name in ("beam_size", "max_sessions", "max_frame_bytes", "max_upload_bytes", "max_pending_transcriptions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.beam_size > MAX_BEAM:
            raise ValueError(f"beam_size must be at most {MAX_BEAM}, got {self.beam_size}")
        for name in ("max_session_s", "idle_timeout_s", "max_backlog_s", "max_upload_s", "drain_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"grpc_port {self.grpc_port} is out of range 0-65535")
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(f"the gRPC port and the HTTP port are both {self.port}; give --grpc-port another number")
        if self.endpoint_ms < 0:
            raise ValueError(f"endpoint_ms must be >= 0, got {self.endpoint_ms}")
        if any(not k or k != k.strip() for k in self.api_keys):
            raise ValueError("API keys must be non-empty and have no surrounding whitespace")
        if not self.api_keys and not is_loopback(self.host):
            raise ValueError(
                f"binding to {self.host!r} exposes the server beyond this machine: API keys are required "
                "(--api-key KEY, --api-key-file FILE or BABELCAST_API_KEYS); or bind to 127.0.0.1")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
