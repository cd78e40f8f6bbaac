"""Frame-level phoneme targets, a training aid for synthetic data (data/phones.py gives the times).

Encoder frame t of a ×factor model has seen mel frames up to factor·t (chunking: the first chunk is
one mel frame), so its target is the mix of phonemes sounding in the frame_ms·factor before that
frame's last mel frame: causal, hence learnable at every lookahead, 80 ms included. An auxiliary
linear head on the encoder is trained on these soft targets; like auxiliary CTC it is left out of
every export, so the model is the plain architecture.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor, nn

PAUSE = ""  # index 0: silence and pauses (before the first phoneme, after the last, between clauses)


@dataclass(frozen=True)
class PhoneGrid:
    """The phoneme classes and the encoder frame grid the targets are made on."""

    phones: tuple[str, ...]  # phones[0] == PAUSE
    frame_ms: float  # encoder frame: mel hop × subsampling factor

    @cached_property
    def _index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.phones)}

    def index(self, phone: str) -> int:
        return self._index[phone]


def inventory(timelines: list[tuple[tuple[int, str], ...]]) -> tuple[str, ...]:
    """Every phoneme of the timelines, PAUSE first, the rest sorted (a function of the data only)."""
    seen = {name for timeline in timelines for _, name in timeline} - {PAUSE}
    return (PAUSE, *sorted(seen))


def frame_targets(timeline: tuple[tuple[int, str], ...], n_frames: int, grid: PhoneGrid,
                  time_scale: float = 1.0) -> np.ndarray:
    """Soft targets [n_frames, P]: row t is the share of frame t's window (t·f - f, t·f] ms that each
    phoneme covers (PAUSE for the rest). time_scale stretches the times (speed perturbation)."""
    f = grid.frame_ms
    starts = np.array([start for start, _ in timeline], dtype=np.float64) * time_scale  # [S+1]
    ids = np.array([grid.index(name) for _, name in timeline[:-1]], dtype=np.int64)  # [S]
    win_end = np.arange(n_frames, dtype=np.float64)[:, None] * f  # [T, 1]
    overlap = np.minimum(win_end, starts[None, 1:]) - np.maximum(win_end - f, starts[None, :-1])  # [T, S]
    out = np.zeros((n_frames, len(grid.phones)), dtype=np.float32)
    np.add.at(out.T, ids, np.clip(overlap, 0, None).T / f)
    out[:, 0] += np.clip(1 - out.sum(axis=1), 0, None)
    return out


def pad_targets(targets: list[np.ndarray]) -> Tensor:
    """[B, T, P] zero padded (padded rows weigh nothing in phone_nll)."""
    n = max(1, max(len(t) for t in targets))
    out = torch.zeros(len(targets), n, targets[0].shape[1])
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.from_numpy(t)
    return out


class PhoneHead(nn.Linear):
    """Encoder frames [B, T, D] → phoneme logits [B, T, P]."""

    def __init__(self, d_model: int, n_phones: int):
        super().__init__(d_model, n_phones)


def phone_nll(logits: Tensor, targets: Tensor, enc_len: Tensor) -> tuple[Tensor, Tensor]:
    """(soft cross-entropy summed over each utterance's frames, mean over the batch; frames counted).

    logits [B, T, P], targets [B, T', P] (cut or zero padded to T), enc_len [B]."""
    b, t, _ = logits.shape
    targets = targets[:, :t]
    if targets.shape[1] < t:
        targets = torch.nn.functional.pad(targets, (0, 0, 0, t - targets.shape[1]))
    log_p = torch.log_softmax(logits.float(), dim=-1)
    valid = torch.arange(t, device=logits.device)[None] < enc_len[:, None]  # [B, T]
    per_frame = -(targets.to(log_p.device) * log_p).sum(-1) * valid
    return per_frame.sum() / b, valid.sum()
