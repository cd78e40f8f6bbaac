"""Stream settings of a live session: parsed from a query string or a JSON message, validated, named."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..audio.io import PCM_ENCODINGS, SAMPLE_RATE_HZ
from ..decoding.boost import parse_phrases
from .errors import ApiError

MIN_RATE_HZ, MAX_RATE_HZ = 8000, 96000

# setting -> accepted spellings (query string and JSON alike)
ALIASES = {
    "language": ("language", "lang"),
    "latency_ms": ("latency_ms", "latency"),
    "sample_rate": ("sample_rate", "sample_rate_hz", "rate"),
    "encoding": ("encoding",),
    "interim_results": ("interim_results", "interim"),
    "endpoint_ms": ("endpoint_ms", "endpointing"),
    "keep_lang_tags": ("keep_lang_tags",),
    "lock_language": ("lock_language",),
    "decoder": ("decoder",),
    "boost": ("boost", "keyterm"),  # keyterm: Deepgram's name; repeatable in a query string, a list in JSON
    "beam": ("beam",),
}
_BY_SPELLING = {spelling: name for name, spellings in ALIASES.items() for spelling in spellings}
# allowed beside the settings, not part of them (`model` picks the model when connecting: server/fleet.py)
NOT_SETTINGS = {"api_key", "access_token", "type", "model"}


@dataclass(frozen=True)
class StreamSettings:
    language: str = "auto"
    latency_ms: int | None = None  # None: the model's first trained latency
    sample_rate: int = SAMPLE_RATE_HZ
    encoding: str = "pcm_s16le"
    interim_results: bool = True
    endpoint_ms: int | None = None  # None: the server's default; 0 disables endpointing
    keep_lang_tags: bool = False
    lock_language: bool = False  # with auto: the first detected language becomes the prompt
    decoder: str = "rnnt"  # "ctc": the CTC head of a hybrid checkpoint
    boost: tuple[str, ...] = ()  # phrases PHRASE[:WEIGHT] to favour
    beam: bool | None = None  # RNNT beam search at the server's width (None: when boosting); false: greedy

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def only_language_differs(self, other: "StreamSettings") -> bool:
        """Every setting but the language (and its lock) equal: a change a live stream takes mid-utterance."""
        return dataclasses.replace(other, language=self.language, lock_language=self.lock_language) == self


def parse_settings(values: Mapping[str, Any], base: StreamSettings = StreamSettings()) -> StreamSettings:
    """Overlay `values` (strings from a query string, or JSON values) on `base`; ApiError names the
    first unknown key or bad value. Boost phrases given several times (boost, keyterm) add up."""
    changes: dict[str, Any] = {}
    pairs = values.multi_items() if hasattr(values, "multi_items") else values.items()  # a query string repeats
    for key, raw in pairs:
        if key in NOT_SETTINGS:
            continue
        name = _BY_SPELLING.get(key)
        if name is None:
            known = ", ".join(ALIASES)
            raise ApiError("invalid_settings", f"unknown setting {key!r}; settings are: {known}", key)
        value = convert_setting(name, key, raw)
        changes[name] = changes.get(name, ()) + value if name == "boost" else value
    if "boost" in changes:
        changes["boost"] = parse_boost("boost", changes["boost"])
    return dataclasses.replace(base, **changes)


def parse_boost(key: str, raw: Any) -> tuple[str, ...]:
    """A phrase or a list of phrases PHRASE[:WEIGHT], checked (ApiError naming an empty phrase, a bad
    weight or too many)."""
    phrases = (raw,) if isinstance(raw, str) else raw
    if not isinstance(phrases, (list, tuple)) or not all(isinstance(p, str) for p in phrases):
        raise ApiError("invalid_settings", f"{key} must be a phrase or a list of phrases PHRASE[:WEIGHT]", key)
    try:
        parse_phrases(phrases)
    except ValueError as e:
        raise ApiError("invalid_settings", str(e), key) from None
    return tuple(phrases)


def convert_setting(name: str, key: str, raw: Any) -> Any:
    """One setting's value from a string or JSON value (ApiError invalid_settings naming `key`)."""
    if name == "language":
        if not isinstance(raw, str) or not raw.strip():
            raise ApiError("invalid_settings", f"{key} must be a locale such as en-US, or auto; got {raw!r}", key)
        return raw.strip()
    if name == "encoding":
        if raw not in PCM_ENCODINGS:
            raise ApiError("invalid_settings",
                           f"unsupported encoding {raw!r}; use one of {', '.join(PCM_ENCODINGS)}", key)
        return raw
    if name == "decoder":  # the model says which it has (Live._options: unsupported_decoder)
        if not isinstance(raw, str):
            raise ApiError("invalid_settings", f"{key} must be rnnt or ctc; got {raw!r}", key)
        return raw
    if name == "boost":
        return parse_boost(key, raw)
    if name in ("interim_results", "keep_lang_tags", "lock_language", "beam"):
        return _bool(key, raw)
    if name == "endpoint_ms":
        if raw is False or (isinstance(raw, str) and raw.lower() in ("false", "off", "none")):
            return 0
        value = _int(key, raw)
        if value < 0:
            raise ApiError("invalid_settings", f"{key} must be >= 0 ms (0 disables endpointing), got {value}", key)
        return value
    if name == "latency_ms":
        if raw is None or raw == "":
            return None
        return _int(key, raw)
    if name == "sample_rate":
        value = _int(key, raw)
        if not MIN_RATE_HZ <= value <= MAX_RATE_HZ:
            raise ApiError("invalid_settings", f"unsupported sample rate {value} Hz; send audio at {MIN_RATE_HZ}-"
                                               f"{MAX_RATE_HZ} Hz ({SAMPLE_RATE_HZ} avoids resampling)", key)
        return value
    raise AssertionError(name)


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.lower() in ("false", "0", "no", "off"):
        return False
    raise ApiError("invalid_settings", f"{key} must be true or false, got {raw!r}", key)


def _int(key: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ApiError("invalid_settings", f"{key} must be an integer, got {raw!r}", key)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    raise ApiError("invalid_settings", f"{key} must be an integer, got {raw!r}", key)
