"""Run a recognizer over manifest utterances for every (language mode, latency) pass, resumably.

Every decoded utterance becomes one line of `results.jsonl` in the run folder, appended as soon
as its batch is done; a rerun reads the file and skips the keys already there
(`<utterance>|<given|auto>|<latency>|<mode>`), so an interrupted run continues where it stopped
and new latencies or modes can be added to a finished one. `run.json` records the model; a
run folder is never mixed between two models.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from babelcast.audio.io import SAMPLE_RATE_HZ
from babelcast.manifest import ManifestEntry, load_entry_audio, read_manifest

from .metrics import DEFAULT_CER_LANGS, base_language, score, uses_cer
from .streaming import simulate

LANG_MODES = ("given", "auto")
AUDIO_BATCHES = 4  # audio of batch_size * AUDIO_BATCHES utterances is loaded at once
RAY_UNIT_S = 600.0  # audio seconds per unit of work on a Ray cluster (eval --ray)


class EvalError(ValueError):
    """A run that cannot start (bad manifest, a run folder made with another model...)."""


@dataclass(frozen=True)
class EvalItem:
    """One reference utterance."""

    uid: str  # stable id: audio path, span and (for repeats) occurrence
    entry: ManifestEntry
    language: str | None  # target locale from the manifest
    reference: str


@dataclass(frozen=True)
class EvalConfig:
    model: str  # how the model was named (path or hub id), recorded in run.json
    latencies: tuple[int, ...]
    lang_modes: tuple[str, ...]
    mode: str  # "streaming" | "offline"
    batch_size: int = 8
    cer_langs: tuple[str, ...] = DEFAULT_CER_LANGS
    device: str = "cpu"  # where eval --ray's actors load the model


def load_items(manifests: list[str | Path], max_per_lang: int | None = None) -> list[EvalItem]:
    """Manifest entries with a reference text, in order (first max_per_lang per language if set)."""
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    per_lang: dict[str | None, int] = {}
    for manifest in manifests:
        for entry in read_manifest(manifest):
            if entry.text is None:
                continue
            if max_per_lang is not None:
                if per_lang.get(entry.language, 0) >= max_per_lang:
                    continue
                per_lang[entry.language] = per_lang.get(entry.language, 0) + 1
            uid = str(entry.audio_path)
            if entry.offset_s:  # a span of a longer file
                uid += f"@{entry.offset_s:g}+{entry.duration_s or 0:g}"
            seen[uid] = seen.get(uid, 0) + 1
            if seen[uid] > 1:
                uid += f"#{seen[uid]}"
            items.append(EvalItem(uid, entry, entry.language, entry.text))
    return items


def resolve_language(recognizer, locale: str | None) -> str | None:
    """The prompt to give for a target locale: itself, its base language alias, or None (unsupported)."""
    supported = list(recognizer.supported_languages)
    if not locale or set(supported) <= {"auto"}:
        return None
    if locale in supported:
        return locale
    lowered = {s.lower(): s for s in supported}
    for candidate in (locale.lower(), locale.replace("_", "-").lower(), base_language(locale)):
        if candidate in lowered and candidate != "auto":
            return lowered[candidate]
    return None


class ResultStore:
    """results.jsonl of a run folder: existing records by key, appends flushed line by line."""

    def __init__(self, out_dir: Path, model: str, fresh: bool = False):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "results.jsonl"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        run_file = self.out_dir / "run.json"
        if fresh and self.path.exists():
            self.path.unlink()
        if run_file.exists() and self.path.exists():
            previous = json.loads(run_file.read_text(encoding="utf-8")).get("model")
            if previous != model:
                raise EvalError(f"{self.out_dir} holds results of model {previous!r}, not {model!r}; "
                                "use another --out-dir or --fresh")
        run_file.write_text(json.dumps({"model": model}, indent=2) + "\n", encoding="utf-8")
        self.records: dict[str, dict] = {}
        self.skipped_lines = 0
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped_lines += 1  # a line cut by an interruption: decoded again
            if self.skipped_lines:  # rewrite without the broken lines, so the file stays valid JSONL
                tmp = self.path.with_suffix(".jsonl.tmp")
                tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values()),
                               encoding="utf-8")
                tmp.replace(self.path)
        self._file = None

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add(self, records: list[dict]) -> None:
        if self._file is None:
            cut = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
            self._file = self.path.open("a", encoding="utf-8")
            if cut:  # a line cut by an interruption: end it, so the next record starts on its own line
                self._file.write("\n")
        for record in records:
            self.records[record["key"]] = record
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def record_key(item: EvalItem, lang_mode: str, latency_ms: int, mode: str) -> str:
    return f"{item.uid}|{lang_mode}|{latency_ms}|{mode}"


def evaluate(recognizer, items: list[EvalItem], cfg: EvalConfig, store: ResultStore,
             progress: bool = False, on_error: Callable[[str], None] | None = None) -> tuple[list[dict], int]:
    """Decode every pending (item, pass), appending to the store; returns this config's records and failures."""
    from tqdm import tqdm

    on_error = on_error or _print_error
    passes = _passes(cfg)
    language_for, pending = _planner(recognizer, items, cfg, store)
    total = sum(pending(it, lm, lat) for it in items for lm, lat in passes)
    failures = 0
    with tqdm(total=total, unit="utt", file=sys.stderr, disable=not progress, desc="eval") as bar:
        for chunk in _chunks(items, cfg.batch_size * AUDIO_BATCHES):
            todo = {p: [it for it in chunk if pending(it, *p)] for p in passes}
            needed = {it.uid: it for group in todo.values() for it in group}
            audio = {}
            for uid, item in needed.items():
                try:
                    audio[uid] = load_entry_audio(item.entry)
                except Exception as e:  # noqa: BLE001 - any unreadable file is reported and skipped
                    failures += 1
                    on_error(str(e))
            for (lang_mode, latency), planned in todo.items():
                group = [it for it in planned if it.uid in audio]
                bar.update(len(planned) - len(group))  # unreadable audio: counted as done, retried next run
                if group:
                    run = _run_streaming if cfg.mode == "streaming" else _run_offline
                    store.add(run(recognizer, group, audio, lang_mode, latency, cfg, language_for, bar))
    return _wanted(items, cfg, store), failures


def evaluate_on_ray(address: str, recognizer, items: list[EvalItem], cfg: EvalConfig, store: ResultStore,
                    actors: int | None = None, progress: bool = False,
                    on_error: Callable[[str], None] | None = None) -> tuple[list[dict], int]:
    """evaluate's offline passes on a Ray cluster (babelcast.scale.batch, the path of transcribe --ray): every
    pending (item, pass) is one work item of one job; records as evaluate's, appended as units finish."""
    from tqdm import tqdm

    from babelcast.scale.batch import WorkItem, transcribe_on_ray

    on_error = on_error or _print_error
    language_for, pending = _planner(recognizer, items, cfg, store)
    todo = [(it, lm, lat) for lm, lat in _passes(cfg) for it in items if pending(it, lm, lat)]
    work = [WorkItem(n, str(it.entry.audio_path), language_for(it, lm), lat, it.entry.offset_s,
                     it.entry.duration_s, it.entry.duration_s or 0.0) for n, (it, lm, lat) in enumerate(todo)]
    failures = 0
    with tqdm(total=len(work), unit="utt", file=sys.stderr, disable=not progress, desc="eval") as bar:
        for outcome in transcribe_on_ray(address, cfg.model, cfg.device, work, {"mode": "offline",
                                         "batch_size": cfg.batch_size}, RAY_UNIT_S, actors):
            bar.update(1)
            if outcome.error is not None:
                failures += 1
                on_error(outcome.error)
                continue
            item, lang_mode, latency = todo[outcome.index]
            record = _record(item, outcome.transcript, lang_mode, latency, cfg, work[outcome.index].language,
                             round(outcome.transcript.duration_s * SAMPLE_RATE_HZ))
            record["compute_s"] = round(outcome.compute_s, 4)
            store.add([record])
    return _wanted(items, cfg, store), failures


def _passes(cfg: EvalConfig) -> list[tuple[str, int]]:
    """Every (language mode, latency) pass of the config."""
    return [(lm, lat) for lm in cfg.lang_modes for lat in cfg.latencies]


def _planner(recognizer, items: list[EvalItem], cfg: EvalConfig, store: ResultStore):
    """language_for(item, lang_mode): the prompt of a pass (None: n/a); pending(item, lang_mode, latency): not
    yet in the store and not n/a."""
    prompts = {it.uid: resolve_language(recognizer, it.language) for it in items}

    def language_for(item: EvalItem, lang_mode: str) -> str | None:
        return "auto" if lang_mode == "auto" else prompts[item.uid]

    def pending(item: EvalItem, lang_mode: str, latency: int) -> bool:
        return (language_for(item, lang_mode) is not None
                and record_key(item, lang_mode, latency, cfg.mode) not in store)

    return language_for, pending


def _wanted(items: list[EvalItem], cfg: EvalConfig, store: ResultStore) -> list[dict]:
    """This config's records in the store, in key order."""
    wanted = {record_key(it, lm, lat, cfg.mode) for it in items for lm, lat in _passes(cfg)}
    return [store.records[k] for k in sorted(wanted) if k in store.records]


def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _run_streaming(recognizer, group, audio, lang_mode, latency, cfg, language_for, bar) -> list[dict]:
    records = []
    for item in group:
        language = language_for(item, lang_mode)
        run = simulate(recognizer, audio[item.uid], language, latency)
        record = _record(item, run.final, lang_mode, latency, cfg, language, len(audio[item.uid]))
        record.update(run.to_record())
        records.append(record)
        bar.update(1)
    return records


def _run_offline(recognizer, group, audio, lang_mode, latency, cfg, language_for, bar) -> list[dict]:
    records = []
    by_language: dict[str, list[EvalItem]] = {}
    for item in group:
        by_language.setdefault(language_for(item, lang_mode), []).append(item)
    for language, members in by_language.items():
        arrays = [audio[it.uid] for it in members]
        start = time.perf_counter()
        transcripts = recognizer.transcribe(arrays, language=language, latency_ms=latency, mode="offline",
                                            batch_size=cfg.batch_size, on_batch_done=bar.update)
        elapsed = time.perf_counter() - start
        total_samples = sum(len(a) for a in arrays) or 1
        for item, transcript, samples in zip(members, transcripts, (len(a) for a in arrays)):
            record = _record(item, transcript, lang_mode, latency, cfg, language, samples)
            record["compute_s"] = round(elapsed * samples / total_samples, 4)  # batch time shared by length
            records.append(record)
    return records


def _record(item: EvalItem, transcript, lang_mode: str, latency: int, cfg: EvalConfig, prompt: str,
            samples: int) -> dict:
    """One results line: what was decoded, how, and its error counts."""
    locale = item.language
    normalized = score(item.reference, transcript.text, locale, cfg.cer_langs)
    raw = score(item.reference, transcript.text, locale, cfg.cer_langs, raw=True)
    return {
        "key": record_key(item, lang_mode, latency, cfg.mode),
        "utt": item.uid,
        "language": locale,
        "lang_mode": lang_mode,
        "prompt": prompt,
        "latency_ms": latency,
        "mode": cfg.mode,
        "duration_s": round(samples / SAMPLE_RATE_HZ, 4),
        "reference": item.reference,
        "hypothesis": transcript.text,
        "detected_language": transcript.language,
        "trained_latency": transcript.trained_latency,
        "metric": "cer" if uses_cer(locale, cfg.cer_langs) else "wer",
        "errors": normalized.errors,
        "ref_units": normalized.ref,
        "raw_errors": raw.errors,
        "raw_ref_units": raw.ref,
    }


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
