"""What the engine adds to the model step: its steps (cache gather/scatter, features, update) against
the same batch in lockstep, same weights, same minute, nothing else running.

    python bench/engine_overhead.py --model /tmp/n35.nemo --latency 320 --batch 8 --precision int8

Engine: `batch` streams, 12 s of speech-like audio each fed at once, drained one chunk per step (no
client thread beside it); the median of the engine's own step timings (`EngineMetrics.step_s`: take +
features + gather + model + scatter). Lockstep: `baselines.babelcast_step`, the step the search's
lockstep capacity is made of (model only).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

import babelcast
from babelcast.bench import baselines
from babelcast.bench.streams import machine, utterances
from babelcast.model.precision import resolve_precision
from babelcast.streaming.engine import Engine, EngineConfig


def engine_step_ms(rec, runtime, latency_ms: int, batch: int) -> float:
    """Median engine step over a drain of `batch` streams, one chunk per step."""
    engine = Engine(runtime, rec.tokenizer, EngineConfig(max_sessions=batch, precision="fp32", endpoint_ms=0,
                                                         max_lag_ms=float("inf"), max_chunks_per_step=1,
                                                         phase_align=False, threads=torch.get_num_threads()))
    for i in range(batch):
        engine.feed(engine.open(rec.stream_options("auto", latency_ms)), utterances(12, i, utt_s=12)[0])
    engine.drain()
    return 1000 * statistics.median(engine.metrics.step_s)


def lockstep_step_ms(rec, latency_ms: int, batch: int, precision: str, repeats: int = 20) -> float:
    step = baselines.babelcast_step(rec, latency_ms, precision)(batch)
    return 1000 * baselines._timed(step, warmup=2, repeats=repeats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--latency", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"])
    args = ap.parse_args(argv)
    rec = babelcast.load_model(args.model)
    precision = resolve_precision(args.precision, rec.model.encoder.device).precision
    runtime = baselines.runtime_copy(rec, precision)
    engine_ms = engine_step_ms(rec, runtime, args.latency, args.batch)
    lockstep_ms = lockstep_step_ms(rec, args.latency, args.batch, precision)
    print(json.dumps({"machine": machine(), "precision": precision, "latency_ms": args.latency, "batch": args.batch,
                      "engine_step_ms": round(engine_ms, 1), "lockstep_step_ms": round(lockstep_ms, 1),
                      "engine_over_lockstep": round(engine_ms / lockstep_ms, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
