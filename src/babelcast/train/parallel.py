"""Data-parallel training on one machine: `trainer.processes` processes joined by torch.distributed
(gloo over loopback), each with trainer.threads intra-op threads and its own batches (train/loop.py).
Each optimizer step averages `processes` batches, like `accumulate`, in the time of about one.

On this 2-core VM two 1-thread processes train 1.4× the audio per second of one 2-thread process on
the bench's batches, but only 16–18.5 against 16.3 audio-s/s on the demo model's real batches
(bench/README.md, "Training throughput"). It is the way to use more cores than one process can.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .config import TrainConfig
from .loop import CHECKPOINT_NAME, Trainer, check_start
from .run import run_tokenizer, starting_fingerprint, trainer_from_scratch

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_processes(fn: Callable[..., None], world: int, *args: Any) -> None:
    """fn(*args) in `world` spawned processes joined to one group; an error in any ends them all."""
    mp.start_processes(_joined, args=(world, free_port(), fn, args), nprocs=world, start_method="spawn")


def _joined(rank: int, world: int, port: int, fn: Callable[..., None], args: tuple) -> None:
    """One spawned process: join the group as `rank`, run fn, leave; it ends when its launcher does."""
    _end_with_parent()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def _end_with_parent() -> None:
    """Linux: SIGTERM this process when its parent exits (PR_SET_PDEATHSIG). torch's spawn asks for a
    SIGINT, which a command started in the background (`nohup babelcast train … &`) ignores: its
    processes went on training after `babelcast train` was stopped."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent was gone before the call
            os.kill(os.getpid(), signal.SIGTERM)


def train_in_processes(cfg: TrainConfig, resume: bool) -> None:
    """`babelcast train` with trainer.processes > 1; an error in any process ends them all."""
    run_tokenizer(cfg)  # once, before the processes would race to train it (or take init_from's); checks the start
    checkpoint = cfg.out_dir / CHECKPOINT_NAME
    if resume and checkpoint.is_file():  # here, so that a refusal is one line, not a worker's traceback
        started = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True).get("start")
        check_start(checkpoint, started, starting_fingerprint(cfg))
    run_in_processes(_train, cfg.trainer.processes, cfg, resume)


def _train(cfg: TrainConfig, resume: bool) -> None:
    fit(trainer_from_scratch(cfg), resume)


def fit(trainer: Trainer, resume: bool) -> None:
    """Resume when asked and possible, train to max_steps, report on stderr (process 0)."""
    if resume and trainer.resume() and trainer.rank == 0:
        print(f"resuming {trainer.cfg.out_dir} at step {trainer.progress.step}", file=sys.stderr)
    progress = trainer.fit()
    if trainer.rank == 0:
        rate = progress.audio_s / max(progress.train_s, 1e-9)
        print(f"done: {progress.step} steps ({progress.skipped_steps} skipped), {progress.audio_s / 3600:.2f} h of "
              f"audio at {rate:.1f} s/s; model: {trainer.export_path}", file=sys.stderr)
