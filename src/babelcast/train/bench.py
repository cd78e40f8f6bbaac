"""Training throughput of a config on this machine, on synthetic batches (random audio, random tokens):
utterance-seconds trained per wall second (and per CPU second, which other jobs on a shared
machine disturb less), so a real run can be planned.

    python -m babelcast.train.bench configs/demo.yaml --seconds 60 --precision bf16
    python -m babelcast.train.bench configs/demo.yaml --seconds 60 --processes 2 --threads 1  # data parallel

The step measured is the real one (Trainer.train_step: augmentation, multi-lookahead, dropout,
backward, clipping, AdamW); only data loading is left out.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from dataclasses import replace
from typing import Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..config import parse_model_config
from .config import TrainConfig, load_train_config
from .data import SAMPLE_RATE_HZ, Batch
from .loop import Trainer
from .parallel import run_in_processes
from .run import init_model, with_vocab


def synthetic_batches(cfg: TrainConfig, vocab: int, tokens_per_s: float, seed: int = 0) -> Iterator[Batch]:
    """Endless batches like the bucketed ones: one duration per batch (2–max s), as many utterances
    as batch_duration_s allows, Gaussian-noise audio, uniform random tokens at `tokens_per_s`."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    data = cfg.data
    while True:
        duration_s = rng.uniform(2.0, min(data.max_duration_s, 16.0))
        n = max(1, min(data.max_batch_size, int(data.batch_duration_s // duration_s)))
        lengths = [int(SAMPLE_RATE_HZ * duration_s * rng.uniform(0.9, 1.0)) for _ in range(n)]
        audio = 0.1 * torch.randn(n, max(lengths), generator=gen)
        n_tokens = [max(1, int(tokens_per_s * s / SAMPLE_RATE_HZ)) for s in lengths]
        targets = torch.randint(0, vocab, (n, max(n_tokens)), generator=gen)
        prompts = torch.randint(0, 100, (n,), generator=gen)
        yield Batch(audio, torch.tensor(lengths), targets, torch.tensor(n_tokens), prompts, [""] * n)


def measure(cfg: TrainConfig, seconds: float, tokens_per_s: float) -> dict:
    """Train on synthetic batches for `seconds` (after 2 warm-up steps); returns the rates."""
    section = with_vocab(cfg.model, cfg.tokenizer.vocab_size)
    model_cfg = parse_model_config(section)
    model = init_model(model_cfg, cfg.trainer.seed)
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = replace(cfg, model=section, trainer=replace(cfg.trainer, out_dir=out_dir))
        trainer = Trainer(cfg, model, None, [], [], export=lambda path: path)
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        batches = synthetic_batches(cfg, model_cfg.transducer.vocab_size, tokens_per_s)
        for _ in range(2):
            trainer.train_step(batches)
        audio_s, steps, start, cpu_start = 0.0, 0, time.perf_counter(), time.process_time()
        while _keep_going(start, seconds):
            audio_s += trainer.train_step(batches).audio_s
            steps += 1
        wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    params = sum(p.numel() for p in model.parameters())
    return {"precision": cfg.trainer.precision, "threads": torch.get_num_threads(), "steps": steps,
            "audio_s": round(audio_s, 1), "wall_s": round(wall_s, 1), "audio_s_per_s": round(audio_s / wall_s, 2),
            "s_per_step": round(wall_s / max(steps, 1), 2), "cpu_s": round(cpu_s, 1),
            "audio_s_per_cpu_s": round(audio_s / cpu_s, 2), "params": params,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "load_avg": os.getloadavg()}


def _keep_going(start: float, seconds: float) -> bool:
    """Until `seconds` have passed; data-parallel processes stop together (they step in lockstep)."""
    done = torch.tensor(float(time.perf_counter() - start >= seconds))
    if dist.is_initialized():
        dist.all_reduce(done, op=dist.ReduceOp.MAX)
    return not bool(done)


def _measure_into(results, cfg: TrainConfig, seconds: float, tokens_per_s: float) -> None:
    results.put(measure(cfg, seconds, tokens_per_s))


def measure_processes(cfg: TrainConfig, seconds: float, tokens_per_s: float) -> dict:
    """measure() in trainer.processes data-parallel processes (gradients all-reduced every step); the
    audio of a step is every process's batch together."""
    world = cfg.trainer.processes
    if world == 1:
        return measure(cfg, seconds, tokens_per_s)
    results = mp.get_context("spawn").SimpleQueue()
    run_in_processes(_measure_into, world, results, cfg, seconds, tokens_per_s)
    each = [results.get() for _ in range(world)]  # the same audio_s in each: a step's is summed over processes
    slowest, cpu_s = max(each, key=lambda r: r["wall_s"]), sum(r["cpu_s"] for r in each)
    return {**slowest, "processes": world, "cpu_s": round(cpu_s, 1),
            "audio_s_per_cpu_s": round(slowest["audio_s"] / cpu_s, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--precision", choices=("bf16", "fp32"))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--processes", type=int, help="data-parallel processes (train/parallel.py)")
    parser.add_argument("--tokens-per-s", type=float, default=6.0, help="target tokens per second of audio")
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config)
    overrides = {k: v for k, v in (("precision", args.precision), ("threads", args.threads),
                                   ("processes", args.processes)) if v is not None}
    cfg = replace(cfg, trainer=replace(cfg.trainer, **overrides))
    print(json.dumps(measure_processes(cfg, args.seconds, args.tokens_per_s)))


if __name__ == "__main__":
    main()
