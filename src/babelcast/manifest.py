"""Read NeMo JSONL manifests: one JSON object per line describing one utterance.

Keys used: `audio_filepath` (required; relative paths are resolved against the
manifest's folder), `text`, `target_lang` or `lang`, `duration` and `offset`
(seconds; when given, only that span of the file is the utterance), and `phones`, the
[[start_ms, phoneme], …, [end_ms, ""]] timeline `babelcast data synth` writes (training aid).
Any other key with a string, number or boolean value (`voice`, `source`, `speaker`, …) is kept as
text in `extra`, so a report can be broken down by it (`babelcast eval --group-by voice`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from babelcast.audio.io import load_audio


class ManifestError(ValueError):
    """A manifest that cannot be read, naming the file, the line and the problem."""


@dataclass(frozen=True)
class ManifestEntry:
    """One utterance of a manifest; `line` is the 1-based line number it came from."""

    audio_path: Path
    text: str | None
    language: str | None
    duration_s: float | None
    offset_s: float
    line: int
    phones: tuple[tuple[int, str], ...] | None = None  # synthetic data only (data/phones.py)
    extra: tuple[tuple[str, str], ...] = ()  # the line's other scalar keys, as text, in the line's order

    def field(self, name: str) -> str | None:
        """The manifest line's value for `name` as text (e.g. 'voice'), None when the line has no such key."""
        return dict(self.extra).get(name)


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Parse every non-blank line of a NeMo manifest into a ManifestEntry."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read manifest ({e})") from e
    base_dir = path.parent
    return [
        _parse_line(text, path, base_dir, line_no)
        for line_no, text in enumerate(lines, start=1)
        if text.strip()
    ]


def load_entry_audio(entry: ManifestEntry) -> np.ndarray:
    """Load the entry's audio as float32 mono 16 kHz, only its span when offset/duration are set."""
    return load_audio(entry.audio_path, offset_s=entry.offset_s, duration_s=entry.duration_s)


def _parse_line(text: str, path: Path, base_dir: Path, line_no: int) -> ManifestEntry:
    """Turn one JSON line into an entry, with errors that point at the line."""
    where = f"{path}:{line_no}"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    audio = record.get("audio_filepath")
    if not isinstance(audio, str) or not audio:
        raise ManifestError(f"{where}: missing or empty 'audio_filepath'")
    audio_path = Path(audio).expanduser()
    if not audio_path.is_absolute():
        audio_path = base_dir / audio_path
    language = record.get("target_lang") or record.get("lang")
    return ManifestEntry(
        audio_path=audio_path,
        text=_optional_str(record, "text", where),
        language=str(language) if language else None,
        duration_s=_optional_seconds(record, "duration", where),
        offset_s=_optional_seconds(record, "offset", where) or 0.0,
        line=line_no,
        phones=_optional_timeline(record, where),
        extra=_extra_fields(record),
    )


EXTRA_SKIPPED = ("audio_filepath", "text", "target_lang", "lang", "duration", "offset", "phones")


def _extra_fields(record: dict) -> tuple[tuple[str, str], ...]:
    """The record's other scalar keys as (key, text) pairs; lists and objects are left out."""
    return tuple((key, _as_text(value)) for key, value in record.items()
                 if key not in EXTRA_SKIPPED and isinstance(value, (str, int, float, bool)))


def _as_text(value: str | int | float | bool) -> str:
    """JSON scalars as a manifest writer would read them: true/false for booleans, 3 not 3.0."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _optional_timeline(record: dict, where: str) -> tuple[tuple[int, str], ...] | None:
    """record['phones'] as ((start_ms, phoneme), …) ending with (end_ms, ""), None when absent."""
    value = record.get("phones")
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) >= 1 and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], int) and isinstance(p[1], str) for p in value)
    if not ok or any(a[0] > b[0] for a, b in zip(value, value[1:])) or value[-1][1] != "":
        raise ManifestError(f"{where}: 'phones' must be [[start_ms, phoneme], ..., [end_ms, \"\"]] in time order")
    return tuple((int(ms), name) for ms, name in value)


def _optional_str(record: dict, key: str, where: str) -> str | None:
    """Return record[key] as a string, None when absent."""
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return value


def _optional_seconds(record: dict, key: str, where: str) -> float | None:
    """Return record[key] as non-negative seconds, None when absent."""
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ManifestError(f"{where}: '{key}' must be a non-negative number of seconds, got {value!r}")
    return float(value)
