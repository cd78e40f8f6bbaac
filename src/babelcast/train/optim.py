"""AdamW and the learning-rate schedules (spec §7.5). The schedule is a pure function of the step,
so resuming needs nothing but the step number."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and kernels only (not on biases, norms, pos biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(cfg.betas))


def lr_at(step: int, cfg: OptimConfig, d_model: int, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (1-based).

    noam:     lr · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5), at least min_lr (NeMo's NoamAnnealing)
    cosine:   linear warmup to lr, then cosine down to min_lr at max_steps
    constant: linear warmup to lr, then lr
    """
    step = max(1, step)
    warmup = max(1, cfg.warmup_steps)
    if cfg.schedule == "noam":
        return max(cfg.min_lr, cfg.lr * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5))
    if step <= warmup:
        return cfg.lr * step / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
