"""Soak: do long streams stay flat? Compute per 10 s of audio and the process's RSS over a long stream.

Each session streams `--minutes` of speech (the given files, or samples/*.wav, looped without pauses)
fast-forward in 40 ms pieces, stepping as soon as a chunk is whole: through the Python API (`Session`,
one never-ending utterance: the worst case for its token lists) or through one `Engine` with several
sessions (endpointing on, as served; unbroken speech gets a final every max_segment_ms). Compute is
the process's CPU time (other processes on a shared machine disturb it far less than wall time, which
is printed beside it). Every `--report-s` seconds of audio it prints the median compute per 10 s of
audio over that stretch and the RSS, then a verdict: flat when the median CPU time of the last
quarter's 10 s blocks and their RSS are within `--tolerance` of the first quarter's (the first
stretch is warm-up and not counted).

    python -m babelcast.bench.soak --minutes 30 --latency 80 --api session
    python -m babelcast.bench.soak --minutes 5 --api engine --sessions 4 --json
"""
from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch

import babelcast
from babelcast.audio.io import SAMPLE_RATE_HZ, load_audio

PIECE_MS = 40
BLOCK_S = 10.0  # compute is reported per this much audio (per session)


@dataclass
class Report:
    audio_s: float  # audio per session so far
    cpu_per_10s: float  # median process CPU seconds per 10 s of audio (all sessions) in this stretch
    wall_per_10s: float  # the same in wall-clock seconds (noisier on a shared machine)
    rss_mb: float
    tokens: int  # tokens the sessions hold now (Session: the whole stream; Engine: current segments)


def rss_mb() -> float:
    """The process's resident memory now (not its peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def speech(paths: list[str]) -> Iterator[np.ndarray]:
    """40 ms pieces of the files, looped forever (synthetic speech-like audio when there are none)."""
    piece = SAMPLE_RATE_HZ * PIECE_MS // 1000
    if paths:
        audio = np.concatenate([load_audio(p) for p in paths])
    else:
        from .streams import utterances

        audio = np.concatenate(utterances(60.0, seed=0))
    audio = audio[: len(audio) // piece * piece]
    for start in itertools.cycle(range(0, len(audio), piece)):
        yield audio[start:start + piece]


class SessionFeeder:
    """N Python API sessions, each fed piece by piece."""

    def __init__(self, rec, n: int, language: str, latency_ms: int):
        self.sessions = [rec.stream(language, latency_ms) for _ in range(n)]

    def feed(self, pieces: list[np.ndarray]) -> None:
        for s, x in zip(self.sessions, pieces):
            s.accept_audio(x)

    def tokens(self) -> int:
        return sum(len(s.partial().tokens) for s in self.sessions)


class EngineFeeder:
    """N sessions of one engine (endpointing on), stepped as soon as chunks are whole."""

    def __init__(self, rec, n: int, language: str, latency_ms: int, precision: str):
        from babelcast.streaming.engine import EngineConfig

        self.engine = rec.engine(EngineConfig(max_sessions=n, precision=precision, max_lag_ms=float("inf")))
        self.sids = [self.engine.open(rec.stream_options(language, latency_ms)) for _ in range(n)]
        self.finals = 0

    def feed(self, pieces: list[np.ndarray]) -> None:
        for sid, x in zip(self.sids, pieces):
            self.engine.feed(sid, x)
        self.finals += sum(e.kind == "final" for e in self.engine.drain())

    def tokens(self) -> int:
        return sum(len(self.engine.partial(sid).tokens) for sid in self.sids)


def soak(feeder, n_sessions: int, minutes: float, report_s: float, audio: Iterator[np.ndarray],
         log=print) -> tuple[list[Report], list[tuple[float, float]]]:
    """Stream `minutes` per session; a Report every report_s seconds of audio, and every 10 s
    block's (CPU seconds, RSS MB)."""
    pieces_per_block = int(BLOCK_S * 1000 / PIECE_MS)
    blocks_per_report = max(1, int(report_s / BLOCK_S))
    reports, blocks, wall_s = [], [], []
    for block in range(int(minutes * 60 / BLOCK_S)):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(pieces_per_block):
            feeder.feed([next(audio) for _ in range(n_sessions)])
        blocks.append((time.process_time() - c0, rss_mb()))
        wall_s.append(time.perf_counter() - t0)
        if (block + 1) % blocks_per_report == 0:
            cpu_s = [c for c, _ in blocks[-blocks_per_report:]]
            r = Report(round((block + 1) * BLOCK_S, 1), round(statistics.median(cpu_s), 4),
                       round(statistics.median(wall_s), 4), round(blocks[-1][1], 1), feeder.tokens())
            reports.append(r)
            wall_s = []
            log(json.dumps(asdict(r)))
    return reports, blocks


def verdict(blocks: list[tuple[float, float]], tolerance: float, warmup_blocks: int) -> dict:
    """The last quarter of the 10 s blocks against the first quarter (after the warm-up): the ratio
    of their median CPU time per block and of their median RSS."""
    body = blocks[warmup_blocks:] if len(blocks) > warmup_blocks + 4 else blocks
    q = max(1, len(body) // 4)
    first, last = body[:q], body[-q:]
    compute = statistics.median(c for c, _ in last) / statistics.median(c for c, _ in first)
    rss = statistics.median(m for _, m in last) / statistics.median(m for _, m in first)
    return {"compute_ratio": round(compute, 3), "rss_ratio": round(rss, 3),
            "flat": abs(compute - 1) <= tolerance and abs(rss - 1) <= tolerance}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m babelcast.bench.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the bundled demo model")
    ap.add_argument("--minutes", type=float, default=30.0, help="audio per session")
    ap.add_argument("--latency", type=int, default=80)
    ap.add_argument("--language", default="auto")
    ap.add_argument("--api", choices=["session", "engine"], default="session")
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--precision", default="auto", help="engine only (a Session is fp32)")
    ap.add_argument("--audio", nargs="*", help="speech files to loop (default: samples/*.wav if present)")
    ap.add_argument("--report-s", type=float, default=60.0, help="audio seconds between reports")
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--json", action="store_true", help="print the reports and verdict as one JSON object")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = babelcast.load_model(args.model or babelcast.default_model())
    paths = args.audio if args.audio is not None else sorted(glob.glob("samples/*.wav"))
    feeder = (SessionFeeder(rec, args.sessions, args.language, args.latency) if args.api == "session" else
              EngineFeeder(rec, args.sessions, args.language, args.latency, args.precision))
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else print  # noqa: E731
    reports, blocks = soak(feeder, args.sessions, args.minutes, args.report_s, speech(paths), log)
    result = {"api": args.api, "sessions": args.sessions, "latency_ms": args.latency, "minutes": args.minutes,
              **verdict(blocks, args.tolerance, warmup_blocks=max(1, int(args.report_s / BLOCK_S)))}
    if args.json:
        print(json.dumps({**result, "reports": [asdict(r) for r in reports]}))
    else:
        print(json.dumps(result))
    return 0 if result["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
