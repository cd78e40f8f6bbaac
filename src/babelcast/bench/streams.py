"""How many live streams one process sustains in real time, per latency (issue 3).

N simulated clients send audio in 40 ms pieces on a wall-clock schedule (staggered starts), ask for
a final at the end of each utterance, and measure time-to-final (from the flush to the final) and
partial latency (from the moment a chunk's audio is complete to its tokens). A run is real time when
every final came and 95 % of the chunks had their tokens within their deadline (chunk + 300 ms), the
engine's own deadline; max_lag_ms (audio received beyond one chunk and not yet stepped, the engine's
alignment silence included) is reported beside it.

    python bench/streams.py --model M.nemo --latency 80 --streams 2 --seconds 20 [--json]
    python bench/streams.py --model M.nemo --search --latencies 80,320,560,1120 --out bench/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

import babelcast
from babelcast.audio.io import SAMPLE_RATE_HZ
from babelcast.model.precision import resolve_precision, runtime_model
from babelcast.streaming.engine import Engine, EngineConfig, EngineMetrics

PIECE_MS = 40  # clients send audio in 40 ms packets, like a WebRTC/phone stream
SLACK_MS = 300.0  # a stream keeps up when it is never more than one chunk + this behind


@dataclass
class RunResult:
    streams: int
    latency_ms: int
    precision: str
    seconds: float
    realtime: bool
    p50_final_ms: float
    p95_final_ms: float
    p50_partial_ms: float
    p95_partial_ms: float
    max_lag_ms: float
    finals: int
    finals_expected: int
    cpu_percent: float
    rss_mb: float
    mean_batch: float
    rtf: float
    deadline_misses: int = 0
    per_latency: dict | None = None  # latency ms -> {mean_batch, deadline_misses, steps}


def utterances(seconds: float, seed: int, utt_s: float = 4.0) -> list[np.ndarray]:
    """Speech-like audio (harmonic tones with a syllable-rate envelope) cut into utterances."""
    rng = np.random.default_rng(seed)
    out, left = [], seconds
    while left > 0.5:
        n = int(min(utt_s, left) * SAMPLE_RATE_HZ)
        t = np.arange(n) / SAMPLE_RATE_HZ
        f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t)
        voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SAMPLE_RATE_HZ) / k for k in range(1, 6))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + rng.random()) * t)
        out.append((0.2 * voiced * env + 0.01 * rng.standard_normal(n)).astype(np.float32))
        left -= n / SAMPLE_RATE_HZ
    return out


class Client:
    """One simulated stream: a schedule of packets and flushes, and what came back."""

    def __init__(self, sid: str, utts: list[np.ndarray], start_s: float):
        self.sid = sid
        piece = SAMPLE_RATE_HZ * PIECE_MS // 1000
        self.packets: list[tuple[float, np.ndarray | None]] = []  # (send time, samples | None = flush)
        t = start_s
        for u in utts:
            for i in range(0, len(u), piece):
                t += len(u[i:i + piece]) / SAMPLE_RATE_HZ
                self.packets.append((t, u[i:i + piece]))
            self.packets.append((t, None))
        self.sent = 0
        self.flush_times: list[float] = []
        self.final_times: list[float] = []


def run(rec: babelcast.Recognizer, n_streams: int, latency_ms: int, seconds: float, precision: str,
        seed: int = 0, runtime=None, deadline_ms: float | None = None, phase_align: bool = True,
        utterance_s: float = 4.0, trace: dict | None = None, max_sub_clocks: int = 4) -> RunResult:
    """Simulate n_streams clients for `seconds` of audio each against one Engine (runtime: the
    precision's model copy, made once per search instead of once per run); `trace` (a dict) receives
    every step and every flush → final, for `final_breakdown`."""
    model = runtime if runtime is not None else runtime_model(rec.model, precision)
    # precision="fp32": `model` already is the precision's copy, which the engine takes as it is
    engine = Engine(model, rec.tokenizer, EngineConfig(max_sessions=n_streams, precision="fp32", endpoint_ms=0,
                                                       max_lag_ms=1e9, threads=torch.get_num_threads(),
                                                       deadline_ms=deadline_ms, phase_align=phase_align,
                                                       max_sub_clocks=max_sub_clocks))
    chunk_ms = latency_ms
    clients = []
    for i in range(n_streams):
        sid = engine.open(rec.stream_options("auto", latency_ms))
        clients.append(Client(sid, utterances(seconds, seed + i, utterance_s),
                              start_s=i * chunk_ms / 1000 / n_streams))
    by_sid = {c.sid: c for c in clients}
    engine.metrics = EngineMetrics(window=1 << 20)  # every chunk's latency, not the last 512
    if trace is not None:
        engine.metrics.trace = trace.setdefault("steps", [])
    stop = threading.Event()
    max_lag = [0.0]
    t0 = time.monotonic()
    cpu0 = time.process_time()

    def feeder() -> None:
        torch.set_num_threads(1)  # the engine thread owns the cores (feed/finish do no torch work anyway)
        while not stop.is_set():
            now = time.monotonic() - t0
            nxt = None
            for c in clients:
                while c.sent < len(c.packets) and c.packets[c.sent][0] <= now:
                    _, samples = c.packets[c.sent]
                    if samples is None:
                        engine.finish(c.sid, close=c.sent == len(c.packets) - 1)
                        c.flush_times.append(time.monotonic())
                    else:
                        engine.feed(c.sid, samples)
                    c.sent += 1
                if c.sent < len(c.packets):
                    nxt = min(nxt or 1e9, c.packets[c.sent][0])
            max_lag[0] = max(max_lag[0], engine.lag_ms())
            if nxt is None:
                return
            time.sleep(max(0.0, min(0.01, nxt - (time.monotonic() - t0))))

    thread = threading.Thread(target=feeder, daemon=True)
    thread.start()
    deadline = t0 + seconds + 30 + n_streams
    while (engine.n_sessions or thread.is_alive()) and time.monotonic() < deadline:
        steps = engine.metrics.steps
        for e in engine.step():
            if e.kind == "final":
                by_sid[e.session_id].final_times.append(e.time)
        if engine.metrics.steps == steps:
            engine.wait_for_work(0.05)
    stop.set()
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    finals = [f - s for c in clients for s, f in zip(c.flush_times, c.final_times)]
    if trace is not None:
        trace["t0"] = t0
        trace["finals"] = [(c.sid, s, f) for c in clients for s, f in zip(c.flush_times, c.final_times)]
    expected = sum(sum(1 for _, p in c.packets if p is None) for c in clients)
    got = sum(len(c.final_times) for c in clients)
    m = engine.metrics
    partial = list(m.chunk_latency_s)
    realtime = got == expected and _pct(partial, 95) <= chunk_ms + SLACK_MS
    return RunResult(
        streams=n_streams, latency_ms=latency_ms, precision=precision, seconds=seconds, realtime=realtime,
        p50_final_ms=_pct(finals, 50), p95_final_ms=_pct(finals, 95), p50_partial_ms=_pct(partial, 50),
        p95_partial_ms=_pct(partial, 95), max_lag_ms=round(max_lag[0], 1), finals=got, finals_expected=expected,
        cpu_percent=round(100 * cpu / wall, 1), rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        mean_batch=round(statistics.fmean(m.batch_sizes), 2) if m.batch_sizes else 0.0,
        rtf=round(m.real_time_factor, 3),
        deadline_misses=sum(st.deadline_misses for st in m.by_latency.values()),
        per_latency={lat: {"mean_batch": round(st.mean_batch, 2), "deadline_misses": st.deadline_misses,
                           "steps": st.steps} for lat, st in sorted(m.by_latency.items())})


def final_breakdown(trace: dict) -> dict:
    """Where time-to-final goes: from the flush to the start of the first step that carries the flushed
    stream (waiting), from there to the final (its steps), and how many steps that took; p50/p95 ms."""
    steps = sorted(trace["steps"], key=lambda st: st["start"])
    wait, run_s, n_steps = [], [], []
    for sid, flush, final in trace["finals"]:
        mine = [st for st in steps if sid in st["flushing"] and flush <= st["start"] + 1e-3 and st["start"] <= final]
        if mine:
            wait.append(mine[0]["start"] - flush)
            run_s.append(final - mine[0]["start"])
            n_steps.append(len(mine))
    live = [st for st in steps if not st["files"]]
    return {"wait_ms": {"p50": _pct(wait, 50), "p95": _pct(wait, 95)},
            "steps_ms": {"p50": _pct(run_s, 50), "p95": _pct(run_s, 95)},
            "steps_per_final": {"p50": _quantile(n_steps, 50), "p95": _quantile(n_steps, 95)},
            "step_ms": {"p50": _pct([st["seconds"] for st in live], 50),
                        "p95": _pct([st["seconds"] for st in live], 95)},
            "rows": {"p50": _quantile([st["rows"] for st in live], 50), "max": max((st["rows"] for st in live), default=0)},
            "flush_only_steps": sum(1 for st in live if len(st["flushing"]) == st["rows"]),
            "steps": len(live)}


def _quantile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _pct(values: list[float], q: float) -> float:
    """A quantile of seconds, in ms."""
    return round(1000 * _quantile(values, q), 1)


def search(rec, latency_ms: int, seconds: float, precision: str, start: int = 1, limit: int = 256,
           log=print, deadline_ms: float | None = None, utterance_s: float = 4.0,
           max_sub_clocks: int = 4) -> tuple[int, list[RunResult]]:
    """Most streams sustained: double until a run fails, then bisect."""
    from .baselines import runtime_copy

    results, good, bad, n = [], 0, None, start
    runtime = runtime_copy(rec, precision)
    while bad is None or bad - good > 1:
        r = run(rec, n, latency_ms, seconds, precision, runtime=runtime, deadline_ms=deadline_ms,
                utterance_s=utterance_s, max_sub_clocks=max_sub_clocks)
        results.append(r)
        log(json.dumps(asdict(r)))
        if r.realtime and r.p95_final_ms <= latency_ms + SLACK_MS:
            good = n
            n = n * 2 if bad is None else (good + bad) // 2
            if n > limit:
                break
        else:
            bad = n
            if good == 0 and n == 1:
                break
            n = (good + bad) // 2 if good else max(1, n // 2)
            if n == good:
                break
    return good, results


FLAGS_SHOWN = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def machine() -> dict:
    """CPU model, the flags that pick the fast paths, cores, threads and date: printed with every result."""
    from babelcast.model.precision import cpu_flags, cpu_model

    return {"cpu": cpu_model(), "flags": sorted(cpu_flags() & set(FLAGS_SHOWN)), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch_threads": torch.get_num_threads()}


def memory(rec, precision: str) -> dict:
    """Cache bytes per session at this precision and the sessions that fit in this machine's RAM."""
    from babelcast.bench.baselines import runtime_copy
    from babelcast.streaming.memory import machine_ram_bytes, memory_plan

    runtime = runtime_copy(rec, precision)
    return memory_plan(runtime, rec.cfg.encoder.left_context_frames, machine_ram_bytes(), rec.model).to_json()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="babelcast bench streams", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--latency", type=int, default=80)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                    help="auto: the one-time probe's choice for this CPU (printed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads of the engine (default: torch's, the core count); on a machine "
                         "whose cores other work shares, 1 can be faster than 2")
    ap.add_argument("--deadline-ms", type=float, default=None,
                    help="engine deadline: chunk audio complete -> its tokens (default: chunk + 300 ms)")
    ap.add_argument("--utterance-s", type=float, default=4.0,
                    help="each client asks for a final (a flush) every this many seconds of audio, like a voice "
                         "agent's turns; a value >= --seconds gives one utterance per stream, like live captions")
    ap.add_argument("--sub-clocks", type=int, default=4,
                    help="step clocks per latency group at most (1: every stream of a latency on one clock)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also print where time-to-final goes (waiting for a step, the steps) and step sizes")
    ap.add_argument("--search", action="store_true", help="find the most streams per latency")
    ap.add_argument("--latencies", default="80,320,560,1120")
    ap.add_argument("--out", help="folder for results JSON and the PNG (with --search)")
    ap.add_argument("--peers", nargs="?", const="all", choices=["all", "babelcast"],
                    help="also measure lockstep capacity, same checkpoint: babelcast's own step, NeMo cache-aware "
                         "streaming and buffered streaming (all), or babelcast's alone (quicker)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # the engine runs in this thread (run() passes the count on)
    rec = babelcast.load_model(args.model)
    choice = resolve_precision(args.precision, rec.model.encoder.device)
    print(f"precision {choice.precision} ({choice.reason})", file=sys.stderr)
    args.precision = choice.precision
    if not args.search:
        trace = {} if args.breakdown else None
        r = run(rec, args.streams, args.latency, args.seconds, args.precision, deadline_ms=args.deadline_ms,
                utterance_s=args.utterance_s, trace=trace, max_sub_clocks=args.sub_clocks)
        print(json.dumps(asdict(r)) if args.json else _table([r]))
        if trace is not None:
            print(json.dumps({"final_breakdown": final_breakdown(trace)}))
        return 0 if r.realtime else 1
    summary = {"machine": machine(), "model": os.path.basename(args.model), "precision": args.precision,
               "utterance_s": args.utterance_s, "max_sub_clocks": args.sub_clocks,
               "precision_reason": choice.reason, "deadline_ms": args.deadline_ms, "runs": [],
               "max_streams": {}, "memory": memory(rec, args.precision)}
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(json.dumps({k: summary[k] for k in ("machine", "precision", "precision_reason", "memory")}))
    for lat in [int(x) for x in args.latencies.split(",")]:
        best, runs = search(rec, lat, args.seconds, args.precision, log=log, deadline_ms=args.deadline_ms,
                            utterance_s=args.utterance_s, max_sub_clocks=args.sub_clocks)
        summary["max_streams"][lat] = best
        summary["runs"] += [asdict(r) for r in runs]
        if args.peers:
            summary.setdefault("lockstep", {})[lat] = lockstep_peers(rec, args.model, lat, args.precision, log,
                                                                     only_babelcast=args.peers == "babelcast")
    print(json.dumps({k: summary[k] for k in ("max_streams", "lockstep") if k in summary}))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        turns = "" if args.utterance_s == 4.0 else f"-utterance{args.utterance_s:g}s"
        stem = os.path.join(args.out, f"streams-{args.precision}{turns}")
        with open(stem + ".json", "w") as f:
            json.dump(summary, f, indent=1)
        plot(summary, stem + ".png")
    return 0


def lockstep_peers(rec, model_path: str, latency_ms: int, precision: str, log, only_babelcast: bool = False) -> dict:
    """Lockstep capacity of babelcast, NeMo and buffered streaming at one latency, same weights."""
    from . import baselines

    chunk_s = latency_ms / 1000
    out = {}
    makers = {f"babelcast-{precision}": lambda: baselines.babelcast_step(rec, latency_ms, precision),
              "buffered-fp32": lambda: baselines.buffered_step(rec, latency_ms),
              "nemo-fp32": lambda: baselines.nemo_step(model_path, latency_ms)}
    if only_babelcast:
        makers = {name: make for name, make in makers.items() if name.startswith("babelcast")}
    for name, make in makers.items():
        log(f"  lockstep {name} at {latency_ms} ms")
        try:
            best, times = baselines.max_streams(make(), chunk_s, log=log)
        except Exception as err:  # a peer that cannot run here is reported, not hidden
            log(f"    {name} could not run: {type(err).__name__}: {err}")
            out[name] = {"max_streams": None, "error": f"{type(err).__name__}: {err}"}
            continue
        out[name] = {"max_streams": best, "step_ms": {b: round(1000 * t, 1) for b, t in times.items()},
                     "capacity": capacity(times, chunk_s)}
    return with_ratios(out, f"babelcast-{precision}")


def capacity(times: dict[int, float], chunk_s: float) -> float:
    """Fractional real-time streams: the best batch × chunk / step time measured (0.5 = half a stream)."""
    return round(max(b * chunk_s / t for b, t in times.items()), 3)


def with_ratios(peers: dict, base_name: str) -> dict:
    """babelcast's capacity over each peer's, measured in the same run."""
    base = peers.get(base_name, {}).get("capacity")
    for entry in peers.values():
        cap = entry.get("capacity")
        entry["babelcast_ratio"] = round(base / cap, 2) if base and cap else None
    return peers


def plot(summary: dict, path: str) -> None:
    """Time-to-final (p50/p95) against concurrency, one line per latency, like the model card's figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no PNG (pip install babelcast[bench])", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for lat in sorted({r["latency_ms"] for r in summary["runs"]}):
        runs = sorted((r for r in summary["runs"] if r["latency_ms"] == lat), key=lambda r: r["streams"])
        xs = [r["streams"] for r in runs]
        line, = ax.plot(xs, [r["p95_final_ms"] for r in runs], marker="o", label=f"{lat} ms chunks (p95)")
        ax.plot(xs, [r["p50_final_ms"] for r in runs], marker=".", ls="--", color=line.get_color(), alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("time to final after end of speech (ms)")
    m = summary["machine"]
    ax.set_title(f"babelcast {summary['precision']} — {m['cores']} cores, {m['date']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _table(rows: list[RunResult]) -> str:
    keys = ["streams", "latency_ms", "precision", "realtime", "p50_final_ms", "p95_final_ms", "p50_partial_ms",
            "p95_partial_ms", "max_lag_ms", "cpu_percent", "rss_mb", "mean_batch", "deadline_misses", "rtf",
            "per_latency"]
    lines = [" | ".join(keys)] + [" | ".join(str(getattr(r, k)) for k in keys) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
