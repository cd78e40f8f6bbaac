"""The live-caption page end to end: headless Chromium (Debian's) with a fake microphone playing a
wav file, the AudioWorklet, the WebSocket, and captions on the page.

Chromium is driven over the DevTools protocol with the `websockets` client the server extra already
brings: no browser download, no driver whose version must match the browser.
"""
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

from server_util import load_tiny, speech, start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[1]


class Cdp:
    """A minimal DevTools protocol client on one page target."""

    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=None, open_timeout=10)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=20))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout_s: float = 20.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}; page state: "
                             f"{self.js('JSON.stringify(window.babelcast)')}")

    def event(self, method: str, timeout_s: float = 20.0) -> dict:
        """The params of the next event of this kind (replies and other events are skipped)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=timeout_s))
            if message.get("method") == method:
                return message["params"]
        raise AssertionError(f"no {method} event")

    def click(self, selector: str) -> None:
        """A real mouse click (a user gesture, as the browser sees it)."""
        box = self.js(f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


@pytest.fixture
def browser(tmp_path):
    wav = tmp_path / "mic.wav"
    sf.write(wav, np.concatenate([speech(3.0, seed=41), np.zeros(8000, np.float32)]), 16000, subtype="PCM_16")
    with chromium(tmp_path, wav) as cdp:
        yield cdp


@contextlib.contextmanager
def chromium(tmp_path, mic_wav: Path, window: str = "1100,680"):
    """Headless Chromium whose fake microphone plays `mic_wav` (in a loop), driven over DevTools."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/setup.sh --test installs it)")
        pytest.skip("chromium is not installed")
    profile = tmp_path / "profile"
    proc = subprocess.Popen([
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--mute-audio", f"--user-data-dir={profile}", f"--window-size={window}",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp_path)})  # its singleton socket dir, left behind when it is killed
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("chromium did not start")
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        import httpx

        targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        page = next(t for t in targets if t["type"] == "page")
        cdp = Cdp(page["webSocketDebuggerUrl"])
        yield cdp
        cdp.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_live_captions_page(tmp_path_factory, browser, tmp_path):
    rec = load_tiny(tmp_path_factory)
    server = start_server(rec)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=server.http_url + "/")
        browser.wait("document.querySelectorAll('#latency-select option').length > 0")
        assert browser.js("document.title").startswith("babelcast")
        options = browser.js("[...document.querySelectorAll('#latency-select option')].map(o => o.value)")
        assert options == [str(ms) for ms in rec.latencies_ms]
        browser.js("document.querySelector('#latency-select').value = '80';"
                   "document.querySelector('#lang-select').value = 'en-US'")
        browser.click("#start")
        browser.wait("document.querySelector('#status').textContent === 'live'")
        partial = browser.wait("window.babelcast.partial || window.babelcast.finals[0]")
        assert partial.strip()
        browser.wait("document.querySelector('#language').textContent.includes('en-US')")
        time.sleep(1.0)  # let captions accumulate for the screenshot
        assert browser.js("document.querySelector('#key-field').offsetParent") is None  # no key needed: hidden
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        browser.click("#start")  # Stop: the server sends the last final, then closed
        browser.wait("window.babelcast.finals.length > 0 && document.querySelector('#status').textContent === "
                     "'stopped'")
        finals = browser.js("[...document.querySelectorAll('#finals .final')].map(p => p.textContent)")
        assert finals and all(f.strip() for f in finals)
        assert browser.js("window.babelcast.error") in (None, "")
        assert browser.js("window.babelcast.framesSent") > 10
        heard = browser.js("window.babelcast.audioConstraints")  # the browser's voice processing is off
        assert heard["echoCancellation"] is False and heard["noiseSuppression"] is False
        assert heard["autoGainControl"] is False
    finally:
        server.__exit__(None, None, None)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_the_demo_model_captions_real_speech(tmp_path):
    """The docs screenshot (BABELCAST_SCREENSHOT=docs/images/live-captions.png): the bundled model hears the
    held-out German sample through the fake microphone, language auto-detected, at 1120 ms.

    One utterance: in one session the demo model misreads the start of an utterance that follows a final (e.g.
    "Es más" → "smas", then it-IT for es-US), even after 5 s of silence; reported to the engine issue (14)."""
    import babelcast

    audio, rate_hz = sf.read(ROOT / "samples" / "de-DE.wav", dtype="float32")
    wav = tmp_path / "de-DE.wav"
    sf.write(wav, np.concatenate([audio, np.zeros(2 * rate_hz, np.float32)]), rate_hz, subtype="PCM_16")
    server = start_server(babelcast.load_model(babelcast.DEFAULT_MODEL), model_name="babelcast-demo")
    try:
        with chromium(tmp_path, wav, window="1000,520") as browser:
            browser.call("Page.navigate", url=server.http_url + "/")
            browser.wait("document.querySelectorAll('#latency-select option').length > 0")
            browser.js("document.querySelector('#latency-select').value = '1120'")  # the demo model's best
            browser.click("#start")
            browser.wait("window.babelcast.finals.length >= 1", timeout_s=60)
            shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
            final = browser.js("document.querySelector('#finals .final').textContent")
            browser.click("#start")
    finally:
        server.__exit__(None, None, None)
    assert "de-DE" in final and "Nicht für die Schule, sondern für das Leben" in final, final
    path = Path(os.environ.get("BABELCAST_SCREENSHOT", tmp_path / "live-captions.png"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(shot)


def test_the_page_asks_for_a_key_in_words_a_browser_user_understands(tmp_path_factory, browser):
    server = start_server(load_tiny(tmp_path_factory), api_keys=("sk-web",))
    try:
        browser.call("Page.navigate", url=server.http_url + "/")
        browser.wait("document.querySelectorAll('#latency-select option').length > 0")
        assert browser.js("document.querySelector('#key-field').offsetParent") is not None  # the key field shows
        browser.js("document.querySelector('#api-key').value = ''")
        browser.click("#start")
        error = browser.wait("document.querySelector('#error').textContent")
        assert error.startswith("This server needs an API key. Type it in the API key field")
        assert "Authorization" not in error and browser.js("window.babelcast.framesSent") == 0
        browser.js("document.querySelector('#api-key').value = 'sk-wrong'")
        browser.click("#start")
        error = browser.wait("document.querySelector('#error').textContent.includes('not accepted') && "
                             "document.querySelector('#error').textContent")
        assert error.startswith("The API key was not accepted.")
    finally:
        server.__exit__(None, None, None)


PHONE = dict(width=360, height=740, deviceScaleFactor=2, mobile=True)


def test_phone_width_trained_languages_first(tmp_path_factory, browser):
    """At 360 px nothing is wider than the screen, the longest language pill included; the language list puts
    the locales /v1/info says were trained first (the info is served by the test, as the documented shape)."""
    server = start_server(load_tiny(tmp_path_factory))
    info = {"model": "tiny", "languages": ["auto", "de", "de-DE", "en", "en-US", "es-US", "ja-JA", "ja-JP"],
            "locales": ["de-DE", "en-US", "es-US", "ja-JP"], "trained_locales": ["de-DE", "es-US"],
            "latencies_ms": [80, 1120], "default_latency_ms": 80, "auth_required": False}
    try:
        browser.call("Emulation.setDeviceMetricsOverride", **PHONE)
        browser.call("Fetch.enable", patterns=[{"urlPattern": "*/v1/info"}])
        browser.call("Page.navigate", url=server.http_url + "/")
        paused = browser.event("Fetch.requestPaused")
        browser.call("Fetch.fulfillRequest", requestId=paused["requestId"], responseCode=200,
                     responseHeaders=[{"name": "Content-Type", "value": "application/json"}],
                     body=base64.b64encode(json.dumps(info).encode()).decode())
        browser.wait("document.querySelectorAll('#latency-select option').length > 0")
        groups = browser.js("[...document.querySelectorAll('#lang-select optgroup')].map(g => "
                            "[g.label, [...g.children].map(o => o.value)])")
        assert [g[1] for g in groups] == [["de-DE", "es-US"], ["en-US", "ja-JP"]]
        assert groups[0][0] == "trained"
        browser.js("document.querySelector('#language').textContent = 'language: haw-US'")
        sizes = browser.js("({page: document.documentElement.scrollWidth, screen: window.innerWidth, "
                           "pill: document.querySelector('#language').getBoundingClientRect().right, "
                           "pillLines: (() => { const r = document.createRange();"
                           " r.selectNodeContents(document.querySelector('#language'));"
                           " return r.getClientRects().length; })(), "
                           "start: document.querySelector('#start').getBoundingClientRect().right})")
        assert sizes["screen"] == 360 and sizes["page"] <= 360, sizes
        assert sizes["pill"] <= 360 and sizes["pillLines"] == 1 and sizes["start"] <= 360, sizes
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        Path(os.environ.get("BABELCAST_PHONE_SCREENSHOT", tmp_path_factory.getbasetemp() / "phone.png")).write_bytes(shot)
    finally:
        browser.call("Fetch.disable")
        browser.call("Emulation.clearDeviceMetricsOverride")
        server.__exit__(None, None, None)
