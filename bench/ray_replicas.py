"""Throughput of `babelcast serve --ray` with 1 and 2 replicas on this machine (issue 18). Not a unit test.

A one-node Ray cluster on loopback (`ray start --head --num-cpus N`, token auth), then for each replica count
a `babelcast serve --ray` subprocess (one torch thread per replica) and --clients concurrent clients that
upload --uploads WAV files of --seconds speech-like audio each through the Serve proxy and the ingress.
Reported: audio seconds transcribed per wall second (x real time) and the mean upload time, with the commit,
the CPU model and flags and the load average. Everything it starts is stopped at the end.

    python bench/ray_replicas.py --replicas 1,2 --clients 4 --uploads 64 --seconds 8 [--model M.nemo]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uploads import wav  # noqa: E402  (speech-like WAV bytes, the streams benchmark's audio)

from babelcast.bench.streams import machine  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(folder: Path, cpus: int, env: dict) -> tuple[subprocess.Popen, str]:
    """A Ray head on loopback in its own process group; its address once it is up."""
    port = free_port()
    log = folder / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen([RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
                                 str(port), "--num-cpus", str(cpus), "--object-store-memory", "200000000",
                                 "--include-dashboard", "false", "--temp-dir", str(folder),
                                 "--ray-client-server-port", str(free_port()), "--disable-usage-stats"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    while "Ray runtime started" not in log.read_text():
        if head.poll() is not None:
            raise SystemExit(log.read_text()[-2000:])
        time.sleep(0.2)
    return head, f"127.0.0.1:{port}"


def wait_ready(url: str, server: subprocess.Popen, log: Path) -> None:
    """Until `serve --ray` says it is serving (Serve has started every replica), then until /ready answers."""
    while "serving at http" not in log.read_text():
        if server.poll() is not None:
            raise SystemExit(f"babelcast serve --ray exited:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def run(url: str, clients: int, uploads: int, data: bytes, seconds: float) -> dict:
    """`uploads` uploads from `clients` threads; throughput and mean upload time."""
    def one(_: int) -> float:
        t0 = time.perf_counter()
        answer = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", data, "audio/wav")},
                            data={"response_format": "json"}, timeout=600)
        answer.raise_for_status()
        return time.perf_counter() - t0

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = list(pool.map(one, range(uploads)))
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 2), "audio_s": uploads * seconds, "x_real_time": round(uploads * seconds / wall, 2),
            "mean_upload_s": round(sum(times) / len(times), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: the bundled demo model)")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--uploads", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.replicas.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bcbench", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    head, address = start_head(folder, max(counts), env)
    data = wav(args.seconds, seed=1)
    results = []
    try:
        for replicas in counts:
            port = free_port()
            model = ["--model", args.model] if args.model else []
            log = folder / f"serve{replicas}.log"
            with log.open("w") as out:
                server = subprocess.Popen([sys.executable, "-m", "babelcast", "serve", "--ray", address, "--replicas",
                                           str(replicas), "--port", str(port), "--threads", "1", *model], env=env,
                                          stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_ready(f"http://127.0.0.1:{port}", server, log)
                result = {"replicas": replicas, **run(f"http://127.0.0.1:{port}", args.clients, args.uploads, data,
                                                      args.seconds)}
            finally:
                server.send_signal(signal.SIGINT)
                server.wait(timeout=60)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(folder, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit, "machine": machine(),
              "load_average": os.getloadavg(), "model": args.model or "bundled demo", "clients": args.clients,
              "upload_s": args.seconds, "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
