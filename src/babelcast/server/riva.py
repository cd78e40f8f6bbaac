"""Riva's ASR gRPC API (`nvidia.riva.asr.RivaSpeechRecognition`) on the shared engine, so NVIDIA's clients
(nvidia-riva-client and the voice-agent frameworks built on it) talk to babelcast unchanged.

- `StreamingRecognize`: a `streaming_config` first, then `audio_content`; interim results while audio
  comes (with `interim_results`), finals at the model's endpoints and at the end of the stream. Each stream
  is a `LiveSession` like a /v1/listen one: the same admission, limits, metrics and engine.
- `Recognize`: the whole audio through the engine's file path (as `POST /v1/audio/transcriptions`).
- `GetRivaSpeechRecognitionConfig`: the model, its languages and latencies.
- `grpc.health.v1.Health`: SERVING while the engine runs, NOT_SERVING once draining or failed.

A failure ends the call with a gRPC status (`ApiError.grpc_status`) and a message naming the problem; a
stream's results so far are sent first. The stubs are the ones nvidia-riva-client ships; how each
RecognitionConfig field maps is in server/riva_config.py and docs/server.md.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc

from ..audio.io import SAMPLE_RATE_HZ, AudioError, decode_audio, resample
from ..audio.raw import RawAudioStream
from ..decoding.result import Transcript
from ..decoding.text import strip_punctuation
from . import auth
from .config import ServerConfig
from .errors import ApiError
from .hub import EngineHub
from .live import LiveSession, Out, engine_options
from .riva_config import RivaSettings, header_rate_hz, recognize_settings, streaming_settings
from .wsloop import fatal, log_end

log = logging.getLogger("babelcast.server")
SERVICE = rasr.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name
INTERIM_STABILITY = 0.9  # babelcast's partials only grow (1.0 on an interim means Riva's end-of-utterance pass)
WARNING_METADATA = "x-babelcast-warning"


class RivaAsr(rasr_grpc.RivaSpeechRecognitionServicer):
    """The three RPCs of Riva's ASR service over one EngineHub."""

    def __init__(self, hub: EngineHub):
        self.hub = hub

    async def Recognize(self, request: rasr.RecognizeRequest, context) -> rasr.RecognizeResponse:
        t0 = time.perf_counter()
        try:
            self.authorize(context)
            s = recognize_settings(request.config, self.hub.rec)
            opts = engine_options(self.hub, s.stream, mode="offline")
            t = await self.hub.transcribe(functools.partial(decode_file, request.audio, s), opts, "audio", "audio")
        except ApiError as e:
            self.hub.metrics.errors.labels(e.code).inc()
            await self.abort(context, "Recognize", e)
        self.warn(context, s.stream.language)
        self.hub.metrics.transcription_seconds.observe(time.perf_counter() - t0)
        self.count("Recognize", "OK")
        log.info("transcribed", extra={"event": "transcription", "api": "riva", "audio_s": round(t.duration_s, 2),
                                       "seconds": round(time.perf_counter() - t0, 3)})
        alt = alternative(t, s, final=True)
        results = ([rasr.SpeechRecognitionResult(alternatives=[alt], channel_tag=1, audio_processed=t.duration_s)]
                   if alt.transcript else [])
        return rasr.RecognizeResponse(results=results, id=request.id if request.HasField("id") else None)

    async def StreamingRecognize(self, requests, context):
        async for response in _Stream(self, context, requests).responses():
            yield response

    async def GetRivaSpeechRecognitionConfig(self, request, context) -> rasr.RivaSpeechRecognitionConfigResponse:
        try:
            self.authorize(context)
        except ApiError as e:
            self.hub.metrics.errors.labels(e.code).inc()
            await self.abort(context, "GetRivaSpeechRecognitionConfig", e)
        self.count("GetRivaSpeechRecognitionConfig", "OK")
        config = rasr.RivaSpeechRecognitionConfigResponse.Config(model_name=self.hub.cfg.model_name,
                                                                 parameters=model_parameters(self.hub))
        return rasr.RivaSpeechRecognitionConfigResponse(model_config=[config])

    # ---- shared by the calls ------------------------------------------------------------------
    def authorize(self, context) -> None:
        """ApiError unauthorized unless keys are off or the metadata has `authorization: Bearer KEY`."""
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        auth.check(self.hub.cfg.api_keys, metadata, {})

    async def abort(self, context, method: str, e: ApiError) -> None:
        """End the call with e's status and message (raises)."""
        self.count(method, e.grpc_status)
        log.info("riva call failed", extra={"event": "riva_error", "method": method, "code": e.code,
                                             "error": e.message})
        await context.abort(getattr(grpc.StatusCode, e.grpc_status), e.message)

    def count(self, method: str, code: str) -> None:
        self.hub.metrics.grpc_requests.labels(method, code).inc()

    def warn(self, context, language: str) -> None:
        """A locale the model was not trained on: said in the trailing metadata (and logged once)."""
        message = self.hub.untrained_warning(language)
        if message:
            context.set_trailing_metadata(((WARNING_METADATA, message.encode("ascii", "replace").decode()),))


class _Stream:
    """One StreamingRecognize call: a reader feeds the session, a watchdog applies the idle and duration
    limits, and the call's responses are the session's partials and finals."""

    METHOD = "StreamingRecognize"

    def __init__(self, service: RivaAsr, context, requests):
        self.service, self.hub, self.context = service, service.hub, context
        self.requests = requests.__aiter__()
        self.session: LiveSession | None = None
        self.settings: RivaSettings | None = None
        self.audio: RawAudioStream | None = None
        self.request_id = None
        self.header_seen = False
        self.waiting_since = time.monotonic()  # when the reader started waiting for the next message
        self.error: ApiError | None = None  # the first error: the call ends with its status

    async def responses(self):
        try:
            await self._open()
            tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._watch())]
            try:
                async for response in self._results():
                    yield response
            finally:
                for task in tasks:
                    task.cancel()
            await self._end()
        finally:
            if self.session is not None:
                self.session.end()
                log_end(self.session)

    async def _open(self) -> None:
        try:
            first = await self._first_request()  # read first: grpc's request reader must have started
            self.service.authorize(self.context)
            self.request_id = first.id if first.HasField("id") else None
            self.settings = streaming_settings(first.streaming_config, self.hub.rec)
            self.session = LiveSession(self.hub, "riva", self.context.peer())
            self.session.start(self.settings.stream)
            self.audio = RawAudioStream(self.settings.encoding, self.settings.channels, name="audio_content")
        except ApiError as e:
            self.hub.metrics.errors.labels(e.code).inc()
            if self.session is not None:
                self.session.close_reason = "error"
            await self.service.abort(self.context, self.METHOD, e)
        self.service.warn(self.context, self.settings.stream.language)
        log.info("session opened", extra={"event": "session_opened", "session": self.session.id, "api": "riva",
                                          "peer": self.session.peer, "settings": self.settings.stream.to_dict(),
                                          "ignored_custom_configuration": list(self.settings.ignored_keys)})

    async def _first_request(self) -> rasr.StreamingRecognizeRequest:
        """The first message, which must hold the streaming_config."""
        try:
            first = await asyncio.wait_for(anext(self.requests), self.hub.cfg.idle_timeout_s)
        except StopAsyncIteration:
            raise ApiError("invalid_message", "the stream ended before its streaming_config") from None
        except asyncio.TimeoutError:
            raise ApiError("idle_timeout", f"no streaming_config within {self.hub.cfg.idle_timeout_s:g} s") from None
        if first.WhichOneof("streaming_request") != "streaming_config":
            raise ApiError("invalid_message", "the first message of a stream must hold streaming_config; "
                                              "audio_content comes after it", "streaming_config")
        return first

    async def _read(self) -> None:
        """Feed the audio to the session; the end of the client's messages asks for the last final."""
        session = self.session
        try:
            async for request in self.requests:
                if session.closing:
                    continue  # ending: later audio is not transcribed
                self._on_request(request)
                await session.pace()
                self.waiting_since = time.monotonic()
            session.close("client")
        except ApiError as e:
            if not session.closing:
                fatal(session, e)
        except Exception as e:  # the request stream broke (not a cancellation): end like a client mistake
            if not session.closing:
                fatal(session, ApiError("invalid_message", f"the request stream failed: {e}"))

    def _on_request(self, request: rasr.StreamingRecognizeRequest) -> None:
        kind = request.WhichOneof("streaming_request")
        if kind == "streaming_config":
            raise ApiError("invalid_message", "streaming_config may come only in the first message; the "
                                              "following ones hold audio_content", "streaming_config")
        data = request.audio_content
        if len(data) > self.hub.cfg.max_frame_bytes:
            raise ApiError("frame_too_large", f"an audio_content of {len(data)} bytes is over the limit of "
                                              f"{self.hub.cfg.max_frame_bytes} bytes; send smaller pieces")
        try:
            x = self.audio.decode(data)
        except AudioError as e:
            raise ApiError("invalid_audio", str(e), "audio_content") from None
        if self.audio.header is not None and not self.header_seen:
            self.header_seen = True
            self._apply_rate(header_rate_hz(self.settings, self.audio.header))
        if len(x):
            self.session.feed(x)

    def _apply_rate(self, rate_hz: int) -> None:
        """A WAV header gave the rate (sample_rate_hertz was 0): reopen the session at it (no audio yet)."""
        if rate_hz != self.settings.stream.sample_rate:
            self.settings = dataclasses.replace(self.settings, stream=dataclasses.replace(self.settings.stream,
                                                                                          sample_rate=rate_hz))
            self.session.restart(self.settings.stream)

    async def _watch(self) -> None:
        """End the session when no message came for idle_timeout_s, or at max_session_s."""
        cfg, session = self.hub.cfg, self.session
        while not session.closing:
            now = time.monotonic()
            idle_end, session_end = self.waiting_since + cfg.idle_timeout_s, session.started + cfg.max_session_s
            if now >= session_end:
                fatal(session, ApiError("session_too_long", f"the session passed the limit of {cfg.max_session_s:g} s"))
            elif now >= idle_end:
                fatal(session, ApiError("idle_timeout", f"no audio for {cfg.idle_timeout_s:g} s; end the stream "
                                                        "when the audio is done"))
            else:
                await asyncio.sleep(min(idle_end, session_end) - now)

    async def _results(self):
        """The session's partials and finals as responses, until it is closed (errors kept for the end)."""
        while True:
            out = await self.session.queue.get()
            if out.kind == "closed":
                return
            if out.kind == "error":
                self.error = self.error or out.error
                continue
            response = self._render(out)
            if response is not None:
                yield response

    def _render(self, out: Out) -> rasr.StreamingRecognizeResponse | None:
        t = out.event.transcript if out.kind in ("partial", "final") else None
        if t is None:
            return None
        final = out.kind == "final"
        alt = alternative(t, self.settings, final)
        if not alt.transcript:
            return None
        result = rasr.StreamingRecognitionResult(alternatives=[alt], is_final=final, channel_tag=1,
                                                 stability=0.0 if final else INTERIM_STABILITY,
                                                 audio_processed=t.duration_s)
        return rasr.StreamingRecognizeResponse(results=[result], id=self.request_id)

    async def _end(self) -> None:
        """The call's status: OK, the session's error, or UNAVAILABLE when the server drained it."""
        if self.error is None and self.session.close_reason == "shutdown":
            self.error = ApiError("shutting_down", "the server is shutting down (the results so far were sent); "
                                                   "reconnect to continue")
        if self.error is not None:
            await self.service.abort(self.context, self.METHOD, self.error)
        self.service.count(self.METHOD, "OK")


def alternative(t: Transcript, s: RivaSettings, final: bool) -> rasr.SpeechRecognitionAlternative:
    """The one alternative of a result: text (punctuation stripped when the request turned it off), the
    language, and for a final its confidence and, when asked, its words with times in ms."""
    text = t.text if s.punctuation else strip_punctuation(t.text)
    alt = rasr.SpeechRecognitionAlternative(transcript=text, language_code=[t.language] if t.language else [])
    if final:
        alt.confidence = t.confidence
        if s.word_offsets:
            for w in t.words:
                word = w.word if s.punctuation else strip_punctuation(w.word)
                if word:
                    alt.words.append(rasr.WordInfo(word=word, start_time=round(1000 * w.start),
                                                   end_time=round(1000 * w.end), confidence=w.confidence,
                                                   language_code=t.language or ""))
    return alt


def decode_file(data: bytes, s: RivaSettings) -> np.ndarray:
    """Worker thread: a Recognize request's audio at 16 kHz (a file with a header, or raw samples)."""
    if not data:
        raise ApiError("invalid_audio", "audio is empty (0 bytes)", "audio")
    if s.encoding == "file":
        try:
            return decode_audio(data, name="audio")
        except AudioError as e:
            raise ApiError("invalid_audio", f"{e}; for raw samples set encoding LINEAR_PCM, MULAW or ALAW",
                           "audio") from None
    stream = RawAudioStream(s.encoding, s.channels, name="audio")
    try:
        x = stream.decode(data)
    except AudioError as e:
        raise ApiError("invalid_audio", str(e), "audio") from None
    if not len(x):
        raise ApiError("invalid_audio", f"audio: {len(data)} bytes hold no whole {s.encoding} sample", "audio")
    if stream.leftover_bytes:
        raise ApiError("invalid_audio", f"audio: {len(data)} bytes end inside a sample ({s.encoding}, "
                                        f"{stream.channels} channel(s)); send whole samples", "audio")
    return resample(x, header_rate_hz(s, stream.header), SAMPLE_RATE_HZ)


def model_parameters(hub: EngineHub) -> dict[str, str]:
    """GetRivaSpeechRecognitionConfig's parameters: languages, latencies, audio formats, options."""
    rec, prompt = hub.rec, hub.rec.cfg.prompt
    locales = list(prompt.locales) if prompt else []
    return {
        "type": "online,offline", "streaming": "true", "sample_rate": str(SAMPLE_RATE_HZ),
        "language_code": ",".join(locales + ["multi"]),
        "trained_language_code": ",".join(prompt.trained_locales or ()) if prompt else "",
        "latencies_ms": ",".join(map(str, rec.latencies_ms)),
        "default_streaming_latency_ms": str(rec.stream_options().latency_ms),
        "default_offline_latency_ms": str(rec.stream_options(mode="offline").latency_ms),
        "att_context_size": ",".join(f"[{left},{right}]" for left, right in rec.cfg.encoder.att_contexts),
        "streaming_encodings": "LINEAR_PCM,MULAW,ALAW", "offline_encodings": "LINEAR_PCM,MULAW,ALAW,FLAC,OGGOPUS",
        "automatic_punctuation": "true", "word_time_offsets": "true", "speech_contexts": "true",
        "max_sessions": str(hub.cfg.max_sessions)}


class _Health(health.aio.HealthServicer):
    """The standard health service; NOT_SERVING while the engine thread is down."""

    def __init__(self, hub: EngineHub):
        super().__init__()
        self.hub = hub

    async def Check(self, request, context):
        if not self.hub.alive and request.service in ("", SERVICE):
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return await super().Check(request, context)


async def start_grpc(hub: EngineHub, cfg: ServerConfig) -> tuple[grpc.aio.Server, int]:
    """Serve the Riva ASR and health services at cfg.host:cfg.grpc_port on the running loop; (server, port)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0),  # a busy port is an error, not shared
                                      ("grpc.max_receive_message_length", cfg.max_upload_bytes + (1 << 20))])
    rasr_grpc.add_RivaSpeechRecognitionServicer_to_server(RivaAsr(hub), server)
    checks = _Health(hub)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    await checks.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    loop = asyncio.get_running_loop()
    hub.drain_hooks.append(lambda: loop.create_task(checks.enter_graceful_shutdown()))
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    try:
        port = server.add_insecure_port(f"{host}:{cfg.grpc_port}")
    except RuntimeError as e:
        raise OSError(f"cannot listen for gRPC on {host}:{cfg.grpc_port} ({e})") from None
    if not port:  # older grpcio reports a failed bind as port 0
        raise OSError(f"cannot listen for gRPC on {host}:{cfg.grpc_port}")
    await server.start()
    return server, port
