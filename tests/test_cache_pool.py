"""streaming/cache_pool.py on its own: slots are handed out and taken back, a row written is the row read,
other rows stay untouched, and a slot handed out again starts from the start-of-stream state."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from babelcast.decoding.heads import DecodeState
from babelcast.model.encoder import EncoderState
from babelcast.model.transducer import PredictorState
from babelcast.streaming.cache_pool import CachePool

from tiny import tiny_model

CAPACITY = 3


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def pool_of(model, beam_width: int = 0) -> CachePool:
    return CachePool(model, CAPACITY, model.cfg.encoder.left_context_frames, "cpu", torch.float32, beam_width)


def scrambled(enc: EncoderState, decode: DecodeState, seed: int) -> tuple[EncoderState, DecodeState]:
    """The same shapes with other values: random floats, random counts and positions, random labels."""
    g = torch.Generator().manual_seed(seed)

    def other(t: torch.Tensor) -> torch.Tensor:
        if t.dtype.is_floating_point:
            return torch.randn(t.shape, generator=g)
        return torch.randint(1, 50, t.shape, generator=g)

    new_enc = EncoderState(*(other(getattr(enc, f.name)) for f in dataclasses.fields(EncoderState)))
    new_pred = PredictorState(*(other(getattr(decode.pred, f.name)) for f in dataclasses.fields(PredictorState)))
    return new_enc, DecodeState(new_pred, other(decode.ctc_label), other(decode.boost_node), None)


def rows(enc: EncoderState, decode: DecodeState) -> list[torch.Tensor]:
    return [*(getattr(enc, f.name) for f in dataclasses.fields(EncoderState)),
            *(getattr(decode.pred, f.name) for f in dataclasses.fields(PredictorState)),
            decode.ctc_label, decode.boost_node]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_slots_are_handed_out_until_full_and_taken_back(model):
    pool = pool_of(model)
    slots = [pool.alloc() for _ in range(CAPACITY)]
    assert sorted(slots) == list(range(CAPACITY)) and pool.n_free == 0
    with pytest.raises(RuntimeError, match="cache pool is full"):
        pool.alloc()
    pool.free(slots[1])
    assert pool.n_free == 1 and pool.alloc() == slots[1]


def row(state: tuple[EncoderState, DecodeState], i: int) -> list[torch.Tensor]:
    """Row i of a gathered or scrambled state."""
    enc, decode = state
    at = torch.tensor([i])
    return rows(enc.index(at), DecodeState(decode.pred.index(at), decode.ctc_label[at], decode.boost_node[at]))


def test_a_row_written_is_the_row_read_and_the_others_stay(model):
    pool = pool_of(model)
    before = pool.gather(torch.tensor([0, 1, 2]))
    written = scrambled(*pool.gather(torch.tensor([1])), seed=1)
    pool.scatter(torch.tensor([1]), *written)
    assert same(rows(*pool.gather(torch.tensor([1]))), rows(*written))
    for slot in (0, 2):
        assert same(rows(*pool.gather(torch.tensor([slot]))), row(before, slot))
    both = scrambled(*pool.gather(torch.tensor([2, 0])), seed=2)  # two rows at once, out of order
    pool.scatter(torch.tensor([2, 0]), *both)
    assert same(rows(*pool.gather(torch.tensor([2, 0]))), rows(*both))
    assert same(rows(*pool.gather(torch.tensor([1]))), rows(*written))


def test_a_slot_handed_out_again_starts_afresh(model):
    """Handed out, a slot holds the start of a stream of one (what a stream alone starts from)."""
    pool = pool_of(model)
    fresh = rows(model.encoder.init_state(1, pool.encoder.left, "cpu", torch.float32), DecodeState.start(model, 1))
    slot = pool.alloc()
    assert same(rows(*pool.gather(torch.tensor([slot]))), fresh)
    pool.scatter(torch.tensor([slot]), *scrambled(*pool.gather(torch.tensor([slot])), seed=3))
    pool.free(slot)
    assert pool.alloc() == slot and same(rows(*pool.gather(torch.tensor([slot]))), fresh)
    other = scrambled(*pool.gather(torch.tensor([0, 1, 2])), seed=4)
    pool.scatter(torch.tensor([0, 1, 2]), *other)
    pool.reset(torch.tensor([0, 2]))  # a new utterance on slots 0 and 2: slot 1 keeps its row
    assert same(rows(*pool.gather(torch.tensor([0]))), fresh) and same(rows(*pool.gather(torch.tensor([2]))), fresh)
    assert same(rows(*pool.gather(torch.tensor([1]))), row(other, 1))
    assert not same(row(other, 1), fresh)


def test_beam_hypotheses_are_gathered_only_when_asked(model):
    pool = pool_of(model, beam_width=2)
    slots = torch.tensor([0, 2])
    assert pool.gather(slots)[1].beam is None
    assert pool.gather(slots, beam=True)[1].beam is not None
    assert pool_of(model).gather(slots, beam=True)[1].beam is None  # a pool without a beam width has none
