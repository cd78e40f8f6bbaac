"""Rows of one batch decoded with the head each asked for (RNNT joint, or the CTC head of a hybrid).

The decoder is a per-row choice after the encoder, like the language prompt: one encoder step serves
both, then each head runs on its own rows only, and the rows' emissions come back in batch order.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.asr import AsrModel
from ..model.transducer import PredictorState
from .beam import BeamState, BeamTrace, beam_rnnt
from .boost import Booster, BoostTrie
from .greedy import Emissions, greedy_ctc, greedy_rnnt

DECODERS = ("rnnt", "ctc")


@dataclass
class DecodeState:
    """What greedy decoding carries from one streaming step to the next, per row."""

    pred: PredictorState  # RNNT rows: the prediction net after the last emitted label
    ctc_label: Tensor  # [B] int64, CTC rows: the last frame's argmax (blank at a start), so repeats merge
    boost_node: Tensor  # [B] int64, boosted RNNT rows: the node reached in the row's phrase trie (0: root)
    beam: BeamState | None = None  # beam-search rows: their hypotheses (None: no row may use a beam)

    @classmethod
    def start(cls, model: AsrModel, batch: int, device: torch.device | str = "cpu",
              beam_width: int = 0) -> "DecodeState":
        """Start-of-stream state of `batch` rows (fp32 prediction net, blank label, trie root; with
        beam_width > 1, room for that many hypotheses per row)."""
        blank = model.cfg.transducer.blank_id
        return cls(model.decoder.init_state(batch, device, torch.float32),
                   torch.full((batch,), blank, dtype=torch.long, device=device),
                   torch.zeros(batch, dtype=torch.long, device=device),
                   BeamState.start(model.decoder, batch, beam_width, device) if beam_width > 1 else None)


def decode_rows(model: AsrModel, frames: Tensor, valid: Tensor, state: DecodeState,
                ctc_rows: list[bool] | None = None,
                boost: list[BoostTrie | None] | None = None,
                beam_rows: list[bool] | None = None) -> tuple[Emissions, DecodeState]:
    """Decoding of prompted frames [B, T, D] (valid [B]): rows flagged in ctc_rows with the CTC head
    (greedy), rows flagged in beam_rows with RNNT beam search (their labels come as a trace in
    Emissions.beam), the others with greedy RNNT; RNNT rows boosted by their phrase tries (boost, per
    row; None or a batch whose RNNT rows boost nothing runs no boosting op); a batch of one kind runs
    its head on the whole batch."""
    n = frames.shape[0]
    flags, beams = ctc_rows or [False] * n, beam_rows or [False] * n
    ctc = [i for i, f in enumerate(flags) if f]
    rnnt = [i for i in range(n) if not flags[i] and not beams[i]]
    searched = [i for i in range(n) if not flags[i] and beams[i]]
    parts, pred, ctc_label, boost_node = [], state.pred, state.ctc_label, state.boost_node
    beam, trace = state.beam, None
    if searched:
        if beam is None:
            raise ValueError("beam search asked of a decode state made without room for hypotheses")
        rows = _index(searched, frames)
        tries = [boost[i] for i in searched] if boost else None
        trace, new = beam_rnnt(model.decoder, model.joint, _take(frames, rows), _take(valid, rows),
                               beam if rows is None else beam.index(rows), model.cfg.transducer.max_symbols, tries)
        beam = new if rows is None else beam.put(rows, new)
    if rnnt:
        rows = _index(rnnt, frames)
        tries = [boost[i] for i in rnnt] if boost else []
        booster = (Booster(tries, _take(boost_node, rows), model.cfg.transducer.blank_id)
                   if any(t is not None for t in tries) else None)
        em, new = greedy_rnnt(model.decoder, model.joint, _take(frames, rows), _take(valid, rows),
                              pred if rows is None else pred.index(rows), model.cfg.transducer.max_symbols,
                              booster)
        parts.append((rows, em))
        pred = new if rows is None else _put_pred(pred, rows, new)
        if booster is not None:
            boost_node = booster.nodes() if rows is None else boost_node.index_copy(0, rows, booster.nodes())
    if ctc:
        rows = _index(ctc, frames)
        em, last = greedy_ctc(model.ctc_decoder, _take(frames, rows), _take(valid, rows),
                              model.cfg.transducer.blank_id, _take(ctc_label, rows))
        parts.append((rows, em))
        ctc_label = last if rows is None else ctc_label.index_copy(0, rows, last)
    em = _merge(parts, n) if parts else _no_labels(frames)
    if trace is not None:
        em = dataclasses.replace(em, beam=(searched, trace))
    return em, DecodeState(pred, ctc_label, boost_node, beam)


def _no_labels(frames: Tensor) -> Emissions:
    """Emissions without labels (a batch of beam rows only: theirs come as a trace)."""
    z = torch.zeros((frames.shape[0], 0), dtype=torch.long, device=frames.device)
    return Emissions(z, z, z.float(), torch.zeros(frames.shape[0], dtype=torch.long, device=frames.device))


def _index(rows: list[int], frames: Tensor) -> Tensor | None:
    """These rows as an index tensor; None when they are the whole batch (no copy needed)."""
    return None if len(rows) == frames.shape[0] else torch.tensor(rows, device=frames.device)


def _take(x: Tensor, rows: Tensor | None) -> Tensor:
    return x if rows is None else x[rows]


def _put_pred(state: PredictorState, rows: Tensor, new: PredictorState) -> PredictorState:
    """state with `rows` replaced by new's rows (out [B, H], h and c [layers, B, H])."""
    return PredictorState(state.out.index_copy(0, rows, new.out), state.h.index_copy(1, rows, new.h),
                          state.c.index_copy(1, rows, new.c))


def _merge(parts: list[tuple[Tensor | None, Emissions]], batch: int) -> Emissions:
    """Emissions of row subsets → one Emissions in batch order (padded to the widest part; rows of no
    part have none)."""
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    width = max(em.labels.shape[1] for _, em in parts)
    first = parts[0][1]
    out = Emissions(first.labels.new_zeros(batch, width), first.frames.new_zeros(batch, width),
                    first.probs.new_zeros(batch, width), first.count.new_zeros(batch))
    for rows, em in parts:
        n = em.labels.shape[1]
        out.labels[rows, :n], out.frames[rows, :n], out.probs[rows, :n] = em.labels, em.frames, em.probs
        out.count[rows] = em.count
    return out
