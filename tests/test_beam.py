"""RNNT beam search (decoding/beam.py): the host's hypothesis bookkeeping, merging, collapsing, and on the
demo model: streaming == offline at every latency, a batch of mixed searches == each alone (with
endpoints, so finals collapse the beam mid-stream), the search options named when wrong."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import babelcast
from babelcast.audio.io import load_audio
from babelcast.decoding.beam import BeamHistory, BeamState, RowTrace, _merge, collapse
from babelcast.streaming.engine import Engine, EngineConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = {json.loads(line)["lang"]: json.loads(line)
           for line in (ROOT / "samples" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()}


@pytest.fixture(scope="module")
def demo():
    return babelcast.load_model(babelcast.DEFAULT_MODEL)


def audio(lang: str) -> np.ndarray:
    return load_audio(ROOT / "samples" / SAMPLES[lang]["audio_filepath"])


# ---- the host's bookkeeping ----------------------------------------------------------------------
def trace(steps: list[tuple[list, list, list]], live: list[bool], best: int, offset: int = 0) -> RowTrace:
    """A RowTrace of K=2 hypotheses, one expansion per frame: steps of (parents, labels, (set, place) origins)."""
    return RowTrace([[p] for p, _, _ in steps], [[lab] for _, lab, _ in steps],
                    [[[0.5] * len(lab)] for _, lab, _ in steps],
                    [[o[0] for o in origins] for _, _, origins in steps],
                    [[o[1] for o in origins] for _, _, origins in steps], live, best, offset)


def test_shared_labels_are_committed_and_the_best_tail_is_tentative():
    h = BeamHistory(2)
    # frame 0: both hypotheses take label 7 from the one start hypothesis (set 1 = after one expansion)
    # frame 1: hypothesis 0 adds 8, hypothesis 1 adds 9
    done, tentative = h.update(trace([([0, 0], [7, 7], [(1, 0), (1, 0)]),
                                      ([0, 1], [8, 9], [(1, 0), (1, 1)])], [True, True], best=1, offset=10))
    assert done == ([7], [10], [0.5]) and tentative == ([9], [11], [0.5])
    # frame 2: both end on blank (set 0); the first dies: the survivor's 9 is committed, nothing is tentative
    done, tentative = h.update(trace([([0, 0], [1, 1], [(0, 1), (0, 0)])], [True, False], best=0, offset=12))
    assert done == ([9], [11], [0.5]) and tentative == ([], [], [])
    assert h.take_best() == ([], [], [])


def test_equal_label_sequences_merge_into_their_best_member():
    score = torch.tensor([[-1.0, -2.0, -3.0, float("-inf")]])
    key = torch.tensor([[5, 6, 5, 5]])
    merged = _merge(score, key)
    assert merged[0, 0].item() == pytest.approx(math.log(math.exp(-1) + math.exp(-3)))
    assert merged[0, 1].item() == -2.0 and merged[0, 2:].isinf().all()


def test_collapse_keeps_the_chosen_hypothesis_alone(demo):
    state = BeamState.start(demo.model.decoder, 2, 3)
    state.pred.h.normal_()
    state.score.copy_(torch.tensor([[-1.0, -0.5, -2.0], [-0.1, -4.0, float("-inf")]]))
    out = collapse(state, torch.tensor([1, 0]))
    assert out.score[:, 0].tolist() == [0.0, 0.0] and out.score[:, 1:].isinf().all()
    assert torch.equal(out.pred.h[:, 0], state.pred.h[:, 1]) and torch.equal(out.pred.h[:, 3], state.pred.h[:, 3])


# ---- the demo model ------------------------------------------------------------------------------
@pytest.mark.parametrize("latency_ms", [80, 560, 1120])
def test_streaming_equals_offline_with_a_beam(demo, latency_ms):
    # The demo model's (v14) beam and greedy searches differ on the English sample at 80 ms (auto and given) and on
    # the German one at 560 ms with the language given, so there the last check, over both modes, shows that the beam
    # searched; at 1120 ms no sample's tokens differ in either mode (v12's English sample did), so there the test
    # checks only that streaming equals offline with a beam.
    inputs = [audio("en-US"), audio("de-DE"), audio("es-US")]
    offline = demo.transcribe(inputs, language="auto", latency_ms=latency_ms, beam_size=4)
    streamed = demo.transcribe(inputs, language="auto", latency_ms=latency_ms, beam_size=4, mode="streaming")
    assert [t.tokens for t in streamed] == [t.tokens for t in offline]
    session = demo.stream("auto", latency_ms, beam_size=4)
    samples = audio("de-DE")
    for start in range(0, len(samples), 2345):
        session.accept_audio(samples[start:start + 2345])
    assert session.flush().tokens == offline[1].tokens

    def given(beam_size: int) -> list[list[int]]:
        return [demo.transcribe([a], language=lang, latency_ms=latency_ms, beam_size=beam_size)[0].tokens
                for a, lang in zip(inputs, ["en-US", "de-DE", "es-US"])]

    if latency_ms < 1120:
        greedy = [t.tokens for t in demo.transcribe(inputs, language="auto", latency_ms=latency_ms)]
        assert greedy + given(1) != [t.tokens for t in offline] + given(4)  # the search is not greedy's


def finals(demo, streams: list[dict], latency_ms: int, endpoint_ms: int) -> list[list[list[int]]]:
    """Every final's tokens of each stream (options for stream_options) fed two samples with 2 s of silence
    between, all in one engine."""
    engine = Engine(demo.model, demo.tokenizer, EngineConfig(max_sessions=len(streams), precision="fp32",
                                                              endpoint_ms=endpoint_ms, max_segment_ms=0,
                                                              phase_align=False))
    sids = [engine.open(demo.stream_options(latency_ms=latency_ms, **s), interim=True) for s in streams]
    for sid, s in zip(sids, streams):
        x = np.concatenate([audio(s["language"]), np.zeros(32000, np.float32), audio("it-IT")])
        engine.feed(sid, x)
        engine.finish(sid, close=True)
    events = engine.drain()
    return [[e.transcript.tokens for e in events if e.kind == "final" and e.session_id == sid] for sid in sids]


@pytest.mark.parametrize("latency_ms", [80, 1120])
def test_mixed_searches_in_one_engine_equal_each_alone(demo, latency_ms):
    streams = [dict(language="en-US", beam=True), dict(language="it-IT"),
               dict(language="cs-CZ", boost=["Nejblíže"]), dict(language="en-US", boost=["pleasant"], beam=False),
               dict(language="de-DE", beam=True)]
    together = finals(demo, streams, latency_ms, endpoint_ms=800)
    alone = [finals(demo, [s], latency_ms, endpoint_ms=800)[0] for s in streams]
    assert together == alone
    assert len(together[0]) >= 2  # an endpoint final collapsed the beam mid-stream
    assert together[0] != finals(demo, [dict(language="en-US")], latency_ms, endpoint_ms=800)[0]


def test_search_options_are_checked(demo, tmp_path):
    from tiny_nemo import write_tiny_nemo

    for bad in (0, 17, 2.5, True):
        with pytest.raises(ValueError, match="bad beam size"):
            demo.transcribe([audio("en-US")], beam_size=bad)
    hybrid = babelcast.load_model(write_tiny_nemo(tmp_path / "hybrid.nemo", hybrid=True))
    with pytest.raises(ValueError, match="beam search decodes with the RNNT head"):
        hybrid.transcribe([audio("en-US")], decoder="ctc", beam_size=4)
    assert hybrid.stream_options(decoder="ctc").beam is False  # no phrases: greedy CTC
    greedy_engine = demo.engine(EngineConfig(max_sessions=1, precision="fp32", beam_size=1))
    sid = greedy_engine.open(demo.stream_options("en-US", boost=["pleasant"]))
    assert greedy_engine._streams[sid].opts.beam is False  # beam search off in this engine: greedy
