"""A small (or training-size) multilingual speech set made with espeak-ng and sox.

For each locale, the sentences of the requested split (see `split.py`) are put in a seeded
order and utterance i reads sentence i (cycling when more utterances than sentences are asked
for, each repeat with another voice and prosody). Each utterance gets one of the split's voice
variants (round-robin over K of them), a speaking rate and pitch drawn from a per-utterance seed,
a short silence before and after, and, with `augment`, reverberation, band-limiting and gain
(sox) and additive coloured noise at a random SNR. Output: 16 kHz mono 16-bit wav files under
`<out>/audio/<locale>/`, a NeMo manifest `<out>/manifest.jsonl` and `<out>/synth_info.json`.

Everything is a function of (locale, split, index, seed, augment): file names carry a hash of
the utterance's parameters, so a rerun, or a larger --n, reuses the files already made.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio.io import SAMPLE_RATE_HZ
from .phones import phone_timeline
from .split import sentence_key, sentence_split, stable_hash, unit_interval
from .text_sources import CORPORA, SOURCES, TRAIN_CORPORA, Sentence, load_sentences, missing_package, training_keys
from .voices import (BASE_RATE_WPM, ENGINE_SHARE, OWN_PROSODY_ENGINES, Speakers, draw_interval, engine_installed,
                     engine_of, language_of, pool_speakers)

FESTIVAL_ENCODINGS = {"cs": "iso-8859-2"}  # the text Festival's voices read; the others ISO-8859-1
SYNTH_SPLITS = ("train", "test", "voices")  # voices: test sentences spoken by held-out voices (voices.py)


class SynthError(RuntimeError):
    """A problem that stops the whole synthesis (missing tool, package or locale)."""


@dataclass(frozen=True)
class Augment:
    """Degradations of one training utterance (all optional)."""

    reverb: tuple[int, int, int] | None = None  # sox reverb: reverberance %, HF damping %, room scale %
    bandpass: tuple[int, int] | None = None  # sox sinc band, Hz (telephone-like)
    noise: str | None = None  # "white" | "pink" | "brown"
    snr_db: float | None = None
    gain_db: float = -3.0  # peak level after normalization, dBFS


@dataclass(frozen=True)
class SynthJob:
    """Everything needed to make (or find) one utterance."""

    locale: str
    split: str
    index: int
    text: str
    source: str
    voice: str  # espeak-ng voice, e.g. "de", or an MBROLA voice, e.g. "mb-de1"
    variant: str  # espeak-ng variant, e.g. "m3"; "" for MBROLA voices
    rate_wpm: int
    pitch: int
    lead_s: float
    tail_s: float
    augment: Augment | None
    relpath: str  # audio path relative to the output folder
    seed: int

    @property
    def espeak_voice(self) -> str:
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


@dataclass
class SynthReport:
    """What a run made: manifest path, counts, timing and the failures."""

    manifest: Path
    records: list[dict]
    made: int = 0
    reused: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    synth_seconds: float = 0.0  # summed per-utterance synthesis time of the files made


def check_tools() -> None:
    """Raise SynthError naming what to install when espeak-ng or sox is missing."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise SynthError(f"{' and '.join(missing)} not found; install with: apt-get install -y espeak-ng sox")


def installed_variants() -> set[str]:
    """Variant names present in the espeak-ng data folder."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    return {line.split()[4].split("/", 1)[-1] for line in out.splitlines()[1:] if len(line.split()) >= 5}


def plan(locales: list[str], n: int | None, split: str, seed: int = 0, voices: int | None = None,
         augment: bool = False, own: dict[str, list[str]] | None = None, texts: tuple[str, ...] = ("fortunes",),
         wide: bool = False, mbrola: bool = False, festival: bool = False, flite: bool = False,
         engine_share: float = ENGINE_SHARE) -> list[SynthJob]:
    """The utterances to make: n per locale, deterministic in (locale, split, index, seed, augment);
    `own` sentences per locale (see read_sentences) are read in their order instead of the corpora
    `texts` (n=None: each once). Voices: voices.py's pools, `wide` (train split) or `held-out` (split
    `voices`), with `mbrola` / `festival` / `flite` also the pool's voices of that engine that are installed
    (that share of the utterances); else the first demo model's."""
    if not 0 <= engine_share <= 1:
        raise SynthError(f"--engine-share {engine_share}: a share from 0 to 1")
    pool = _pool(split, texts, wide)
    for locale in locales:
        if locale not in SOURCES:
            raise SynthError(f"unknown locale {locale!r}; available: {', '.join(SOURCES)}")
        for corpus in () if own else texts:
            package = _missing(locale, corpus)
            if package:
                raise SynthError(f"the {corpus} texts for {locale} are missing; install with: "
                                 f"apt-get install -y {package}")
    present = installed_variants()
    jobs: list[SynthJob] = []
    for locale in locales:
        speakers = pool_speakers(pool, "test" if split == "voices" else split, SOURCES[locale].voice, present, mbrola,
                                 festival, flite)
        if not speakers.variants:
            raise SynthError(f"no espeak-ng voice variant of the {split} split is installed")
        installed = tuple(v for v in speakers.engines if engine_installed(v))  # "where they install"
        speakers = Speakers(speakers.espeak, speakers.variants, installed, speakers.prosody)
        if own:
            sentences = [Sentence(t, "own") for t in own.get(locale, [])]
        else:
            sentences = _split_sentences(locale, split, seed, texts)
        if not sentences:
            raise SynthError(f"no {split} sentence for {locale}")
        chosen = sorted(speakers.variants, key=lambda v: stable_hash("voice", seed, locale, v))[: voices or None]
        speakers = Speakers(speakers.espeak, tuple(chosen), speakers.engines, speakers.prosody)
        for i in range(n or len(sentences)):
            jobs.append(_job(locale, split, i, sentences[i % len(sentences)], speakers, seed, augment, engine_share))
    return jobs


def _pool(split: str, texts: tuple[str, ...], wide: bool) -> str:
    """The voice pool of a request (voices.POOLS), or SynthError for a combination that would mix splits."""
    if split not in SYNTH_SPLITS:
        raise SynthError(f"unknown split {split!r}; use one of {', '.join(SYNTH_SPLITS)}")
    unknown = [t for t in texts if t not in CORPORA]
    if unknown or not texts:
        raise SynthError(f"unknown text corpus {', '.join(unknown) or '(none)'}; use some of {', '.join(CORPORA)}")
    if "manpages" in texts and (split == "train" or len(texts) > 1):
        raise SynthError("man pages are kept for the out-of-domain test set: use --texts manpages alone, with "
                         f"--split test or voices; train on {','.join(TRAIN_CORPORA)}")
    if wide and split != "train":
        raise SynthError("--wide is the training voice pool; the test split keeps the test voices, and --split "
                         "voices uses the held-out ones")
    return "held-out" if split == "voices" else "wide" if wide else "main"


def _missing(locale: str, corpus: str) -> str | None:
    try:
        return missing_package(locale, corpus)
    except ValueError as e:
        raise SynthError(str(e)) from None


def _split_sentences(locale: str, split: str, seed: int, texts: tuple[str, ...] = ("fortunes",)) -> list[Sentence]:
    """The sentences of one split in a seeded order: the training corpora's by sentence hash, or (man
    pages, the out-of-domain set) every man-page sentence that no training corpus has."""
    if texts == ("manpages",):
        seen = training_keys(locale)
        sentences = [s for s in load_sentences(locale, "manpages") if sentence_key(s.text) not in seen]
    else:
        side = "train" if split == "train" else "test"
        sentences = [s for corpus in texts for s in load_sentences(locale, corpus) if sentence_split(s.text) == side]
        if len(texts) > 1:  # the same sentence in two corpora is read once
            sentences = list({sentence_key(s.text): s for s in reversed(sentences)}.values())[::-1]
    return sorted(sentences, key=lambda s: stable_hash("order", seed, locale, split, s.text))


def read_sentences(path: Path) -> dict[str, list[str]]:
    """A file of LOCALE<TAB>SENTENCE lines → sentences per locale in file order (SynthError naming a bad line)."""
    own: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        locale, tab, text = line.partition("\t")
        if not tab or not text.strip():
            raise SynthError(f"{path}:{number}: expected LOCALE<TAB>SENTENCE")
        own.setdefault(locale.strip(), []).append(text.strip())
    return own


def synthesize(jobs: list[SynthJob], out_dir: Path, processes: int | None = None, progress: bool = False,
               info: dict | None = None) -> SynthReport:
    """Make the missing files with a process pool, then write the manifest (in plan order) and info."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = SynthReport(manifest=out_dir / "manifest.jsonl", records=[])
    results: list[tuple[dict | None, str | None, float]] = [None] * len(jobs)  # type: ignore[list-item]
    processes = max(1, processes or os.cpu_count() or 1)
    tasks = [(job, str(out_dir)) for job in jobs]
    with tqdm(total=len(jobs), unit="utt", disable=not progress, desc="synth") as bar:
        if processes == 1 or len(jobs) < 4:
            iterator = map(_run_job, tasks)
            for i, result in enumerate(iterator):
                results[i] = result
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=processes) as pool:
                for i, result in enumerate(pool.map(_run_job, tasks, chunksize=8)):
                    results[i] = result
                    bar.update(1)
    for job, (record, error, seconds) in zip(jobs, results):
        if error:
            report.failures.append(f"{job.relpath}: {error}")
            continue
        report.records.append(record)
        if seconds > 0:
            report.made += 1
            report.synth_seconds += seconds
        else:
            report.reused += 1
    _write_jsonl(report.manifest, report.records)
    report.seconds = time.perf_counter() - start
    meta = dict(info or {})
    meta.update(
        utterances=len(report.records), made=report.made, reused=report.reused, failures=report.failures,
        seconds=round(report.seconds, 3), processes=processes,
        synth_seconds_per_utterance=round(report.synth_seconds / report.made, 4) if report.made else None,
        espeak_ng=_tool_version(["espeak-ng", "--version"]), sox=_tool_version(["sox", "--version"]),
        platform=platform.platform(),
    )
    (out_dir / "synth_info.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return report


def synth_audio(job: SynthJob) -> np.ndarray:
    """Run espeak-ng (or Festival, or flite) and sox for one job; float32 mono 16 kHz samples."""
    speech = {"festival": festival_speech, "flite": flite_speech}.get(engine_of(job.voice), espeak_speech)
    wav = speech(job)
    effects = ["remix", "-"]
    aug = job.augment
    if aug and aug.bandpass:
        effects += ["sinc", f"{aug.bandpass[0]}-{aug.bandpass[1]}"]
    effects += ["rate", "-h", str(SAMPLE_RATE_HZ), "pad", f"{job.lead_s:.3f}", f"{job.tail_s:.3f}"]
    if aug and aug.reverb:
        effects += ["reverb", *map(str, aug.reverb)]
    effects += ["channels", "1", "gain", "-n", f"{aug.gain_db if aug else -3.0:.1f}"]
    sox = ["sox", "-q", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32", "-"] + effects
    converted = subprocess.run(sox, input=wav, capture_output=True, check=False)
    if converted.returncode != 0:
        raise RuntimeError(f"sox failed: {converted.stderr.decode(errors='replace').strip()}")
    audio = np.frombuffer(converted.stdout, dtype="<f4").astype(np.float32)
    if aug and aug.noise:
        audio = add_noise(audio, aug.noise, aug.snr_db or 20.0, stable_hash("noise", job.seed, job.relpath))
    return audio


def espeak_speech(job: SynthJob) -> bytes:
    """The job's text spoken by espeak-ng (or an MBROLA voice through it): WAV bytes."""
    espeak = ["espeak-ng", "-b", "1", "-v", job.espeak_voice, "-s", str(job.rate_wpm), "-p", str(job.pitch),
              "--stdin", "--stdout"]
    speech = subprocess.run(espeak, input=job.text.encode("utf-8"), capture_output=True, check=False)
    if speech.returncode != 0 or len(speech.stdout) <= 44:
        raise RuntimeError(f"espeak-ng failed: {speech.stderr.decode(errors='replace').strip() or 'no audio'}")
    return speech.stdout


FESTIVAL_QUOTES = str.maketrans({"«": '"', "»": '"', "“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})


def festival_text(text: str, encoding: str) -> str:
    """What a Festival (or flite) voice reads: 8-bit text in `encoding` (ISO-8859-2 for Festival's Czech voices,
    ISO-8859-1 for its others, ASCII for flite's) of letters, digits and ASCII punctuation; typographic quotes
    become ASCII ones, anything else not ASCII and not a letter or digit a space. The Italian voices'
    letter-to-sound rules stop at a word with a « or “ attached ("no rule matches"), and a character the
    encoding lacks cannot be sent at all."""
    text = text.translate(FESTIVAL_QUOTES)
    return "".join(c if c.isascii() or (c.isalnum() and c.encode(encoding, errors="ignore")) else " " for c in text)


def festival_speech(job: SynthJob) -> bytes:
    """The job's text spoken by a Festival voice at the job's rate (its own pitch): WAV bytes."""
    encoding = FESTIVAL_ENCODINGS.get(language_of(job.voice), "iso-8859-1")
    text = festival_text(job.text, encoding)
    stretch = BASE_RATE_WPM / job.rate_wpm  # Festival stretches durations: > 1 is slower
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        command = ["text2wave", "-o", str(out), "-eval", f"(voice_{job.voice.removeprefix('fest-')})",
                   "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.3f})"]
        run = subprocess.run(command, input=text.encode(encoding), capture_output=True, check=False, timeout=120)
        if run.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
            raise RuntimeError(f"festival failed: {run.stderr.decode(errors='replace').strip() or 'no audio'}")
        return out.read_bytes()


def flite_speech(job: SynthJob) -> bytes:
    """The job's text spoken by a flite voice at the job's rate (its own pitch): WAV bytes. The text goes in a
    file: flite reads a `-t` argument beginning with "-" as an option."""
    with tempfile.TemporaryDirectory() as tmp:
        text, out = Path(tmp) / "text.txt", Path(tmp) / "speech.wav"
        plain = "".join(c for c in unicodedata.normalize("NFKD", job.text) if not unicodedata.combining(c))  # é → e
        text.write_text(festival_text(plain, "ascii"), encoding="ascii")
        stretch = BASE_RATE_WPM / job.rate_wpm  # > 1 is slower, as Festival's
        command = ["flite", "-voice", job.voice.removeprefix("flite-"), "-f", str(text), "-o", str(out),
                   "--setf", f"duration_stretch={stretch:.3f}"]
        run = subprocess.run(command, capture_output=True, check=False, timeout=120)
        if run.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
            raise RuntimeError(f"flite failed: {run.stderr.decode(errors='replace').strip() or 'no audio'}")
        return out.read_bytes()


def add_noise(audio: np.ndarray, color: str, snr_db: float, seed: int) -> np.ndarray:
    """Mix white, pink or brown noise at `snr_db` below the speech power (active frames), peak-limited."""
    n = len(audio)
    noise = colored_noise(n, color, np.random.default_rng(seed))
    frames = audio[: n // 160 * 160].reshape(-1, 160)
    power = (frames**2).mean(axis=1) if len(frames) else np.array([0.0])
    active = power[power > 0.01 * power.max()] if power.max() > 0 else power
    speech_power = float(active.mean()) if len(active) else 0.0
    noise_power = float((noise**2).mean()) or 1.0
    mixed = audio + noise * np.sqrt(speech_power / noise_power / 10 ** (snr_db / 10))
    peak = float(np.abs(mixed).max()) if n else 0.0
    return (mixed / peak * 0.95 if peak > 0.95 else mixed).astype(np.float32)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """n samples of white, pink (1/f power) or brown (1/f²) noise, unscaled."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[color]
    if exponent:
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ)
        freqs[0] = freqs[1] if n > 1 else 1.0
        spectrum = spectrum / np.maximum(freqs, 20.0) ** exponent
    return np.fft.irfft(spectrum, n)


# ---------------------------------------------------------------- internals


def _job(locale: str, split: str, index: int, sentence, speakers: Speakers, seed: int, augment: bool,
         engine_share: float = ENGINE_SHARE) -> SynthJob:
    """Draw the voice, prosody, padding and augmentation of one utterance."""
    def u(name: str) -> float:
        return unit_interval(name, seed, locale, split, index)

    def draw(name: str, low: float, high: float) -> float:
        return low + (high - low) * u(name)

    prosody = speakers.prosody
    if speakers.engines and u("engine") < engine_share:
        # the salt is from when MBROLA was the only other engine: MBROLA-only plans stay file for file the same
        voice = speakers.engines[(index + stable_hash("mbrola", seed, locale)) % len(speakers.engines)]
        variant = ""
    else:
        accents = speakers.espeak
        voice = accents[int(u("accent") * len(accents))] if len(accents) > 1 else accents[0]  # one: no draw
        variant = speakers.variants[(index + stable_hash("offset", seed, locale)) % len(speakers.variants)]
    aug = _augment(u) if augment else None
    no_lead = prosody.no_lead_share > 0 and u("no-lead?") < prosody.no_lead_share
    params = dict(
        text=sentence.text, voice=voice, variant=variant,
        rate_wpm=int(round(BASE_RATE_WPM * draw_interval(prosody.rate, u("rate")))),
        pitch=int(round(draw_interval(prosody.pitch, u("pitch")))),
        lead_s=0.0 if no_lead else round(draw("lead", *prosody.lead_s), 3),
        tail_s=round(draw("tail", *prosody.tail_s), 3),
    )
    digest = f"{stable_hash(json.dumps(params, ensure_ascii=False), aug):016x}"[:10]
    relpath = f"audio/{locale}/{split}_{locale}_{index:06d}_{digest}.wav"
    return SynthJob(locale=locale, split=split, index=index, source=sentence.source, augment=aug,
                    relpath=relpath, seed=seed, **params)


def _augment(u) -> Augment:
    """Random degradations; `u(name)` is a uniform draw in [0, 1) named for this utterance."""
    reverb = None
    if u("reverb?") < 0.5:
        reverb = (int(10 + 60 * u("reverberance")), int(20 + 60 * u("damping")), int(20 + 80 * u("room")))
    bandpass = (300, 3400) if u("bandpass?") < 0.1 else None
    noise, snr = None, None
    if u("noise?") < 0.8:
        noise = ("white", "pink", "brown")[int(3 * u("color"))]
        snr = round(5 + 25 * u("snr"), 1)
    return Augment(reverb=reverb, bandpass=bandpass, noise=noise, snr_db=snr, gain_db=round(-1 - 11 * u("gain"), 1))


def _run_job(task: tuple[SynthJob, str]) -> tuple[dict | None, str | None, float]:
    """Make one file unless it exists; (manifest record, error, seconds spent synthesizing)."""
    job, out_dir = task
    path = Path(out_dir) / job.relpath
    seconds = 0.0
    try:
        if not (path.is_file() and path.stat().st_size > 44):
            start = time.perf_counter()
            audio = synth_audio(job)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent)
            os.close(fd)
            try:
                sf.write(tmp, audio, SAMPLE_RATE_HZ, subtype="PCM_16")
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            seconds = time.perf_counter() - start
        duration = sf.info(str(path)).duration
        phones = None if engine_of(job.voice) in OWN_PROSODY_ENGINES else phone_timeline(
            job.text, job.espeak_voice, job.rate_wpm, job.pitch, round(1000 * job.lead_s))
    except (OSError, RuntimeError, sf.LibsndfileError) as e:
        return None, str(e), 0.0
    return _record(job, duration, phones), None, seconds


def _record(job: SynthJob, duration_s: float, phones: list[list] | None) -> dict:
    """The NeMo manifest line of one utterance (Festival's and flite's have no pitch, they keep their own, and no
    phones)."""
    engine = engine_of(job.voice)
    record = {
        "audio_filepath": job.relpath,
        "duration": round(duration_s, 4),
        "text": job.text,
        "target_lang": job.locale,
        "lang": job.locale,
        "split": job.split,
        "voice": job.espeak_voice,
        "accent": job.voice,  # the espeak-ng (MBROLA, Festival, flite) voice alone, for eval --group-by accent
        "variant": job.variant or job.voice,  # the speaker: the espeak-ng variant, or the other engine's voice
        "engine": engine,
        "rate_wpm": job.rate_wpm,
        "pitch": None if engine in OWN_PROSODY_ENGINES else job.pitch,
        "source": job.source,
    }
    if phones is not None:
        record["phones"] = phones  # [[start_ms, IPA phoneme or "" for a pause], …, [end_ms, ""]] (phones.py)
    if job.augment:
        record["augment"] = {k: v for k, v in asdict(job.augment).items() if v is not None}
    return record


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _tool_version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else None
