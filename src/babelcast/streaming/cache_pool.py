"""Preallocated streaming state for up to `capacity` streams, addressed by slot: encoder caches and
what decoding carries (the prediction net's state; a CTC row's last frame label; a boosted row's
node in its phrase trie; with a beam width, every slot's hypotheses for beam search).

Every latency of a checkpoint shares the same left context, so one pool serves streams of all
latencies; a step gathers the rows of its slots, runs, and scatters the new rows back.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..decoding.beam import collapse
from ..decoding.heads import DecodeState
from ..model.asr import AsrModel
from ..model.encoder import EncoderState
from ..model.transducer import PredictorState


class CachePool:
    def __init__(self, model: AsrModel, capacity: int, left: int, device: torch.device | str,
                 dtype: torch.dtype, beam_width: int = 0):
        self.capacity = capacity
        self.encoder = model.encoder.init_state(capacity, left, device, dtype)  # [.., capacity, ..]
        decode = DecodeState.start(model, capacity, device, beam_width)  # [.., capacity, ..]
        self.predictor, self.ctc_label, self.boost_node = decode.pred, decode.ctc_label, decode.boost_node
        self.beam = decode.beam  # [.., capacity * width, ..]; None without a beam width
        self._fresh_encoder = model.encoder.init_state(1, left, device, dtype)
        self._fresh_decode = DecodeState.start(model, 1, device, beam_width)
        self._free = list(range(capacity - 1, -1, -1))

    @property
    def n_free(self) -> int:
        return len(self._free)

    def alloc(self) -> int:
        """A free slot, reset to the start-of-stream state; raises when the pool is full."""
        if not self._free:
            raise RuntimeError("cache pool is full")
        slot = self._free.pop()
        self.reset(torch.tensor([slot], device=self.encoder.mel_pos.device))
        return slot

    def free(self, slot: int) -> None:
        self._free.append(slot)

    def reset(self, slots: Tensor) -> None:
        """Start-of-stream state for these slots (a new utterance on a kept session, or a new session)."""
        n = slots.numel()
        fe, fd = self._fresh_encoder, self._fresh_decode
        fp = fd.pred
        self.scatter(slots, EncoderState(fe.mel_history.expand(n, -1, -1), fe.k_cache.expand(-1, n, -1, -1, -1),
                                         fe.v_cache.expand(-1, n, -1, -1, -1), fe.att_cache_len.expand(n),
                                         fe.conv_cache.expand(-1, n, -1, -1), fe.mel_pos.expand(n)),
                     DecodeState(PredictorState(fp.out.expand(n, -1), fp.h.expand(-1, n, -1), fp.c.expand(-1, n, -1)),
                                 fd.ctc_label.expand(n), fd.boost_node.expand(n),
                                 None if fd.beam is None else fd.beam.index(torch.zeros_like(slots))))

    def gather(self, slots: Tensor, beam: bool = False) -> tuple[EncoderState, DecodeState]:
        """These slots' state; their beam hypotheses only when some row searches with a beam."""
        return self.encoder.index(slots), DecodeState(self.predictor.index(slots), self.ctc_label[slots],
                                                      self.boost_node[slots],
                                                      self.beam.index(slots) if beam and self.beam is not None else None)

    def scatter(self, slots: Tensor, enc: EncoderState, decode: DecodeState) -> None:
        """Write rows back in place (index_copy_ along each tensor's stream axis)."""
        e = self.encoder
        e.mel_history.index_copy_(0, slots, enc.mel_history.to(e.mel_history.dtype))
        e.k_cache.index_copy_(1, slots, enc.k_cache.to(e.k_cache.dtype))
        e.v_cache.index_copy_(1, slots, enc.v_cache.to(e.v_cache.dtype))
        e.att_cache_len.index_copy_(0, slots, enc.att_cache_len)
        e.conv_cache.index_copy_(1, slots, enc.conv_cache.to(e.conv_cache.dtype))
        e.mel_pos.index_copy_(0, slots, enc.mel_pos)
        p, pred = self.predictor, decode.pred
        p.out.index_copy_(0, slots, pred.out.to(p.out.dtype))
        p.h.index_copy_(1, slots, pred.h.to(p.h.dtype))
        p.c.index_copy_(1, slots, pred.c.to(p.c.dtype))
        self.ctc_label.index_copy_(0, slots, decode.ctc_label)
        self.boost_node.index_copy_(0, slots, decode.boost_node)
        if self.beam is not None and decode.beam is not None:
            self.beam.write_(slots, decode.beam)

    def collapse(self, slot: int, best: int) -> None:
        """After a beam row's final: only its best hypothesis goes on."""
        slots = torch.tensor([slot], device=self.ctc_label.device)
        row = self.beam.index(slots)
        self.beam.write_(slots, collapse(row, torch.tensor([best], device=slots.device)))
