"""OpenAI-compatible `POST /v1/audio/transcriptions` and `GET /v1/models`.

The upload is decoded on the hub's worker thread, then transcribed by the engine as a fast-forward
stream (the model's largest trained context unless `latency_ms` is given): the same tokens as offline at
that latency, interleaved with the live streams (live chunks first) and the other uploads (round-robin
by chunk), so a short upload is not stuck behind a long one.
"""
from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..audio.io import AudioError, decode_audio
from ..decoding.boost import MAX_PHRASES
from ..decoding.result import Transcript
from ..errors import UnsupportedDecoder
from ..formats import build_cues, to_srt, to_text, to_vtt, word_dicts
from . import auth
from .auth import requires_key
from .errors import ApiError, error_response
from .fleet import models_body
from .settings import convert_setting, parse_boost

log = logging.getLogger("babelcast.server")
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
UNTRAINED_HEADER = "X-Babelcast-Warning"


class QueueClock:
    """How long one offline transcription runs (an exponential moving average), to tell a refused client when
    the queue ahead of it will have drained (Retry-After)."""

    WEIGHT = 0.3  # of the newest run

    def __init__(self):
        self.mean_s: float | None = None

    def record(self, run_s: float) -> None:
        """One transcription took run_s seconds on the worker."""
        self.mean_s = run_s if self.mean_s is None else self.mean_s + self.WEIGHT * (run_s - self.mean_s)

    def retry_after_s(self, pending: int) -> int:
        """Whole seconds until `pending` queued or running transcriptions are done (1 before any was timed)."""
        return max(1, math.ceil(pending * (self.mean_s or 0.0)))


def queue_clock(app) -> QueueClock:
    """The app's QueueClock, made on first use."""
    if not hasattr(app.state, "queue_clock"):
        app.state.queue_clock = QueueClock()
    return app.state.queue_clock


@requires_key
async def models_endpoint(request: Request) -> Response:
    return JSONResponse(models_body([request.app.state.hub.cfg.model_name]))


async def transcriptions_endpoint(request: Request) -> Response:
    hub = request.app.state.hub
    t0 = time.perf_counter()
    try:
        auth.check(hub.cfg.api_keys, request.headers, request.query_params)
        form = await _form(request)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError("invalid_request", "missing the audio file: send it as the multipart field 'file'",
                           "file")
        fmt = str(form.get("response_format") or "json")
        if fmt not in RESPONSE_FORMATS:
            raise ApiError("invalid_request", f"unsupported response_format {fmt!r}; use one of "
                                              f"{', '.join(RESPONSE_FORMATS)}", "response_format")
        if str(form.get("stream") or "false").lower() in ("true", "1"):
            raise ApiError("invalid_request", "stream=true is not supported here; stream over the "
                                              "/v1/listen or /v1/realtime WebSocket instead", "stream")
        language = str(form.get("language") or "auto")
        latency = _latency(form.get("latency_ms") or form.get("latency"))
        keep_tags = str(form.get("keep_lang_tags") or "false").lower() in ("true", "1")
        decoder = str(form.get("decoder") or "rnnt")
        boost = parse_boost("boost", [str(v) for key in ("boost", "keyterm") for v in form.getlist(key)])
        beam = None if form.get("beam") in (None, "") else convert_setting("beam", "beam", str(form.get("beam")))
        _check_options(hub.rec, language, latency, decoder, boost, beam)
        data = await upload.read()
        name = upload.filename or "file"
        opts = hub.rec.stream_options(language, latency, keep_tags, mode="offline", decoder=decoder, boost=boost,
                                      beam=hub.session_beam(beam))
        t = await hub.transcribe(functools.partial(_decode, data, name), opts, source=f"file {name}")
        queue_clock(request.app).record(time.perf_counter() - t0)
    except ApiError as e:
        hub.metrics.errors.labels(e.code).inc()
        log.info("transcription refused", extra={"event": "transcription_error", "code": e.code,
                                                  "error": e.message})
        return error_response(e, retry_after_s=queue_clock(request.app).retry_after_s(hub.pending_transcriptions))
    hub.metrics.transcription_seconds.observe(time.perf_counter() - t0)
    log.info("transcribed", extra={"event": "transcription", "audio_s": round(t.duration_s, 2),
                                   "seconds": round(time.perf_counter() - t0, 3), "format": fmt})
    response = render(t, fmt, hub.cfg.model_name)
    warning = hub.untrained_warning(language)
    if warning:
        response.headers[UNTRAINED_HEADER] = warning
    return response


async def _form(request: Request):
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError("invalid_request", f"expected a multipart/form-data body with the audio in 'file', "
                                          f"got content type {ctype or 'none'!r}")
    try:
        return await request.form(max_files=1, max_fields=32 + MAX_PHRASES, max_part_size=1 << 20)
    except MultiPartException as e:
        raise ApiError("invalid_request", f"malformed multipart body: {e.message}") from None


def _latency(raw) -> int | None:
    if raw in (None, ""):
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise ApiError("invalid_latency", f"latency_ms must be an integer, got {raw!r}", "latency_ms") from None


def _check_options(rec, language: str, latency: int | None, decoder: str, boost: tuple[str, ...] = (),
                   beam: bool | None = None) -> None:
    """ApiError naming a language, latency or decoder this model cannot serve (before the upload is read)."""
    try:
        rec.check_decoder(decoder, boost)
        rec.uses_beam(beam, decoder, boost)
    except UnsupportedDecoder as e:
        raise ApiError("unsupported_decoder", str(e), "decoder") from None
    try:
        rec.prompt_id(language)
    except ValueError as e:  # names what the model accepts (model.prompt.prompt_index)
        raise ApiError("unsupported_language", str(e), "language") from None
    try:
        rec.context(latency, "offline")
    except ValueError as e:
        raise ApiError("invalid_latency", f"{e}; this model supports latencies "
                                          f"{', '.join(map(str, rec.latencies_ms))} ms", "latency_ms") from None


def _decode(data: bytes, name: str) -> np.ndarray:
    """Worker thread: the upload's samples at 16 kHz."""
    try:
        return decode_audio(data, name=name)
    except AudioError as e:
        raise ApiError("invalid_audio", f"file {e}", "file") from None


def render(t: Transcript, fmt: str, model: str) -> Response:
    if fmt == "text":
        return PlainTextResponse(to_text(t) + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(t), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(t), media_type="text/vtt")
    usage = {"type": "duration", "seconds": math.ceil(t.duration_s)}
    if fmt == "json":
        return JSONResponse({"text": t.text, "language": t.language, "duration": round(t.duration_s, 3),
                             "usage": usage})
    words = word_dicts(t.words)
    segments = []
    for i, cue in enumerate(build_cues(t)):
        inside = [w for w in t.words if cue.start_s <= w.start and w.end <= cue.end_s + 1e-6]
        conf = [max(w.confidence, 1e-6) for w in inside] or [max(t.confidence, 1e-6)]
        segments.append({"id": i, "seek": 0, "start": round(cue.start_s, 3), "end": round(cue.end_s, 3),
                         "text": cue.text, "tokens": [], "temperature": 0.0,
                         "avg_logprob": round(float(np.mean(np.log(conf))), 4), "compression_ratio": 1.0,
                         "no_speech_prob": 0.0})
    return JSONResponse({"task": "transcribe", "language": t.language or "auto",
                         "duration": round(t.duration_s, 3), "text": t.text, "words": words,
                         "segments": segments, "usage": usage, "model": model})
