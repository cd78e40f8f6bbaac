"""Load test of `babelcast serve` over its WebSocket API (issue 4), or with `--protocol grpc` over its
Riva-compatible gRPC API (issue 17): N concurrent clients on loopback stream audio in real time, ask
for a final at the end of every utterance, and measure what a client sees. Not a unit test.

For each client count N: a fresh server (a `babelcast serve` subprocess, or --url for one already
running), N clients with staggered starts, each sending 40 ms packets of speech-like audio on a
wall-clock schedule, `finalize` after each utterance and `close` at the end. Reported per N:

- time-to-final: from sending `finalize` (or `close`) to receiving the final that answers it;
  over gRPC, where a stream has no finalize, each utterance is one StreamingRecognize call and
  time-to-final runs from the end of its requests (half-close) to its final result (or to the end
  of the call for an utterance without text); the next utterance's call starts at once, on the
  same real-time schedule, so a client holds two sessions while a final is pending (the server
  is started with --max-sessions 2N);
- lost finals: finalizes sent without their final (must be 0), refused sessions, errors;
- the server's own view from /metrics: chunk latency p95, real-time factor, mean batch size;
- sustained: every session admitted, no final lost or late, p95 time-to-final within one chunk
  + --slack-ms. "Sessions sustained" is the largest N that passed.

    python bench/load_ws.py --model M.nemo --clients 1,2,4,8,16 --seconds 20 --latency 320
    python bench/load_ws.py --url ws://127.0.0.1:8000 --clients 4 --seconds 10
    python bench/load_ws.py --model M.nemo --protocol grpc --clients 1,2,4,8,16 --seconds 20 --latency 320
Results: a JSON and a Markdown table in --out (default bench/results/), named with date and host.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RATE = 16000
PACKET_MS = 40


@dataclass
class ClientStats:
    admitted: bool = False
    refused: str = ""
    errors: list[str] = field(default_factory=list)
    finalizes: int = 0
    finals: int = 0
    ttf_s: list[float] = field(default_factory=list)
    partials: int = 0
    closed: bool = False


@dataclass
class RunResult:
    protocol: str
    clients: int
    latency_ms: int
    seconds: float
    admitted: int
    refused: int
    errors: int
    finals_expected: int
    finals_received: int
    lost_finals: int
    p50_final_ms: float
    p95_final_ms: float
    max_final_ms: float
    server_chunk_p95_ms: float
    server_rtf: float
    server_mean_batch: float
    sustained: bool
    error_codes: dict = field(default_factory=dict)  # error code (WebSocket event or gRPC status) → count


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Voiced harmonics under a syllable-rate envelope, with short pauses: not speech, but it moves
    the model like audio does (a full-size model transcribes nonsense from it, which is fine here)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    pitch = 100 + 80 * rng.random() + 15 * np.sin(2 * np.pi * 0.5 * t + rng.random())
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = sum(np.sin(k * phase) * (0.6 ** k) for k in range(1, 7))
    syllables = np.clip(np.sin(2 * np.pi * (2.5 + rng.random()) * t), 0, None) ** 0.5
    x = 0.25 * voiced * syllables + 0.005 * rng.standard_normal(n)
    return x.astype(np.float32)


def utterance_plan(seconds: float, seed: int, utt_s: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out, left = [], seconds
    while left > 0.4:
        length = min(left, utt_s * (0.75 + 0.5 * rng.random()))
        out.append(speechlike(length, seed * 1000 + len(out)))
        left -= length
    return out


class Pacer:
    """A client's real-time clock: its utterances' PCM packets, each sent when its audio would have been
    spoken (one schedule across the utterances)."""

    def __init__(self):
        self.t0, self.sent = time.monotonic(), 0

    async def packets(self, utt: np.ndarray):
        step = RATE * PACKET_MS // 1000
        pcm = (np.clip(utt, -1, 1) * 32767).astype("<i2")
        for i in range(0, len(pcm), step):
            piece = pcm[i:i + step]
            self.sent += len(piece)
            delay = self.t0 + self.sent / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield piece.tobytes()


async def run_client(url: str, utts: list[np.ndarray], start_delay: float, stats: ClientStats,
                     headers: dict) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    await asyncio.sleep(start_delay)
    try:
        ws = await connect(url, additional_headers=headers, max_size=None, open_timeout=30)
    except OSError as e:
        stats.refused = f"connect: {e}"
        return
    pending: list[float] = []  # send times of finalizes not answered yet
    async with ws:
        first = json.loads(await ws.recv())
        if first["type"] != "ready":
            stats.refused = first.get("code", first["type"])
            return
        stats.admitted = True

        async def receive() -> None:
            async for message in ws:
                e = json.loads(message)
                now = time.monotonic()
                if e["type"] == "partial":
                    stats.partials += 1
                elif e["type"] == "final" and e.get("from_finalize"):
                    stats.finals += 1
                    if pending:
                        stats.ttf_s.append(now - pending.pop(0))
                elif e["type"] == "error":
                    stats.errors.append(e["code"])
                elif e["type"] == "closed":
                    stats.closed = True
                    return

        receiver = asyncio.create_task(receive())
        pacer = Pacer()
        try:
            for utt in utts:
                async for packet in pacer.packets(utt):
                    await ws.send(packet)
                pending.append(time.monotonic())
                stats.finalizes += 1
                await ws.send(json.dumps({"type": "finalize"}))
            pending.append(time.monotonic())  # the close also answers with a final (empty here)
            stats.finalizes += 1
            await ws.send(json.dumps({"type": "close"}))
            await asyncio.wait_for(receiver, timeout=30)
        except (ConnectionClosed, asyncio.TimeoutError) as e:
            stats.errors.append(type(e).__name__)
        finally:
            receiver.cancel()


async def run_client_grpc(target: str, utts: list[np.ndarray], start_delay: float, stats: ClientStats,
                          headers: dict, latency: int) -> None:
    """The gRPC twin of run_client: one StreamingRecognize call per utterance, in real time, back to back."""
    import grpc
    from riva.client.proto import riva_asr_pb2 as rasr
    from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
    from riva.client.proto.riva_audio_pb2 import LINEAR_PCM

    config = rasr.StreamingRecognitionConfig(interim_results=True, config=rasr.RecognitionConfig(
        encoding=LINEAR_PCM, sample_rate_hertz=RATE, language_code="auto", enable_automatic_punctuation=True,
        custom_configuration={"latency_ms": str(latency)}, endpointing_config=rasr.EndpointingConfig(stop_history=0)))
    metadata = tuple((k.lower(), v) for k, v in headers.items())
    await asyncio.sleep(start_delay)
    pacer = Pacer()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rasr_grpc.RivaSpeechRecognitionStub(channel)
        receivers = []
        for utt in utts:
            call = stub.StreamingRecognize(metadata=metadata)
            ended = asyncio.get_running_loop().create_future()  # when the call's requests ended
            receivers.append(asyncio.create_task(_grpc_results(call, ended, stats)))
            try:
                await call.write(rasr.StreamingRecognizeRequest(streaming_config=config))
                async for packet in pacer.packets(utt):
                    await call.write(rasr.StreamingRecognizeRequest(audio_content=packet))
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the call ended early: its receiver records why
            ended.set_result(time.monotonic())
            stats.finalizes += 1
        await asyncio.gather(*receivers)
    stats.closed = True


async def _grpc_results(call, ended: asyncio.Future, stats: ClientStats) -> None:
    """One utterance's call: partials, its final and the time from the end of its requests to the final."""
    import grpc

    answered = False
    try:
        async for response in call:
            for result in response.results:
                if not result.is_final:
                    stats.partials += 1
                elif not answered:
                    answered = True
                    stats.admitted = True
                    stats.finals += 1
                    stats.ttf_s.append(time.monotonic() - await ended)
        if not answered:  # an utterance without text: the end of the call answers it
            stats.admitted = True
            stats.finals += 1
            stats.ttf_s.append(time.monotonic() - await ended)
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not stats.admitted:
            stats.refused = e.code().name
        else:
            stats.errors.append(e.code().name)


def scrape(http_url: str, headers: dict) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{http_url}/metrics", headers=headers, timeout=10).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def one_run(url: str, http_url: str, n: int, latency: int, seconds: float, utt_s: float,
                  slack_ms: float, headers: dict, grpc_target: str | None = None) -> RunResult:
    """One client count: every client's audio, then the server's metrics (gRPC clients with grpc_target)."""
    from urllib.parse import urlencode

    query = urlencode({"latency_ms": latency, "endpoint_ms": 0, "sample_rate": RATE, "encoding": "pcm_s16le"})
    stats = [ClientStats() for _ in range(n)]
    plans = [utterance_plan(seconds, seed=i + 1, utt_s=utt_s) for i in range(n)]
    before = scrape(http_url, headers)
    delays = [i * latency / 1000 / max(n, 1) for i in range(n)]
    if grpc_target:
        await asyncio.gather(*(run_client_grpc(grpc_target, plans[i], delays[i], stats[i], headers, latency)
                               for i in range(n)))
    else:
        await asyncio.gather(*(run_client(f"{url}/v1/listen?{query}", plans[i], delays[i], stats[i], headers)
                               for i in range(n)))
    after = scrape(http_url, headers)
    ttf = [x for s in stats for x in s.ttf_s]
    expected = sum(s.finalizes for s in stats if s.admitted)
    received = sum(s.finals for s in stats)
    steps = after.get("babelcast_engine_batch_size_count", 0) - before.get("babelcast_engine_batch_size_count", 0)
    rows = after.get("babelcast_engine_batch_size_sum", 0) - before.get("babelcast_engine_batch_size_sum", 0)
    pct = (lambda q: round(1000 * float(np.percentile(ttf, q)), 1)) if ttf else (lambda q: float("nan"))
    result = RunResult(
        protocol="grpc" if grpc_target else "ws", clients=n, latency_ms=latency, seconds=seconds,
        admitted=sum(s.admitted for s in stats),
        refused=sum(bool(s.refused) for s in stats), errors=sum(len(s.errors) for s in stats),
        finals_expected=expected, finals_received=received, lost_finals=expected - received,
        p50_final_ms=pct(50), p95_final_ms=pct(95), max_final_ms=pct(100),
        server_chunk_p95_ms=round(1000 * after.get('babelcast_chunk_latency_seconds{quantile="0.95"}', 0), 1),
        server_rtf=round(after.get("babelcast_engine_real_time_factor", 0), 3),
        server_mean_batch=round(rows / steps, 2) if steps else 0.0, sustained=False,
        error_codes=dict(Counter(code for s in stats for code in s.errors)))
    result.sustained = (result.admitted == n and result.errors == 0 and result.lost_finals == 0
                        and bool(ttf) and result.p95_final_ms <= latency + slack_ms)
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, n: int) -> tuple[subprocess.Popen, str, str, str | None]:
    """A `babelcast serve` for n clients: (process, ws URL, http URL, gRPC target with --protocol grpc)."""
    port = free_port()
    grpc = args.protocol == "grpc"
    cmd = [sys.executable, "-m", "babelcast", "serve", "--model", args.model, "--port", str(port),
           "--max-sessions", str(max(n, 1) * (2 if grpc else 1)), "--endpoint-ms", "0", "--precision",
           args.precision, "--log-level", "warning"]
    grpc_target = None
    if grpc:
        grpc_port = free_port()
        cmd += ["--grpc-port", str(grpc_port)]
        grpc_target = f"127.0.0.1:{grpc_port}"
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", grpc_target
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        pass
    import torch

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "cpu": cpu, "cores": os.cpu_count(), "loadavg_start": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def markdown(meta: dict, results: list[RunResult]) -> str:
    title = "gRPC (Riva API)" if meta["protocol"] == "grpc" else "WebSocket"
    lines = [f"# {title} load test — {meta['date']}", "",
             f"- machine: {meta['cpu']} × {meta['cores']} cores, {meta['platform']}; 1-min load average "
             f"{meta['loadavg_start']} at start, {meta['loadavg_end']} at the end (clients run on the same machine)",
             *([f"- note: {meta['note']}"] if meta.get("note") else []),
             f"- model: `{meta['model']}`, precision {meta['precision']}, engine threads {meta['threads'] or 'default'}",
             f"- each client: {meta['seconds']} s of audio in {PACKET_MS} ms packets in real time, "
             + (f"one StreamingRecognize call per ~{meta['utterance_s']} s utterance (its half-close asks for the "
                "final; the next call starts at once)" if meta["protocol"] == "grpc" else
                f"a `finalize` after every ~{meta['utterance_s']} s utterance") + ", endpointing off",
             f"- sustained = all admitted, no error, no lost final, p95 time-to-final ≤ latency + "
             f"{meta['slack_ms']:.0f} ms",
             f"- **sessions sustained: {meta['sessions_sustained']}**", "",
             "| clients | latency ms | admitted | lost finals | finals | p50 ttf ms | p95 ttf ms | max ttf ms | "
             "chunk p95 ms | RTF | mean batch | sustained |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.clients} | {r.latency_ms} | {r.admitted} | {r.lost_finals} | {r.finals_received}/"
                     f"{r.finals_expected} | {r.p50_final_ms} | {r.p95_final_ms} | {r.max_final_ms} | "
                     f"{r.server_chunk_p95_ms} | {r.server_rtf} | {r.server_mean_batch} | "
                     f"{'yes' if r.sustained else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="start `babelcast serve --model M` per run (else --url)")
    p.add_argument("--url", help="an already running server, e.g. ws://127.0.0.1:8000")
    p.add_argument("--protocol", choices=("ws", "grpc"), default="ws",
                   help="grpc: Riva's StreamingRecognize (the server gets --grpc-port; with --url, --grpc-target)")
    p.add_argument("--grpc-target", help="HOST:PORT of a running server's gRPC service (with --url)")
    p.add_argument("--api-key", default=os.environ.get("BABELCAST_API_KEY"))
    p.add_argument("--clients", default="1,2,4,8", help="comma-separated client counts")
    p.add_argument("--seconds", type=float, default=20.0, help="audio per client")
    p.add_argument("--utterance-s", type=float, default=4.0)
    p.add_argument("--latency", type=int, default=320)
    p.add_argument("--slack-ms", type=float, default=500.0)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--note", help="a line for the report (e.g. which model this is)")
    args = p.parse_args()
    if bool(args.model) == bool(args.url):
        p.error("give --model (start a server per run) or --url (use a running one)")
    if args.url and args.protocol == "grpc" and not args.grpc_target:
        p.error("--protocol grpc with --url needs --grpc-target HOST:PORT")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    counts = [int(c) for c in args.clients.split(",")]
    meta = machine()
    results = []
    for n in counts:
        proc = None
        if args.model:
            proc, url, http_url, grpc_target = start_server(args, n)
        else:
            url = args.url.rstrip("/")
            http_url = url.replace("ws://", "http://").replace("wss://", "https://")
            grpc_target = args.grpc_target if args.protocol == "grpc" else None
        try:
            r = asyncio.run(one_run(url, http_url, n, args.latency, args.seconds, args.utterance_s,
                                    args.slack_ms, headers, grpc_target))
        finally:
            if proc is not None:
                stop_server(proc)
        results.append(r)
        print(json.dumps(asdict(r)), flush=True)
    sustained = [r.clients for r in results if r.sustained]
    meta.update(protocol=args.protocol, loadavg_end=round(os.getloadavg()[0], 2), note=args.note, model=args.model or args.url, precision=args.precision, threads=args.threads,
                seconds=args.seconds, utterance_s=args.utterance_s, slack_ms=args.slack_ms,
                sessions_sustained=max(sustained) if sustained else 0)
    print(markdown(meta, results))
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"load_{'grpc' if args.protocol == 'grpc' else 'ws'}-{meta['date'][:10]}-{re.sub(r'[^A-Za-z0-9_.-]', '_', meta['host'])}"
        (args.out / f"{stem}.json").write_text(json.dumps({"machine": meta, "runs": [asdict(r) for r in results]},
                                                          indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(markdown(meta, results))
        print(f"saved {args.out / stem}.json and .md", file=sys.stderr)
    return 0 if all(r.lost_finals == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
