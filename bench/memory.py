"""Memory per stream and the process's RSS for a checkpoint at each precision.

    python bench/memory.py /tmp/n35.nemo [--precisions fp32,bf16,int8] [--ram-gib 8,16] [--out FILE.md]

Per precision: cache bytes per session (the engine's encoder + predictor state, from the real
init_state tensors), weight bytes (the runtime copy and the loaded fp32 model the Recognizer keeps),
sessions that fit in a RAM budget after the weights; then the RSS after each stage of loading, each
precision in a fresh process: import, `load_model` (.nemo read + model built), `rec.engine(...)`
(runtime copy + cache pool), a few streamed chunks. After each stage RSS is read again after
`gc.collect()` (garbage in reference cycles) and then after `malloc_trim(0)`, which hands glibc's free
heap pages back to the OS: what that returns is freed memory the allocator kept. (Both then carry into
the next stage.) Run it with MALLOC_MMAP_THRESHOLD_=1048576 to see glibc serve every tensor over 1 MiB
from mmap, which returns to the OS on free.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from babelcast.bench.streams import machine

GIB = 2**30


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """Largest RSS of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def collected_rss_bytes() -> int:
    """RSS after Python's cycle collector ran (garbage in reference cycles freed)."""
    gc.collect()
    return rss_bytes()


def trimmed_rss_bytes() -> int:
    """RSS after returning glibc's free heap pages to the OS (malloc_trim)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


def stage(name: str, **extra) -> None:
    """One JSON line: a stage's RSS, peak RSS, RSS after gc and after malloc_trim, for the parent."""
    now, peak = rss_bytes(), peak_rss_bytes()
    print(json.dumps({"stage": name, "rss": now, "peak": peak, "collected": collected_rss_bytes(),
                      "trimmed": trimmed_rss_bytes(), **extra}), flush=True)


def child_archive(model: str) -> None:
    """RSS of only reading the .nemo: its weights member as bytes plus the state dict from it."""
    from babelcast.checkpoint.load import resolve_model_path
    from babelcast.checkpoint.nemo_archive import read_nemo

    stage("imported")
    archive = read_nemo(resolve_model_path(model))
    stage("archive read", state_dict_bytes=sum(t.nbytes for t in archive.state_dict.values()))


def child_precision(model: str, precision: str) -> None:
    """RSS after each stage of serving `model` at `precision`, and the memory plan."""
    import babelcast
    from babelcast.bench.streams import utterances
    from babelcast.streaming.engine import EngineConfig
    from babelcast.streaming.memory import memory_plan, weights_bytes

    stage("imported")
    rec = babelcast.load_model(model)
    stage("load_model", weights=weights_bytes(rec.model))
    engine = rec.engine(EngineConfig(precision=precision, endpoint_ms=0, max_lag_ms=float("inf")))
    stage("engine")
    plan = memory_plan(engine.model, engine.left, 0, rec.model)
    stage("memory_plan counted", runtime_weights=weights_bytes(engine.model), plan=plan.to_json())
    for clip in utterances(8.0, seed=1)[:2]:
        sid = engine.open(rec.stream_options("auto", 1120))
        engine.feed(sid, clip)
        engine.finish(sid, close=True)
    while engine.n_sessions:
        engine.step()
    stage("2 streams decoded")


def run_child(args: list[str]) -> list[dict]:
    """This script in a fresh process (RSS is per process); its JSON stage lines."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def malloc_env() -> str:
    """glibc malloc settings from the environment, as a command prefix (they change the RSS)."""
    return "".join(f"{k}={v} " for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))


def gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def plan_table(runs: dict[str, list[dict]], budgets_gib: list[float]) -> list[str]:
    """Cache bytes per session, weights and sessions that fit, per precision."""
    from babelcast.streaming.memory import sessions_that_fit

    head = ("| precision | cache per session (KiB): encoder + predictor | runtime weights GiB "
            "| resident weights GiB (runtime + fp32 original) | "
            + " | ".join(f"sessions in {b:g} GiB" for b in budgets_gib) + " |")
    lines = [head, "|" + "---|" * (4 + len(budgets_gib))]
    for precision, stages in runs.items():
        eng = next(s for s in stages if "plan" in s)
        p = eng["plan"]
        fits = [sessions_that_fit(int(b * GIB), p["weights_bytes"], p["cache_bytes_per_session"]) for b in budgets_gib]
        lines.append(f"| {precision} | {p['cache_bytes_per_session'] / 1024:.0f} = {p['encoder_cache_bytes'] / 1024:.0f}"
                     f" + {p['predictor_cache_bytes'] / 1024:.0f} | {gib(eng['runtime_weights'])} "
                     f"| {gib(p['weights_bytes'])} | " + " | ".join(f"{n:,}" for n in fits) + " |")
    return lines


def rss_table(runs: dict[str, list[dict]]) -> list[str]:
    """RSS / trimmed RSS / peak after each stage, GiB, per precision (and the archive-only run)."""
    lines = ["| run | stage | RSS GiB | after gc.collect() | then after malloc_trim(0) | peak RSS so far |",
             "|---|---|---|---|---|---|"]
    for name, stages in runs.items():
        lines += [f"| {name} | {s['stage']} | {gib(s['rss'])} | {gib(s['collected'])} | {gib(s['trimmed'])} "
                  f"| {gib(s['peak'])} |" for s in stages]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--ram-gib", default="8,16", help="RAM budgets besides this machine's")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        torch.set_num_threads(2)
        child_archive(args.model) if args.child == "archive" else child_precision(args.model, args.child)
        return 0
    from babelcast.streaming.memory import machine_ram_bytes

    budgets = [float(b) for b in args.ram_gib.split(",")] + [round(machine_ram_bytes() / GIB, 1)]
    runs = {p: run_child([args.model, "--child", p]) for p in args.precisions.split(",")}
    archive = run_child([args.model, "--child", "archive"])
    lines = [f"machine: {json.dumps(machine())}",
             f"command: {malloc_env()}python bench/memory.py {' '.join(sys.argv[1:] if argv is None else argv)}", "",
             *plan_table(runs, budgets), "", *rss_table({**runs, "read_nemo only": archive})]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
