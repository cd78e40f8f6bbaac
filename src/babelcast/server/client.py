"""`babelcast stream`: play a file in real time (or the microphone) to a babelcast server's
/v1/listen and print partials in place and finals line by line."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from ..argtypes import add_boost_arguments, boost_phrases
from ..audio.io import SAMPLE_RATE_HZ

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_URL = "ws://127.0.0.1:8000/v1/listen"


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audio", nargs="?", metavar="AUDIO", help="audio file to play (omit with --mic)")
    parser.add_argument("--mic", action="store_true", help="stream the default microphone (needs sounddevice)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server WebSocket URL or base URL (default {DEFAULT_URL})")
    parser.add_argument("--riva", metavar="HOST:PORT",
                        help="use a Riva ASR gRPC service instead (serve --grpc-port, or NVIDIA's Riva / Speech NIM)")
    parser.add_argument("--lang", default="auto", help="locale such as en-US, or auto")
    parser.add_argument("--latency", type=int, metavar="MS", help="chunk latency in ms (server default otherwise)")
    parser.add_argument("--endpoint-ms", type=int, metavar="MS", help="endpointing window; 0 disables")
    parser.add_argument("--keep-lang-tags", action="store_true")
    parser.add_argument("--no-interim", action="store_true", help="finals only")
    parser.add_argument("--api-key", default=os.environ.get("BABELCAST_API_KEY"),
                        help="Bearer key (default: $BABELCAST_API_KEY)")
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed; 1 = real time")
    parser.add_argument("--chunk-ms", type=int, default=40, help="audio per WebSocket frame")
    parser.add_argument("--json", action="store_true", help="print every server event as a JSON line")
    add_boost_arguments(parser)


def run_stream(args: argparse.Namespace) -> int:
    try:
        args.boost = boost_phrases(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if bool(args.audio) == bool(args.mic):
        print("error: give an AUDIO file or --mic (not both)", file=sys.stderr)
        return EXIT_USAGE
    if args.speed <= 0 or args.chunk_ms <= 0:
        print("error: --speed and --chunk-ms must be positive", file=sys.stderr)
        return EXIT_USAGE
    if args.audio:
        from ..audio.io import AudioError, load_audio

        try:
            source = _file_source(load_audio(args.audio), args.chunk_ms, args.speed)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
    else:
        try:
            _check_mic()
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        source = _mic_source(args.chunk_ms)
    try:
        if args.riva:
            from .riva_client import stream_riva

            return asyncio.run(stream_riva(args, source))
        return asyncio.run(stream(args, source))
    except KeyboardInterrupt:
        return EXIT_FAILED


def listen_url(url: str, settings: dict) -> str:
    """ws(s)://host:port/v1/listen?settings from a base or full URL."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/v1/listen"
    query = urlencode({k: v for k, v in settings.items() if v is not None}, doseq=True)  # boost repeats
    return urlunsplit((scheme, parts.netloc, path, query, ""))


async def stream(args: argparse.Namespace, source) -> int:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    settings = {"language": args.lang, "latency_ms": args.latency, "sample_rate": SAMPLE_RATE_HZ,
                "encoding": "pcm_s16le",
                "interim_results": "false" if args.no_interim else "true", "endpoint_ms": args.endpoint_ms,
                "keep_lang_tags": "true" if args.keep_lang_tags else None, "boost": args.boost or None}
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    printer = _Printer(args.json)
    try:
        ws = await connect(listen_url(args.url, settings), additional_headers=headers, max_size=None)
    except (OSError, InvalidStatus) as e:
        print(f"error: cannot connect to {args.url}: {e}", file=sys.stderr)
        return EXIT_FAILED
    failed = False
    async with ws:
        first = json.loads(await ws.recv())
        printer.show(first)
        if first.get("type") != "ready":
            return EXIT_FAILED

        async def send_audio() -> None:
            try:
                async for pcm in source:
                    await ws.send(pcm)
                await ws.send(json.dumps({"type": "close"}))
            except ConnectionClosed:
                pass

        sender = asyncio.create_task(send_audio())
        try:
            async for message in ws:
                event = json.loads(message)
                printer.show(event)
                failed |= event.get("type") == "error"
                if event.get("type") == "closed":
                    break
        except ConnectionClosed:
            failed = True
        except asyncio.CancelledError:
            raise
        finally:
            sender.cancel()
    printer.done()
    return EXIT_FAILED if failed else EXIT_OK


class _Printer:
    """Partials rewrite the current line on a terminal; finals stay."""

    def __init__(self, as_json: bool):
        self.as_json, self.tty, self.open_line = as_json, sys.stdout.isatty(), False

    def show(self, event: dict) -> None:
        kind = event.get("type")
        if self.as_json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        if kind == "partial" and self.tty:
            sys.stdout.write("\r\x1b[K" + _label(event) + "\x1b[2m" + event.get("text", "") + "\x1b[0m")
            sys.stdout.flush()
            self.open_line = True
        elif kind == "final":
            if event.get("text") or not event.get("from_finalize"):
                self._line(_label(event) + event.get("text", ""))
            elif self.open_line:
                self._line("")
        elif kind == "error":
            self._line(f"error: {event.get('code')}: {event.get('message')}", sys.stderr)

    def _line(self, text: str, stream=None) -> None:
        if self.open_line and self.tty:
            sys.stdout.write("\r\x1b[K")
            self.open_line = False
        print(text, file=stream or sys.stdout, flush=True)

    def done(self) -> None:
        if self.open_line and self.tty:
            sys.stdout.write("\n")


def _label(event: dict) -> str:
    lang = event.get("language")
    return f"[{lang}] " if lang else ""


async def _file_source(audio: np.ndarray, chunk_ms: int, speed: float):
    """Yield pcm_s16le frames on a wall-clock schedule (speed x real time)."""
    step = SAMPLE_RATE_HZ * chunk_ms // 1000
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    t0 = time.monotonic()
    for start in range(0, len(pcm), step):
        due = t0 + start / SAMPLE_RATE_HZ / speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield pcm[start:start + step].tobytes()


def _check_mic() -> None:
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise RuntimeError(f"--mic needs the sounddevice package and PortAudio ({e})") from None
    try:
        sd.check_input_settings(samplerate=SAMPLE_RATE_HZ, channels=1, dtype="int16")
    except Exception as e:  # no device, or it cannot do 16 kHz mono
        raise RuntimeError(f"no usable microphone: {e}") from None


async def _mic_source(chunk_ms: int):
    """Microphone frames until Ctrl+C, which ends the stream cleanly (the last final still comes)."""
    import signal

    import sounddevice as sd

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGINT, queue.put_nowait, None)

    def callback(indata, frames, when, status) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, bytes(indata))

    print("listening on the microphone; Ctrl+C to stop", file=sys.stderr)
    try:
        with sd.RawInputStream(samplerate=SAMPLE_RATE_HZ, channels=1, dtype="int16",
                               blocksize=SAMPLE_RATE_HZ * chunk_ms // 1000, callback=callback):
            while (frame := await queue.get()) is not None:
                yield frame
    finally:
        loop.remove_signal_handler(signal.SIGINT)
