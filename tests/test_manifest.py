"""NeMo JSONL manifests: fields, path resolution, spans and line-numbered errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from babelcast.manifest import ManifestEntry, ManifestError, load_entry_audio, read_manifest


def write_manifest(path, *lines: dict | str) -> None:
    """Write dicts as JSON lines and strings verbatim."""
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")


def test_fields_and_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "test.jsonl"
    absolute = tmp_path / "elsewhere.wav"
    write_manifest(
        manifest,
        {"audio_filepath": "clips/a.wav", "duration": 1.5, "text": "hello", "target_lang": "en-US", "lang": "de-DE"},
        "",
        {"audio_filepath": str(absolute), "lang": "fr-FR", "offset": 2, "duration": 0.5},
        {"audio_filepath": "b.flac"},
    )

    entries = read_manifest(manifest)

    assert entries == [
        ManifestEntry(tmp_path / "data" / "clips" / "a.wav", "hello", "en-US", 1.5, 0.0, 1),
        ManifestEntry(absolute, None, "fr-FR", 0.5, 2.0, 3),
        ManifestEntry(tmp_path / "data" / "b.flac", None, None, None, 0.0, 4),
    ]
    with pytest.raises(AttributeError):  # frozen
        entries[0].text = "x"


def test_other_scalar_keys_are_kept_as_text(tmp_path):
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, {"audio_filepath": "a.wav", "text": "hi", "voice": "de+m3", "rate_wpm": 240,
                              "gain_db": 1.5, "round": 2.0, "clean": False, "tags": ["x"], "meta": {"k": 1},
                              "phones": [[0, "h"], [90, ""]]})
    (entry,) = read_manifest(manifest)
    assert entry.extra == (("voice", "de+m3"), ("rate_wpm", "240"), ("gain_db", "1.5"), ("round", "2"),
                           ("clean", "false"))  # lists, objects and the keys parsed above are left out
    assert entry.field("voice") == "de+m3" and entry.field("speaker") is None and entry.field("text") is None


def test_malformed_json_names_file_and_line(tmp_path):
    manifest = tmp_path / "bad.jsonl"
    write_manifest(manifest, {"audio_filepath": "a.wav"}, '{"audio_filepath": "b.wav",')
    with pytest.raises(ManifestError, match=r"bad\.jsonl:2: malformed JSON"):
        read_manifest(manifest)


def test_missing_audio_filepath_names_line(tmp_path):
    manifest = tmp_path / "m.json"
    write_manifest(manifest, {"audio_filepath": "a.wav"}, "", {"text": "no audio here"})
    with pytest.raises(ManifestError, match=r"m\.json:3: missing or empty 'audio_filepath'"):
        read_manifest(manifest)


@pytest.mark.parametrize(
    "line, message",
    [
        ('["a.wav"]', "expected a JSON object, got list"),
        ('{"audio_filepath": "a.wav", "duration": "long"}', "'duration' must be a non-negative number"),
        ('{"audio_filepath": "a.wav", "offset": -1}', "'offset' must be a non-negative number"),
        ('{"audio_filepath": "a.wav", "text": 3}', "'text' must be a string"),
        ('{"audio_filepath": 7}', "missing or empty 'audio_filepath'"),
        ('{"audio_filepath": "a.wav", "phones": [[0, "a"], [5, 1]]}', "'phones' must be"),
        ('{"audio_filepath": "a.wav", "phones": [[9, "a"], [5, ""]]}', "'phones' must be"),
        ('{"audio_filepath": "a.wav", "phones": [[0, "a"], [5, "b"]]}', "'phones' must be"),
    ],
)
def test_bad_values_name_line(tmp_path, line, message):
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, line)
    with pytest.raises(ManifestError, match=rf"m\.jsonl:1: {message}"):
        read_manifest(manifest)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match=r"gone\.jsonl: manifest not found"):
        read_manifest(tmp_path / "gone.jsonl")


def test_load_entry_audio_reads_only_the_span(tmp_path):
    ramp = np.arange(32000, dtype=np.float32) / 32000
    sf.write(tmp_path / "long.wav", ramp, 16000, subtype="FLOAT")
    write_manifest(tmp_path / "m.jsonl", {"audio_filepath": "long.wav", "offset": 0.5, "duration": 0.25})
    (entry,) = read_manifest(tmp_path / "m.jsonl")
    np.testing.assert_array_equal(load_entry_audio(entry), ramp[8000:12000])
