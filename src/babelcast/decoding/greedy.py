"""Batched greedy decoding: RNNT (frame-synchronous, ≤ max_symbols per frame) and CTC (spec §5.3–5.4).

Frame-synchronous greedy is the same search as NeMo's label-looping greedy_batch: at each frame emit
the argmax until it is blank or max_symbols labels were emitted, then advance; the prediction net
only advances on emitted labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..model.transducer import CTCHead, Joint, Predictor, PredictorState
from .boost import Booster

if TYPE_CHECKING:
    from .beam import BeamTrace


@dataclass(frozen=True)
class Emissions:
    """Labels emitted by B rows in one call; row b owns the first count[b] entries."""

    labels: Tensor  # [B, N] int64
    frames: Tensor  # [B, N] int64 frame index within the call's frames
    probs: Tensor  # [B, N] fp32 softmax probability of each label
    count: Tensor  # [B] int64
    beam: "tuple[list[int], BeamTrace] | None" = None  # beam-search rows (batch indices) and their trace

    def to_lists(self, frame_offset: list[int] | None = None) -> list[tuple[list[int], list[int], list[float]]]:
        """Host-side per-row (labels, frames, probs); the one device→host copy per call (beam rows have
        none here: `beam.row_traces` gives theirs)."""
        labels, frames, probs, count = (t.cpu() for t in (self.labels, self.frames, self.probs, self.count))
        out = []
        for b in range(labels.shape[0]):
            n = int(count[b])
            off = frame_offset[b] if frame_offset else 0
            out.append((labels[b, :n].tolist(), [f + off for f in frames[b, :n].tolist()], probs[b, :n].tolist()))
        return out


def _select(mask: Tensor, new: PredictorState, old: PredictorState) -> PredictorState:
    """Rows where mask is set take the new state."""
    m = mask[:, None]
    return PredictorState(torch.where(m, new.out, old.out), torch.where(m[None], new.h, old.h),
                          torch.where(m[None], new.c, old.c))


def _pick(logp: Tensor, boost: Booster | None) -> tuple[Tensor, Tensor]:
    """The argmax label [B] (of the boosted scores when boosting) and the model's own log-prob of it [B]."""
    if boost is None:
        return logp.max(dim=-1)
    label = (logp + boost.bonus()).argmax(dim=-1)
    return logp.gather(1, label[:, None])[:, 0], label


@torch.no_grad()
def greedy_rnnt(predictor: Predictor, joint: Joint, frames: Tensor, valid: Tensor,
                state: PredictorState, max_symbols: int,
                boost: Booster | None = None) -> tuple[Emissions, PredictorState]:
    """frames [B, T, D] (prompted encoder output), valid [B] frames per row, state carried across calls;
    boost (phrase boosting of some rows) is advanced in place with the emitted labels."""
    b, t_max, _ = frames.shape
    blank = predictor.cfg.blank_id
    enc_proj = joint.enc(frames)  # [B, T, J], computed once (spec §5.3)
    cap = t_max * max_symbols
    labels = torch.full((b, cap), blank, dtype=torch.long, device=frames.device)
    at_frame = torch.zeros((b, cap), dtype=torch.long, device=frames.device)
    probs = torch.zeros((b, cap), dtype=torch.float32, device=frames.device)
    count = torch.zeros(b, dtype=torch.long, device=frames.device)
    rows = torch.arange(b, device=frames.device)
    pred_proj = joint.pred(state.out)  # [B, J]
    for t in range(t_max):
        active = valid > t
        for _ in range(max_symbols):
            logp = torch.log_softmax(joint.logits(enc_proj[:, t], pred_proj).float(), dim=-1)
            best, label = _pick(logp, boost)  # [B]
            emit = active & (label != blank)
            if not bool(emit.any()):  # the one host sync per symbol step
                break
            labels[rows, count] = label
            at_frame[rows, count] = t
            probs[rows, count] = best.exp()
            count = count + emit.long()
            if boost is not None:
                boost.advance(label, emit)
            new = predictor.step(label.masked_fill(~emit, blank), state)
            state = _select(emit, new, state)
            pred_proj = torch.where(emit[:, None], joint.pred(state.out), pred_proj)
            active = emit
    return Emissions(labels, at_frame, probs, count), state


@torch.no_grad()
def greedy_ctc(head: CTCHead, frames: Tensor, valid: Tensor, blank: int,
               prev: Tensor | None = None) -> tuple[Emissions, Tensor]:
    """Argmax per frame, merge repeats, drop blanks: frames [B, T, D], valid [B].

    prev [B]: each row's label on the frame before these (blank at a start), so a label repeated across
    streaming steps merges; returned updated with the row's last valid frame, for the next call.
    """
    logp = torch.log_softmax(head(frames).float(), dim=-1)  # [B, T, V+1]
    best, label = logp.max(dim=-1)  # [B, T]
    if prev is None:
        prev = torch.full_like(valid, blank, dtype=torch.long)
    with_prev = torch.cat([prev[:, None], label], dim=1)  # [B, T+1]
    before = with_prev[:, :-1]  # [B, T] the previous frame's label
    t = torch.arange(label.shape[1], device=label.device)
    keep = (label != blank) & (label != before) & (t[None] < valid[:, None])  # [B, T]
    count = keep.sum(dim=1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept frames first, in order
    last = with_prev.gather(1, valid[:, None].long())[:, 0]  # [B] the last valid frame's label, or prev
    return Emissions(label.gather(1, order), order, best.exp().gather(1, order), count), last
