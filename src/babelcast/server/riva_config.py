"""Riva's `RecognitionConfig` → babelcast's stream settings, field by field (docs/server.md has the table).

Every field is honoured or refused by name (ApiError → INVALID_ARGUMENT), except those that change
nothing here and are documented as such (`verbatim_transcripts`: there is no inverse text normalization
either way; `model`: the server has one; endpointing thresholds: the engine's endpoint is a window of
blank frames after the model's end of sentence). `custom_configuration` keys that no part of babelcast
reads are ignored, as Riva ignores keys that no stage of its pipeline reads.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_audio_pb2 as raudio

from .. import chunking
from ..audio.io import MAX_CHANNELS, SAMPLE_RATE_HZ
from ..audio.raw import WavHeader
from .errors import ApiError
from .settings import MAX_RATE_HZ, MIN_RATE_HZ, StreamSettings, convert_setting, parse_boost

AUTO_CODES = ("", "auto", "multi")  # language_code values that ask for language identification
RAW = {raudio.LINEAR_PCM: "pcm_s16le", raudio.MULAW: "mulaw", raudio.ALAW: "alaw"}
FILES = (raudio.ENCODING_UNSPECIFIED, raudio.FLAC, raudio.OGGOPUS)  # Recognize: a file with its own header
CUSTOM_KEYS = ("latency_ms", "att_context_size", "stop_history", "stop_history_eou", "lock_language")


@dataclass(frozen=True)
class RivaSettings:
    """What one Riva request asks for, in babelcast's terms."""

    stream: StreamSettings  # language, latency, rate, interim results, endpointing, boost
    encoding: str  # pcm_s16le | mulaw | alaw (raw samples, a WAV header allowed first) | file (a whole file)
    channels: int = 1  # interleaved channels of raw samples (averaged)
    rate_given: bool = True  # sample_rate_hertz was set (else 16000, or a WAV header's)
    punctuation: bool = True  # enable_automatic_punctuation (off: punctuation is stripped from results)
    word_offsets: bool = False  # enable_word_time_offsets
    ignored_keys: tuple[str, ...] = ()  # custom_configuration keys nothing here reads


def streaming_settings(config: rasr.StreamingRecognitionConfig, rec) -> RivaSettings:
    """A StreamingRecognize's first message; ApiError naming the first field it cannot honour."""
    if not config.HasField("config"):
        raise ApiError("invalid_settings", "streaming_config.config (a RecognitionConfig) is missing",
                       "streaming_config.config")
    s = _settings(config.config, rec, streaming=True)
    return dataclasses.replace(s, stream=dataclasses.replace(s.stream, interim_results=config.interim_results))


def recognize_settings(config: rasr.RecognitionConfig, rec) -> RivaSettings:
    """A Recognize request's config (endpointing and interim results do not apply to a whole file)."""
    return _settings(config, rec, streaming=False)


def _settings(c: rasr.RecognitionConfig, rec, streaming: bool) -> RivaSettings:
    _refuse_unsupported(c)
    custom = dict(c.custom_configuration)
    endpoint_ms = _endpoint_ms(c, custom)  # checked for Recognize too, where it does not apply
    code = c.language_code.strip()
    stream = StreamSettings(
        language="auto" if code.lower() in AUTO_CODES else code,
        latency_ms=_latency_ms(custom, rec), sample_rate=_rate_hz(c.sample_rate_hertz), interim_results=False,
        endpoint_ms=endpoint_ms if streaming else 0,
        lock_language=convert_setting("lock_language", "custom_configuration.lock_language",
                                      custom.get("lock_language", False)),
        boost=_boost(c.speech_contexts))
    return RivaSettings(stream, _encoding(c.encoding, streaming), _channels(c.audio_channel_count),
                        rate_given=c.sample_rate_hertz != 0, punctuation=c.enable_automatic_punctuation,
                        word_offsets=c.enable_word_time_offsets,
                        ignored_keys=tuple(sorted(k for k in custom if k not in CUSTOM_KEYS)))


def header_rate_hz(s: RivaSettings, header: WavHeader | None) -> int:
    """The audio's rate: a WAV header's at its start (it must agree with sample_rate_hertz when that was
    set), else the config's."""
    if header is None or header.rate_hz == s.stream.sample_rate:
        return s.stream.sample_rate
    if s.rate_given:
        raise ApiError("invalid_audio", f"the WAV header says {header.rate_hz} Hz but sample_rate_hertz is "
                                        f"{s.stream.sample_rate}; send one rate", "config.sample_rate_hertz")
    return convert_setting("sample_rate", "the WAV header's sample rate", header.rate_hz)


def _refuse_unsupported(c: rasr.RecognitionConfig) -> None:
    """Features babelcast does not have are refused, not silently dropped."""
    if c.profanity_filter:
        raise ApiError("invalid_settings", "profanity_filter is not supported; send false", "config.profanity_filter")
    if c.HasField("diarization_config") and c.diarization_config.enable_speaker_diarization:
        raise ApiError("invalid_settings", "speaker diarization is not supported; send "
                                           "enable_speaker_diarization false", "config.diarization_config")
    if c.enable_separate_recognition_per_channel:
        raise ApiError("invalid_settings", "separate recognition per channel is not supported (channels are "
                                           "averaged); send false", "config.enable_separate_recognition_per_channel")
    if c.max_alternatives < 0:
        raise ApiError("invalid_settings", f"max_alternatives must be >= 0, got {c.max_alternatives} (one "
                                           "alternative is returned)", "config.max_alternatives")


def _encoding(encoding: int, streaming: bool) -> str:
    """Raw sample encodings stream; whole files (FLAC, Ogg Opus, or unspecified: any header'd file) are for
    Recognize."""
    name = raudio.AudioEncoding.Name(encoding) if encoding in raudio.AudioEncoding.values() else str(encoding)
    if encoding in RAW:
        return RAW[encoding]
    if encoding == raudio.ENCODING_UNSPECIFIED and streaming:
        return "pcm_s16le"  # a stream without an encoding: 16-bit PCM (or whatever its WAV header says)
    if encoding in FILES and not streaming:
        return "file"
    if encoding in FILES:
        raise ApiError("invalid_settings", f"encoding {name} is accepted by Recognize only (a whole file); "
                                           "StreamingRecognize takes LINEAR_PCM, MULAW or ALAW", "config.encoding")
    raise ApiError("invalid_settings", f"unknown encoding {name}; use LINEAR_PCM, MULAW or ALAW (or FLAC, OGGOPUS "
                                       "with Recognize)", "config.encoding")


def _rate_hz(rate: int) -> int:
    """sample_rate_hertz, 0 meaning 16000 (or the rate of a WAV header at the start of the audio)."""
    if rate == 0:
        return SAMPLE_RATE_HZ
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise ApiError("invalid_settings", f"unsupported sample_rate_hertz {rate}; send audio at "
                                           f"{MIN_RATE_HZ}-{MAX_RATE_HZ} Hz ({SAMPLE_RATE_HZ} avoids resampling)",
                       "config.sample_rate_hertz")
    return rate


def _channels(count: int) -> int:
    if count == 0:
        return 1
    if not 1 <= count <= MAX_CHANNELS:
        raise ApiError("invalid_settings", f"audio_channel_count must be 1-{MAX_CHANNELS}, got {count}",
                       "config.audio_channel_count")
    return count


def _latency_ms(custom: dict[str, str], rec) -> int | None:
    """custom_configuration latency_ms (ms), or att_context_size as NeMo writes it ([left,right] encoder
    frames: latency (right + 1) frames; ',' or ';' between the two, brackets optional, or right alone)."""
    if "latency_ms" in custom:
        return convert_setting("latency_ms", "custom_configuration.latency_ms", custom["latency_ms"])
    if "att_context_size" not in custom:
        return None
    raw = custom["att_context_size"]
    m = re.fullmatch(r"\[?\s*(?:(-?\d+)\s*[,;]\s*)?(\d+)\s*\]?", raw.strip())
    enc = rec.cfg.encoder
    left = enc.att_contexts[0][0]
    if m is None or (m.group(1) is not None and int(m.group(1)) != left):
        raise ApiError("invalid_latency", f"att_context_size {raw!r}: expected [{left},RIGHT] (this model's left "
                                          f"context is {left}) or latency_ms; latencies "
                                          f"{', '.join(map(str, rec.latencies_ms))} ms",
                       "custom_configuration.att_context_size")
    return chunking.latency_ms(int(m.group(2)), enc.subsampling_factor, rec.cfg.features.frame_ms)


def _endpoint_ms(c: rasr.RecognitionConfig, custom: dict[str, str]) -> int | None:
    """The engine's endpoint window (blank frames after the model's end of sentence), from
    endpointing_config's stop_history, else its stop_history_eou, else the same custom_configuration keys;
    None: the server's default. 0 disables endpointing."""
    e = c.endpointing_config if c.HasField("endpointing_config") else None
    if e is not None:
        _check_thresholds(e)
        for name in ("stop_history", "stop_history_eou"):
            if e.HasField(name):
                return convert_setting("endpoint_ms", f"config.endpointing_config.{name}", getattr(e, name))
    for name in ("stop_history", "stop_history_eou"):
        if name in custom:
            return convert_setting("endpoint_ms", f"custom_configuration.{name}", custom[name])
    return None


def _check_thresholds(e: rasr.EndpointingConfig) -> None:
    """Thresholds are fractions (0-1); the engine does not use them, but a wrong one is still a mistake."""
    for name in ("start_threshold", "stop_threshold", "stop_threshold_eou"):
        if e.HasField(name) and not 0.0 <= getattr(e, name) <= 1.0:
            raise ApiError("invalid_settings", f"endpointing_config.{name} must be 0.0-1.0, got {getattr(e, name):g}",
                           f"config.endpointing_config.{name}")
    if e.HasField("start_history") and e.start_history < 0:
        raise ApiError("invalid_settings", f"endpointing_config.start_history must be >= 0 ms, got {e.start_history}",
                       "config.endpointing_config.start_history")


def _boost(contexts) -> tuple[str, ...]:
    """speech_contexts → phrases PHRASE[:WEIGHT], the context's boost as the weight per token (0, unset: the
    search's default weight); a negative boost (suppressing a phrase) is refused."""
    phrases = []
    for context in contexts:
        if context.boost < 0:
            raise ApiError("invalid_settings", f"speech_contexts boost {context.boost:g}: negative boosts "
                                               "(suppressing phrases) are not supported", "config.speech_contexts")
        phrases += [f"{phrase}:{context.boost!r}" if context.boost > 0 else phrase for phrase in context.phrases]
    return parse_boost("config.speech_contexts", phrases) if phrases else ()
