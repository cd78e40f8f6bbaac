"""Operations: health, readiness, Prometheus metrics, key policy, the stream client, and a real
`babelcast serve` process that drains its sessions on SIGTERM and logs JSON lines."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

from babelcast.cli import main
from babelcast.streaming.engine import EngineConfig
from server_util import frames, kinds, load_tiny, read_until_closed, speech, start_server, stream_session, \
    tiny_model_path


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return load_tiny(tmp_path_factory)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name.split(" ")[0]:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_health_ready_metrics(rec):
    server = start_server(rec, max_sessions=1)
    try:
        url = server.http_url
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert httpx.get(f"{url}/ready").status_code == 200
        events, _ = asyncio.run(stream_session(server.ws_url, speech(2.0, seed=1), "latency=80&endpoint_ms=0"))
        assert kinds(events)[-2:] == ["final", "closed"]

        async def hold_one():
            async with connect(f"{server.ws_url}/v1/listen") as ws:
                await ws.recv()
                r = httpx.get(f"{url}/ready")  # at capacity: not ready (a balancer sends traffic elsewhere)
                return r.status_code, r.json()

        status, body = asyncio.run(hold_one())
        assert status == 503 and "limit of 1" in body["reason"]
        text = httpx.get(f"{url}/metrics").text
    finally:
        server.__exit__(None, None, None)
    assert metric(text, 'babelcast_sessions_opened_total{api="listen"}') == 2
    assert metric(text, 'babelcast_finals_total{api="listen"}') >= 1
    assert metric(text, "babelcast_final_latency_seconds_count") >= 1
    # 2 s at 80 ms is 25 chunks; a step may take up to max_chunks_per_step chunks of a stream
    assert metric(text, "babelcast_engine_steps_total") >= 25 // EngineConfig().max_chunks_per_step
    assert metric(text, "babelcast_engine_batch_size_count") == metric(text, "babelcast_engine_steps_total")
    assert metric(text, "babelcast_engine_step_seconds_count") == metric(text, "babelcast_engine_steps_total")
    assert 0 < metric(text, "babelcast_engine_real_time_factor") < 10
    assert metric(text, 'babelcast_audio_seconds_total{api="listen"}') == pytest.approx(2.0)
    assert metric(text, 'babelcast_chunk_latency_seconds{quantile="0.95"}') > 0
    assert metric(text, 'babelcast_sessions_active{api="listen"}') == 0
    assert 'babelcast_http_requests_total{route="/ready",status="503"}' in text


def test_binding_beyond_loopback_needs_a_key(tmp_path_factory, capsys):
    model = str(tiny_model_path(tmp_path_factory))
    assert main(["serve", "--model", model, "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "API keys are required" in capsys.readouterr().err


def test_stream_command(rec, tmp_path, capsys):
    audio = speech(2.0, seed=7)
    wav = tmp_path / "talk.wav"
    sf.write(wav, audio, 16000, subtype="PCM_16")
    server = start_server(rec)
    try:
        code = main(["stream", str(wav), "--url", server.http_url, "--speed", "8", "--latency", "80",
                     "--endpoint-ms", "0", "--lang", "en-US"])
        out = capsys.readouterr().out
        boosted = main(["stream", str(wav), "--url", server.http_url, "--speed", "8", "--latency", "80",
                        "--endpoint-ms", "0", "--lang", "en-US", "--boost", "ne su:3", "--boost", "lo:2"])
        boosted_out = capsys.readouterr().out
        bad = main(["stream", str(wav), "--url", server.ws_url, "--lang", "xx-XX"])
        err = capsys.readouterr().err
    finally:
        server.__exit__(None, None, None)
    want = rec.transcribe([audio], language="en-US", latency_ms=80, mode="streaming")[0].text
    assert code == 0 and out.strip() == f"[en-US] {want}"
    want = rec.transcribe([audio], language="en-US", latency_ms=80, mode="streaming", boost=["ne su:3", "lo:2"])[0].text
    assert boosted == 0 and boosted_out.strip() == f"[en-US] {want}"
    assert bad == 1 and "unsupported_language" in err and "xx-XX" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_pending_finals(tmp_path_factory):
    """A real `babelcast serve`: SIGTERM mid-utterance still delivers the final, then exits 0."""
    port = free_port()
    env = {**os.environ, "BABELCAST_API_KEYS": "k1"}
    proc = subprocess.Popen([sys.executable, "-m", "babelcast", "serve", "--model",
                             str(tiny_model_path(tmp_path_factory)), "--port", str(port), "--threads", "1",
                             "--endpoint-ms", "0", "--max-lag-ms", "100000"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not become ready")

        async def go():
            headers = {"Authorization": "Bearer k1"}
            async with connect(f"ws://127.0.0.1:{port}/v1/listen?latency=80", additional_headers=headers) as ws:
                assert json.loads(await ws.recv())["type"] == "ready"
                for f in frames(speech(2.0, seed=9)):
                    await ws.send(f)
                while json.loads(await ws.recv())["type"] != "partial":
                    pass
                proc.send_signal(signal.SIGTERM)  # no finalize, no close from the client
                return await read_until_closed(ws)

        events, code = asyncio.run(go())
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = proc.stderr.read().splitlines()
    finals = [e for e in events if e["type"] == "final"]
    assert finals and finals[-1]["from_finalize"] and finals[-1]["text"]
    assert events[-1]["type"] == "closed" and events[-1]["reason"] == "shutdown" and code == 1001
    assert rc == 0
    records = [json.loads(line) for line in logs]  # every line is a JSON object
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    names = [r.get("event") for r in records]
    assert "drain" in names and "drained" in names and "session_closed" in names
    closed = next(r for r in records if r.get("event") == "session_closed")
    assert closed["reason"] == "shutdown" and 0 < closed["audio_s"] == pytest.approx(events[-1]["audio_s"], abs=0.01)
    assert "k1" not in "\n".join(logs)  # keys are never logged
