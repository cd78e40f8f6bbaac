"""The HTTP API and the languages a model was trained on: a warning for an untrained locale, an error that
lists canonical locales (trained first) apart from aliases; Retry-After from the queue's measured pace."""
from dataclasses import replace

import httpx
import pytest

from babelcast.config import with_trained_locales
from babelcast.server.openai_http import UNTRAINED_HEADER, QueueClock
from server_util import load_tiny, pcm16, speech, start_server
from test_server_openai import wav_bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    rec = load_tiny(tmp_path_factory)
    rec.cfg = replace(rec.cfg, prompt=with_trained_locales(rec.cfg.prompt, ["en-US", "de-DE"]))
    s = start_server(rec)
    yield s
    s.__exit__(None, None, None)


def transcribe(server, language: str) -> httpx.Response:
    files = {"file": ("talk.wav", wav_bytes(speech(1.0, seed=5)), "audio/wav")}
    return httpx.post(f"{server.http_url}/v1/audio/transcriptions", files=files, data={"language": language},
                      timeout=60)


def test_an_untrained_locale_is_served_with_a_warning(server):
    untrained = transcribe(server, "es")
    assert untrained.status_code == 200
    assert untrained.headers[UNTRAINED_HEADER].startswith("this model was not trained on es-US (trained: de-DE, "
                                                          "en-US)")
    trained = transcribe(server, "de")
    assert trained.status_code == 200 and UNTRAINED_HEADER not in trained.headers


def test_an_unknown_language_lists_trained_locales_first_and_aliases_apart(server):
    r = transcribe(server, "xx-XX")
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert message == ("unknown language 'xx-XX'; use auto, or trained: de-DE, en-US; untrained: es-US, no; "
                       "aliases: de → de-DE, en → en-US, es → es-US")  # `no` has no xx-XX name in this dictionary


def test_retry_after_is_the_time_the_queue_ahead_needs():
    clock = QueueClock()
    assert clock.retry_after_s(4) == 1  # nothing timed yet
    clock.record(10.0)
    assert clock.retry_after_s(4) == 40
    clock.record(20.0)  # the average follows the newest runs
    assert clock.retry_after_s(1) == 13 and clock.retry_after_s(0) == 1


def test_a_live_session_in_an_untrained_locale_is_warned_in_ready(server):
    import asyncio
    import json

    from websockets.asyncio.client import connect

    async def ready(language: str) -> dict:
        async with connect(f"{server.ws_url}/v1/listen?language={language}") as ws:
            return json.loads(await ws.recv())

    untrained, trained = asyncio.run(ready("es")), asyncio.run(ready("de-DE"))
    assert untrained["type"] == "ready" and untrained["warning"].startswith("this model was not trained on es-US")
    assert trained["type"] == "ready" and "warning" not in trained


def test_info_lists_locales_trained_first(server):
    info = httpx.get(f"{server.http_url}/v1/info", timeout=30).json()
    assert info["trained_locales"] == ["de-DE", "en-US"] and info["locales"][:2] == ["de-DE", "en-US"]
    assert info["aliases"]["de"] == "de-DE"
