"""The ingress of a replicated deployment (server/ingress.py) without Ray: two tiny models of different
weights, each behind a backend that runs relayed requests through its app in this process (as a Ray
replica does, server/relay.py), and the ingress in front of them on a real port. The model a request names
picks the backend; a backend whose sessions are lost ends them with the protocol's error."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json

import httpx
import openai
import pytest
import soundfile as sf

from server_util import (expected_text, frames, load_tiny, pcm16, read_until_closed, realtime_events, server_config,
                         speech, stream_session, update)
from tiny_nemo import write_tiny_nemo

import babelcast
from babelcast.scale.metrics import merged
from babelcast.server.app import create_app
from babelcast.server.errors import WS_POLICY, WS_SERVICE_RESTART
from babelcast.server.fleet import ModelSpec, Replicas, model_specs, parse_model_spec
from babelcast.server.ingress import ReplicaLost, create_ingress
from babelcast.server.relay import AppSocket, call_http
from babelcast.server.testing import ServerThread


def test_model_specs():
    hub = "nvidia/nemotron-3.5-asr-streaming-0.6b"
    assert parse_model_spec(hub) == ModelSpec("nemotron-3.5-asr-streaming-0.6b", hub)
    assert parse_model_spec("/m/x.nemo", name="x1") == ModelSpec("x1", "/m/x.nemo")
    assert parse_model_spec(f"fast={hub},precision=int8,replicas=2-6,device=cuda") == ModelSpec(
        "fast", hub, "int8", Replicas(2, 6), "cuda")
    assert parse_model_spec("/runs/lr=3/m.nemo").source == "/runs/lr=3/m.nemo"  # not a name: holds '/'
    assert parse_model_spec("m=/runs/lr=3/m.nemo") == ModelSpec("m", "/runs/lr=3/m.nemo")
    assert model_specs([]) == (ModelSpec("babelcast", None),)  # the bundled demo model
    for text, says in (("m.nemo,replicas=0", "1 <= MIN"), ("m.nemo,replicas=two", "a range MIN-MAX"),
                       ("m.nemo,gpus=1", "not an option"), ("m.nemo,device=tpu", "device must be one of")):
        with pytest.raises(ValueError, match=says):
            parse_model_spec(text)
    with pytest.raises(ValueError, match="--model-name names the one model"):
        model_specs(["a.nemo", "b.nemo"], model_name="x")


class LocalLink:
    """One session on a local app; `lose()` ends it as a dead replica would (no more messages, an error)."""

    def __init__(self, app, scope: dict, pushes: bool = True):
        self.socket, self.lost, self.pushes = AppSocket(app, scope), False, pushes

    async def events(self):
        async for batch in self.socket.batches():
            yield batch
        if self.lost:
            raise ReplicaLost("the test lost it")

    async def push(self, messages: list[dict]) -> None:
        if not self.pushes:  # as when its replica is being removed: the router sends them elsewhere
            raise ReplicaLost("the test stopped taking its audio")
        await self.socket.put(messages)

    async def close(self) -> None:
        await self.socket.end()

    def lose(self) -> None:
        self.lost = True
        self.socket.task.cancel()


class LocalBackend:
    """A model's app in this process, reached the way the ingress reaches replicas."""

    def __init__(self, app):
        self.app, self.links, self.down, self.pushes = app, [], False, True

    async def http(self, scope: dict, body: bytes) -> dict:
        if self.down:
            raise ReplicaLost("the test took it down")
        return await call_http(self.app, scope, body)

    def open(self, scope: dict) -> LocalLink:
        self.links.append(LocalLink(self.app, scope, self.pushes))
        return self.links[-1]

    def lose_sessions(self) -> None:
        """From any thread: every open session of this backend is lost."""
        loop = self.app.state.hub.loop
        for link in self.links:
            loop.call_soon_threadsafe(link.lose)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Models "a" (the default) and "b" behind one ingress."""
    recs = {"a": load_tiny(tmp_path_factory),
            "b": babelcast.load_model(write_tiny_nemo(tmp_path_factory.mktemp("b") / "b.nemo", seed=1))}
    apps = {name: create_app(rec, server_config(model_name=name)) for name, rec in recs.items()}
    backends = {name: LocalBackend(app) for name, app in apps.items()}

    @contextlib.asynccontextmanager
    async def lifespan(_):
        async with contextlib.AsyncExitStack() as stack:
            for app in apps.values():
                await stack.enter_async_context(app.router.lifespan_context(app))
            yield

    async def exposition() -> bytes:
        return merged({name: (name, app.state.exposition().decode()) for name, app in apps.items()})

    with ServerThread(create_ingress(backends, server_config(), exposition, lifespan)) as server:
        yield server, recs, backends


def _upload(url: str, audio, **fields) -> httpx.Response:
    wav = io.BytesIO()
    sf.write(wav, audio, 16000, format="WAV", subtype="PCM_16")
    return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", wav.getvalue(), "audio/wav")},
                      data=fields, timeout=60)


def test_http_requests_go_to_the_model_they_name(fleet):
    server, recs, _ = fleet
    audio = speech(2.0, seed=3)
    want = {name: rec.transcribe([audio])[0].text for name, rec in recs.items()}
    assert want["a"] != want["b"]
    assert _upload(server.http_url, audio).json()["text"] == want["a"]  # no model: the default
    assert _upload(server.http_url, audio, model="b").json()["text"] == want["b"]
    unknown = _upload(server.http_url, audio, model="whisper-1")
    error = unknown.json()["error"]
    assert unknown.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert "'whisper-1'" in error["message"] and "a, b" in error["message"]
    assert [m["id"] for m in httpx.get(f"{server.http_url}/v1/models").json()["data"]] == ["a", "b"]
    assert httpx.get(f"{server.http_url}/v1/info", params={"model": "b"}).json()["model"] == "b"
    metrics = httpx.get(f"{server.http_url}/metrics").text
    assert 'model="a"' in metrics and 'model="b"' in metrics


def test_listen_goes_to_the_model_of_its_query(fleet):
    server, recs, _ = fleet
    audio = speech(1.5, seed=4)
    events, code = asyncio.run(stream_session(server.ws_url, audio, query="model=b&endpoint_ms=0"))
    ready = events[0]
    assert ready["model"] == "b" and code == 1000
    assert [e["text"] for e in events if e["type"] == "final"] == [
        expected_text(recs["b"], audio, latency_ms=ready["settings"]["latency_ms"])]
    events, code = asyncio.run(_refused(f"{server.ws_url}/v1/listen?model=nope"))
    assert [e["type"] for e in events] == ["error", "closed"] and code == WS_POLICY
    assert events[0]["code"] == "model_not_found" and "a, b" in events[0]["message"]


async def _refused(url: str) -> tuple[list[dict], int]:
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        return await read_until_closed(ws)


def test_a_realtime_session_moves_to_the_model_its_first_update_names(fleet):
    """Before any audio a session.update may name another model: the session moves, its earlier messages
    are answered once; after audio it cannot (an error, and the session goes on)."""
    server, recs, _ = fleet
    audio = speech(2.0, seed=5)
    want = recs["b"].transcribe([audio], language="de", latency_ms=80, mode="streaming")[0].text
    client = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="none", max_retries=0, timeout=30)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"
        assert update(conn, model="a", language="de", latency_ms=80).type == "session.updated"
        conn.input_audio_buffer.commit()
        assert conn.recv().error.code == "input_audio_buffer_commit_empty"
        moved = update(conn, model="b", language="de", latency_ms=80)
        assert moved.type == "session.updated" and moved.session.audio.input.transcription.model == "b"
        assert update(conn, model="nope").error.code == "model_not_found"
        data = pcm16(audio)
        for i in range(0, len(data), 3200):
            conn.input_audio_buffer.append(audio=base64.b64encode(data[i:i + 3200]).decode())
        conn.session.update(session={"type": "transcription", "audio": {"input": {"transcription": {"model": "a"}}}})
        refused = realtime_events(conn, "error")[-1]  # after the deltas so far
        assert "once audio was appended" in refused.error.message
        conn.input_audio_buffer.commit()
        done = realtime_events(conn, "conversation.item.input_audio_transcription.completed")[-1]
    assert done.transcript == want != recs["a"].transcribe([audio], language="de", latency_ms=80,
                                                           mode="streaming")[0].text


def test_a_lost_replica_ends_its_sessions_with_an_error_event(fleet):
    server, recs, backends = fleet

    async def lose_mid_session():
        from websockets.asyncio.client import connect

        async with connect(f"{server.ws_url}/v1/listen?model=b") as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            for piece in frames(speech(1.0, seed=6)):
                await ws.send(piece)
            await asyncio.sleep(0.5)  # the audio reached the backend
            backends["b"].lose_sessions()
            return await read_until_closed(ws)

    events, code = asyncio.run(lose_mid_session())
    assert [e["type"] for e in events[-2:]] == ["error", "closed"] and code == WS_SERVICE_RESTART, events
    assert events[-2]["code"] == "replica_lost" and "reconnect" in events[-2]["message"]
    assert events[-1]["reason"] == "error" and events[-1]["audio_s"] == 1.0
    events, code = asyncio.run(_lose_realtime(f"{server.ws_url}/v1/realtime?intent=transcription&model=b",
                                              backends["b"]))
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "replica_lost", events
    assert code == WS_SERVICE_RESTART
    backends["b"].pushes = False  # its audio cannot be handed over: the same ending
    try:
        events, code = asyncio.run(stream_session(server.ws_url, speech(1.0, seed=7), query="model=b"))
    finally:
        backends["b"].pushes = True
    assert events[-2]["code"] == "replica_lost" and code == WS_SERVICE_RESTART, events
    after, code = asyncio.run(stream_session(server.ws_url, speech(1.0, seed=7), query="model=b"))
    assert code == 1000 and after[-1]["type"] == "closed" and after[-1]["reason"] == "client"

    backends["b"].down = True
    try:
        lost = _upload(server.http_url, speech(1.0), model="b")
    finally:
        backends["b"].down = False
    assert lost.status_code == 503 and lost.json()["error"]["code"] == "replica_lost" and lost.headers["retry-after"]


async def _lose_realtime(url: str, backend: LocalBackend) -> tuple[list[dict], int]:
    """A Realtime session whose backend is lost once it opened: its events and close code."""
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        backend.lose_sessions()
        return await read_until_closed(ws)
