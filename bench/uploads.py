"""A short upload sent while a long one runs: does it wait for the long one? (issue 14, files through the engine)

A real server on loopback (the app in a thread, the engine in its own), the OpenAI-compatible HTTP API:
one long upload (--long-s of speech-like audio) is sent, then after --after-s a short one (--short-s);
both times are measured from their own send. Uploads run as fast-forward streams in the engine, all files of
a latency advancing together, so the short one should return in about its own compute time.

    python bench/uploads.py --model /tmp/n35.nemo --long-s 1200 --short-s 4 [--out bench/results/uploads.json]
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time

import httpx
import numpy as np
import soundfile as sf

import babelcast
from babelcast.bench.streams import SAMPLE_RATE_HZ, machine, utterances
from babelcast.server import ServerConfig, create_app
from babelcast.server.testing import ServerThread


def wav(seconds: float, seed: int) -> bytes:
    """Speech-like audio (the streams benchmark's) as a 16 kHz WAV file."""
    buf = io.BytesIO()
    sf.write(buf, np.concatenate(utterances(seconds, seed)), SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def post(url: str, data: bytes, out: dict, key: str) -> None:
    """One upload; its wall time and audio duration into out[key]."""
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (f"{key}.wav", data, "audio/wav")},
                   data={"response_format": "json"}, timeout=3600)
    out[key] = {"status": r.status_code, "seconds": round(time.perf_counter() - t0, 2),
                "audio_s": r.json().get("duration") if r.status_code == 200 else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the bundled demo model")
    ap.add_argument("--long-s", type=float, default=1200.0)
    ap.add_argument("--short-s", type=float, default=4.0)
    ap.add_argument("--after-s", type=float, default=5.0, help="send the short upload this long after the long one")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rec = babelcast.load_model(args.model)
    long_wav, short_wav = wav(args.long_s, seed=1), wav(args.short_s, seed=2)
    out: dict = {"machine": machine(), "model": args.model or "demo", "long_s": args.long_s,
                 "short_s": args.short_s, "after_s": args.after_s}
    with ServerThread(create_app(rec, ServerConfig(precision=args.precision))) as server:
        out["precision"] = server.hub.engine.precision.precision
        long_thread = threading.Thread(target=post, args=(server.http_url, long_wav, out, "long"))
        long_thread.start()
        time.sleep(args.after_s)
        post(server.http_url, short_wav, out, "short")
        out["long_running_when_short_returned"] = long_thread.is_alive()
        long_thread.join()
    print(json.dumps(out))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
