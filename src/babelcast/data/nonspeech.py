"""Audio without speech, whose transcript is empty: silence, noise, hum, tones, sweeps, clicks and
music-like note sequences, so that a model learns to say nothing when nobody speaks, and a check
(eval/nonspeech.py) can count what it says instead.

Every clip is a function of (kind, split, index, seed): the train and test splits draw from
different seeds, so no test clip is a training clip. Each clip gets one of the requested locales in
turn as its language (the prompt it is trained or checked with), an empty `text`, and a phoneme
timeline of one pause (train/phones.py: the frame-level head learns "no phoneme" on it).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio.io import SAMPLE_RATE_HZ
from .split import stable_hash, unit_interval
from .synth import colored_noise

KINDS = ("silence", "noise", "hum", "tone", "sweep", "clicks", "music")
DURATION_S = (0.5, 8.0)
_SCALE = (0, 2, 4, 5, 7, 9, 11)  # major scale, semitones


@dataclass(frozen=True)
class NonSpeechJob:
    """One clip to make (or find)."""

    kind: str
    split: str
    index: int
    seed: int
    duration_s: float
    locale: str
    relpath: str


def plan_nonspeech(locales: list[str], n: int, split: str, seed: int = 0, kinds: tuple[str, ...] = KINDS,
                   duration_s: float | None = None) -> list[NonSpeechJob]:
    """n clips, kinds in turn, locales in turn; duration drawn from DURATION_S unless given."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown non-speech kind {', '.join(unknown) or '(none)'}; use some of {', '.join(KINDS)}")
    if not locales:
        raise ValueError("non-speech clips need at least one locale (their prompt language)")
    jobs = []
    for i in range(n):
        kind, locale = kinds[i % len(kinds)], locales[i % len(locales)]
        length = duration_s or round(DURATION_S[0] + (DURATION_S[1] - DURATION_S[0])
                                     * unit_interval("duration", seed, split, i), 3)
        digest = f"{stable_hash(kind, split, i, seed, length):016x}"[:10]
        jobs.append(NonSpeechJob(kind, split, i, seed, length, locale,
                                 f"audio/nonspeech/{split}_{kind}_{i:06d}_{digest}.wav"))
    return jobs


def make_clip(job: NonSpeechJob) -> np.ndarray:
    """The samples of one clip (float32, 16 kHz, peak at most 0.9)."""
    rng = np.random.default_rng(stable_hash("nonspeech", job.kind, job.split, job.index, job.seed))
    n = max(1, int(job.duration_s * SAMPLE_RATE_HZ))
    t = np.arange(n) / SAMPLE_RATE_HZ
    audio = _GENERATORS[job.kind](n, t, rng)
    peak = float(np.abs(audio).max())
    level = 10 ** (-rng.uniform(1, 35) / 20)  # peak -1 to -35 dBFS
    return (audio / peak * level if peak > 0 else audio).astype(np.float32)


def _silence(n, t, rng) -> np.ndarray:
    """Digital silence, or a faint floor (-70 to -90 dB below the level) as a quiet room gives."""
    return np.zeros(n) if rng.random() < 0.5 else colored_noise(n, "white", rng) * 10 ** (-rng.uniform(3.5, 4.5))


def _noise(n, t, rng) -> np.ndarray:
    return colored_noise(n, str(rng.choice(["white", "pink", "brown"])), rng)


def _hum(n, t, rng) -> np.ndarray:
    """Mains hum: 50 or 60 Hz with harmonics, over a little noise."""
    base = rng.choice([50.0, 60.0])
    hum = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) for k in range(1, 6))
    return hum + 0.05 * colored_noise(n, "pink", rng)


def _tone(n, t, rng) -> np.ndarray:
    """One to three steady sine tones (a beep, a dial tone, a chord)."""
    return sum(np.sin(2 * np.pi * rng.uniform(100, 3000) * t) for _ in range(int(rng.integers(1, 4))))


def _sweep(n, t, rng) -> np.ndarray:
    """A sine gliding exponentially between two frequencies."""
    f0, f1 = rng.uniform(80, 4000, size=2)
    duration = max(t[-1], 1e-3)
    phase = 2 * np.pi * f0 * duration / np.log(f1 / f0) * ((f1 / f0) ** (t / duration) - 1)
    return np.sin(phase)


def _clicks(n, t, rng) -> np.ndarray:
    """Short decaying clicks at random times (typing, a ticking clock)."""
    out = np.zeros(n)
    decay = np.exp(-np.arange(int(0.01 * SAMPLE_RATE_HZ)) / (0.001 * SAMPLE_RATE_HZ))
    for start in rng.integers(0, n, size=max(1, int(n / SAMPLE_RATE_HZ * rng.uniform(2, 12)))):
        piece = decay[: n - start] * rng.standard_normal(min(len(decay), n - start))
        out[start:start + len(piece)] += piece
    return out


def _music(n, t, rng) -> np.ndarray:
    """Notes of a major scale with harmonics and a decaying envelope, sometimes two at once, sometimes
    over a soft drum of noise bursts: music-like sound without words."""
    out = np.zeros(n)
    root = 220 * 2 ** (rng.integers(-12, 12) / 12)
    beat = int(SAMPLE_RATE_HZ * 60 / rng.uniform(70, 180))
    voices = int(rng.integers(1, 3))
    for start in range(0, n, beat):
        for _ in range(voices):
            step = int(rng.choice(_SCALE)) + 12 * int(rng.integers(0, 2))
            freq = root * 2 ** (step / 12)
            length = min(n - start, beat * int(rng.integers(1, 3)))
            local = np.arange(length) / SAMPLE_RATE_HZ
            tone = sum(0.6 ** k * np.sin(2 * np.pi * freq * (k + 1) * local) for k in range(4))
            out[start:start + length] += tone * np.exp(-local * rng.uniform(2, 8)) * np.minimum(1, local * 200)
        if rng.random() < 0.4:
            burst = min(n - start, int(0.05 * SAMPLE_RATE_HZ))
            out[start:start + burst] += 0.5 * rng.standard_normal(burst) * np.exp(-np.arange(burst) / 200)
    return out


_GENERATORS = {"silence": _silence, "noise": _noise, "hum": _hum, "tone": _tone, "sweep": _sweep,
               "clicks": _clicks, "music": _music}


def write_nonspeech(jobs: list[NonSpeechJob], out_dir: Path, info: dict | None = None) -> Path:
    """Make the missing clips and write `out_dir/manifest.jsonl` (empty texts) and `synth_info.json`."""
    out_dir = Path(out_dir)
    records, made = [], 0
    for job in jobs:
        path = out_dir / job.relpath
        if not (path.is_file() and path.stat().st_size > 44):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent)
            os.close(fd)
            sf.write(tmp, make_clip(job), SAMPLE_RATE_HZ, subtype="PCM_16")
            os.replace(tmp, path)
            made += 1
        duration = sf.info(str(path)).duration
        records.append({"audio_filepath": job.relpath, "duration": round(duration, 4), "text": "",
                        "target_lang": job.locale, "lang": job.locale, "split": job.split,
                        "source": f"nonspeech:{job.kind}", "phones": [[round(1000 * duration), ""]]})
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    meta = {**(info or {}), "utterances": len(records), "made": made, "reused": len(records) - made,
            "hours": round(sum(r["duration"] for r in records) / 3600, 4)}
    (out_dir / "synth_info.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return manifest
