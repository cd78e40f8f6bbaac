"""Prometheus metrics (prometheus_client), one registry per app so several apps can share a process."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from ..streaming.engine import Engine

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge("babelcast_sessions_active", "Live sessions now open", ["api"], registry=r)
        self.sessions_opened = Counter("babelcast_sessions_opened", "Live sessions admitted", ["api"], registry=r)
        self.sessions_refused = Counter("babelcast_sessions_refused", "Live sessions refused", ["reason"],
                                        registry=r)
        self.errors = Counter("babelcast_errors", "Errors sent to clients, by code", ["code"], registry=r)
        self.finals = Counter("babelcast_finals", "Final results delivered", ["api"], registry=r)
        self.audio_seconds = Counter("babelcast_audio_seconds", "Audio received (s)", ["api"], registry=r)
        self.final_latency = Histogram("babelcast_final_latency_seconds",
                                       "Time from a finalize/commit/close to its final result",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.steps = Counter("babelcast_engine_steps", "Batched engine steps", registry=r)
        self.batch_size = Histogram("babelcast_engine_batch_size", "Streams per batched step",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.step_seconds = Histogram("babelcast_engine_step_seconds", "Compute time of one batched step",
                                      buckets=STEP_BUCKETS, registry=r)
        self.http_requests = Counter("babelcast_http_requests", "HTTP requests", ["route", "status"], registry=r)
        self.grpc_requests = Counter("babelcast_grpc_requests", "Riva gRPC calls, by method and status code",
                                     ["method", "code"], registry=r)
        self.transcription_seconds = Histogram("babelcast_transcription_seconds",
                                               "Processing time of one offline transcription",
                                               buckets=LATENCY_BUCKETS + (30.0, 60.0, 300.0), registry=r)
        self.engine_rtf = Gauge("babelcast_engine_real_time_factor",
                                "Engine compute seconds per second of audio (< 1 keeps up)", registry=r)
        self.engine_lag = Gauge("babelcast_engine_lag_seconds", "How far the most-behind stream is", registry=r)
        self.ready = Gauge("babelcast_ready", "1 when the server accepts new sessions", registry=r)
        self._engine: Engine | None = None
        r.register(_ChunkLatencyCollector(self))
        self._seen_steps = 0

    def bind_engine(self, engine: "Engine") -> None:
        self._engine = engine
        self.engine_rtf.set_function(lambda: engine.metrics.real_time_factor)
        self.engine_lag.set_function(lambda: engine.lag_ms() / 1000)

    def record_steps(self, engine: "Engine") -> None:
        """Copy the steps made since the last call into the histograms (engine thread)."""
        m = engine.metrics
        new = min(m.steps - self._seen_steps, len(m.batch_sizes))
        self._seen_steps = m.steps
        if new <= 0:
            return
        self.steps.inc(new)
        for b in list(m.batch_sizes)[-new:]:
            self.batch_size.observe(b)
        for s in list(m.step_s)[-new:]:
            self.step_seconds.observe(s)


class _ChunkLatencyCollector:
    """Quantiles of the engine's recent chunk latencies (audio of a chunk complete → its tokens)."""

    def __init__(self, metrics: ServerMetrics):
        self.metrics = metrics

    def collect(self):
        family = GaugeMetricFamily("babelcast_chunk_latency_seconds",
                                   "Recent chunk latency (chunk audio complete -> its partial), by quantile",
                                   labels=["quantile"])
        engine = self.metrics._engine
        values = list(engine.metrics.chunk_latency_s) if engine is not None else []
        for q in (0.5, 0.95, 0.99):
            family.add_metric([str(q)], float(np.quantile(values, q)) if values else 0.0)
        yield family
