"""`babelcast serve`: load a model, build the app, run it under uvicorn with a graceful SIGTERM, or deploy replicas
of it on Ray (babelcast.scale, which sits above babelcast.server: hence this command module beside cli.py).

The first SIGTERM/SIGINT stops admission (`/ready` turns 503), asks every live session to deliver
its pending final and close, waits for running offline transcriptions (up to --drain-timeout),
then lets uvicorn shut down. A second signal exits at once.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from .cli_errors import EXIT_FAILED, EXIT_OK, CliError, load_recognizer
from .server.config import ServerConfig
from .server.fleet import ModelSpec, Replicas, model_specs, parse_replicas

log = logging.getLogger("babelcast.server")
SERVER_PACKAGES = ("uvicorn", "starlette", "websockets", "multipart", "prometheus_client")
GRPC_PACKAGES = ("grpc", "grpc_health", "riva")  # the grpc extra: grpcio, grpcio-health-checking, nvidia-riva-client


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH_OR_ID[,KEY=VALUE...]",
                        help="checkpoint path or Hugging Face id (default: babelcast.DEFAULT_MODEL); with --ray, "
                             "repeatable: several models behind one address, picked by the request's `model` (the "
                             "first is the default); keys precision=, replicas=N|MIN-MAX, device= override the "
                             "server-wide options for that model (docs/scaling.md)")
    parser.add_argument("--host", default=d.host, help=f"address to bind (default {d.host}; any other needs an API key)")
    parser.add_argument("--port", type=port_number, default=d.port)
    parser.add_argument("--grpc-port", type=port_number, metavar="PORT",
                        help="also serve NVIDIA Riva's ASR gRPC API (and gRPC health) on this port, same engine")
    parser.add_argument("--open", action="store_true", help="open the live-caption page in a browser once serving")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="accept this Bearer key (repeatable); also BABELCAST_API_KEYS=k1,k2")
    parser.add_argument("--api-key-file", type=Path, metavar="FILE", help="one key per line")
    parser.add_argument("--model-name", help="the model id reported to clients (default: the file's name without "
                                             ".nemo)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default=d.precision,
                        help="encoder precision; auto picks int8 / bf16 / fp32 by a one-time probe of this CPU")
    parser.add_argument("--threads", type=int, metavar="N", help="torch threads of the engine (default: torch's)")
    parser.add_argument("--max-sessions", type=int, default=d.max_sessions, metavar="N")
    parser.add_argument("--beam-size", type=int, default=d.beam_size, metavar="N",
                        help="hypotheses of sessions decoded with beam search: those that boost phrases, or ask "
                             "for it (setting beam); 1: every session decodes greedily")
    parser.add_argument("--no-phase-align", dest="phase_align", action="store_false",
                        help="do not start live utterances on their latency's step clock (with it, up to one "
                             "chunk of leading silence lets concurrent streams share steps; without it, each "
                             "stream's text is exactly offline's, at a lower stream capacity)")
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
    cluster = parser.add_argument_group("on a Ray cluster (the ray extra; docs/scaling.md)")
    cluster.add_argument("--ray", metavar="ADDRESS",
                         help="serve from replicas on the Ray cluster at HOST:PORT (auto: RAY_ADDRESS, local: start "
                              "one), behind one Ray Serve proxy at --host:--port on the head node")
    cluster.add_argument("--replicas", type=replica_range, default=Replicas(1, 1), metavar="N|MIN-MAX",
                         help="server replicas of each model, one engine and one model copy each (default 1); "
                              "MIN-MAX: Ray Serve adds and removes replicas with the load")
    cluster.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                         help="where each replica runs its model; cuda gives each replica one GPU")


def replica_range(text: str) -> Replicas:
    """--replicas: N or MIN-MAX."""
    try:
        return parse_replicas(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def config_from_args(args: argparse.Namespace, spec: ModelSpec) -> ServerConfig:
    """The server settings of the model `spec` (its name, and its precision if the spec sets one)."""
    keys = list(args.api_key)
    keys += [k.strip() for k in os.environ.get("BABELCAST_API_KEYS", "").split(",") if k.strip()]
    if args.api_key_file is not None:
        keys += [line.strip() for line in args.api_key_file.read_text().splitlines() if line.strip()]
    return ServerConfig(
        host=args.host, port=args.port, grpc_port=args.grpc_port, model_name=spec.name,
        api_keys=tuple(dict.fromkeys(keys)),
        max_sessions=args.max_sessions, precision=spec.precision or args.precision, endpoint_ms=args.endpoint_ms,
        max_lag_ms=args.max_lag_ms, threads=args.threads, phase_align=args.phase_align, beam_size=args.beam_size,
        max_session_s=args.max_session_s,
        idle_timeout_s=args.idle_timeout_s, max_frame_bytes=args.max_frame_bytes,
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_upload_s=args.max_upload_s,
        max_pending_transcriptions=args.max_pending_transcriptions, drain_timeout_s=args.drain_timeout_s)


def run_serve(args: argparse.Namespace) -> int:
    """Check what can fail fast (packages, settings, the port), then load the model and serve."""
    check_packages(SERVER_PACKAGES, "babelcast serve", "server")
    try:
        specs = model_specs(args.model, args.model_name)
        configs = [config_from_args(args, spec) for spec in specs]
        for cfg in configs:
            cfg.validate()  # before the (slow) model load: a bad setting fails at once
    except (OSError, ValueError) as e:
        raise CliError(str(e)) from None
    cfg = configs[0]
    check_port_free(cfg.host, cfg.port)
    if cfg.grpc_port is not None:
        if args.ray:
            raise CliError("--grpc-port is not available with --ray (Ray Serve proxies HTTP); serve gRPC from "
                           "a server without --ray")
        check_packages(GRPC_PACKAGES, "--grpc-port", "grpc")
        check_port_free(cfg.host, cfg.grpc_port, "--grpc-port")
    if args.ray:
        return serve_on_ray(args, specs, configs)
    if len(specs) > 1 or specs[0].replicas or specs[0].device:
        raise CliError("several --model, and replicas= or device= in one, need --ray (a Ray cluster: --ray local "
                       "on this machine); docs/scaling.md")
    from .server.logs import setup_logging

    setup_logging(args.log_format, args.log_level)
    rec = load_recognizer(specs[0].source)
    if args.open:
        open_when_ready(configs[0].host, configs[0].port)
    return serve(rec, configs[0])


def serve_on_ray(args: argparse.Namespace, specs: tuple[ModelSpec, ...], configs: list[ServerConfig]) -> int:
    """`--ray`: replicas of each model on a Ray cluster behind one ingress (babelcast.scale.serving), until
    interrupted."""
    from .scale.serving import ModelReplicas
    from .scale.serving import serve_on_ray as deploy

    from .server.app import room

    def replicas_of(spec: ModelSpec, cfg: ServerConfig) -> ModelReplicas:
        device = spec.device or args.device

        def build_app():  # runs on each replica
            from .server.app import create_app

            return create_app(load_recognizer(spec.source, device), cfg)

        return ModelReplicas(spec.name, build_app, spec.replicas or args.replicas, cfg.max_sessions,
                             cfg.max_pending_transcriptions, num_cpus=float(cfg.threads or 1),
                             num_gpus=float(device == "cuda"))

    deploy(args.ray, [replicas_of(spec, cfg) for spec, cfg in zip(specs, configs)], configs[0], room)
    return EXIT_OK


def check_packages(names: tuple[str, ...], needed_by: str, extra: str) -> None:
    """An extra's packages must be installed; say how, instead of a ModuleNotFoundError from deep inside."""
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise CliError(f"{needed_by} needs {', '.join(missing)}: run scripts/setup.sh, or "
                       f"pip install 'babelcast[{extra}]'", EXIT_FAILED)


def check_port_free(host: str, port: int, option: str = "--port") -> None:
    """Bind the address once before anything is announced, so a busy port is the first and only message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as e:
            raise CliError(f"cannot listen on {host}:{port} ({e.strerror or e}); stop what uses it or pass "
                           f"{option} with another number", EXIT_FAILED) from None


def open_when_ready(host: str, port: int, timeout_s: float = 120.0) -> None:
    """Open the caption page in the default browser once /ready answers (a daemon thread polls it)."""
    import urllib.request
    import webbrowser

    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"

    def wait_then_open() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        print(f"live captions: {url}", file=sys.stderr)
        webbrowser.open(url)

    threading.Thread(target=wait_then_open, daemon=True, name="babelcast-open").start()


def serve(rec, cfg: ServerConfig) -> int:
    """Run until a signal (blocking); exit code 0 after a clean shutdown."""
    from .server.runner import run_uvicorn

    return EXIT_OK if run_uvicorn(rec, cfg) else EXIT_FAILED
