"""/v1/listen against a real server on 127.0.0.1: events, settings, finalize, and bad input beside
good sessions (which must still get exactly their own transcript)."""
import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

import babelcast
from babelcast.audio.io import load_audio

from server_util import (expected_text, frames, from_pcm16, kinds, load_tiny, pcm16, read_until_closed, speech,
                         start_server, stream_session)
from test_server_openai import wav_bytes
from tiny_nemo import write_tiny_nemo

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return load_tiny(tmp_path_factory)


@pytest.fixture(scope="module")
def server(rec):
    s = start_server(rec)
    yield s
    s.__exit__(None, None, None)


def run(coro):
    return asyncio.run(coro)


def test_events_ready_partial_final_closed(rec, server):
    audio = speech(2.0, seed=1)
    events, code = run(stream_session(server.ws_url, audio, "language=en-US&latency_ms=80&endpoint_ms=0"))
    assert code == 1000
    k = kinds(events)
    assert k[0] == "ready" and k[-1] == "closed" and "partial" in k
    ready = events[0]
    assert ready["settings"]["language"] == "en-US" and ready["settings"]["latency_ms"] == 80
    assert ready["settings"]["endpoint_ms"] == 0 and ready["model"] == "tiny"
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1
    final = finals[0]
    assert final["text"] == expected_text(rec, audio, "en-US", 80) != ""
    assert final["segment"] == 0 and final["from_finalize"] and final["language"] == "en-US"
    assert 0 < final["confidence"] <= 1
    assert final["words"] and all(0 <= w["start"] <= w["end"] <= 2.0 + 0.1 for w in final["words"])
    assert " ".join(w["word"] for w in final["words"]).split() == final["text"].split()
    assert events[-1] == {"type": "closed", "reason": "client", "segments": 1, "audio_s": 2.0}
    partials = [e["text"] for e in events if e["type"] == "partial"]
    assert final["text"].startswith(partials[-1])


def test_settings_in_first_message(server):
    async def go():
        async with connect(f"{server.ws_url}/v1/listen") as ws:
            first = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "configure", "language": "de", "latency": 160,
                                      "interim_results": False, "sample_rate": 8000, "encoding": "f32le"}))
            second = json.loads(await ws.recv())
            x = speech(1.0, seed=2)[::2].astype("<f4")  # 8 kHz f32le
            for i in range(0, len(x), 320):
                await ws.send(x[i:i + 320].tobytes())
            await ws.send(json.dumps({"type": "close"}))
            events, _ = await read_until_closed(ws)
            return first, second, events

    first, second, events = run(go())
    assert first["type"] == second["type"] == "ready"
    assert first["settings"]["language"] == "auto"
    s = second["settings"]
    assert (s["language"], s["latency_ms"], s["sample_rate"], s["encoding"], s["interim_results"]) == \
        ("de", 160, 8000, "f32le", False)
    assert second["trained_latency"] is False  # 160 ms is not in the tiny model's trained list
    assert "partial" not in kinds(events)
    assert kinds(events)[-2:] == ["final", "closed"] and events[-2]["text"]
    assert events[-2]["language"] == "de-DE"


def test_finalize_mid_stream_loses_nothing(rec, server):
    """finalize, then more audio at once (while the final is being computed), then close."""
    a, b = speech(1.5, seed=3), speech(1.2, seed=4)

    async def go():
        async with connect(f"{server.ws_url}/v1/listen?latency=80&endpointing=false") as ws:
            for f in frames(a):
                await ws.send(f)
            await ws.send(json.dumps({"type": "finalize"}))
            for f in frames(b):
                await ws.send(f)
            await ws.send(json.dumps({"type": "close"}))
            return await read_until_closed(ws)

    events, code = run(go())
    finals = [e for e in events if e["type"] == "final"]
    assert [f["segment"] for f in finals] == [0, 1]
    assert [f["text"] for f in finals] == [expected_text(rec, a), expected_text(rec, b)]
    assert all(f["from_finalize"] for f in finals)
    assert finals[1]["words"][0]["start"] >= 1.5 - 0.01  # stream time goes on across utterances
    assert events[-1]["audio_s"] == pytest.approx(2.7, abs=0.01) and code == 1000


BAD = [  # (query, what to send, expected error code, words the message must contain, close code)
    ("sample_rate=1000", None, "invalid_settings", ["1000 Hz"], 1008),
    ("encoding=mp3", None, "invalid_settings", ["mp3", "pcm_s16le"], 1008),
    ("language=xx-XX", None, "unsupported_language", ["xx-XX", "en-US"], 1008),
    ("latency=333", None, "invalid_latency", ["333"], 1008),
    ("langauge=en", None, "invalid_settings", ["langauge"], 1008),
    ("decoder=ctc", None, "unsupported_decoder", ["no CTC head", "not a hybrid"], 1008),
    ("decoder=tdt", None, "unsupported_decoder", ["'tdt'", "rnnt"], 1008),
    ("", [b"\x01\x02\x03"], "invalid_audio", ["3 bytes", "pcm_s16le"], 1007),
    ("", ["{not json"], "invalid_message", ["JSON"], 1008),
    ("", ['["finalize"]'], "invalid_message", ["object"], 1008),
    ("", ['{"type": "dance"}'], "unknown_message", ["dance", "finalize"], 1008),
    ("encoding=f32le", "s16-as-f32", "invalid_audio", ["pcm_s16le"], 1007),
    ("", "configure-after-audio", "invalid_message", ["before audio"], 1008),
    ("", [b"\x00" * ((1 << 20) + 2)], "frame_too_large", ["limit"], 1009),
    ("lock_language=maybe", None, "invalid_settings", ["lock_language", "maybe"], 1008),
    ("boost=", None, "invalid_settings", ["empty boost phrase"], 1008),
    ("keyterm=Anna:x", None, "invalid_settings", ["bad weight 'x'", "Anna:x"], 1008),
]


async def bad_session(url: str, query: str, send, audio: np.ndarray):
    async with connect(f"{url}/v1/listen?{query}", max_size=None) as ws:
        if send == "s16-as-f32":
            send = [pcm16(audio[:3200])]
        elif send == "configure-after-audio":
            send = [pcm16(audio[:1600]), json.dumps({"type": "configure", "latency": 320})]
        for item in send or []:
            await ws.send(item)
        return await read_until_closed(ws)


def test_bad_input_beside_good_sessions(rec, server):
    good = [speech(3.0, seed=10), speech(2.5, seed=11)]

    async def go():
        goods = [stream_session(server.ws_url, a, "latency=80&endpoint_ms=0", pause_s=0.01) for a in good]
        bads = [bad_session(server.ws_url, q, send, good[0]) for q, send, *_ in BAD]
        return await asyncio.gather(*goods, *bads)

    results = run(go())
    for (events, code), audio in zip(results[:2], good):
        assert kinds(events)[0] == "ready" and kinds(events)[-1] == "closed" and code == 1000
        assert "error" not in kinds(events)
        assert [e["text"] for e in events if e["type"] == "final"] == [expected_text(rec, audio)]
    for (events, code), (query, send, err, words, close_code) in zip(results[2:], BAD):
        errors = [e for e in events if e["type"] == "error"]
        assert len(errors) == 1, (query, send, events)
        assert errors[0]["code"] == err, (query, send, errors)
        for w in words:
            assert w in errors[0]["message"], (w, errors[0])
        assert kinds(events)[-1] == "closed" and events[-1]["reason"] == "error"
        assert code == close_code, (query, send)
    # audio accepted before a mistake still gets its final (the session closes cleanly)
    late = results[2 + [b[1] for b in BAD].index("configure-after-audio")][0]
    assert kinds(late)[-3:] == ["error", "final", "closed"]
    assert server.hub.engine.n_sessions == 0 and not server.hub.live


def test_ctc_decoder_on_a_hybrid(tmp_path_factory, server):
    """decoder=ctc on a hybrid checkpoint: its CTC head's streaming transcript, beside an RNNT session on
    the same audio; an upload with the decoder field gets the CTC head's offline text; /v1/info lists
    both decoders (a plain RNNT checkpoint's: rnnt alone)."""
    assert httpx.get(f"{server.http_url}/v1/info", timeout=30).json()["decoders"] == ["rnnt"]
    hybrid = babelcast.load_model(write_tiny_nemo(tmp_path_factory.mktemp("h") / "hybrid.nemo", hybrid=True))
    server = start_server(hybrid)
    audio = speech(2.0, seed=6)
    try:
        async def go():
            return await asyncio.gather(stream_session(server.ws_url, audio, "decoder=ctc&latency=80&endpoint_ms=0"),
                                        stream_session(server.ws_url, audio, "latency=80&endpoint_ms=0"))

        (ctc, ctc_code), (rnnt, _) = run(go())
        info = httpx.get(f"{server.http_url}/v1/info", timeout=30).json()
        upload = httpx.post(f"{server.http_url}/v1/audio/transcriptions", data={"decoder": "ctc"},
                            files={"file": ("a.wav", wav_bytes(audio))}, timeout=30).json()
    finally:
        server.__exit__(None, None, None)
    want = hybrid.transcribe([audio], language="auto", latency_ms=80, mode="streaming", decoder="ctc")[0].text
    assert ctc[0]["settings"]["decoder"] == "ctc" and ctc_code == 1000
    assert [e["text"] for e in ctc if e["type"] == "final"] == [want]
    assert [e["text"] for e in rnnt if e["type"] == "final"] == [expected_text(hybrid, audio)] != [want]
    assert info["decoders"] == ["rnnt", "ctc"]
    assert upload["text"] == hybrid.transcribe([audio], decoder="ctc")[0].text


def test_limits_and_admission(rec):
    server = start_server(rec, max_sessions=2, idle_timeout_s=0.5, max_session_s=1.0)
    try:
        async def go():
            a = await connect(f"{server.ws_url}/v1/listen")
            b = await connect(f"{server.ws_url}/v1/listen")
            await a.recv(), await b.recv()
            full = await read_until_closed(await connect(f"{server.ws_url}/v1/listen"))
            await a.close(), await b.close()
            await asyncio.sleep(0.2)
            idle = await read_until_closed(await connect(f"{server.ws_url}/v1/listen"))
            too_long = await stream_session(server.ws_url, speech(1.5, seed=5), close=False)
            return full, idle, too_long

        (full, full_code), (idle, idle_code), (long_, long_code) = run(go())
    finally:
        server.__exit__(None, None, None)
    assert kinds(full) == ["error", "closed"] and full[0]["code"] == "server_full"
    assert "limit of 2" in full[0]["message"] and full_code == 1013
    assert kinds(idle) == ["ready", "error", "final", "closed"] and idle[1]["code"] == "idle_timeout"
    assert idle_code == 1008
    assert long_[0]["type"] == "ready"
    errors = [e for e in long_ if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["session_too_long"] and "1 s" in errors[0]["message"]
    finals = [e for e in long_ if e["type"] == "final"]
    assert finals and finals[-1]["from_finalize"] and long_[-1]["audio_s"] <= 1.0 and long_code == 1008


def test_phase_aligned_sessions_give_offline_text_after_their_leading_silence(rec):
    """With the server's default phase alignment, a session that starts between the group's steps gets
    up to one chunk (80 ms here) of leading silence in whole 10 ms hops: each final is offline's text on
    the audio after some such silence, and every stream's finals and close arrive."""
    server = start_server(rec, phase_align=True)
    engine, pads = server.hub.engine, []
    plain_pad = engine._phase_pad
    engine._phase_pad = lambda *args: pads.append(plain_pad(*args)) or pads[-1]  # record what each got
    try:
        good = [speech(2.0, seed=20), speech(2.0, seed=21)]

        async def late(audio, delay_s):
            await asyncio.sleep(delay_s)
            return await stream_session(server.ws_url, audio, "latency=80&endpoint_ms=0", pause_s=0.02)

        async def both():
            return await asyncio.gather(late(good[0], 0.0), late(good[1], 0.05))

        results = run(both())
    finally:
        server.__exit__(None, None, None)
    finals = []
    for events, code in results:
        assert kinds(events)[0] == "ready" and kinds(events)[-1] == "closed" and code == 1000
        finals += [e["text"] for e in events if e["type"] == "final"]
    assert len(pads) == 2 and pads[0] == 0 and 0 <= pads[1] < 1280 and pads[1] % 160 == 0
    offline = {pad: [expected_text(rec, np.concatenate([np.zeros(pad, np.float32), a])) for a in good]
               for pad in set(pads)}
    assert sorted(finals) in (sorted([offline[pads[0]][0], offline[pads[1]][1]]),
                              sorted([offline[pads[1]][0], offline[pads[0]][1]]))  # whichever fed first


def test_language_changes_mid_stream(server):
    """`configure` with a new language (or lock_language) after audio is accepted at once (a `ready` with
    the new settings) and the final reports it; any other setting after audio is still refused (the BAD
    cases)."""
    audio = speech(2.0, seed=12)

    async def go():
        async with connect(f"{server.ws_url}/v1/listen?language=de-DE&latency=80&endpoint_ms=0") as ws:
            first = json.loads(await ws.recv())
            chunks = frames(audio)
            for i, frame in enumerate(chunks):
                await ws.send(frame)
                if i == len(chunks) // 4:
                    await ws.send(json.dumps({"type": "configure", "lock_language": True}))
                if i == len(chunks) // 2:
                    await ws.send(json.dumps({"type": "configure", "language": "es-US"}))
            await ws.send(json.dumps({"type": "close"}))
            events, code = await read_until_closed(ws)
            return first, events, code

    first, events, code = run(go())
    assert first["settings"]["language"] == "de-DE" and code == 1000 and "error" not in kinds(events)
    ready = [e for e in events if e["type"] == "ready"]
    assert [(r["settings"]["language"], r["settings"]["lock_language"]) for r in ready] == \
        [("de-DE", True), ("es-US", True)]
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1 and finals[0]["language"] == "es-US"


@pytest.fixture(scope="module")
def demo_server():
    s = start_server(babelcast.load_model(babelcast.DEFAULT_MODEL))
    yield s
    s.__exit__(None, None, None)


def test_language_events_and_lock_language(demo_server):
    """The demo model in auto mode, German, finalize, Italian: a `language` event before each final that
    detects a new language (de-DE, then it-IT); with lock_language=true one event, de-DE locked, and the
    Italian final is a de-DE stream's."""
    de, it = (from_pcm16(pcm16(load_audio(SAMPLES / f"{lang}.wav"))) for lang in ("de-DE", "it-IT"))

    async def session(query):
        async with connect(f"{demo_server.ws_url}/v1/listen?latency=1120&endpoint_ms=0&{query}") as ws:
            for audio, end in ((de, "finalize"), (it, "close")):
                for frame in frames(audio, 16000):
                    await ws.send(frame)
                await ws.send(json.dumps({"type": end}))
            return await read_until_closed(ws)

    async def both():
        return await asyncio.gather(session("language=auto"), session("language=auto&lock_language=true"))

    (free, free_code), (locked, locked_code) = run(both())
    assert free_code == locked_code == 1000 and "error" not in kinds(free) + kinds(locked)

    def changes(events):
        return [(e["type"], e["segment"], e["language"], e.get("locked")) for e in events
                if e["type"] in ("language", "final")]

    assert changes(free) == [("language", 0, "de-DE", False), ("final", 0, "de-DE", None),
                             ("language", 1, "it-IT", False), ("final", 1, "it-IT", None)]
    assert changes(locked) == [("language", 0, "de-DE", True), ("final", 0, "de-DE", None),
                               ("final", 1, "de-DE", None)]
    german = demo_server.hub.rec.transcribe([it], language="de-DE", latency_ms=1120, mode="streaming")[0]
    final = [e for e in locked if e["type"] == "final"][1]
    assert (final["text"], final["confidence"]) == (german.text, round(german.confidence, 4))
    assert final["confidence"] != [e for e in free if e["type"] == "final"][1]["confidence"]


BOOST = ["ne su:3", "lo:2"]  # on the tiny random model these change the text


def test_boost_in_the_query_string_and_in_configure(rec, server):
    """`boost` (and its alias `keyterm`) repeated in the query string, or a list in `configure`: the final
    is the Python API's with the same phrases."""
    audio = speech(2.0, seed=1)
    want = expected_text(rec, audio, "en-US", 80, boost=BOOST)
    assert want != expected_text(rec, audio, "en-US", 80)
    query = "language=en-US&latency_ms=80&endpoint_ms=0&boost=ne+su:3&keyterm=lo:2"
    events, _ = run(stream_session(server.ws_url, audio, query))
    assert events[0]["settings"]["boost"] == BOOST
    assert [e["text"] for e in events if e["type"] == "final"] == [want]

    async def configured():
        async with connect(f"{server.ws_url}/v1/listen") as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "configure", "language": "en-US", "latency_ms": 80, "endpoint_ms": 0,
                                      "boost": BOOST}))
            for frame in frames(audio):
                await ws.send(frame)
            await ws.send(json.dumps({"type": "close"}))
            return (await read_until_closed(ws))[0]

    events = run(configured())
    assert [e["text"] for e in events if e["type"] == "final"] == [want]


def test_beam_setting_and_the_servers_beam_size(rec, server):
    """`beam=false` decodes a boosted stream greedily, its phrases without a weight at greedy's default; a
    server whose engine has no beam search (serve --beam-size 1) does the same for every session."""
    from types import SimpleNamespace

    from babelcast.server.hub import EngineHub

    audio, boost = speech(2.0, seed=1), ["ne su", "lo"]
    want = expected_text(rec, audio, "en-US", 80, boost=boost, beam_size=1)
    assert want != expected_text(rec, audio, "en-US", 80, boost=boost)
    events, _ = run(stream_session(server.ws_url, audio, "language=en-US&latency_ms=80&endpoint_ms=0&boost=ne+su"
                                                         "&boost=lo&beam=false"))
    assert [e["text"] for e in events if e["type"] == "final"] == [want]
    no_beam, beam = (SimpleNamespace(cfg=SimpleNamespace(beam_size=n)) for n in (1, 4))
    assert EngineHub.session_beam(no_beam, None) is False and EngineHub.session_beam(no_beam, True) is False
    assert EngineHub.session_beam(beam, None) is None and EngineHub.session_beam(beam, False) is False
