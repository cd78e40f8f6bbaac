"""Shared helpers of the tests/test_server_*.py files: a tiny model, audio, a server, a WS client."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

import babelcast
from babelcast.audio.io import SAMPLE_RATE_HZ
from babelcast.server import ServerConfig, create_app
from babelcast.server.testing import ServerThread

from tiny import synth_audio
from tiny_nemo import write_tiny_nemo

FRAME_SAMPLES = SAMPLE_RATE_HZ * 40 // 1000  # a client's 40 ms send


def tiny_model_path(tmp_path_factory) -> Path:
    """One tiny .nemo per test session (writing one trains a tokenizer: seconds)."""
    path = tmp_path_factory.getbasetemp() / "server-tiny.nemo"
    if not path.exists():
        write_tiny_nemo(path)
    return path


def load_tiny(tmp_path_factory) -> babelcast.Recognizer:
    return babelcast.load_model(tiny_model_path(tmp_path_factory))


def server_config(**overrides) -> ServerConfig:
    """Fast, deterministic settings: one engine thread, no real-time pacing, no admission by lag, no
    phase alignment (each stream's text is exactly offline's, whoever else is connected)."""
    base = dict(model_name="tiny", precision="fp32", threads=1, max_lag_ms=1e9, pace_lag_ms=1e9, max_sessions=16,
                drain_timeout_s=10, phase_align=False)
    base.update(overrides)
    return ServerConfig(**base)


def start_server(rec, **overrides) -> ServerThread:
    return ServerThread(create_app(rec, server_config(**overrides))).__enter__()


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like test audio, already on the 16-bit grid (what pcm_s16le carries exactly)."""
    x = synth_audio(int(seconds * 16000), seed=seed).numpy()
    return from_pcm16(pcm16(x))


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1 - 1 / 32768) * 32768).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def expected_text(rec, audio: np.ndarray, language: str = "auto", latency_ms: int = 80,
                  boost: list[str] | None = None, beam_size: int | None = None) -> str:
    """What a session with endpointing off must give as its single final."""
    return rec.transcribe([audio], language=language, latency_ms=latency_ms, mode="streaming", boost=boost,
                          beam_size=beam_size)[0].text


def frames(audio: np.ndarray, size: int = FRAME_SAMPLES) -> list[bytes]:
    """The audio as 16-bit PCM messages of `size` samples each (the last shorter)."""
    data = pcm16(audio)
    return [data[i:i + 2 * size] for i in range(0, len(data), 2 * size)]


async def read_until_closed(ws, timeout_s: float = 20.0) -> tuple[list[dict], int | None]:
    """All JSON events up to `closed` (and the WebSocket close code)."""
    from websockets.exceptions import ConnectionClosed

    events: list[dict] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for message in ws:
                events.append(json.loads(message))
    except ConnectionClosed:
        pass
    code = ws.close_code
    return events, code


async def stream_session(url: str, audio: np.ndarray, query: str = "", close: bool = True,
                         headers: dict | None = None, pause_s: float = 0.0):
    """Connect, send all audio, close; returns (events, close code): the server's events up to its close when
    it ends the session first."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(f"{url}/v1/listen?{query}", additional_headers=headers or {}) as ws:
        events = asyncio.create_task(read_until_closed(ws))
        try:
            for frame in frames(audio):
                await ws.send(frame)
                if pause_s:
                    await asyncio.sleep(pause_s)
            if close:
                await ws.send(json.dumps({"type": "close"}))
        except ConnectionClosed:
            pass
        return await events


def kinds(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def realtime_events(conn, until: str, limit: int = 500) -> list:
    """Events of an openai Realtime connection up to the first of type `until`."""
    events = []
    for _ in range(limit):
        ev = conn.recv()
        events.append(ev)
        if ev.type == until:
            return events
    raise AssertionError(f"no {until} in {[e.type for e in events]}")


def update(conn, **transcription):
    """A Realtime session.update of the transcription settings (16 kHz PCM, no turn detection); the reply
    (partials of audio already sent may come first: they are passed over)."""
    conn.session.update(session={"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}, "transcription": transcription, "turn_detection": None}}})
    event = conn.recv()
    while event.type == "conversation.item.input_audio_transcription.delta":
        event = conn.recv()
    return event
