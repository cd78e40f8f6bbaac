"""One stream lifecycle: Session == Engine, incremental partials == full rendering, sample arithmetic ==
the feature extractor, the scheduler's wait/step decisions, typed option errors."""
import random

import numpy as np
import pytest
import torch

import babelcast
from babelcast import chunking
from babelcast.checkpoint.tokenizer import Tokenizer
from babelcast.decoding.text import TextOptions, to_transcript
from babelcast.errors import UnsupportedLanguage, UnsupportedLatency
from babelcast.streaming.engine import EngineConfig
from babelcast.streaming.segment import MIN_TAIL_TOKENS, SegmentTokens
from babelcast.streaming.session import LanguageChange

from tiny import synth_audio, tiny_model
from tiny_nemo import TAGS, tiny_spm, write_tiny_nemo

LOCALES = ["en-US", "de-DE", "es-US", "no-NO", "mt-MT"]


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return babelcast.load_model(write_tiny_nemo(tmp_path_factory.mktemp("m") / "tiny.nemo"))


@pytest.mark.parametrize("latency,piece", [(80, 1000), (320, 7000), (1120, 2345)])
def test_session_equals_engine(rec, latency, piece):
    """The Python Session and a shared engine give the same tokens, frames and text for the same audio."""
    audios = [synth_audio(n, seed=i).numpy() for i, n in enumerate([23000, 41000, 9000])]
    engine = rec.engine(EngineConfig(max_sessions=4, precision="fp32", endpoint_ms=0))
    sids = [engine.open(rec.stream_options("de-DE", latency, keep_lang_tags=True)) for _ in audios]
    for start in range(0, max(map(len, audios)), piece):
        for sid, a in zip(sids, audios):
            if start < len(a):
                engine.feed(sid, a[start:start + piece])
        engine.step(drain=True)
    for sid in sids:
        engine.finish(sid, close=True)
    finals = {e.session_id: e.transcript for e in engine.drain() if e.kind == "final"}
    for sid, a in zip(sids, audios):
        session = rec.stream("de-DE", latency, keep_lang_tags=True)
        for start in range(0, len(a), piece):
            session.accept_audio(a[start:start + piece])
        alone = session.flush()
        assert (alone.tokens, alone.token_frames, alone.text) == (finals[sid].tokens, finals[sid].token_frames,
                                                                   finals[sid].text)
        assert alone.tokens  # the tiny model emits tokens: the comparison is not between empty lists


def test_audio_during_flush_is_held_and_can_be_dropped(rec):
    engine = rec.engine(EngineConfig(max_sessions=1, precision="fp32", endpoint_ms=0))
    sid = engine.open(rec.stream_options("en-US", 320))
    a, b = synth_audio(16000, seed=3).numpy(), synth_audio(8000, seed=4).numpy()
    engine.feed(sid, a)
    engine.finish(sid)
    engine.feed(sid, b)
    assert engine.held_samples(sid) == len(b)
    assert engine.drop_held(sid)
    assert engine.held_samples(sid) == 0
    finals = [e for e in engine.drain() if e.kind == "final"]
    assert len(finals) == 1 and finals[0].reason == "flush"
    assert not engine.drop_held(sid)  # no flush in progress any more
    assert engine.partial(sid).tokens == []  # b was dropped: the next utterance is empty


def _random_ids(tok: Tokenizer, n: int, rng: random.Random) -> list[int]:
    """Pieces, single-piece tags and multi-piece tag sequences (some cut short), in random order."""
    seqs = list(tok.tag_sequences)
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.05:
            out += list(rng.choice(seqs))[: rng.randint(1, 5)]
        elif r < 0.09:
            out.append(rng.choice(list(tok.tag_of_id)))
        else:
            out.append(rng.randrange(4, len(tok)))
    return out


@pytest.mark.parametrize("keep_tags,language", [(False, None), (True, None), (False, "de-DE")])
def test_incremental_partials_equal_full_rendering(keep_tags, language):
    tok = Tokenizer(tiny_spm(60), LOCALES)
    rng = random.Random(7)
    opts = TextOptions(0.08, keep_tags, language, offset_s=1.5)
    seg = SegmentTokens(tok, opts)
    ids = _random_ids(tok, 700, rng)
    frames = sorted(rng.randrange(0, 900) for _ in ids)
    probs = [rng.random() for _ in ids]
    pos, cuts = 0, 0
    while pos < len(ids):
        n = rng.randint(0, 6)
        seg.add(ids[pos:pos + n], frames[pos:pos + n], probs[pos:pos + n])
        pos += n
        got = seg.partial(latency_ms=80)
        m = pos - tok.pending_tag_prefix(ids[:pos])
        want = to_transcript(tok, ids[:m], frames[:m], probs[:m], opts, latency_ms=80)
        assert (got.text, got.tokens, got.language, got.words, got.token_frames) == \
               (want.text, want.tokens, want.language, want.words, want.token_frames)
        assert got.confidence == pytest.approx(want.confidence, abs=1e-4)
        cuts += seg._cut > 0
    assert cuts > 0 and len(seg.tail()) < 200  # the rendered head grew: partials did not re-render everything


@pytest.mark.parametrize("keep_tags", [False, True])
def test_partials_without_words_are_empty(keep_tags):
    """Silence can decode to quotes alone: partials stay empty, as the final does (to_transcript's has_words
    decides both), through enough tokens that a cut is looked for; the first word shows them all."""
    tok = Tokenizer(tiny_spm(60, tags=(*TAGS, '"', '▁"')), LOCALES)
    opts = TextOptions(0.08, keep_tags)
    seg = SegmentTokens(tok, opts)
    quotes = [tok.pieces.index('▁"'), tok.pieces.index('"')] * (MIN_TAIL_TOKENS + tok.max_tag_len)
    for i, q in enumerate(quotes):
        seg.add([q], [i], [0.9])
        partial = seg.partial()
        assert (partial.text, partial.tokens, partial.words) == ("", [], [])
    assert seg.final().text == "" and seg._cut == 0
    word = tok.encode("kalo mine.")
    seg.add(word, list(range(len(quotes), len(quotes) + len(word))), [0.9] * len(word))
    text = seg.partial().text
    assert text.startswith('"') and text.endswith("kalo mine.") and text == seg.final().text
    for i in range(40):  # more words: a cut is made and partials stay the full rendering
        seg.add(word, [len(quotes) + len(word) * (i + 1) + j for j in range(len(word))], [0.9] * len(word))
        assert seg.partial().text == seg.final().text
    assert seg._cut > 0


@pytest.mark.parametrize("piece", [160, 397, 1600, 10**6])
def test_sample_arithmetic_matches_features(piece):
    """streamed_mel (what the engine plans with) is what the feature extractor emits for those samples."""
    feats = tiny_model().features
    cfg = feats.cfg
    audio = synth_audio(16000 + 77)
    state, total = feats.init_state(), 0
    for start in range(0, len(audio), piece):
        out, state = feats.step(audio[start:start + piece], state)
        total += out.shape[1]
        n = min(start + piece, len(audio))
        assert total == chunking.streamed_mel(n, cfg.hop_samples, cfg.n_fft)
        need = chunking.samples_for_mel(total, cfg.hop_samples, cfg.n_fft)
        assert chunking.streamed_mel(need, cfg.hop_samples, cfg.n_fft) >= total
        assert chunking.streamed_mel(need - 1, cfg.hop_samples, cfg.n_fft) < total or total == 0


def test_group_waits_for_a_partner_then_steps_together(rec):
    """A ready chunk waits when a partner's chunk completes before its deadline allows, and the two
    then share one step; with nothing to wait for it steps at once (times given, not measured)."""
    engine = rec.engine(EngineConfig(max_sessions=2, precision="fp32", endpoint_ms=0, phase_align=False))
    opts = rec.stream_options("auto", 320)
    a, b = (engine._streams[engine.open(opts)] for _ in range(2))
    chunk = chunking.samples_for_mel(chunking.mel_for_chunks(1, opts.right, rec.cfg.encoder.subsampling_factor),
                                     160, 512)
    x = synth_audio(chunk, seed=1).numpy()
    a.feed(x, now=10.0)  # a's first chunk: complete at t=10 s, deadline 10 + 0.32 + 0.3
    b.feed(x[:chunk - 1280], now=9.96)
    b.feed(x[chunk - 1280:chunk - 640], now=10.0)  # 40 ms pieces; b needs one more: expected at 10.04 s
    batches, _ = engine._plan(10.0, drain=False)
    assert batches == [] and engine._next_plan <= 10.04 + 1e-9
    b.feed(x[chunk - 640:], now=10.04)
    batches, _ = engine._plan(10.05, drain=False)
    assert [len(bt.streams) for bt in batches] == [2]
    engine._step_batch(batches[0])
    second = chunking.samples_for_mel(chunking.mel_for_chunks(2, opts.right, 8), 160, 512) - chunk
    a.feed(synth_audio(second, seed=2).numpy(), now=11.0)  # a alone is ready again and b is not expected before its deadline: no waiting
    b.piece_samples = 0
    batches, _ = engine._plan(11.0, drain=False)
    assert [bt.streams for bt in batches] == [[a]]


def test_option_errors_are_typed(rec):
    with pytest.raises(UnsupportedLanguage, match="xx-XX"):
        rec.stream_options("xx-XX", 80)
    with pytest.raises(UnsupportedLatency, match="100 ms"):
        rec.stream_options("auto", 100)
    with pytest.raises(UnsupportedLatency, match="not supported"):
        rec.stream_options("auto", 240)
    assert issubclass(UnsupportedLanguage, ValueError) and issubclass(UnsupportedLatency, ValueError)


def test_mel_buffer_grows_without_losing_frames():
    from babelcast.streaming.stream import MelBuffer

    buf = MelBuffer(3, torch.device("cpu"), capacity_frames=4)
    buf.reset(2)
    frames = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    buf.append(frames[:5])
    out = torch.empty(4, 3)
    buf.take_into(out)
    buf.append(frames[5:])
    rest = torch.empty(12, 3)
    buf.take_into(rest)
    assert torch.equal(out, torch.cat([torch.zeros(2, 3), frames[:2]]))
    assert torch.equal(rest[:8], frames[2:]) and not rest[8:].any() and len(buf) == 0
    assert np.isfinite(rest.numpy()).all()


def test_step_costs_and_chunks_per_step(rec):
    """Costs are learned per (latency, k, batch); k shrinks until a step is estimated to fit its chunk."""
    from babelcast.streaming.engine import StepCosts

    costs = StepCosts()
    assert costs.estimate(3, 1, 2, prior_s=0.32) == pytest.approx(0.08)  # nothing measured: a prior
    costs.record(3, 1, 1, 0.1)
    costs.record(3, 1, 4, 0.2)
    assert costs.estimate(3, 1, 2, 0.32) == pytest.approx(0.1 + 0.1 / 3)  # between measured batches
    assert costs.estimate(3, 1, 8, 0.32) == pytest.approx(0.4)  # beyond them: linear, the safe side
    assert costs.estimate(3, 2, 1, 0.32) == pytest.approx(0.2)  # k chunks: k times one chunk's step
    costs.record(3, 1, 1, 0.2)
    assert costs.estimate(3, 1, 1, 0.32) == pytest.approx(0.8 * 0.1 + 0.2 * 0.2)  # an EMA
    engine = rec.engine(EngineConfig(max_sessions=1, precision="fp32"))
    engine.costs.record(3, 1, 1, 0.1)
    engine.costs.record(3, 4, 1, 1.0)  # 4 chunks of 320 ms in one step would take longer than a chunk
    assert engine._chunks_per_step(3, 1, ready=4) == 3
    assert engine._chunks_per_step(3, 1, ready=2) == 2
    assert engine._chunks_per_step(3, 1, ready=4, drain=True) == 4  # files and Sessions: no deadline


def test_a_stream_behind_catches_up_at_once(rec):
    """A stream with an older chunk waiting, between its group's steps (the partner's next chunk is
    240 ms away), runs now, alone, with all its chunks (k = 2): that step ends long before the group's
    next one must start (partner's chunk + 620 ms − its step)."""
    engine = rec.engine(EngineConfig(max_sessions=2, precision="fp32", endpoint_ms=0, phase_align=False))
    opts = rec.stream_options("auto", 320)
    a, b = (engine._streams[engine.open(opts)] for _ in range(2))
    two = chunking.samples_for_mel(chunking.mel_for_chunks(2, opts.right, 8), 160, 512)
    one = chunking.samples_for_mel(chunking.mel_for_chunks(1, opts.right, 8), 160, 512)
    a.feed(synth_audio(two, seed=1).numpy(), now=10.0)
    b.feed(synth_audio(640, seed=2).numpy(), now=10.0)  # 40 ms pieces: b's chunk is expected at 10.24 s
    assert one == 4096 and b.next_chunk_eta() == pytest.approx(10.24)
    batches, _ = engine._plan(10.0, drain=False)
    assert [(bt.streams, bt.k) for bt in batches] == [([a], 2)]

def test_a_stream_behind_rides_along_when_there_is_no_time(rec):
    """When a catch-up step would push the group's next step past its deadline, the stream behind
    waits for that step and rides along a chunk at a time (k = 1), instead of splitting the group."""
    engine = rec.engine(EngineConfig(max_sessions=2, precision="fp32", endpoint_ms=0, phase_align=False))
    opts = rec.stream_options("auto", 320)
    a, b = (engine._streams[engine.open(opts)] for _ in range(2))
    engine.costs.record(opts.right, 1, 1, 0.3)  # a one-chunk step of one stream: 300 ms
    engine.costs.record(opts.right, 1, 2, 0.45)  # of both: 450 ms
    two = chunking.samples_for_mel(chunking.mel_for_chunks(2, opts.right, 8), 160, 512)
    one = chunking.samples_for_mel(chunking.mel_for_chunks(1, opts.right, 8), 160, 512)
    a.feed(synth_audio(two, seed=1).numpy(), now=10.0)
    xb = synth_audio(one, seed=2).numpy()
    b.feed(xb[:one - 1280], now=9.92)
    b.feed(xb[one - 1280:one - 640], now=9.96)  # 40 ms pieces: b's chunk is expected at 10.0 s
    batches, _ = engine._plan(9.99, drain=False)
    assert batches == [] and engine._next_plan <= 10.0 + 1e-9
    b.feed(xb[one - 640:], now=10.0)
    batches, _ = engine._plan(10.0, drain=False)
    assert [(bt.streams, bt.k) for bt in batches] == [([a, b], 1)]


def test_phase_align_puts_a_late_stream_on_the_group_clock(rec):
    """A stream that starts between two of its group's steps gets leading silence so its chunks complete
    with the others' (one step serves both); its tokens are offline's on that silence + its audio, its
    timestamps are the audio's own."""
    engine = rec.engine(EngineConfig(max_sessions=2, precision="fp32", endpoint_ms=0))
    opts = rec.stream_options("auto", 320)
    sa, sb = engine.open(opts), engine.open(opts)
    a, b = engine._streams[sa], engine._streams[sb]
    piece, start_b = 640, 10.1  # 40 ms pieces; b's first piece arrives 100 ms after a's
    x = synth_audio(16000 * 3, seed=4).numpy()
    ticks_a, ticks_b = [], []
    for i in range(0, len(x), piece):
        for s, t0, ticks in ((a, 10.0, ticks_a), (b, start_b, ticks_b)):
            now = round(t0 + (i + piece) / 16000, 6)
            if s.feed(x[i:i + piece], now):
                ticks.append(now)
    assert a.pad_samples == 0 and 0 < b.pad_samples < 16000 * 0.32 and b.pad_samples % 160 == 0
    assert len(ticks_b) >= len(ticks_a) - 1
    assert all(abs(tb - ta) < 0.041 for ta, tb in zip(ticks_a[-len(ticks_b):], ticks_b))  # within a piece
    engine.finish(sb, close=True)
    engine.finish(sa, close=True)
    finals = {e.session_id: e.transcript for e in engine.drain() if e.kind == "final"}
    padded = np.concatenate([np.zeros(b.pad_samples, np.float32), x])
    offline = rec.transcribe([padded], language="auto", latency_ms=320, mode="streaming")[0]
    assert finals[sb].tokens == offline.tokens
    pad_s = b.pad_samples / 16000
    assert [w.start for w in finals[sb].words] == pytest.approx([w.start - pad_s for w in offline.words], abs=1e-3)


def test_a_slow_group_splits_onto_sub_clocks_that_step_apart(rec):
    """While the latency's measured p95 time-to-final is over budget (chunk + 300 ms), new utterances
    spread over one more step clock, if the sub-groups' steps still fit in a chunk; well under budget, one
    fewer. Streams on a second clock half a chunk later step at their own tick, without waiting for the
    first clock's (costs and finals given, not measured)."""
    engine = rec.engine(EngineConfig(max_sessions=4, precision="fp32", endpoint_ms=0))
    opts = rec.stream_options("auto", 320)
    for batch, seconds in ((1, 0.1), (3, 0.12), (5, 0.3)):
        engine.costs.record(opts.right, 1, batch, seconds)
    assert engine._sub_clocks(opts.right, 4) == 1  # nothing measured yet: one clock
    engine._finals[opts.right].extend([0.7] * 8)  # p95 final 700 ms, over 620
    assert engine._sub_clocks(opts.right, 8) == 1  # two steps of 5 rows would not fit: 2 × 1.25 × 0.3 > 0.32
    assert engine._sub_clocks(opts.right, 4) == 2  # of 3 rows they do: 2 × 1.25 × 0.12 ≤ 0.32
    assert not engine._finals[opts.right]  # finals from before a change do not count after it
    engine._finals[opts.right].extend([0.2] * 8)  # under half the budget: one clock fewer
    assert engine._sub_clocks(opts.right, 4) == 1
    engine._clocks[opts.right] = 2
    streams = [engine._streams[engine.open(opts)] for _ in range(4)]
    piece, x = 640, synth_audio(16000 * 2, seed=6).numpy()  # 40 ms pieces, each stream 10 ms after the last
    ticks = {s.id: [] for s in streams}
    for i in range(0, len(x), piece):
        for j, s in enumerate(streams):
            now = round(10 + j * 0.01 + (i + piece) / 16000, 6)
            if s.feed(x[i:i + piece], now):
                ticks[s.id].append(now)
    first = [s for s in streams if engine._phase[s.id] == 0]
    second = [s for s in streams if engine._phase[s.id] == 0.5]
    assert len(first) == len(second) == 2  # four streams: the first sets the clock, the others balance
    tick, tick_2 = ticks[first[0].id][2], ticks[second[0].id][2]
    assert abs((tick_2 - tick) % 0.32 - 0.16) < 0.041  # half a chunk apart, within a piece
    assert all(abs(ticks[s.id][2] - tick) < 0.041 for s in first)

    # the scene again, up to 50 ms after a tick of the first clock: its chunks are ready, the second
    # clock's are 70-150 ms away, and a step of the first clock's streams is estimated at 138 ms
    engine = rec.engine(EngineConfig(max_sessions=4, precision="fp32", endpoint_ms=0))
    for batch, seconds in ((1, 0.1), (3, 0.12), (5, 0.3)):
        engine.costs.record(opts.right, 1, batch, seconds)
    engine._clocks[opts.right] = 2
    streams = [engine._streams[engine.open(opts)] for _ in range(4)]
    for i in range(0, len(x), piece):
        for j, s in enumerate(streams):
            now = round(10 + j * 0.01 + (i + piece) / 16000, 6)
            if now <= tick + 0.05:
                s.feed(x[i:i + piece], now)
    for s in streams:  # chunks complete before the first clock's last tick are stepped
        while s.chunk_times and s.chunk_times[0] < tick - 0.1:
            s.chunk_times.popleft()
            s.chunks_done += 1
    first = {s for s in streams if engine._phase[s.id] == 0}
    batches, _ = engine._plan(tick + 0.05, drain=False)
    assert [set(bt.streams) for bt in batches] == [first]  # without waiting for the second clock's chunks


@pytest.fixture(scope="module")
def tagging_rec(tmp_path_factory):
    """The tiny model with its <es-US> tag made likely (it emits none otherwise): its finals in auto mode
    detect es-US, so a lock has something to lock to."""
    tagging = babelcast.load_model(write_tiny_nemo(tmp_path_factory.mktemp("m") / "tiny.nemo"))
    with torch.no_grad():
        tagging.model.joint.out.bias[tagging.tokenizer.pieces.index("<es-US>")] += 0.5
    return tagging


@pytest.mark.parametrize("control, beam", [("switch", False), ("lock", False), ("switch", True)],
                         ids=["switch", "lock", "switch-beam"])  # (the tiny model's beam prefers no tag at all)
def test_language_control_mid_stream_is_the_same_in_any_batch(tagging_rec, control, beam):
    """A stream whose language changes mid-stream gives the same finals in a shared engine, beside a
    stream that does not change, as in a Session alone, and the change does something: a switch (de-DE
    to es-US mid-utterance, from the next chunk, no cache reset), or a lock (auto + lock_language: the
    first final detects es-US, a `language` event says it is locked, and the next utterance's tokens are
    those of a stream opened in es-US). Greedy, and a switch with a beam search for the changing stream."""
    rec, lock = tagging_rec, control == "lock"
    width = 4 if beam else 1
    x = synth_audio(16000 * 3, seed=5).numpy()
    # a switch after the first chunk at 320 ms (this tiny model emits within the first half second); a lock
    # at the final of the first second (the first that carries a tag)
    half = 16000 if lock else 4096
    language = "auto" if lock else "de-DE"
    engine = rec.engine(EngineConfig(max_sessions=2, precision="fp32", endpoint_ms=0, phase_align=False))
    a = engine.open(rec.stream_options(language, 320, lock_language=lock, beam=beam))
    b = engine.open(rec.stream_options(language, 320))
    for sid in (a, b):
        engine.feed(sid, x[:half])
        if lock:
            engine.finish(sid)
    events = engine.drain()
    if not lock:
        engine.set_language(a, rec.stream_options("es-US", 320))
    for sid in (a, b):
        engine.feed(sid, x[half:])
        engine.finish(sid, close=True)
    events += engine.drain()
    finals = {sid: [e.transcript for e in events if e.kind == "final" and e.session_id == sid] for sid in (a, b)}
    alone = rec.stream(language, 320, lock_language=lock, beam_size=width)
    alone.accept_audio(x[:half])
    first = [alone.finalize()] if lock else alone.set_language("es-US") or []
    alone.accept_audio(x[half:])
    assert [t.tokens for t in finals[a]] == [t.tokens for t in first + [alone.flush()]]
    assert finals[a][-1].language == "es-US" and finals[a][-1].tokens != finals[b][-1].tokens
    if lock:
        changes = [(e.session_id, e.segment, e.language, e.locked) for e in events if e.kind == "language"]
        assert sorted(changes) == [(a, 0, "es-US", True), (b, 0, "es-US", False)]
        assert alone.language == LanguageChange("es-US", True, 0)
        opened = rec.transcribe([x[half:]], language="es-US", latency_ms=320, mode="streaming", beam_size=width)[0]
        assert finals[a][1].tokens == opened.tokens != finals[b][1].tokens


def test_a_switch_starts_detection_over(tagging_rec):
    """A detected language is announced once (a final without a tag detects nothing and changes nothing);
    after a switch (here: the lock turned on mid-stream, still auto) the next detection is announced
    again, and locks."""
    rec, x = tagging_rec, synth_audio(16000 * 3, seed=5).numpy()
    engine = rec.engine(EngineConfig(max_sessions=1, precision="fp32", endpoint_ms=0, phase_align=False))
    sid = engine.open(rec.stream_options("auto", 320))
    events = []
    for i, piece in enumerate((x[:16000], x[16000:32000], x[32000:])):
        if i == 2:
            engine.set_language(sid, rec.stream_options("auto", 320, lock_language=True))
        engine.feed(sid, piece)
        engine.finish(sid)
        events += engine.drain()
    changes = [(e.segment, e.language, e.locked) for e in events if e.kind == "language"]
    finals = [e.transcript.language for e in events if e.kind == "final"]
    assert changes == [(0, "es-US", False), (2, "es-US", True)] and finals == ["es-US", None, "es-US"]


def test_a_language_switch_before_audio_is_opening_in_it(rec):
    """Switching before any audio is opening in that language; an unknown language is refused."""
    x = synth_audio(16000 * 3, seed=5).numpy()
    early = rec.stream("de-DE", 320)
    early.set_language("es-US")
    early.accept_audio(x)
    plain = rec.stream("es-US", 320)
    plain.accept_audio(x)
    assert early.flush().tokens == plain.flush().tokens
    with pytest.raises(UnsupportedLanguage):
        plain.set_language("xx-XX")
