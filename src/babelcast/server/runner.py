"""uvicorn with a draining first signal (imported only when serving: uvicorn is an optional extra)."""
from __future__ import annotations

import logging
import signal

import uvicorn

from .app import create_app
from .config import ServerConfig

log = logging.getLogger("babelcast.server")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains live sessions before the usual shutdown;
    a second one exits at once."""

    def __init__(self, config: uvicorn.Config, app):
        super().__init__(config)
        self.app = app
        self._draining = False

    def handle_exit(self, sig, frame) -> None:
        hub = self.app.state.hub
        if self._draining or not self.started or hub.loop is None:
            self.force_exit = self._draining
            self.should_exit = True
            return
        self._draining = True
        log.info("signal received: draining", extra={"event": "drain", "signal": signal.Signals(sig).name})
        hub.loop.call_soon_threadsafe(lambda: hub.loop.create_task(self._drain()))

    async def _drain(self) -> None:
        hub = self.app.state.hub
        ok = await hub.drain(hub.cfg.drain_timeout_s)
        log.info("drained" if ok else "drain timed out",
                 extra={"event": "drained", "complete": ok, "sessions_left": len(hub.live)})
        self.should_exit = True


def uvicorn_config(app, cfg: ServerConfig) -> uvicorn.Config:
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, access_log=False,
                          ws_max_size=max(cfg.max_frame_bytes * 2, 1 << 20), ws_ping_interval=20,
                          ws_ping_timeout=20, timeout_graceful_shutdown=5, lifespan="on")


def run_uvicorn(rec, cfg: ServerConfig) -> bool:
    """Serve until a signal; True when the server had started."""
    app = create_app(rec, cfg)
    server = DrainingServer(uvicorn_config(app, cfg), app)
    server.run()
    return server.started
