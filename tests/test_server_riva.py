"""The Riva-compatible gRPC service (`serve --grpc-port`) driven with NVIDIA's own client, `riva.client`,
as NVIDIA's documentation and samples use it: streaming with interim results, offline, word offsets,
boosting, endpointing and custom configuration, errors as gRPC status codes (a bad stream beside good
ones, which still get exactly their own transcript), admission, API keys and the health service."""
import asyncio
import io
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import riva.client
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from riva.client.proto import riva_asr_pb2 as rasr

import babelcast
from babelcast.cli import main
from babelcast.decoding.text import strip_punctuation
from babelcast.server.riva_config import recognize_settings, streaming_settings
from babelcast.server.errors import ApiError

from server_util import expected_text, load_tiny, pcm16, speech, start_server, stream_session

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
BOOST = [("ne su", 3.0), ("lo", 2.0)]  # on the tiny random model these change the text
CHUNK_BYTES = 3200  # 100 ms of 16 kHz 16-bit audio per message, as riva.client's samples default to


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return load_tiny(tmp_path_factory)


@pytest.fixture(scope="module")
def server(rec):
    s = start_server(rec, grpc_port=0)
    yield s
    s.__exit__(None, None, None)


@pytest.fixture(scope="module")
def asr(server):
    return riva.client.ASRService(riva.client.Auth(uri=server.grpc_target))


def config(language="en-US", rate=16000, interim=True, **fields) -> rasr.StreamingRecognitionConfig:
    """A streaming config as NVIDIA's transcribe_mic / transcribe_file samples build it."""
    return riva.client.StreamingRecognitionConfig(
        config=riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, language_code=language,
                                             sample_rate_hertz=rate, max_alternatives=1,
                                             enable_automatic_punctuation=True, **fields),
        interim_results=interim)


def with_latency(cfg, latency_ms=80, stop_history=0):
    """The latency through custom_configuration, endpointing through endpointing_config (0: off)."""
    riva.client.add_custom_configuration_to_config(cfg, f"latency_ms:{latency_ms}")
    inner = cfg.config if isinstance(cfg, rasr.StreamingRecognitionConfig) else cfg
    inner.endpointing_config.stop_history = stop_history
    return cfg


def chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def stream(asr, audio: np.ndarray, cfg) -> list[rasr.StreamingRecognitionResult]:
    return stream_pieces(asr, chunks(pcm16(audio)), cfg)


def stream_pieces(asr, pieces, cfg) -> list[rasr.StreamingRecognitionResult]:
    """Every result of a StreamingRecognize call (riva.client's generator: the config, then the pieces)."""
    return [r for response in asr.streaming_response_generator(pieces, cfg) for r in response.results]


def finals(results) -> list[str]:
    return [r.alternatives[0].transcript for r in results if r.is_final]


def wav_file(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


def test_streaming_interim_results_and_final(rec, asr):
    audio = speech(2.0, seed=1)
    results = stream(asr, audio, with_latency(config(enable_word_time_offsets=True)))
    want = rec.transcribe([audio], language="en-US", latency_ms=80, mode="streaming")[0]
    assert finals(results) == [want.text] != [""]
    interim = [r for r in results if not r.is_final]
    assert interim and all(r.stability == pytest.approx(0.9) and not r.alternatives[0].words for r in interim)
    assert want.text.startswith(interim[-1].alternatives[0].transcript)
    final = results[-1]
    assert final.is_final and final.audio_processed == pytest.approx(2.0) and final.channel_tag == 1
    alt = final.alternatives[0]
    assert list(alt.language_code) == ["en-US"] and alt.confidence == pytest.approx(want.confidence, abs=1e-6)
    assert [(w.word, w.start_time, w.end_time) for w in alt.words] == \
        [(w.word, round(1000 * w.start), round(1000 * w.end)) for w in want.words]
    assert all(w.language_code == "en-US" and 0 < w.confidence <= 1 for w in alt.words)
    assert [r.audio_processed for r in results] == sorted(r.audio_processed for r in results)


def test_finals_only_without_interim_results_and_no_words_unless_asked(rec, asr):
    audio = speech(1.5, seed=2)
    results = stream(asr, audio, with_latency(config(interim=False)))
    assert [r.is_final for r in results] == [True] and not results[0].alternatives[0].words
    assert finals(results) == [expected_text(rec, audio, "en-US", 80)]


def test_wav_file_streamed_as_nvidias_sample_does(rec, asr, tmp_path):
    """transcribe_file.py: the file's bytes, its header first, 1600 frames a message, the rate and channels
    from add_audio_file_specs_to_config; and with no sample_rate_hertz the header's 8 kHz is used."""
    audio = speech(2.0, seed=3)
    path = wav_file(tmp_path / "talk.wav", audio)
    cfg = with_latency(config(rate=0))
    riva.client.add_audio_file_specs_to_config(cfg, path)
    assert cfg.config.sample_rate_hertz == 16000
    with riva.client.AudioChunkFileIterator(path, 1600) as it:
        results = stream_pieces(asr, it, cfg)
    assert finals(results) == [expected_text(rec, audio, "en-US", 80)]
    narrow = wav_file(tmp_path / "narrow.wav", audio[::2], 8000)
    with riva.client.AudioChunkFileIterator(narrow, 1600) as it:
        results = stream_pieces(asr, it, with_latency(config(rate=0)))
    assert len(finals(results)) == 1 and results[-1].audio_processed == pytest.approx(2.0, abs=0.05)


def test_offline_recognize_with_word_offsets(rec, asr):
    """Recognize runs the engine's file path: offline's text at the largest trained latency, words in ms;
    raw PCM, a whole WAV file with the encoding left unspecified (as NVIDIA's offline sample sends it),
    µ-law at 8 kHz, and a custom latency."""
    audio = speech(2.5, seed=4)
    want = rec.transcribe([audio], language="en-US")[0]
    cfg = riva.client.RecognitionConfig(encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000,
                                        language_code="en-US", enable_word_time_offsets=True,
                                        enable_automatic_punctuation=True)
    response = asr.offline_recognize(pcm16(audio), cfg)
    (result,) = response.results
    alt = result.alternatives[0]
    assert alt.transcript == want.text != "" and result.audio_processed == pytest.approx(2.5)
    assert [(w.word, w.start_time, w.end_time) for w in alt.words] == \
        [(w.word, round(1000 * w.start), round(1000 * w.end)) for w in want.words]
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    as_file = asr.offline_recognize(buf.getvalue(), riva.client.RecognitionConfig(language_code="en-US",
                                                                                  enable_automatic_punctuation=True))
    assert as_file.results[0].alternatives[0].transcript == want.text
    mulaw = io.BytesIO()
    sf.write(mulaw, audio[::2], 8000, format="RAW", subtype="ULAW")
    narrow = asr.offline_recognize(mulaw.getvalue(), riva.client.RecognitionConfig(
        encoding=riva.client.AudioEncoding.MULAW, sample_rate_hertz=8000, language_code="en-US"))
    assert narrow.results[0].audio_processed == pytest.approx(2.5, abs=0.01)
    fast = asr.offline_recognize(pcm16(audio), with_latency(riva.client.RecognitionConfig(
        encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="en-US",
        enable_automatic_punctuation=True)))
    assert fast.results[0].alternatives[0].transcript == rec.transcribe([audio], "en-US", latency_ms=80)[0].text


def test_word_boosting(rec, asr):
    """add_word_boosting_to_config: each speech context's boost is its phrases' weight per token."""
    audio = speech(2.0, seed=1)
    cfg = with_latency(config())
    for phrase, boost in BOOST:
        riva.client.add_word_boosting_to_config(cfg, [phrase], boost)
    want = expected_text(rec, audio, "en-US", 80, boost=[f"{p}:{b}" for p, b in BOOST])
    assert want != expected_text(rec, audio, "en-US", 80)
    assert finals(stream(asr, audio, cfg)) == [want]
    bad = with_latency(config())
    riva.client.add_word_boosting_to_config(bad, ["ne su"], -5.0)
    with pytest.raises(grpc.RpcError) as e:
        stream(asr, audio, bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "negative boost" in e.value.details()


def test_grpc_results_equal_listen_results(rec, server, asr):
    """The same audio through /v1/listen and through gRPC, with the server's endpointing: the same finals."""
    audio = np.concatenate([speech(1.5, seed=5), np.zeros(16000, np.float32), speech(1.5, seed=6)])
    events, _ = asyncio.run(stream_session(server.ws_url, audio, "language=en-US&latency_ms=80"))
    listen = [e["text"] for e in events if e["type"] == "final" and e["text"]]
    riva_cfg = config()
    riva.client.add_custom_configuration_to_config(riva_cfg, "latency_ms:80")
    assert finals(stream(asr, audio, riva_cfg)) == listen != []


def test_unknown_language_and_bad_configs_are_invalid_argument(asr):
    audio = pcm16(speech(0.5, seed=7))
    with pytest.raises(grpc.RpcError) as e:
        list(asr.streaming_response_generator(chunks(audio), config(language="xx-XX")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "xx-XX" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        asr.offline_recognize(audio, riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, sample_rate_hertz=16000, language_code="xx-XX"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "xx-XX" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        asr.offline_recognize(b"these are not audio samples", riva.client.RecognitionConfig(language_code="en-US"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a readable audio file" in e.value.details()


BAD_STREAMS = {  # name: (requests after none or a config, words of the error)
    "audio before the config": (lambda cfg, audio: [rasr.StreamingRecognizeRequest(audio_content=audio)],
                                "first message"),
    "a second config": (lambda cfg, audio: [rasr.StreamingRecognizeRequest(streaming_config=cfg)] * 2,
                        "only in the first"),
    "flac in a stream": (lambda cfg, audio: [rasr.StreamingRecognizeRequest(streaming_config=riva.client.
                         StreamingRecognitionConfig(config=riva.client.RecognitionConfig(
                             encoding=riva.client.AudioEncoding.FLAC, language_code="en-US")))], "FLAC"),
    "bad sample rate": (lambda cfg, audio: [rasr.StreamingRecognizeRequest(streaming_config=config(rate=123))],
                        "sample_rate_hertz 123"),
    "diarization": (lambda cfg, audio: [rasr.StreamingRecognizeRequest(streaming_config=riva.client.
                    StreamingRecognitionConfig(config=riva.client.RecognitionConfig(
                        language_code="en-US", diarization_config=rasr.SpeakerDiarizationConfig(
                            enable_speaker_diarization=True))))], "diarization"),
    "a WAV header at the wrong rate": (lambda cfg, audio: [
        rasr.StreamingRecognizeRequest(streaming_config=cfg),
        rasr.StreamingRecognizeRequest(audio_content=wav_header(8000))], "8000 Hz"),
}


def wav_header(rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(b"\0\0" * 160)
    return buf.getvalue()


def test_malformed_streams_beside_good_ones(rec, server, asr):
    """Each malformed stream ends with INVALID_ARGUMENT naming its problem, while two good streams running
    at the same time get exactly their own transcript."""
    good = [speech(3.0, seed=10), speech(2.5, seed=11)]
    stub = asr.stub

    def good_stream(audio):
        return finals(stream(asr, audio, with_latency(config())))

    def bad_stream(name):
        make, _ = BAD_STREAMS[name]
        try:
            list(stub.StreamingRecognize(iter(make(with_latency(config()), pcm16(good[0][:1600])))))
        except grpc.RpcError as e:
            return e.code(), e.details()
        return None

    with ThreadPoolExecutor(8) as pool:
        goods = [pool.submit(good_stream, a) for a in good]
        bads = {name: pool.submit(bad_stream, name) for name in BAD_STREAMS}
        for f, audio in zip(goods, good):
            assert f.result() == [expected_text(rec, audio, "en-US", 80)]
        for name, f in bads.items():
            code, details = f.result()
            assert code == grpc.StatusCode.INVALID_ARGUMENT and BAD_STREAMS[name][1] in details, (name, details)
    deadline = time.monotonic() + 5
    while (server.hub.engine.n_sessions or server.hub.live) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.hub.engine.n_sessions == 0 and not server.hub.live


def test_many_concurrent_streams(rec, asr):
    audios = [speech(1.5 + 0.1 * i, seed=20 + i) for i in range(8)]
    with ThreadPoolExecutor(len(audios)) as pool:
        got = list(pool.map(lambda a: finals(stream(asr, a, with_latency(config()))), audios))
    assert got == [[expected_text(rec, a, "en-US", 80)] for a in audios]


def test_a_full_engine_is_resource_exhausted_and_keys_are_required(rec):
    """max_sessions=1: a second stream gets RESOURCE_EXHAUSTED while the first is open; with keys, a call
    without `authorization: Bearer KEY` is UNAUTHENTICATED; health answers without a key."""
    server = start_server(rec, grpc_port=0, max_sessions=1, api_keys=("k1",))
    try:
        keyed = riva.client.ASRService(riva.client.Auth(uri=server.grpc_target,
                                                        metadata_args=[["authorization", "Bearer k1"]]))
        release = threading.Event()

        def held_open():
            yield from chunks(pcm16(speech(0.5, seed=30)))
            release.wait(20)

        first = ThreadPoolExecutor(1).submit(lambda: finals(stream_pieces(keyed, held_open(), with_latency(config()))))
        deadline = time.monotonic() + 10
        while server.hub.engine.n_sessions < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(grpc.RpcError) as full:
            stream(keyed, speech(0.5, seed=31), config())
        release.set()
        assert len(first.result(30)) == 1
        anonymous = riva.client.ASRService(riva.client.Auth(uri=server.grpc_target))
        with pytest.raises(grpc.RpcError) as no_key:
            stream(anonymous, speech(0.5, seed=31), config())
        with pytest.raises(grpc.RpcError) as offline_no_key:
            anonymous.offline_recognize(pcm16(speech(0.5, seed=31)), riva.client.RecognitionConfig())
        wrong = riva.client.ASRService(riva.client.Auth(uri=server.grpc_target,
                                                        metadata_args=[["authorization", "Bearer k2"]]))
        with pytest.raises(grpc.RpcError) as wrong_key:
            wrong.stub.GetRivaSpeechRecognitionConfig(rasr.RivaSpeechRecognitionConfigRequest(),
                                                      metadata=wrong.auth.get_auth_metadata())
        health = health_pb2_grpc.HealthStub(anonymous.auth.channel)
        statuses = [health.Check(health_pb2.HealthCheckRequest(service=s)).status
                    for s in ("", "nvidia.riva.asr.RivaSpeechRecognition")]
    finally:
        release.set()
        server.__exit__(None, None, None)
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 1" in full.value.details()
    for e in (no_key, offline_no_key):
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "missing API key" in e.value.details()
    assert wrong_key.value.code() == grpc.StatusCode.UNAUTHENTICATED and "invalid API key" in wrong_key.value.details()
    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 2


def test_get_config_lists_model_languages_and_latencies(rec, server, asr):
    response = asr.stub.GetRivaSpeechRecognitionConfig(rasr.RivaSpeechRecognitionConfigRequest())
    (model,) = response.model_config
    params = dict(model.parameters)
    assert model.model_name == "tiny" and params["latencies_ms"] == ",".join(map(str, rec.latencies_ms))
    assert "en-US" in params["language_code"].split(",") and params["streaming"] == "true"


def test_recognition_config_mapping(rec):
    """Field by field: endpointing_config and custom_configuration reach the stream settings; what cannot
    be honoured is refused naming the field."""
    cfg = config(language="multi")
    riva.client.add_endpoint_parameters_to_config(cfg, 0, 0.0, 320, 240, 0.5, 0.0)
    custom = "att_context_size:[28;6],lock_language:true,neural_vad.onset:0.6"
    riva.client.add_custom_configuration_to_config(cfg, custom)
    s = streaming_settings(cfg, rec)
    assert (s.stream.language, s.stream.endpoint_ms, s.stream.latency_ms, s.stream.lock_language) == \
        ("auto", 320, 560, True)
    assert s.ignored_keys == ("neural_vad.onset",) and s.stream.interim_results and s.encoding == "pcm_s16le"
    eou = config()
    riva.client.add_endpoint_parameters_to_config(eou, 0, 0.0, 0, 480, 0.0, 0.0)
    assert streaming_settings(eou, rec).stream.endpoint_ms == 480
    assert streaming_settings(config(), rec).stream.endpoint_ms is None  # the server's default
    assert recognize_settings(riva.client.RecognitionConfig(), rec).encoding == "file"
    refused = {
        "profanity_filter": riva.client.RecognitionConfig(profanity_filter=True),
        "att_context_size": riva.client.RecognitionConfig(custom_configuration={"att_context_size": "[10,6]"}),
        "audio_channel_count": riva.client.RecognitionConfig(audio_channel_count=99),
        "stop_threshold": riva.client.RecognitionConfig(endpointing_config=rasr.EndpointingConfig(stop_threshold=2)),
        "max_alternatives": riva.client.RecognitionConfig(max_alternatives=-1),
    }
    for field, c in refused.items():
        with pytest.raises(ApiError) as e:
            recognize_settings(c, rec)
        assert field in e.value.message and e.value.grpc_status == "INVALID_ARGUMENT", (field, e.value.message)


def test_punctuation_off_and_language_identification_on_the_demo_model(asr):
    """The demo model on samples/de-DE.wav through Recognize: language_code multi detects de-DE; with
    enable_automatic_punctuation off the model's punctuation is stripped from the transcript and words."""
    demo = start_server(babelcast.load_model(babelcast.DEFAULT_MODEL), grpc_port=0)
    try:
        client = riva.client.ASRService(riva.client.Auth(uri=demo.grpc_target))
        data = (SAMPLES / "de-DE.wav").read_bytes()
        on, off = (client.offline_recognize(data, riva.client.RecognitionConfig(
            language_code="multi", enable_automatic_punctuation=punctuation, enable_word_time_offsets=True))
            for punctuation in (True, False))
    finally:
        demo.__exit__(None, None, None)
    on_alt, off_alt = on.results[0].alternatives[0], off.results[0].alternatives[0]
    assert on_alt.transcript == "Nicht für die Schule, sondern für das Leben lernen wir."  # the README's
    assert off_alt.transcript == strip_punctuation(on_alt.transcript) == \
        "Nicht für die Schule sondern für das Leben lernen wir"
    assert list(on_alt.language_code) == ["de-DE"] and [w.word for w in off_alt.words] == off_alt.transcript.split()


def test_stream_command_as_a_riva_client(rec, server, tmp_path, capsys):
    """`babelcast stream --riva HOST:PORT`: the file in real time (x8) through StreamingRecognize, the final
    printed as with --url; an unknown language is the server's INVALID_ARGUMENT on one error line."""
    audio = speech(2.0, seed=7)
    wav = wav_file(tmp_path / "talk.wav", audio)
    common = ["stream", str(wav), "--riva", server.grpc_target, "--speed", "8", "--latency", "80", "--endpoint-ms", "0"]
    code = main(common + ["--lang", "en-US", "--boost", "ne su:3", "--boost", "lo:2"])
    out = capsys.readouterr().out
    bad = main(common + ["--lang", "xx-XX"])
    err = capsys.readouterr().err
    want = expected_text(rec, audio, "en-US", 80, boost=["ne su:3", "lo:2"])
    assert code == 0 and out.strip() == f"[en-US] {want}"
    assert bad == 1 and err.startswith("error: INVALID_ARGUMENT: ") and "xx-XX" in err, err
    assert len(err.splitlines()) == 1


def test_idle_stream_and_shutdown_end_with_their_status_after_the_final(rec):
    """A stream that stops sending gets the final of its audio so far, then DEADLINE_EXCEEDED; at shutdown an
    open stream gets its final, then UNAVAILABLE, and health says NOT_SERVING while the server drains."""
    server = start_server(rec, grpc_port=0, idle_timeout_s=1.0)
    asr = riva.client.ASRService(riva.client.Auth(uri=server.grpc_target))
    health = health_pb2_grpc.HealthStub(asr.auth.channel)
    audio, release = speech(1.5, seed=40), threading.Event()

    def held_open():
        yield from chunks(pcm16(audio))
        release.wait(30)

    def call():
        results = []
        try:
            for response in asr.streaming_response_generator(held_open(), with_latency(config())):
                results += response.results
        except grpc.RpcError as e:
            return results, e
        return results, None

    want = [expected_text(rec, audio, "en-US", 80)]
    try:
        idle, idle_error = call()
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call)
            deadline = time.monotonic() + 10
            # the second call's session has all its audio (the idle one may not have left hub.live yet)
            while not any(s.samples >= len(audio) and not s.closing for s in server.hub.live) \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
            server.hub.loop.call_soon_threadsafe(lambda: server.hub.loop.create_task(server.hub.drain(10)))
            time.sleep(0.2)
            draining = health.Check(health_pb2.HealthCheckRequest(service="")).status
            drained, drain_error = pending.result(30)
    finally:
        release.set()
        server.__exit__(None, None, None)
    assert finals(idle) == want and idle_error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no audio for 1 s" in idle_error.details()
    assert finals(drained) == want and drain_error.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in drain_error.details()
    assert draining == health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_voice_agent_client_config_works_unchanged(server, asr):
    """The config pipecat's NVIDIA STT service builds (its defaults: verbatim transcripts, an empty model
    name, one channel, stop_history 320 and -1 for the other endpointing values, a custom configuration for
    Riva's VAD that babelcast does not have) and its metadata (function-id beside the key): the finals are
    what /v1/listen gives with a 320 ms endpoint window."""
    audio = np.concatenate([speech(1.5, seed=41), np.zeros(8000, np.float32), speech(1.0, seed=42)])
    cfg = riva.client.StreamingRecognitionConfig(
        config=riva.client.RecognitionConfig(
            encoding=riva.client.AudioEncoding.LINEAR_PCM, language_code="en-US", model="", max_alternatives=1,
            profanity_filter=False, enable_automatic_punctuation=True, verbatim_transcripts=True,
            sample_rate_hertz=16000, audio_channel_count=1, enable_word_time_offsets=False),
        interim_results=True)
    riva.client.add_endpoint_parameters_to_config(cfg, -1, -1.0, 320, -1, -1.0, -1.0)
    riva.client.add_custom_configuration_to_config(cfg, "enable_vad_endpointing:true,neural_vad.onset:0.65")
    agent = riva.client.ASRService(riva.client.Auth(None, False, server.grpc_target,
                                                    [["function-id", "bb0837de"], ["authorization", "Bearer x"]]))
    events, _ = asyncio.run(stream_session(server.ws_url, audio, "language=en-US&endpoint_ms=320"))
    listen = [e["text"] for e in events if e["type"] == "final" and e["text"]]
    assert finals(stream(agent, audio, cfg)) == listen != []
