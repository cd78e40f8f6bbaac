"""A local copy of FLEURS (google/fleurs) in its published layout → NeMo manifest entries.

The dataset repository holds, per language config (`en_us`, `de_de`, `cmn_hans_cn`, ...):

    data/<lang_code>/{train,dev,test}.tsv
    data/<lang_code>/audio/{train,dev,test}.tar.gz      # members: <split>/<file_name>.wav

With the archives extracted in place (`tar -xzf audio/test.tar.gz -C audio`), the audio is in
`<lang_code>/audio/<split>/*.wav`; an archive that is not extracted yet is extracted on first use.
The root may be the repository (holding `data/`) or `data/` itself.

Each tsv line (tab-separated, no header, no quoting) is
`id, file_name, raw_transcription, transcription, characters, num_samples, gender`;
`raw_transcription` (cased, punctuated) is used as the reference, since the model writes
punctuation and capitals; the 16 kHz sample count gives the duration.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..audio.io import SAMPLE_RATE_HZ

FLEURS_SPLITS = ("train", "dev", "test")
# FLEURS configs whose locale is not simply <language>-<REGION>.
_SPECIAL_LOCALES = {"cmn_hans_cn": "zh-CN", "yue_hant_hk": "yue-HK", "es_419": "es-419"}


class FleursError(ValueError):
    """A FLEURS copy that cannot be read as asked."""


@dataclass(frozen=True)
class FleursUtterance:
    """One FLEURS recording."""

    lang_code: str
    locale: str
    split: str
    fleurs_id: str  # the sentence id (shared by all readings of one sentence)
    audio_path: Path
    text: str  # raw_transcription
    normalized_text: str  # FLEURS's own lower-cased transcription
    duration_s: float
    gender: str


def fleurs_locale(lang_code: str) -> str:
    """FLEURS config name → BCP-47 style locale: de_de → de-DE, cmn_hans_cn → zh-CN."""
    code = lang_code.lower()
    if code in _SPECIAL_LOCALES:
        return _SPECIAL_LOCALES[code]
    parts = code.split("_")
    if len(parts) < 2:
        return code
    return f"{parts[0]}-{parts[-1].upper()}"


def data_root(root: str | Path) -> Path:
    """The folder holding the <lang_code> folders (the root itself or its `data/`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FleursError(f"{root}: FLEURS folder not found")
    if (root / "data").is_dir() and not _lang_dirs(root):
        return root / "data"
    return root


def available_languages(root: str | Path, split: str = "test") -> list[str]:
    """Language codes under the root that have `<split>.tsv`."""
    base = data_root(root)
    return sorted(d.name for d in _lang_dirs(base) if (d / f"{split}.tsv").is_file())


def read_fleurs(root: str | Path, split: str = "test", langs: list[str] | None = None,
                max_per_lang: int | None = None, extract: bool = True) -> list[FleursUtterance]:
    """Utterances of the split for the given language codes (all present if None), in tsv order.

    Rows whose audio file is missing are skipped with a warning on stderr.
    """
    if split not in FLEURS_SPLITS:
        raise FleursError(f"unknown FLEURS split {split!r}; use one of {', '.join(FLEURS_SPLITS)}")
    base = data_root(root)
    codes = langs or available_languages(base, split)
    if not codes:
        raise FleursError(f"{base}: no <lang_code>/{split}.tsv found (expected the published FLEURS layout)")
    out: list[FleursUtterance] = []
    for code in codes:
        lang_dir = base / code
        tsv = lang_dir / f"{split}.tsv"
        if not tsv.is_file():
            raise FleursError(f"{tsv}: not found")
        audio_dir = lang_dir / "audio" / split
        if not audio_dir.is_dir() and extract:
            _extract(lang_dir / "audio" / f"{split}.tar.gz", lang_dir / "audio")
        rows = _read_tsv(tsv)
        missing = 0
        count = 0
        for line_no, row in rows:
            if max_per_lang is not None and count >= max_per_lang:
                break
            if len(row) < 7:
                raise FleursError(f"{tsv}:{line_no}: expected 7 tab-separated fields, got {len(row)}")
            fleurs_id, file_name, raw, normalized = row[0], row[1], row[2], row[3]
            num_samples, gender = row[-2], row[-1]
            path = audio_dir / file_name
            if not path.is_file():
                missing += 1
                continue
            try:
                duration_s = int(num_samples) / SAMPLE_RATE_HZ
            except ValueError:
                raise FleursError(f"{tsv}:{line_no}: num_samples {num_samples!r} is not an integer") from None
            out.append(FleursUtterance(code, fleurs_locale(code), split, fleurs_id, path, raw.strip(),
                                       normalized.strip(), round(duration_s, 4), gender))
            count += 1
        if missing:
            print(f"warning: {code}/{split}: {missing} audio files listed in {tsv.name} are missing from {audio_dir}",
                  file=sys.stderr)
    return out


def write_fleurs_manifest(utterances: list[FleursUtterance], manifest: str | Path) -> Path:
    """A NeMo manifest of the utterances; audio paths relative to the manifest's folder when possible."""
    manifest = Path(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("w", encoding="utf-8") as f:
        for u in utterances:
            record = {
                "audio_filepath": _relative(u.audio_path, manifest.parent),
                "duration": u.duration_s,
                "text": u.text,
                "target_lang": u.locale,
                "lang": u.locale,
                "fleurs_id": u.fleurs_id,
                "fleurs_lang": u.lang_code,
                "split": u.split,
                "gender": u.gender,
                "text_normalized": u.normalized_text,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return manifest


def _read_tsv(path: Path) -> list[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [(i, row) for i, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1)
                if row]


def _lang_dirs(base: Path) -> list[Path]:
    return [d for d in base.iterdir() if d.is_dir() and any((d / f"{s}.tsv").is_file() for s in FLEURS_SPLITS)]


def _extract(archive: Path, dest: Path) -> None:
    """Extract the wav members of a FLEURS audio archive into dest (members are <split>/<name>.wav)."""
    if not archive.is_file():
        return
    print(f"extracting {archive} ...", file=sys.stderr)
    with tarfile.open(archive, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".wav")]
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **kwargs)


def _relative(path: Path, folder: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())
