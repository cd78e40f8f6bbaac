"""The OpenAI-compatible APIs, driven by the official `openai` client against a real server."""
import base64
import io
from pathlib import Path

import httpx
import openai
import pytest
import soundfile as sf

import babelcast
from babelcast.audio.io import load_audio

from server_util import from_pcm16, load_tiny, pcm16, realtime_events, speech, start_server, update

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return load_tiny(tmp_path_factory)


@pytest.fixture(scope="module")
def server(rec):
    s = start_server(rec, api_keys=("sk-test-1", "sk-test-2"), max_upload_bytes=400_000)
    yield s
    s.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="sk-test-2", max_retries=0, timeout=30)


def wav_bytes(audio, rate=16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def upload(rec):
    audio = speech(3.0, seed=21)
    return wav_bytes(audio), rec.transcribe([audio], language="en-US")[0]


def test_transcriptions_every_format(client, upload):
    data, want = upload
    r = client.audio.transcriptions.create(model="tiny", file=("talk.wav", data), language="en-US")
    assert r.text == want.text != ""
    assert r.usage.type == "duration" and r.usage.seconds == 3
    text = client.audio.transcriptions.create(model="tiny", file=("talk.wav", data), language="en-US",
                                              response_format="text")
    assert text.strip() == want.text
    srt = client.audio.transcriptions.create(model="tiny", file=("talk.wav", data), language="en-US",
                                             response_format="srt")
    assert srt.startswith("1\n00:00:") and "-->" in srt
    vtt = client.audio.transcriptions.create(model="tiny", file=("talk.wav", data), language="en-US",
                                             response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:")
    v = client.audio.transcriptions.create(model="tiny", file=("talk.wav", data), language="en-US",
                                           response_format="verbose_json",
                                           timestamp_granularities=["word", "segment"])
    assert v.text == want.text and v.duration == 3.0 and v.language == "en-US"
    assert [w.word for w in v.words] == [w.word for w in want.words]
    assert all(0 <= w.start <= w.end <= 3.0 for w in v.words)
    assert v.segments and " ".join(s.text for s in v.segments).split() == want.text.split()


def test_transcription_errors(client, server, upload):
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="tiny", file=("notes.txt", b"these are not audio samples"))
    assert e.value.status_code == 400 and e.value.code == "invalid_audio"
    assert "notes.txt" in e.value.message and "not a readable audio file" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="tiny", file=("talk.wav", upload[0]), language="klingon")
    assert e.value.code == "unsupported_language" and "klingon" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="tiny", file=("talk.wav", upload[0]), response_format="xml")
    assert e.value.code == "invalid_request" and "response_format" in e.value.message
    with pytest.raises(openai.APIStatusError) as e:  # 400 kB limit: 20 s of 16-bit audio is 640 kB
        client.audio.transcriptions.create(model="tiny", file=("long.wav", wav_bytes(speech(20.0))))
    assert e.value.status_code == 413 and e.value.code == "request_too_large"
    headers = {"Authorization": "Bearer sk-test-1"}
    r = httpx.post(f"{server.http_url}/v1/audio/transcriptions", json={"model": "tiny"}, headers=headers)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    r = httpx.post(f"{server.http_url}/v1/audio/transcriptions", data={"model": "tiny"},
                   files={"other": ("a.wav", upload[0])}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(f"{server.http_url}/v1/audio/transcriptions", data={"model": "tiny", "decoder": "ctc"},
                   files={"file": ("a.wav", upload[0])}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_decoder"
    assert "no CTC head" in r.json()["error"]["message"] and r.json()["error"]["param"] == "decoder"
    chunked = httpx.post(f"{server.http_url}/v1/audio/transcriptions",  # no Content-Length: counted as read
                         headers={**headers, "content-type": "multipart/form-data; boundary=xyz"},
                         content=iter([b'--xyz\r\nContent-Disposition: form-data; name="file"; '
                                       b'filename="a.wav"\r\n\r\n'] + [b"x" * 100_000] * 5))
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"


def test_api_keys(server, upload):
    bad = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.audio.transcriptions.create(model="tiny", file=("talk.wav", upload[0]))
    assert e.value.status_code == 401 and "invalid API key" in e.value.message
    assert httpx.get(f"{server.http_url}/v1/models").status_code == 401
    assert httpx.get(f"{server.http_url}/metrics").status_code == 401
    assert httpx.get(f"{server.http_url}/health").status_code == 200  # probes need no key
    good = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="sk-test-1", max_retries=0)
    assert [m.id for m in good.models.list()] == ["tiny"]


def test_realtime_transcription(client, rec):
    a, b = speech(2.0, seed=31), speech(1.5, seed=32)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"
        updated = update(conn, model="tiny", language="de", latency_ms=80)
        assert updated.type == "session.updated"
        assert updated.session.audio.input.transcription.language == "de"
        conn.input_audio_buffer.commit()  # nothing appended yet: an error, and the session goes on
        err = conn.recv()
        assert err.type == "error" and err.error.code == "input_audio_buffer_commit_empty"
        conn.send({"type": "response.create"})
        err = conn.recv()
        assert err.type == "error" and "response.create" in err.error.message
        items = []
        for audio in (a, b):
            data = pcm16(audio)
            for i in range(0, len(data), 3200):
                conn.input_audio_buffer.append(audio=base64.b64encode(data[i:i + 3200]).decode())
            conn.input_audio_buffer.commit()  # the second item's audio follows at once
        events = realtime_events(conn, "conversation.item.input_audio_transcription.completed")
        events += realtime_events(conn, "conversation.item.input_audio_transcription.completed")
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert [c.item_id for c in committed] == [c.item_id for c in completed]
    assert committed[1].previous_item_id == committed[0].item_id
    for audio, done in zip((a, b), completed):
        want = rec.transcribe([audio], language="de", latency_ms=80, mode="streaming")[0].text
        assert done.transcript == want != ""
        deltas = "".join(e.delta for e in events if e.type.endswith(".delta") and e.item_id == done.item_id)
        assert deltas == done.transcript
        items.append(done)
    assert completed[0].usage.seconds == 2


def test_realtime_24khz_and_limits(client):
    pcm = pcm16(speech(2.0, seed=33))
    import numpy as np
    import soxr

    x24 = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768, 16000, 24000)
    data = pcm16(x24)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        assert conn.recv().type == "session.updated"
        conn.send({"type": "input_audio_buffer.append", "audio": "%%% not base64 %%%"})
        err = conn.recv()
        assert err.type == "error" and "base64" in err.error.message
        conn.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x01\x02").decode()})
        err = conn.recv()
        assert err.type == "error" and "3 bytes" in err.error.message
        for i in range(0, len(data), 4800):
            conn.input_audio_buffer.append(audio=base64.b64encode(data[i:i + 4800]).decode())
        conn.input_audio_buffer.commit()
        done = realtime_events(conn, "conversation.item.input_audio_transcription.completed")[-1]
        assert done.transcript and done.usage.seconds == 2
        conn.session.update(session={"type": "realtime"})
        err = conn.recv()
        assert err.type == "error" and "transcription" in err.error.message


def test_realtime_requires_key(server):
    bad = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="nope", max_retries=0)
    with bad.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        ev = conn.recv()
        assert ev.type == "error" and ev.error.code == "unauthorized"


def test_realtime_language_changes_while_audio_is_buffered(client):
    """A session update that changes only the language applies mid-utterance (from the next chunk);
    one that changes anything else while audio is buffered is refused, and the session goes on."""
    data = pcm16(speech(2.0, seed=34))
    half = len(data) // 2 // 3200 * 3200
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"

        no_ctc = update(conn, model="tiny", language="de", latency_ms=80, decoder="ctc")  # a plain RNNT checkpoint
        assert no_ctc.type == "error" and no_ctc.error.code == "unsupported_decoder"
        assert "no CTC head" in no_ctc.error.message
        conn.input_audio_buffer.append(audio=base64.b64encode(data[:6400]).decode())  # the session is as it was
        conn.input_audio_buffer.commit()
        assert realtime_events(conn, "conversation.item.input_audio_transcription.completed")[-1].type \
            == "conversation.item.input_audio_transcription.completed"
        assert update(conn, model="tiny", language="de", latency_ms=80).type == "session.updated"
        for i in range(0, half, 3200):
            conn.input_audio_buffer.append(audio=base64.b64encode(data[i:i + 3200]).decode())
        refused = update(conn, model="tiny", language="de", latency_ms=320)
        assert refused.type == "error" and "other than the language" in refused.error.message
        switched = update(conn, model="tiny", language="es", latency_ms=80)
        assert switched.type == "session.updated" and switched.session.audio.input.transcription.language == "es"
        for i in range(half, len(data), 3200):
            conn.input_audio_buffer.append(audio=base64.b64encode(data[i:i + 3200]).decode())
        conn.input_audio_buffer.commit()
        events = realtime_events(conn, "conversation.item.input_audio_transcription.completed")
    assert [e.type for e in events if e.type == "error"] == []
    assert events[-1].type == "conversation.item.input_audio_transcription.completed"


def test_realtime_language_events_and_lock():
    """The demo model, auto with the lock_language extension, German then Italian as two items: one
    `babelcast.language` event (de-DE, locked, the first item's) before the first item completes, none
    after, and the Italian item's transcript is a de-DE stream's; a bad lock_language value is an error."""
    demo = babelcast.load_model(babelcast.DEFAULT_MODEL)
    server = start_server(demo)
    try:
        client = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="none", max_retries=0, timeout=60)
        de, it = (load_audio(SAMPLES / f"{lang}.wav") for lang in ("de-DE", "it-IT"))
        with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            assert conn.recv().type == "session.created"

            bad = update(conn, model="demo", latency_ms=1120, lock_language="maybe")
            assert bad.type == "error" and bad.error.code == "invalid_settings" and "lock_language" in bad.error.message
            updated = update(conn, model="demo", language=None, latency_ms=1120, lock_language=True)
            assert updated.session.audio.input.transcription.lock_language is True
            events = []
            for audio in (de, it):
                data = pcm16(audio)
                for i in range(0, len(data), 32000):
                    conn.input_audio_buffer.append(audio=base64.b64encode(data[i:i + 32000]).decode())
                conn.input_audio_buffer.commit()
                events += realtime_events(conn, "conversation.item.input_audio_transcription.completed")
    finally:
        server.__exit__(None, None, None)
    languages = [e for e in events if e.type == "babelcast.language"]
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert [(e.item_id, e.language, e.locked) for e in languages] == [(completed[0].item_id, "de-DE", True)]
    assert events.index(languages[0]) < events.index(completed[0])
    german = demo.transcribe([from_pcm16(pcm16(it))], language="de-DE", latency_ms=1120, mode="streaming")[0]
    assert [c.language for c in completed] == ["de-DE", "de-DE"] and completed[1].transcript == german.text


def test_boost_form_field_and_realtime_extension(client, server, rec):
    """babelcast's extension: `boost` (or `keyterm`) form fields, repeated, on the HTTP API; `boost` in the
    Realtime session's transcription object; a bad phrase is a 400 / an error event naming it."""
    audio, boost = speech(2.0, seed=31), ["ne su:3", "lo:2"]
    url, headers = f"{server.http_url}/v1/audio/transcriptions", {"Authorization": "Bearer sk-test-1"}
    files = {"file": ("talk.wav", wav_bytes(audio))}
    r = httpx.post(url, files=files, data={"language": "en-US", "boost": boost[0], "keyterm": boost[1]},
                   headers=headers, timeout=30)
    want = rec.transcribe([audio], language="en-US", boost=boost)[0].text
    assert r.status_code == 200 and r.json()["text"] == want != rec.transcribe([audio], language="en-US")[0].text
    r = httpx.post(url, files=files, data={"boost": ["fine", "Anna:x"]}, headers=headers, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "boost"
    assert "bad weight 'x' in boost phrase 'Anna:x'" in r.json()["error"]["message"]
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"

        refused = update(conn, model="tiny", boost=[""])
        assert refused.type == "error" and "empty boost phrase" in refused.error.message
        updated = update(conn, model="tiny", language="en-US", latency_ms=80, boost=boost)
        assert updated.type == "session.updated" and updated.session.audio.input.transcription.boost == boost
        data = pcm16(audio)
        for i in range(0, len(data), 3200):
            conn.input_audio_buffer.append(audio=base64.b64encode(data[i:i + 3200]).decode())
        conn.input_audio_buffer.commit()
        done = realtime_events(conn, "conversation.item.input_audio_transcription.completed")[-1]
    assert done.transcript == rec.transcribe([audio], language="en-US", latency_ms=80, mode="streaming",
                                             boost=boost)[0].text
