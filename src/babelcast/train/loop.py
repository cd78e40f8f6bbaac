"""The training loop: multi-lookahead batches, bf16 autocast, accumulation, clipping, skipped
non-finite steps, validation, checkpoints that resume across sessions, `.nemo` exports.

Data parallel when torch.distributed is initialized (`trainer.processes`, train/parallel.py): every
process takes its own batches of the same epoch plan (batch i goes to process i mod world), the
gradients are averaged with one all-reduce, and process 0 alone logs, validates and writes files.
"""
from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .. import chunking
from ..checkpoint.tokenizer import Tokenizer
from ..config import parse_model_config
from ..model.asr import AsrModel
from .average import WeightAverage
from .config import TrainConfig, lookahead_weights
from .data import Batch, BatchDataset, Utterance, epoch_loader, plan_batches
from .objective import batch_loss
from .optim import build_optimizer, lr_at, set_lr
from .phones import PhoneGrid, PhoneHead, inventory
from .regularize import DropoutRates, add_dropout
from .validate import ValResult, validate

CHECKPOINT_NAME = "last.pt"


@dataclass
class Progress:
    """Where training is; saved in every checkpoint."""

    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` consumed
    skipped_steps: int = 0
    best_val_wer: float = math.inf
    best_val_loss: float = math.inf
    audio_s: float = 0.0  # audio trained on, all sessions
    train_s: float = 0.0  # wall time in training steps, all sessions


@dataclass(frozen=True)
class StepStats:
    loss: float
    grad_norm: float
    skipped: bool
    audio_s: float
    wall_s: float
    rnnt_per_token: float  # comparable across batches, unlike the per-utterance loss
    ctc_per_token: float | None  # None without a CTC objective
    phone_per_frame: float | None  # None without the phoneme aid (trainer.phone_weight)


def check_start(path: Path, started: str | None, start: str | None) -> None:
    """A checkpoint resumes only a run from the same starting model (fingerprints "sha256:… name", compared
    without the name; None: fresh weights, or a checkpoint from before fingerprints, which any run resumes)."""
    if started and start and started.split()[0] != start.split()[0]:
        raise ResumeError(f"{path} continues a run that started from another model ({started}, not {start}); "
                          "use a new out_dir or --no-resume")


class ResumeError(ValueError):
    """OUT_DIR/last.pt belongs to another run (model config, starting model, phone head)."""


class Trainer:
    def __init__(self, cfg: TrainConfig, model: AsrModel, tokenizer: Tokenizer | None, train: list[Utterance],
                 val: list[Utterance], export: Callable[[Path], Path], export_path: Path | None = None,
                 start: str | None = None):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.start = start  # the starting model's fingerprint (None: fresh weights, or resume any run)
        self.train_utts, self.val_utts, self.export = train, val, export
        self.export_path = export_path or cfg.out_dir / "model.nemo"  # the latest weights, rewritten at checkpoints
        self.progress = Progress()
        self.phone_grid, self.phone_head = self._phone_aid(model, train) if cfg.trainer.phone_weight > 0 else (None, None)
        # What the optimizer trains: the model and the training-only phone head (never exported).
        self.trained = nn.ModuleList([model] + ([self.phone_head] if self.phone_head is not None else []))
        self.optimizer = build_optimizer(self.trained, cfg.optim)
        decay = cfg.trainer.ema_decay
        self.average = WeightAverage(model, decay) if decay > 0 else None  # from the starting weights
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        seed = cfg.trainer.seed + self.rank  # the weights are seeded before: the same in every process
        if self.world > 1:
            torch.manual_seed(seed)  # dropout masks differ between processes
        self.rng = random.Random(seed)  # lookahead choice
        self.gen = torch.Generator().manual_seed(seed)  # dither, SpecAugment
        self.dropout_hooks = add_dropout(model, DropoutRates.from_nemo(cfg.model))
        # The strided subsampling convs dominate a CPU training step; with channels-last weights
        # oneDNN runs them (forward and backward) about 1.5× faster. Values and keys are unchanged.
        model.encoder.pre_encode.conv.to(memory_format=torch.channels_last)
        self.contexts = model.cfg.encoder.att_contexts
        self.context_weights = lookahead_weights(cfg.model, self.contexts)
        self.val_context = self._val_context()
        self._val_batches: list[Batch] | None = None
        cfg.out_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _phone_aid(model: AsrModel, train: list[Utterance]) -> tuple[PhoneGrid, PhoneHead]:
        """The phoneme classes of the training data and a fresh head on the encoder frames; entries without a
        timeline (Festival's, `babelcast data synth --festival`) train without the phoneme loss."""
        timelines = [u.entry.phones for u in train if u.entry.phones is not None]
        if not timelines:
            raise ValueError("trainer.phone_weight needs 'phones' timelines in the training manifests (babelcast data "
                             "synth writes them for espeak-ng voices); set it to 0 for other data")
        enc = model.cfg.encoder
        grid = PhoneGrid(inventory(timelines), model.cfg.features.frame_ms * enc.subsampling_factor)
        return grid, PhoneHead(enc.d_model, len(grid.phones))

    def _lookahead(self) -> tuple[int, int]:
        """One trained [left, right] context per batch, by encoder.att_context_probs (spec §7.2)."""
        if self.context_weights is None:
            return self.rng.choice(self.contexts)  # uniform, the stream of every run before the weights existed
        return self.rng.choices(self.contexts, weights=self.context_weights)[0]

    # ---- the loop -------------------------------------------------------------------------
    def fit(self) -> Progress:
        """Train up to trainer.max_steps, validating, checkpointing and exporting on the way."""
        t = self.cfg.trainer
        if t.threads:
            torch.set_num_threads(t.threads)
        batches = self._batches()
        bar = tqdm(total=t.max_steps, initial=self.progress.step, unit="step", dynamic_ncols=True,
                   disable=self.rank != 0)
        ema = None
        while self.progress.step < t.max_steps:
            stats = self.train_step(batches)
            ema = stats.loss if ema is None or not math.isfinite(ema) else 0.95 * ema + 0.05 * stats.loss
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}", lr=f"{self._lr():.2e}", x_rt=f"{stats.audio_s / stats.wall_s:.1f}")
            self._after_step(stats, ema, bar)
        bar.close()
        self.save()
        if self.rank == 0:
            self._export_latest()
        return self.progress

    def train_step(self, batches: Iterator[Batch]) -> StepStats:
        """One optimizer step over `accumulate` batches; non-finite gradients skip the update."""
        t, p = self.cfg.trainer, self.progress
        start = time.perf_counter()
        self.model.train()
        set_lr(self.optimizer, self._lr(p.step + 1))
        loss_sum, audio_s, rnnt_sum, ctc_sum, tokens = 0.0, 0.0, 0.0, None, 0
        phone_sum, phone_frames = 0.0, 0
        for _ in range(t.accumulate):
            batch = next(batches)
            context = self._lookahead()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.precision == "bf16"):
                parts = batch_loss(self.model, batch, context, self.cfg.augment, t.ctc_weight, t.joint_chunk, self.gen,
                                   self.phone_head, t.phone_weight)
            (parts.total / t.accumulate).backward()
            loss_sum += float(parts.total.detach())
            audio_s += batch.audio_s
            n = len(batch.references)  # the parts are means over the batch's utterances
            rnnt_sum += parts.rnnt * n
            ctc_sum = None if parts.ctc is None else (ctc_sum or 0.0) + parts.ctc * n
            tokens += int(batch.target_len.sum())
            if parts.phone is not None:
                phone_sum, phone_frames = phone_sum + parts.phone * n, phone_frames + parts.phone_frames
        if self.world > 1:
            self._average_gradients()
            loss_sum, audio_s, rnnt_sum, ctc_sum, tokens = self._sum_over_processes(
                loss_sum / self.world, audio_s, rnnt_sum, ctc_sum, tokens)
        grad_norm = self._clip()
        skipped = not math.isfinite(grad_norm)
        if skipped:
            p.skipped_steps += 1
        else:
            self.optimizer.step()
            if self.average is not None:
                self.average.update(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        p.step += 1
        wall_s = time.perf_counter() - start
        p.audio_s += audio_s
        p.train_s += wall_s
        ctc = None if ctc_sum is None else ctc_sum / max(1, tokens)
        phone = phone_sum / phone_frames if phone_frames else None  # this process's batches
        return StepStats(loss_sum / t.accumulate, grad_norm, skipped, audio_s, wall_s, rnnt_sum / max(1, tokens), ctc,
                         phone)

    def _average_gradients(self) -> None:
        """Every process gets the mean of all processes' gradients (one all-reduce of one buffer)."""
        params = [q for q in self.trained.parameters() if q.requires_grad]
        present = torch.tensor([float(q.grad is not None) for q in params])
        flat = torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).reshape(-1) for q in params])
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        dist.all_reduce(flat)
        flat /= self.world
        for q, grad, used in zip(params, flat.split([q.numel() for q in params]), present.tolist()):
            q.grad = grad.view_as(q) if used else None  # None where no process had one, as alone

    def _sum_over_processes(self, loss: float, audio_s: float, rnnt: float, ctc: float | None,
                            tokens: int) -> tuple[float, float, float, float | None, int]:
        """The step's statistics summed over processes (loss comes pre-divided by the world size)."""
        totals = torch.tensor([loss, audio_s, rnnt, ctc or 0.0, tokens], dtype=torch.float64)
        dist.all_reduce(totals)
        loss, audio_s, rnnt, ctc_total, tokens = totals.tolist()
        return loss, audio_s, rnnt, None if ctc is None else ctc_total, int(tokens)

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _clip(self) -> float:
        """Global grad norm (clipped to grad_clip when set); inf/nan when any gradient is not finite."""
        params = [q for q in self.trained.parameters() if q.grad is not None]
        max_norm = self.cfg.trainer.grad_clip if self.cfg.trainer.grad_clip > 0 else math.inf
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _after_step(self, stats: StepStats, ema: float, bar: tqdm) -> None:
        """Logging, validation and checkpoints at their intervals."""
        t, step = self.cfg.trainer, self.progress.step
        record = {"step": step, "loss": stats.loss, "loss_ema": ema, "lr": self._lr(), "grad_norm": stats.grad_norm,
                  "skipped": stats.skipped, "audio_s": round(stats.audio_s, 2), "wall_s": round(stats.wall_s, 3),
                  "rnnt_per_token": round(stats.rnnt_per_token, 4)}
        if stats.ctc_per_token is not None:
            record["ctc_per_token"] = round(stats.ctc_per_token, 4)
        if stats.phone_per_frame is not None:
            record["phone_per_frame"] = round(stats.phone_per_frame, 4)
        lead = self.rank == 0
        if lead and (step % t.log_every == 0 or stats.skipped):
            self._log(record)
        if self.val_utts and t.val_every and step % t.val_every == 0:
            if lead:
                result = self.validate()
                ref, hyp = result.examples[0] if result.examples else ("", "")
                bar.write(f"step {step}: val loss {result.loss:.3f}, WER {100 * result.wer:.1f}% at "
                          f"{self._val_latency_ms()} ms, encoder time variation ≥ "
                          f"{min(result.time_variation, default=0):.2f}; e.g. {ref[:80]!r} → {hyp[:80]!r}")
            self._barrier()
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.max_steps:
            self.save()
            if lead:
                self._export_latest()
            self._barrier()

    # ---- data -----------------------------------------------------------------------------
    def _batches(self) -> Iterator[Batch]:
        """Endless batches, epoch after epoch, starting where the progress says."""
        p = self.progress
        if not self.train_utts:
            raise ValueError("no training utterances (check the manifests and data.min/max_duration_s)")
        p.batch_in_epoch += -p.batch_in_epoch % self.world  # a run resumed with more processes
        while True:
            group = self.world * self.cfg.trainer.accumulate
            n_batches, loader = epoch_loader(self.train_utts, self.cfg.data, self.model.cfg.prompt, self.cfg.augment,
                                             self.cfg.trainer.seed, p.epoch, p.batch_in_epoch, self.rank, self.world,
                                             group, self.phone_grid)
            if n_batches == 0:
                raise ValueError(f"no duration bucket holds the {group} batches one step takes (processes × "
                                 "accumulate); use fewer data.buckets or a smaller data.batch_duration_s")
            for batch in loader:
                p.batch_in_epoch += self.world  # batches of the epoch consumed by all processes
                yield batch
            p.epoch, p.batch_in_epoch = p.epoch + 1, 0

    def _val_context(self) -> tuple[int, int]:
        enc, feats = self.model.cfg.encoder, self.model.cfg.features
        left, right, _ = chunking.resolve_context(self.cfg.trainer.val_latency_ms, enc.att_contexts,
                                                  enc.subsampling_factor, feats.frame_ms, "largest")
        return left, right

    def _val_latency_ms(self) -> int:
        return chunking.latency_ms(self.val_context[1], self.model.cfg.encoder.subsampling_factor,
                                   self.model.cfg.features.frame_ms)

    def val_batches(self) -> list[Batch]:
        """The first val_max_utts validation utterances, batched once, without augmentation."""
        if self._val_batches is None:
            utts = self.val_utts[: self.cfg.trainer.val_max_utts]
            plan = plan_batches([u.duration_s for u in utts], self.cfg.data, random.Random(0))
            data = BatchDataset(utts, plan, self.model.cfg.prompt, None, self.cfg.data.unified_auto_ratio, (0,))
            self._val_batches = [data[i] for i in range(len(data))]
        return self._val_batches

    def validate(self) -> ValResult:
        """Validation loss/WER; a better one also exports best.nemo (by WER, capped at 100 % so that
        a model still emitting garbage early in training is judged by its loss)."""
        with self._averaged():
            result = validate(self.model, self.tokenizer, self.val_batches(), self.val_context)
        self._log({"step": self.progress.step, "val_loss": result.loss, "val_wer": result.wer,
                   "val_words": result.words, "val_latency_ms": self._val_latency_ms(),
                   "val_time_variation": [round(v, 4) for v in result.time_variation],
                   "val_examples": result.examples})
        p = self.progress
        if (min(result.wer, 1.0), result.loss) < (min(p.best_val_wer, 1.0), p.best_val_loss):
            p.best_val_wer, p.best_val_loss = result.wer, result.loss
            with self._averaged():
                self.export(self.cfg.out_dir / "best.nemo")
        return result

    def _averaged(self):
        """A block in which the model holds the weights validation and exports use (trainer.ema_decay)."""
        return nullcontext() if self.average is None else self.average.swapped_in(self.model)

    def _export_latest(self) -> None:
        """export_path, the latest weights (averaged with trainer.ema_decay; then the raw ones beside it, as
        NAME-raw.nemo, to measure what the average gives)."""
        if self.average is not None:
            self.export(self.export_path.with_name(f"{self.export_path.stem}-raw{self.export_path.suffix}"))
        with self._averaged():
            self.export(self.export_path)

    # ---- state ----------------------------------------------------------------------------
    def _lr(self, step: int | None = None) -> float:
        step = self.progress.step if step is None else step
        return lr_at(step, self.cfg.optim, self.model.cfg.encoder.d_model, self.cfg.trainer.max_steps)

    def _log(self, record: dict) -> None:
        with open(self.cfg.out_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def save(self, path: Path | None = None) -> Path:
        """Everything a later session needs to continue exactly: weights, AdamW moments, progress,
        every random generator (each process's), and the configs (written atomically, by process 0)."""
        path = path or self.cfg.out_dir / CHECKPOINT_NAME
        rng = {"python": self.rng.getstate(), "torch_gen": self.gen.get_state(),
               "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
        rng_ranks = [rng]
        if self.world > 1:
            rng_ranks = [None] * self.world
            dist.all_gather_object(rng_ranks, rng)
        if self.rank != 0:
            return path
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "progress": asdict(self.progress), "model_config": dict(self.cfg.model),
            "train_config": dict(self.cfg.raw), "rng_ranks": rng_ranks, "start": self.start,
        }
        if self.phone_head is not None:
            state["phone_head"] = {"phones": list(self.phone_grid.phones), "weights": self.phone_head.state_dict()}
        if self.average is not None:
            state["weight_average"] = self.average.state_dict()
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    def resume(self, path: Path | None = None) -> bool:
        """Load a checkpoint written by save(); False when there is none."""
        path = path or self.cfg.out_dir / CHECKPOINT_NAME
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        if parse_model_config(state["model_config"]) != self.model.cfg:
            raise ResumeError(f"{path} was trained with another model config; use a new out_dir or --no-resume")
        check_start(path, state.get("start"), self.start)
        self.model.load_state_dict(state["model"])
        if self.phone_head is not None:
            saved = state.get("phone_head") or {}
            if tuple(saved.get("phones", ())) != self.phone_grid.phones:
                raise ResumeError(f"{path} was trained without the phone head or with other phonemes; "
                                 "use a new out_dir or --no-resume")
            self.phone_head.load_state_dict(saved["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        if self.average is not None:  # a run that had none averages from here on
            self.average = WeightAverage(self.model, self.cfg.trainer.ema_decay)
            if "weight_average" in state:
                self.average.load_state_dict(state["weight_average"])
        ranks = state.get("rng_ranks") or [state["rng"]]  # checkpoints before data parallel: "rng"
        if len(ranks) != self.world and self.rank > 0:
            return True  # another number of processes than saved: the others keep their fresh seeds
        rng = ranks[self.rank if len(ranks) == self.world else 0]
        self.rng.setstate(rng["python"])
        self.gen.set_state(rng["torch_gen"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["random"])
        return True
