"""One batched engine step against this CPU's matmul peak: ms, GOP/s, % of the probe, tokens per frame.

    python bench/step.py --model /tmp/n35.nemo --latencies 80,320,1120 --batches 1,8,16 --precision auto \
           [--profile 320:8] [--out bench/results/step-int8.json]

The step is the engine's (`decode_chunks`: encoder step + prompt + greedy) on speech-like chunks, in
lockstep; FLOPs are counted on the fp32 model (bench/roofline.py), so GOP/s compares precisions fairly.
"""
from __future__ import annotations

import argparse
import json
import sys
import torch

import babelcast
from babelcast import chunking
from babelcast.bench import baselines, roofline
from babelcast.bench.streams import machine
from babelcast.model.precision import resolve_precision


def measure(rec, latency_ms: int, batch: int, precision: str) -> dict:
    """Step time, FLOPs, GOP/s and emitted tokens per encoder frame for one (latency, batch)."""
    counts: list = []
    step = baselines.babelcast_step(rec, latency_ms, precision, counts)(batch)
    seconds = baselines._timed(step, warmup=3, repeats=6)
    left, right, _ = rec.context(latency_ms, "streaming")
    n = chunking.chunk_mel(right, rec.cfg.encoder.subsampling_factor)
    mel = next(baselines.lockstep_chunks(baselines.speech_mel(rec), batch, n))
    prompt = rec.prompt_id("auto")
    prompts = torch.full((batch,), prompt) if prompt is not None else None
    flops = roofline.step_flops(rec.model, mel, left, right, prompts)
    tokens, frames = map(sum, zip(*counts))
    return {"latency_ms": latency_ms, "batch": batch, "step_ms": round(1000 * seconds, 1),
            "gflop": round(flops / 1e9, 2), "gops": round(flops / seconds / 1e9, 1),
            "streams_capacity": round(batch * latency_ms / 1000 / seconds, 2),
            "tokens_per_frame": round(tokens / frames, 3)}


def profile(rec, latency_ms: int, batch: int, precision: str, rows: int = 25) -> str:
    """torch.profiler's table of one step's operators (exclusive CPU time), for before/after reading."""
    step = baselines.babelcast_step(rec, latency_ms, precision)(batch)
    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--latencies", default="80,320,1120")
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"])
    ap.add_argument("--profile", help="LATENCY:BATCH to print the operator profile of")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    choice = resolve_precision(args.precision)
    rec = babelcast.load_model(args.model)
    result = {"machine": machine(), "model": args.model, "precision": choice.precision, "why": choice.reason,
              "matmul_peak_gops": roofline.matmul_peak(choice.precision), "steps": []}
    print(json.dumps({k: result[k] for k in ("machine", "precision", "why", "matmul_peak_gops")}), flush=True)
    peak = max(result["matmul_peak_gops"].values())
    for lat in map(int, args.latencies.split(",")):
        for b in map(int, args.batches.split(",")):
            row = measure(rec, lat, b, choice.precision)
            row["percent_of_peak"] = round(100 * row["gops"] / peak, 1)
            result["steps"].append(row)
            print(json.dumps(row), flush=True)
    if args.profile:
        lat, b = map(int, args.profile.split(":"))
        print(profile(rec, lat, b, choice.precision))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
