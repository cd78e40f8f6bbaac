"""Summaries of an evaluation run in the model card's shape, as markdown, CSV and JSON.

Rows are languages (target locales of the manifest), columns latencies, one block with the
language given and one with auto-detect, and an Average row (the mean over languages, as model
cards average). Error rates are recomputed here from the stored reference and hypothesis texts,
so changing the CER languages needs no new decoding.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics import DEFAULT_CER_LANGS, Counts, same_language, score, uses_cer

BLOCK_TITLES = {"given": "Language given", "auto": "Auto-detect"}
NA = "n/a"
NO_VALUE = "(none)"  # eval --group-by: the group of lines without the field
NONSPEECH_EXAMPLES = 5  # non-empty transcripts of non-speech clips shown per mode × latency

CSV_COLUMNS = (
    "lang_mode", "language", "latency_ms", "mode", "utterances", "audio_s", "metric", "error_rate_pct",
    "ref_units", "errors", "raw_error_rate_pct", "lid_accuracy_pct", "lid_locale_accuracy_pct", "lid_confusions",
    "ttft_algo_ms", "ttft_compute_ms", "final_algo_ms", "final_compute_ms", "final_compute_ms_p90",
    "chunk_compute_ms_p95", "partial_words_changed_pct", "rtf",
)

DEFINITIONS = {
    "error_rate_pct": "WER % after Whisper normalization (EnglishTextNormalizer for en-*, BasicTextNormalizer with "
                      "marks kept otherwise), jiwer alignment, corpus-level per language; CER % for CER languages",
    "raw_error_rate_pct": "WER % on the text as written: case and punctuation count (CER % for CER languages)",
    "lid_accuracy_pct": "auto-detect: share of utterances whose detected language matches the target language "
                        "(language level: es-US counts for es-ES); lid_locale_accuracy_pct requires the same locale",
    "ttft_algo_ms": "algorithmic (audio time): end of the audio piece after which the first non-empty partial "
                    "appeared, minus the start of speech; mean over utterances with any token",
    "ttft_compute_ms": "measured compute (wall clock, this machine): time the session took for that piece",
    "final_algo_ms": "algorithmic delay of the final after the end of the audio: 0, flush decodes the last chunk",
    "final_compute_ms": "measured compute (wall clock): last piece + flush, i.e. time to final after the end of audio",
    "chunk_compute_ms_p95": "measured compute per fed piece (one chunk of audio): 95th percentile over utterances of "
                            "each utterance's 95th percentile",
    "partial_words_changed_pct": "share of the words shown in partials that a later partial or the final changed",
    "rtf": "real-time factor: compute time / audio duration",
    "Average": "mean over the languages of the block (streaming columns: pooled over all utterances)",
    "nonspeech": "clips with an empty reference (babelcast data nonspeech: silence, noise, hum, tones, sweeps, clicks, "
                 "music-like): how many transcripts are not empty; they are left out of the error rates and "
                 "language ID",
}


@dataclass(frozen=True)
class Grouping:
    """eval --group-by: a manifest key, each utterance's value of it (None: absent), and the display order
    of the values (empty: sorted)."""

    field: str
    value_of: Mapping[str, str | None]  # utterance id → value
    order: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cell:
    """Aggregates of one (lang_mode, language, latency) group of records."""

    utterances: int
    audio_s: float
    metric: str
    counts: Counts
    raw_counts: Counts
    lid: float | None
    lid_locale: float | None
    confusions: dict[str, int]
    streaming: dict[str, float | None]

    @property
    def rate(self) -> float | None:
        return None if self.counts.rate is None else 100 * self.counts.rate

    @property
    def raw_rate(self) -> float | None:
        return None if self.raw_counts.rate is None else 100 * self.raw_counts.rate


def summarize(records: list[dict], languages: list[str], latencies: list[int], lang_modes: list[str],
              mode: str, cer_langs=DEFAULT_CER_LANGS, info: dict | None = None, language_id: bool = True,
              group_by: tuple[Grouping, ...] = ()) -> dict:
    """The JSON summary: per-cell metrics, averages, confusions, definitions.

    language_id=False (a model without a language prompt detects nothing) leaves LID out.
    group_by adds, for each Grouping, error rates per value of a manifest key, pooled over languages.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    nonspeech = [r for r in records if is_nonspeech(r)]
    for r in records:
        if not is_nonspeech(r):  # error rates and language ID are of speech; non-speech has its own table
            groups[(r["lang_mode"], r["language"] or "unknown", r["latency_ms"])].append(r)
    cells, averages = [], []
    for lang_mode in lang_modes:
        for latency in latencies:
            members_all = []
            per_language = []
            for language in languages:
                members = groups.get((lang_mode, language, latency), [])
                members_all += members
                cell = _cell(members, language, lang_mode, cer_langs, language_id)
                per_language.append(cell)
                cells.append(_cell_json(lang_mode, language, latency, mode, cell))
            averages.append(_average_json(lang_mode, latency, mode, per_language,
                                          _cell(members_all, None, lang_mode, cer_langs, language_id)))
    return {
        "info": info or {},
        "mode": mode,
        "languages": languages,
        "latencies_ms": latencies,
        "untrained_latencies_ms": sorted({r["latency_ms"] for r in records if r.get("trained_latency") is False}),
        "lang_modes": lang_modes,
        "cer_languages": list(cer_langs),
        "language_id": language_id,
        "cells": cells,
        "averages": averages,
        "nonspeech": _nonspeech(nonspeech, latencies, lang_modes),
        **({"groups": [_groups(records, g, latencies, lang_modes, cer_langs, language_id) for g in group_by]}
           if group_by else {}),
        "definitions": DEFINITIONS,
    }


def _groups(records: list[dict], group_by: Grouping, latencies: list[int], lang_modes: list[str], cer_langs,
            language_id: bool) -> dict:
    """Per (language mode, latency, value of the key): speech records pooled over languages (corpus-level)."""
    members: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if not is_nonspeech(r):
            members[(r["lang_mode"], r["latency_ms"], group_by.value_of.get(r["utt"]) or NO_VALUE)].append(r)
    present = {key[2] for key in members}
    values = [v for v in group_by.order if v in present] + sorted(present - set(group_by.order))
    rows = []
    for lang_mode in lang_modes:
        for latency in latencies:
            for value in values:
                group = members.get((lang_mode, latency, value), [])
                cell = _cell(group, None, lang_mode, cer_langs, language_id)
                rows.append({"lang_mode": lang_mode, "latency_ms": latency, "value": value,
                             "utterances": cell.utterances, "languages": len({r["language"] for r in group}),
                             "ref_units": cell.counts.ref, "errors": cell.counts.errors,
                             "error_rate_pct": _r(cell.rate), "raw_error_rate_pct": _r(cell.raw_rate),
                             "lid_accuracy_pct": _r(cell.lid)})
    return {"field": group_by.field, "values": values, "rows": rows}


def is_nonspeech(record: dict) -> bool:
    """A clip without speech: its reference is empty (babelcast data nonspeech), so is the right answer."""
    return not record["reference"].strip()


def _nonspeech(records: list[dict], latencies: list[int], lang_modes: list[str]) -> list[dict]:
    """Per (language mode, latency): clips without speech, and those whose transcript is not empty."""
    out = []
    for lang_mode in lang_modes:
        for latency in latencies:
            members = [r for r in records if r["lang_mode"] == lang_mode and r["latency_ms"] == latency]
            spoken = [r for r in members if r["hypothesis"].strip()]
            if members:
                by_kind: dict[str, list[int]] = {}
                for r in members:
                    counts = by_kind.setdefault(_clip_kind(r["utt"]), [0, 0])
                    counts[0] += bool(r["hypothesis"].strip())
                    counts[1] += 1
                out.append({"lang_mode": lang_mode, "latency_ms": latency, "clips": len(members),
                            "non_empty": len(spoken), "non_empty_pct": _r(100 * len(spoken) / len(members)),
                            "by_kind": {k: {"non_empty": a, "clips": b} for k, (a, b) in sorted(by_kind.items())},
                            "examples": [[Path(r["utt"]).name, r["hypothesis"]] for r in spoken[:NONSPEECH_EXAMPLES]]})
    return out


def _clip_kind(utt: str) -> str:
    """The kind in a `babelcast data nonspeech` file name (`test_music_000006_….wav`), else 'other'."""
    parts = Path(utt).name.split("_")
    return parts[1] if len(parts) >= 4 and parts[0] in ("train", "test") else "other"


def to_csv(summary: dict) -> str:
    """One row per (lang_mode, language, latency), Average rows included."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in _rows_in_order(summary):
        row = dict(row)
        row["lid_confusions"] = "; ".join(f"{k}:{v}" for k, v in (row.get("lid_confusions") or {}).items())
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return out.getvalue()


def to_json(summary: dict) -> str:
    return json.dumps(summary, ensure_ascii=False, indent=2) + "\n"


def to_markdown(summary: dict) -> str:
    """The printed report: error-rate tables in the model card's shape, LID, streaming metrics."""
    info = summary.get("info", {})
    latencies = summary["latencies_ms"]
    cer = ", ".join(summary["cer_languages"])
    lines = []
    if info:
        lines.append(f"# babelcast eval: {info.get('manifest', '')}")
        lines.append("")
        lines.append(f"model `{info.get('model')}`, mode {summary['mode']}, {info.get('utterances', 0)} utterances, "
                     f"{info.get('audio_hours', 0):.2f} h of audio, {len(summary['languages'])} languages")
        lines.append("")
    lines += _rate_table(summary, "error_rate_pct", f"WER % (Whisper-normalized; CER % for {cer})")
    lines += _rate_table(summary, "raw_error_rate_pct", "Raw WER % (case and punctuation sensitive; CER % for "
                                                       f"{cer})")
    if "auto" in summary["lang_modes"] and summary.get("language_id", True):
        lines += _lid_table(summary)
    for groups in summary.get("groups") or []:
        lines += _group_table(summary, groups, "error_rate_pct", "WER %")
        if "auto" in summary["lang_modes"] and summary.get("language_id", True):
            lines += _group_table(summary, groups, "lid_accuracy_pct", "Language ID accuracy %", ("auto",))
    if summary.get("nonspeech"):
        lines += _nonspeech_table(summary)
    if summary["mode"] == "streaming":
        lines += _streaming_table(summary)
    else:
        lines += ["Streaming metrics: n/a in offline mode (run with --mode streaming); offline at a latency gives "
                  "the same tokens as streaming at that latency.", ""]
    unsupported = info.get("unsupported_given") or []
    if unsupported:
        lines += [f"Language given: n/a for {', '.join(unsupported)} (not in the model's languages).", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- internals


def _cell(members: list[dict], language: str | None, lang_mode: str, cer_langs, language_id: bool = True) -> Cell:
    counts, raw = Counts(), Counts()
    for r in members:
        locale = r["language"]
        counts = counts + score(r["reference"], r["hypothesis"], locale, cer_langs)
        raw = raw + score(r["reference"], r["hypothesis"], locale, cer_langs, raw=True)
    lid = lid_locale = None
    confusions: Counter = Counter()
    if lang_mode == "auto" and members and language_id:
        hits = [same_language(r.get("detected_language"), r["language"]) for r in members]
        lid = 100 * sum(hits) / len(members)
        lid_locale = 100 * sum((r.get("detected_language") or "") == (r["language"] or "") for r in members) / len(
            members)
        for r, hit in zip(members, hits):
            if not hit:
                confusions[f"{r['language']}->{r.get('detected_language') or 'none'}"] += 1
    metric = "cer" if language and uses_cer(language, cer_langs) else "wer"
    return Cell(len(members), sum(r.get("duration_s", 0.0) for r in members), metric, counts, raw, lid, lid_locale,
                dict(sorted(confusions.items())), _streaming(members))


def _streaming(members: list[dict]) -> dict[str, float | None]:
    streamed = [r for r in members if r.get("mode") == "streaming"]
    if not streamed:
        return {}
    with_token = [r for r in streamed if r.get("ttft_algo_ms") is not None]
    shown = sum(r.get("partial_words_shown", 0) for r in streamed)
    changed = sum(r.get("partial_words_changed", 0) for r in streamed)
    audio_s = sum(r.get("duration_s", 0.0) for r in streamed)
    finals = [r["final_compute_ms"] for r in streamed]
    return {
        "ttft_algo_ms": _mean([r["ttft_algo_ms"] for r in with_token]),
        "ttft_compute_ms": _mean([r["ttft_compute_ms"] for r in with_token]),
        "final_algo_ms": _mean([r.get("final_algo_ms", 0.0) for r in streamed]),
        "final_compute_ms": _mean(finals),
        "final_compute_ms_p90": round(float(np.percentile(finals, 90)), 2),
        "chunk_compute_ms_p95": round(float(np.percentile([r["chunk_compute_ms_p95"] for r in streamed], 95)), 2),
        "partial_words_changed_pct": round(100 * changed / shown, 2) if shown else None,
        "rtf": round(sum(r.get("compute_s", 0.0) for r in streamed) / audio_s, 4) if audio_s else None,
        "utterances_without_token": len(streamed) - len(with_token),
    }


def _cell_json(lang_mode: str, language: str, latency: int, mode: str, cell: Cell) -> dict:
    row = {
        "lang_mode": lang_mode, "language": language, "latency_ms": latency, "mode": mode,
        "utterances": cell.utterances, "audio_s": round(cell.audio_s, 2), "metric": cell.metric,
        "error_rate_pct": _r(cell.rate), "ref_units": cell.counts.ref, "errors": cell.counts.errors,
        "substitutions": cell.counts.substitutions, "deletions": cell.counts.deletions,
        "insertions": cell.counts.insertions, "raw_error_rate_pct": _r(cell.raw_rate),
        "lid_accuracy_pct": _r(cell.lid), "lid_locale_accuracy_pct": _r(cell.lid_locale),
        "lid_confusions": cell.confusions if lang_mode == "auto" else None,
    }
    row.update(cell.streaming)
    return row


def _average_json(lang_mode: str, latency: int, mode: str, cells: list[Cell], pooled: Cell) -> dict:
    present = [c for c in cells if c.utterances]
    row = {
        "lang_mode": lang_mode, "language": "Average", "latency_ms": latency, "mode": mode,
        "utterances": pooled.utterances, "audio_s": round(pooled.audio_s, 2), "metric": "mean",
        "languages": len(present),
        "error_rate_pct": _r(_mean([c.rate for c in present if c.rate is not None])),
        "raw_error_rate_pct": _r(_mean([c.raw_rate for c in present if c.raw_rate is not None])),
        "lid_accuracy_pct": _r(_mean([c.lid for c in present if c.lid is not None])),
        "lid_locale_accuracy_pct": _r(_mean([c.lid_locale for c in present if c.lid_locale is not None])),
        "lid_confusions": pooled.confusions if lang_mode == "auto" else None,
    }
    row.update(pooled.streaming)
    return row


def _rows_in_order(summary: dict) -> list[dict]:
    rows = []
    for lang_mode in summary["lang_modes"]:
        for latency in summary["latencies_ms"]:
            rows += [c for c in summary["cells"] if c["lang_mode"] == lang_mode and c["latency_ms"] == latency]
            rows += [a for a in summary["averages"] if a["lang_mode"] == lang_mode and a["latency_ms"] == latency]
    return rows


def _lookup(summary: dict, lang_mode: str, language: str, latency: int) -> dict | None:
    table = summary["averages"] if language == "Average" else summary["cells"]
    for row in table:
        if row["lang_mode"] == lang_mode and row["language"] == language and row["latency_ms"] == latency:
            return row
    return None


def _rate_table(summary: dict, field: str, title: str) -> list[str]:
    latencies = summary["latencies_ms"]
    header = ["Language", *_latency_headers(summary)]
    rows = []
    for lang_mode in summary["lang_modes"]:
        rows.append([f"**{BLOCK_TITLES[lang_mode]}**", *[""] * len(latencies)])
        for language in [*summary["languages"], "Average"]:
            values = []
            for lat in latencies:
                row = _lookup(summary, lang_mode, language, lat)
                values.append(_fmt(row.get(field) if row and row.get("utterances") else None))
            rows.append([_row_label(summary, lang_mode, language), *values])
    return [f"## {title}", "", *_markdown_table(header, rows), "", *_untrained_note(summary)]


def _group_table(summary: dict, groups: dict, key: str, title: str, lang_modes=None) -> list[str]:
    """One row per value of a --group-by key (in each language-mode block), latencies as columns."""
    latencies = summary["latencies_ms"]
    cells = {(r["lang_mode"], r["value"], r["latency_ms"]): r for r in groups["rows"]}
    rows = []
    for lang_mode in lang_modes or summary["lang_modes"]:
        rows.append([f"**{BLOCK_TITLES[lang_mode]}**", "", *[""] * len(latencies)])
        for value in groups["values"]:
            found = [cells.get((lang_mode, value, lat)) or {} for lat in latencies]
            utterances = max(c.get("utterances", 0) for c in found)
            rows.append([value, str(utterances),
                         *[_fmt(c.get(key) if c.get("utterances") else None) for c in found]])
    header = [groups["field"], "Utterances", *_latency_headers(summary)]
    return [f"## {title} by {groups['field']} (pooled over languages)", "", *_markdown_table(header, rows), ""]


def _row_label(summary: dict, lang_mode: str, language: str) -> str:
    """'de-DE', 'zh-CN (CER)', or '**Average**' (with 'n of m languages' when some are n/a)."""
    latencies = summary["latencies_ms"]
    if language == "Average":
        counted = max(((_lookup(summary, lang_mode, "Average", lat) or {}).get("languages") or 0) for lat in latencies)
        total = len(summary["languages"])
        return "**Average**" if counted in (0, total) else f"**Average** ({counted} of {total})"
    first = _lookup(summary, lang_mode, language, latencies[0])
    return f"{language} (CER)" if first and first.get("metric") == "cer" else language


def _latency_headers(summary: dict) -> list[str]:
    untrained = set(summary.get("untrained_latencies_ms") or [])
    return [f"{lat} ms" + ("†" if lat in untrained else "") for lat in summary["latencies_ms"]]


def _untrained_note(summary: dict) -> list[str]:
    untrained = summary.get("untrained_latencies_ms") or []
    if not untrained:
        return []
    return [f"† {', '.join(f'{lat} ms' for lat in untrained)}: not among the checkpoint's trained latencies.", ""]


def _lid_table(summary: dict) -> list[str]:
    latencies = summary["latencies_ms"]
    header = ["Language", *_latency_headers(summary)]
    rows = []
    for language in [*summary["languages"], "Average"]:
        values = [_fmt(((_lookup(summary, "auto", language, lat) or {}).get("lid_accuracy_pct"))) for lat in latencies]
        rows.append([_row_label(summary, "auto", language).replace(" (CER)", ""), *values])
    lines = ["## Language ID accuracy % (auto-detect; language level)", "", *_markdown_table(header, rows), ""]
    for lat in latencies:
        confusions = (_lookup(summary, "auto", "Average", lat) or {}).get("lid_confusions") or {}
        if confusions:
            text = ", ".join(f"{k} ×{v}" for k, v in sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0])))
            lines.append(f"- confusions at {lat} ms (target->detected): {text}")
    return lines + ([""] if lines[-1] else [])


def _nonspeech_table(summary: dict) -> list[str]:
    """Clips without speech whose transcript is not empty (the right transcript is empty), per mode × latency."""
    rows = summary["nonspeech"]
    latencies = sorted({r["latency_ms"] for r in rows})
    lines = ["## Non-speech clips (empty references): transcripts that are not empty", ""]
    table = []
    for lang_mode in summary["lang_modes"]:
        cells = {r["latency_ms"]: r for r in rows if r["lang_mode"] == lang_mode}
        table.append([BLOCK_TITLES.get(lang_mode, lang_mode)]
                     + [f"{cells[lat]['non_empty']} of {cells[lat]['clips']}" if lat in cells else NA
                        for lat in latencies])
    lines += _markdown_table(["Non-empty"] + [f"{lat} ms" for lat in latencies], table)
    for r in rows:
        kinds = ", ".join(f"{k} {v['non_empty']}/{v['clips']}" for k, v in r["by_kind"].items())
        lines.append(f"- {BLOCK_TITLES.get(r['lang_mode'], r['lang_mode'])} at {r['latency_ms']} ms by kind: {kinds}")
    for r in rows:
        if r["examples"]:
            shown = ", ".join(f"{name}: {hyp!r}" for name, hyp in r["examples"])
            lines.append(f"- {BLOCK_TITLES.get(r['lang_mode'], r['lang_mode'])} at {r['latency_ms']} ms: {shown}")
    return lines + [""]


def _streaming_table(summary: dict) -> list[str]:
    header = ["Block", "Latency", "TTFT algo ms", "TTFT compute ms", "Final after end: algo ms", "compute ms",
              "p90 ms", "Chunk compute p95 ms", "Partial words changed %", "RTF"]
    rows = []
    for lang_mode in summary["lang_modes"]:
        for lat in summary["latencies_ms"]:
            a = _lookup(summary, lang_mode, "Average", lat) or {}
            if not a.get("utterances"):
                continue
            mark = "†" if lat in set(summary.get("untrained_latencies_ms") or []) else ""
            rows.append([BLOCK_TITLES[lang_mode], f"{lat} ms{mark}", _fmt(a.get("ttft_algo_ms"), 0),
                         _fmt(a.get("ttft_compute_ms"), 1), _fmt(a.get("final_algo_ms"), 0),
                         _fmt(a.get("final_compute_ms"), 1), _fmt(a.get("final_compute_ms_p90"), 1),
                         _fmt(a.get("chunk_compute_ms_p95"), 1), _fmt(a.get("partial_words_changed_pct")),
                         _fmt(a.get("rtf"), 3)])
    notes = [
        "algo = algorithmic, in audio time (what the chunking allows, the same on any machine); "
        "compute = measured wall clock on this machine. Audio is fed in pieces of one chunk in simulated real time; "
        "TTFT is counted from the start of speech; the final has no algorithmic delay after the end of audio "
        "(flush decodes the last, zero-padded chunk), so time to final = compute.",
    ]
    return ["## Streaming (all languages pooled)", "", *_markdown_table(header, rows), "", *notes, ""]


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    separator = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(header), separator, *[line(r) for r in rows]]


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 2) if values else None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _fmt(value, digits: int = 1) -> str:
    return NA if value is None else f"{value:.{digits}f}"
