"""decoding/greedy.py on its own, against the textbook searches written one row and one label at a time:
RNNT greedy (at each frame emit the argmax until blank or max_symbols, the prediction net advancing only on
emitted labels) and CTC greedy (argmax per frame, merge repeats, drop blanks). Batched rows of different
lengths, and a call split in two with the state carried, give the textbook's labels, frames and probabilities."""
from __future__ import annotations

import pytest
import torch

from babelcast.decoding.greedy import greedy_ctc, greedy_rnnt

from tiny import tiny_model

VALID = [9, 4, 0, 7]  # frames of each row; row 2 has none


@pytest.fixture(scope="module")
def model():
    return tiny_model(hybrid=True)


def frames_of(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(VALID), max(VALID), model.cfg.encoder.d_model, generator=g)  # [B, T, D]


def textbook_rnnt(model, frames: torch.Tensor, max_symbols: int) -> tuple[list[int], list[int], list[float]]:
    """One row [T, D], one label at a time."""
    blank = model.cfg.transducer.blank_id
    state = model.decoder.init_state(1, "cpu", torch.float32)
    labels, at, probs = [], [], []
    for t in range(frames.shape[0]):
        for _ in range(max_symbols):
            enc = model.joint.enc(frames[t][None])
            logp = torch.log_softmax(model.joint.logits(enc, model.joint.pred(state.out)).float(), dim=-1)[0]
            label = int(logp.argmax())
            if label == blank:
                break
            labels.append(label)
            at.append(t)
            probs.append(float(logp[label].exp()))
            state = model.decoder.step(torch.tensor([label]), state)
    return labels, at, probs


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_rnnt_rows_are_the_textbook_search(model, max_symbols):
    frames = frames_of(model)
    with torch.no_grad():
        out, _ = greedy_rnnt(model.decoder, model.joint, frames, torch.tensor(VALID),
                             model.decoder.init_state(len(VALID), "cpu", torch.float32), max_symbols)
        expected = [textbook_rnnt(model, frames[b, :n], max_symbols) for b, n in enumerate(VALID)]
    got = out.to_lists()
    assert sum(len(labels) for labels, _, _ in expected) > len(VALID)  # the rows say something
    for (labels, at, probs), (want_labels, want_at, want_probs) in zip(got, expected, strict=True):
        assert (labels, at) == (want_labels, want_at)
        assert probs == pytest.approx(want_probs, abs=1e-5)
    if max_symbols == 1:
        assert all(len(set(at)) == len(at) for _, at, _ in got)  # one label a frame at most


def test_rnnt_split_in_two_calls_is_one_call(model):
    frames, valid = frames_of(model, seed=1), torch.tensor(VALID)
    start = model.decoder.init_state(len(VALID), "cpu", torch.float32)
    whole, _ = greedy_rnnt(model.decoder, model.joint, frames, valid, start, 3)
    first, state = greedy_rnnt(model.decoder, model.joint, frames[:, :5], valid.clamp(max=5), start, 3)
    second, _ = greedy_rnnt(model.decoder, model.joint, frames[:, 5:], (valid - 5).clamp(min=0), state, 3)
    joined = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(first.to_lists(), second.to_lists([5] * len(VALID)))]
    assert joined == [(labels, at) for labels, at, _ in whole.to_lists()]


def textbook_ctc(logits: torch.Tensor, blank: int, prev: int) -> list[int]:
    """One row [T, V+1]: argmax per frame, merge repeats (across the previous call too), drop blanks."""
    out = []
    for label in logits.argmax(dim=-1).tolist():
        if label != blank and label != prev:
            out.append(label)
        prev = label
    return out


def test_ctc_rows_are_the_textbook_search_also_across_calls(model):
    blank = model.cfg.transducer.blank_id
    base, valid = frames_of(model, seed=2), torch.tensor(VALID)
    frames = base[:, torch.arange(base.shape[1]) // 2]  # each frame twice: repeats to merge, one (4, 5) across calls
    with torch.no_grad():
        logits = model.ctc_decoder(frames)
    first, prev = greedy_ctc(model.ctc_decoder, frames[:, :5], valid.clamp(max=5), blank)
    second, _ = greedy_ctc(model.ctc_decoder, frames[:, 5:], (valid - 5).clamp(min=0), blank, prev)
    whole, _ = greedy_ctc(model.ctc_decoder, frames, valid, blank)
    for b, n in enumerate(VALID):
        want = textbook_ctc(logits[b, :n], blank, blank)
        assert whole.to_lists()[b][0] == want
        assert first.to_lists()[b][0] + second.to_lists()[b][0] == want
    assert any(len(textbook_ctc(logits[b, :n], blank, blank)) < n for b, n in enumerate(VALID) if n)  # merges
