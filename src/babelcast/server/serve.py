"""`babelcast serve`: load a model, build the app, run it under uvicorn with a graceful SIGTERM.

The first SIGTERM/SIGINT stops admission (`/ready` turns 503), asks every live session to deliver
its pending final and close, waits for running offline transcriptions (up to --drain-timeout),
then lets uvicorn shut down. A second signal exits at once.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .config import ServerConfig

log = logging.getLogger("babelcast.server")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    parser.add_argument("--model", help="checkpoint path or Hugging Face id (default: babelcast.DEFAULT_MODEL)")
    parser.add_argument("--host", default=d.host, help=f"address to bind (default {d.host}; any other needs an API key)")
    parser.add_argument("--port", type=int, default=d.port)
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="accept this Bearer key (repeatable); also BABELCAST_API_KEYS=k1,k2")
    parser.add_argument("--api-key-file", type=Path, metavar="FILE", help="one key per line")
    parser.add_argument("--model-name", help="the model id reported to clients (default: the file's stem)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default=d.precision,
                        help="encoder precision; auto picks int8 / bf16 / fp32 by a one-time probe of this CPU")
    parser.add_argument("--threads", type=int, metavar="N", help="torch threads of the engine (default: torch's)")
    parser.add_argument("--max-sessions", type=int, default=d.max_sessions, metavar="N")
    parser.add_argument("--endpoint-ms", type=int, default=d.endpoint_ms, metavar="MS",
                        help="default endpointing window of live sessions; 0 disables")
    parser.add_argument("--max-lag-ms", type=float, default=d.max_lag_ms, metavar="MS",
                        help="refuse new sessions while the engine is this far behind real time")
    parser.add_argument("--max-session-s", type=float, default=d.max_session_s, metavar="S")
    parser.add_argument("--idle-timeout-s", type=float, default=d.idle_timeout_s, metavar="S")
    parser.add_argument("--max-frame-bytes", type=int, default=d.max_frame_bytes, metavar="N")
    parser.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / (1 << 20), metavar="MB")
    parser.add_argument("--max-upload-s", type=float, default=d.max_upload_s, metavar="S")
    parser.add_argument("--max-pending-transcriptions", type=int, default=d.max_pending_transcriptions,
                        metavar="N", help="offline uploads queued or running; more get 503")
    parser.add_argument("--drain-timeout-s", type=float, default=d.drain_timeout_s, metavar="S")
    parser.add_argument("--log-format", choices=("json", "text"), default="json")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    keys = list(args.api_key)
    keys += [k.strip() for k in os.environ.get("BABELCAST_API_KEYS", "").split(",") if k.strip()]
    if args.api_key_file is not None:
        keys += [line.strip() for line in args.api_key_file.read_text().splitlines() if line.strip()]
    model_name = args.model_name or (Path(str(args.model)).stem if args.model else "babelcast")
    return ServerConfig(
        host=args.host, port=args.port, model_name=model_name, api_keys=tuple(dict.fromkeys(keys)),
        max_sessions=args.max_sessions, precision=args.precision, endpoint_ms=args.endpoint_ms,
        max_lag_ms=args.max_lag_ms, threads=args.threads, max_session_s=args.max_session_s,
        idle_timeout_s=args.idle_timeout_s, max_frame_bytes=args.max_frame_bytes,
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_upload_s=args.max_upload_s,
        max_pending_transcriptions=args.max_pending_transcriptions, drain_timeout_s=args.drain_timeout_s)


def run_serve(args: argparse.Namespace) -> int:
    if args.model is None:
        import babelcast

        args.model = babelcast.default_model()
        if args.model is None:
            print("error: no default model is configured; pass --model PATH_OR_HUB_ID", file=sys.stderr)
            return EXIT_USAGE
    try:
        cfg = config_from_args(args)
        cfg.validate()  # before the (slow) model load: a bad setting fails at once
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    from ..recognizer import load_model
    from .logs import setup_logging

    setup_logging(args.log_format, args.log_level)

    try:
        rec = load_model(args.model)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"error: cannot load model {args.model}: {e}", file=sys.stderr)
        return EXIT_FAILED
    return serve(rec, cfg)


def serve(rec, cfg: ServerConfig) -> int:
    """Run until a signal (blocking); exit code 0 after a clean shutdown."""
    from .runner import run_uvicorn

    return EXIT_OK if run_uvicorn(rec, cfg) else EXIT_FAILED
