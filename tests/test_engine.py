"""The multi-stream engine: a session's tokens do not depend on who shares its batch."""
import numpy as np
import pytest

import babelcast
from babelcast.decoding import heads
from babelcast.streaming import engine as engine_module
from babelcast.streaming.engine import EngineConfig, EngineFull

from tiny import synth_audio
from tiny_nemo import write_tiny_nemo

SETUPS = [("auto", 80, 16000), ("de-DE", 320, 28123), ("en-US", 80, 9000), ("es", 1120, 41000),
          ("auto", 560, 20000), ("de-DE", 320, 33000)]


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return babelcast.load_model(write_tiny_nemo(tmp_path_factory.mktemp("m") / "tiny.nemo"))


def alone(rec, lang, latency, audio, decoder="rnnt", boost=None):
    s = rec.stream(lang, latency, keep_lang_tags=True, decoder=decoder, boost=boost)
    s.accept_audio(audio)
    return s.flush().tokens


def run_engine(engine, rec, setups, piece_samples=1600, endpoint_ms=0, decoders=None, boosts=None):
    """Feed every session in interleaved pieces, stepping as audio arrives; collect finals."""
    audios = [synth_audio(n, seed=i).numpy() for i, (_, _, n) in enumerate(setups)]
    decoders = decoders or ["rnnt"] * len(setups)
    boosts = boosts or [None] * len(setups)
    sids = [engine.open(rec.stream_options(lang, lat, keep_lang_tags=True, decoder=dec, boost=boost),
                        endpoint_ms=endpoint_ms)
            for (lang, lat, _), dec, boost in zip(setups, decoders, boosts)]
    finals = {sid: [] for sid in sids}
    events = []
    for start in range(0, max(len(a) for a in audios), piece_samples):
        for sid, a in zip(sids, audios):
            if start < len(a):
                engine.feed(sid, a[start:start + piece_samples])
                if start + piece_samples >= len(a):
                    engine.finish(sid, close=True)
        events += engine.step()
    while engine.n_sessions:
        events += engine.step()
    for e in events:
        if e.kind == "final":
            finals[e.session_id].append(e.transcript)
    return sids, finals, events


@pytest.mark.parametrize("piece,deadline_ms", [(1600, None), (7000, None), (1600, 0.0)])
def test_tokens_independent_of_batch(rec, piece, deadline_ms):
    engine = rec.engine(EngineConfig(max_sessions=8, precision="fp32", deadline_ms=deadline_ms))
    sids, finals, events = run_engine(engine, rec, SETUPS, piece)
    for sid, (lang, lat, n), seed in zip(sids, SETUPS, range(len(SETUPS))):
        got = [tok for t in finals[sid] for tok in t.tokens]
        assert got == alone(rec, lang, lat, synth_audio(n, seed=seed).numpy()), (lang, lat)
        assert finals[sid][-1].latency_ms == lat
    assert {e.kind for e in events} >= {"partial", "final", "closed"}
    assert max(engine.metrics.batch_sizes) > 1


@pytest.mark.parametrize("piece", [1600, 7000])
def test_mixed_decoders_independent_of_batch(tmp_path_factory, monkeypatch, piece):
    """RNNT and CTC streams of a hybrid share steps (one encoder step, each head on its own rows; some
    RNNT rows boost phrases); every stream's tokens equal the same stream alone."""
    hybrid = babelcast.load_model(write_tiny_nemo(tmp_path_factory.mktemp("h") / "hybrid.nemo", hybrid=True))
    setups = SETUPS + [("auto", 80, 30000), ("de-DE", 320, 25000)]
    decoders = ["ctc", "rnnt", "rnnt", "rnnt", "ctc", "ctc", "rnnt", "ctc"]  # 80 ms and 320 ms: both kinds
    steps = []
    monkeypatch.setattr(engine_module, "decode_rows",
                        lambda *args: steps.append(args[4]) or heads.decode_rows(*args))  # args[4]: ctc_rows
    engine = hybrid.engine(EngineConfig(max_sessions=8, precision="fp32"))
    boosts = [None, ["ne su:3", "lo:2"], None, ["lo:2"], None, None, ["ne su:3"], None]
    sids, finals, _ = run_engine(engine, hybrid, setups, piece, decoders=decoders, boosts=boosts)
    assert any(len(set(rows)) == 2 for rows in steps), "no step mixed RNNT and CTC rows"
    monkeypatch.undo()
    for sid, (lang, lat, n), dec, boost, seed in zip(sids, setups, decoders, boosts, range(len(setups))):
        got = [tok for t in finals[sid] for tok in t.tokens]
        assert got == alone(hybrid, lang, lat, synth_audio(n, seed=seed).numpy(), dec, boost), (lang, lat, dec)


def test_endpoint_splits_segments_without_changing_tokens(rec):
    engine = rec.engine(EngineConfig(max_sessions=8, precision="fp32"))
    sids, finals, events = run_engine(engine, rec, SETUPS, endpoint_ms=160)
    for sid, (lang, lat, n), seed in zip(sids, SETUPS, range(len(SETUPS))):
        got = [tok for t in finals[sid] for tok in t.tokens]
        assert got == alone(rec, lang, lat, synth_audio(n, seed=seed).numpy())
        segs = [e.segment for e in events if e.session_id == sid and e.kind == "final"]
        assert segs == list(range(len(segs)))


def test_admission_limit(rec):
    engine = rec.engine(EngineConfig(max_sessions=2, precision="fp32"))
    opts = rec.stream_options("auto", 80)
    engine.open(opts)
    engine.open(opts)
    with pytest.raises(EngineFull, match="limit of 2"):
        engine.open(opts)


def test_session_continues_after_finalize(rec):
    engine = rec.engine(EngineConfig(max_sessions=2, precision="fp32"))
    sid = engine.open(rec.stream_options("de-DE", 320, keep_lang_tags=True), endpoint_ms=0)
    a, b = synth_audio(16000, seed=1).numpy(), synth_audio(12000, seed=2).numpy()
    engine.feed(sid, a)
    engine.finish(sid)
    engine.feed(sid, b)  # sent before the first final: held for the next utterance, not lost
    finals = []
    for _ in range(200):
        finals += [e.transcript for e in engine.step() if e.kind == "final"]
        if len(finals) == 1:
            engine.finish(sid)
        if len(finals) == 2:
            break
    assert [t.tokens for t in finals] == [alone(rec, "de-DE", 320, a), alone(rec, "de-DE", 320, b)]
    assert finals[1].words and finals[1].words[0].start >= 1.0  # second utterance starts after the first


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_runs(rec, precision):
    engine = rec.engine(EngineConfig(max_sessions=4, precision=precision))
    sids, finals, _ = run_engine(engine, rec, SETUPS[:3])
    assert all(finals[s] for s in sids)


def test_long_segments_are_cut_without_changing_tokens(rec, monkeypatch):
    """A segment that runs past max_segment_ms without an endpoint gets a "length" final at a word
    start; the tokens of all finals together are still the stream's tokens."""
    from babelcast.streaming import segment

    monkeypatch.setattr(segment, "MIN_TAIL_TOKENS", 12)  # the tiny model's clips are short
    engine = rec.engine(EngineConfig(max_sessions=8, precision="fp32", max_segment_ms=400))
    sids, finals, events = run_engine(engine, rec, SETUPS, endpoint_ms=10**6)  # endpointing on, never firing
    assert any(e.reason == "length" for e in events if e.kind == "final")
    for sid, (lang, lat, n), seed in zip(sids, SETUPS, range(len(SETUPS))):
        got = [tok for t in finals[sid] for tok in t.tokens]
        assert got == alone(rec, lang, lat, synth_audio(n, seed=seed).numpy())


def test_files_run_beside_live_streams_and_short_ones_overtake(rec):
    """Uploads are fast-forward streams: tokens equal to offline at their latency; files of a latency
    advance together, so a short file is done long before a long one sent earlier; a live stream
    keeps its tokens."""
    engine = rec.engine(EngineConfig(max_sessions=2, max_files=2, precision="fp32", max_chunks_per_step=2))
    long_audio, short_audio = synth_audio(160000, seed=7).numpy(), synth_audio(12000, seed=8).numpy()
    opts = rec.stream_options("de-DE", None, keep_lang_tags=True, mode="offline")
    long_id = engine.open_file(opts, long_audio)
    short_id = engine.open_file(opts, short_audio)
    live = engine.open(rec.stream_options("auto", 80, keep_lang_tags=True), endpoint_ms=0)
    live_audio = synth_audio(16000, seed=9).numpy()
    engine.feed(live, live_audio)
    engine.finish(live, close=True)
    assert engine.n_sessions == 1 and engine.n_files == 2
    finals, order = {}, []
    for _ in range(1000):
        for e in engine.step():
            if e.kind == "final":
                finals[e.session_id] = e.transcript
                order.append(e.session_id)
        if len(finals) == 3:
            break
    assert order.index(short_id) < order.index(long_id)
    offline = rec.transcribe([long_audio, short_audio], language="de-DE", keep_lang_tags=True)
    assert [finals[long_id].tokens, finals[short_id].tokens] == [t.tokens for t in offline]
    assert finals[live].tokens == alone(rec, "auto", 80, live_audio)
    assert "files" in engine.metrics.by_latency and engine.n_files == 0


def test_file_limit(rec):
    engine = rec.engine(EngineConfig(max_sessions=1, max_files=1, precision="fp32"))
    opts = rec.stream_options("auto", None, mode="offline")
    engine.open_file(opts, synth_audio(8000).numpy())
    with pytest.raises(EngineFull, match="files"):
        engine.open_file(opts, synth_audio(8000).numpy())
    engine.open(rec.stream_options("auto", 80))  # files do not take live sessions' places


def test_a_step_between_a_files_admission_and_its_audio_is_no_error(rec, monkeypatch):
    """The server's engine thread may step after open_file admits an upload and before its audio is fed:
    the file has nothing to step yet (it used to fail the step: min() of no chunks)."""
    engine = rec.engine(EngineConfig(max_sessions=1, max_files=1, precision="fp32"))
    feed = engine.feed

    def step_then_feed(sid, samples):
        assert engine.step() == []
        feed(sid, samples)

    monkeypatch.setattr(engine, "feed", step_then_feed)
    sid = engine.open_file(rec.stream_options("auto", None, mode="offline"), synth_audio(8000).numpy())
    assert [e.session_id for e in engine.drain() if e.kind == "final"] == [sid]
