"""babelcast as a speech service: streaming WebSocket (`/v1/listen`), OpenAI-compatible
transcriptions and Realtime transcription, a live-caption page, metrics and health checks.

Needs the `server` extra (`pip install babelcast[server]`). See docs/server.md.
"""
from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]


def create_app(rec, cfg: ServerConfig | None = None):
    """The ASGI app serving `rec` (imported lazily: Starlette is an optional dependency)."""
    from .app import create_app as _create

    return _create(rec, cfg or ServerConfig())
