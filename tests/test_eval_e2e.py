"""`babelcast eval` end to end: a set synthesized here with espeak-ng, a tiny random .nemo model.

WER is ~100 % or more (random weights); what is checked is the table's shape, the files, the
metrics' presence and consistency, resuming, and offline == streaming.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from babelcast import cli
from babelcast.data import synth
from babelcast.data.text_sources import missing_package
from babelcast.eval import report
from babelcast.eval.cli import grouping, parse_latencies
from babelcast.eval.streaming import decode_partials

LOCALES = ["en-US", "de-DE", "bg-BG"]  # the tiny model knows en and de; bg runs in auto mode only
LATENCIES = "560,1120"

needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None
    or any(missing_package(loc) for loc in LOCALES),
    reason="needs espeak-ng, sox and the fortunes packages (scripts/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is faster on one thread, and a shared machine stays usable
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_nemo import write_tiny_nemo

    return write_tiny_nemo(tmp_path_factory.mktemp("model") / "tiny.nemo")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None or any(missing_package(x) for x in LOCALES):
        pytest.skip("needs espeak-ng, sox and the fortunes packages")
    out = tmp_path_factory.mktemp("synth")
    report_ = synth.synthesize(synth.plan(LOCALES, 1, "test", seed=0), out, processes=1)
    assert not report_.failures
    return report_.manifest


def run_eval(manifest: Path, model: Path, out_dir: Path, *extra: str) -> int:
    return cli.main(["eval", str(manifest), "--model", str(model), "--latency", LATENCIES, "--out-dir", str(out_dir),
                     *extra])


def read_results(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]


@needs_tools
def test_eval_end_to_end(dataset, tiny_model, one_thread, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert run_eval(dataset, tiny_model, out_dir) == 0
    printed = capsys.readouterr()
    assert "language given: n/a for bg-BG" in printed.err

    # the printed table: languages as rows, latencies as columns, a block per language mode, an average row
    md = printed.out
    assert md == (out_dir / "summary.md").read_text(encoding="utf-8")
    table = md.split("## WER %")[1].split("##")[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0].split("|")[1:-1] == [" Language             ", " 560 ms ", " 1120 ms "]
    labels = [line.split("|")[1].strip() for line in lines[2:]]
    assert labels == ["**Language given**", "bg-BG", "de-DE", "en-US", "**Average** (2 of 3)",
                      "**Auto-detect**", "bg-BG", "de-DE", "en-US", "**Average**"]
    bg_given = lines[3].split("|")[2:-1]
    assert [c.strip() for c in bg_given] == ["n/a", "n/a"]
    for section in ("## Raw WER %", "## Language ID accuracy %", "## Streaming (all languages pooled)"):
        assert section in md
    assert "TTFT algo ms" in md and "compute ms" in md and "Partial words changed %" in md

    # results: one line per (utterance, block, latency) that could run: 2 given + 3 auto, × 2 latencies
    results = read_results(out_dir)
    assert len(results) == (2 + 3) * 2
    assert {r["mode"] for r in results} == {"streaming"}
    for r in results:
        assert r["ref_units"] > 0 and r["errors"] >= 0 and r["raw_ref_units"] > 0
        assert r["prompt"] == ("auto" if r["lang_mode"] == "auto" else r["language"])
        assert r["final_algo_ms"] == 0.0 and r["final_compute_ms"] > 0
        assert r["partial_words_changed"] <= r["partial_words_shown"]
        if r["hypothesis"]:
            assert r["ttft_algo_ms"] is not None and r["ttft_algo_ms"] >= 0
        assert r["partials"] == sorted(r["partials"], key=lambda p: p[0])
        events = decode_partials(r["partials"])
        assert all(a[1] != b[1] for a, b in zip(events, events[1:]))  # only changes are recorded

    # CSV and JSON carry the same cells
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    rows = list(csv.DictReader((out_dir / "summary.csv").open(encoding="utf-8")))
    assert len(rows) == 2 * 2 * (len(LOCALES) + 1)  # blocks × latencies × (languages + Average)
    assert set(report.CSV_COLUMNS) <= set(rows[0])
    assert summary["languages"] == sorted(LOCALES) and summary["latencies_ms"] == [560, 1120]
    de_given = next(c for c in summary["cells"] if c["lang_mode"] == "given" and c["language"] == "de-DE"
                    and c["latency_ms"] == 560)
    de_records = [r for r in results if r["lang_mode"] == "given" and r["language"] == "de-DE" and
                  r["latency_ms"] == 560]
    assert de_given["errors"] == sum(r["errors"] for r in de_records)
    assert de_given["error_rate_pct"] == pytest.approx(
        100 * sum(r["errors"] for r in de_records) / sum(r["ref_units"] for r in de_records), abs=0.01)
    auto_avg = next(a for a in summary["averages"] if a["lang_mode"] == "auto" and a["latency_ms"] == 1120)
    assert auto_avg["languages"] == 3 and auto_avg["lid_accuracy_pct"] is not None
    assert auto_avg["rtf"] > 0 and auto_avg["partial_words_changed_pct"] is not None

    # a rerun decodes nothing, and can break the results down by a manifest key (synth writes `voice`)
    assert run_eval(dataset, tiny_model, out_dir, "--group-by", "voice", "--group-by", "rate_wpm:165") == 0
    printed = capsys.readouterr()
    assert "10 results, 10 from an earlier run" in printed.err
    assert "## WER % by voice (pooled over languages)" in printed.out and "## WER % by rate_wpm" in printed.out
    groups, rates = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))["groups"]
    assert rates["field"] == "rate_wpm" and set(rates["values"]) <= {"< 165", "≥ 165"}
    voices = {json.loads(line)["voice"] for line in dataset.read_text(encoding="utf-8").splitlines()}
    assert groups["field"] == "voice" and set(groups["values"]) == voices
    given = [g for g in groups["rows"] if g["lang_mode"] == "given" and g["latency_ms"] == 560]
    assert sum(g["errors"] for g in given) == de_given["errors"] + sum(
        r["errors"] for r in results if r["lang_mode"] == "given" and r["language"] == "en-US"
        and r["latency_ms"] == 560)
    assert run_eval(dataset, tiny_model, out_dir, "--group-by", "speaker") == 2
    assert "no manifest line has a 'speaker' key" in capsys.readouterr().err

    # an interrupted run (lines lost, one cut) is completed identically
    lines = (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    (out_dir / "results.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:25], encoding="utf-8")
    assert run_eval(dataset, tiny_model, out_dir) == 0
    assert "10 results, 7 from an earlier run" in capsys.readouterr().err
    again = {r["key"]: r["hypothesis"] for r in read_results(out_dir)}
    assert again == {r["key"]: r["hypothesis"] for r in results}

    # offline mode: batched, same tokens as streaming at each latency, no streaming metrics
    assert run_eval(dataset, tiny_model, out_dir, "--mode", "offline") == 0
    md = capsys.readouterr().out
    assert "Streaming metrics: n/a in offline mode" in md
    offline = {r["key"].replace("|offline", ""): r["hypothesis"] for r in read_results(out_dir)
               if r["mode"] == "offline"}
    streaming = {r["key"].replace("|streaming", ""): r["hypothesis"] for r in results}
    assert offline == streaming

    # a run folder is never mixed between models
    assert cli.main(["eval", str(dataset), "--model", str(tiny_model.with_name("other.nemo")), "--out-dir",
                     str(out_dir)]) != 0


@needs_tools
def test_eval_options(dataset, tiny_model, one_thread, tmp_path, capsys):
    out_dir = tmp_path / "auto"
    assert run_eval(dataset, tiny_model, out_dir, "--lang-mode", "auto", "--max-per-lang", "1", "--cer-langs",
                    "bg") == 0
    md = capsys.readouterr().out
    assert "**Language given**" not in md and "**Auto-detect**" in md
    assert "bg-BG (CER)" in md
    assert {r["lang_mode"] for r in read_results(out_dir)} == {"auto"}
    assert run_eval(dataset, tiny_model, tmp_path / "bad", "--latency", "12345") == 2


def test_parse_latencies():
    assert parse_latencies("all", [1120, 80, 320]) == [80, 320, 1120]
    assert parse_latencies("1120,80, 320", []) == [80, 320, 1120]
    for bad in ("fast", "0", ""):
        with pytest.raises(ValueError):
            parse_latencies(bad, [80])


def test_summary_averages_and_confusions():
    def rec(lang_mode, language, latency, ref, hyp, detected=None):
        return {"lang_mode": lang_mode, "language": language, "latency_ms": latency, "reference": ref,
                "hypothesis": hyp, "detected_language": detected, "duration_s": 1.0, "mode": "offline"}

    records = [
        rec("given", "en-US", 80, "a b c d", "a b c d"),  # 0 %
        rec("given", "de-DE", 80, "eins zwei", "eins"),  # 50 %
        rec("auto", "en-US", 80, "a b c d", "a b x d", "en-US"),
        rec("auto", "de-DE", 80, "eins zwei", "eins zwei", "en-US"),
        rec("auto", "zh-CN", 80, "你好。", "你好", "zh-CN"),
    ]
    summary = report.summarize(records, ["de-DE", "en-US", "zh-CN"], [80], ["given", "auto"], "offline")
    given_avg = next(a for a in summary["averages"] if a["lang_mode"] == "given")
    assert given_avg["error_rate_pct"] == pytest.approx(25.0)  # mean of 0 and 50: languages weigh the same
    assert given_avg["languages"] == 2
    auto_avg = next(a for a in summary["averages"] if a["lang_mode"] == "auto")
    assert auto_avg["lid_accuracy_pct"] == pytest.approx(200 / 3, abs=0.01)  # de-DE 0, en-US 100, zh-CN 100
    assert auto_avg["lid_confusions"] == {"de-DE->en-US": 1}
    zh = next(c for c in summary["cells"] if c["language"] == "zh-CN" and c["lang_mode"] == "auto")
    assert zh["metric"] == "cer" and zh["error_rate_pct"] == 0.0 and zh["raw_error_rate_pct"] == pytest.approx(
        100 / 3, abs=0.01)
    md = report.to_markdown(summary)
    assert "| zh-CN (CER)" in md and "de-DE->en-US ×1" in md

    # grouped by a manifest key: pooled over languages (corpus-level), lines without the key in "(none)"
    for r, utt in zip(records, ("u1", "u2", "u1", "u2", "u3")):
        r["utt"] = utt
    grouped = report.summarize(records, ["de-DE", "en-US", "zh-CN"], [80], ["given", "auto"], "offline",
                               group_by=(report.Grouping("voice", {"u1": "m3", "u2": "m3", "u3": None}),))
    rows = {(g["lang_mode"], g["value"]): g for g in grouped["groups"][0]["rows"]}
    assert rows[("given", "m3")]["error_rate_pct"] == pytest.approx(100 / 6, abs=0.01)  # 1 error in 6 words
    assert rows[("given", "(none)")]["utterances"] == 0
    assert rows[("auto", "m3")]["lid_accuracy_pct"] == 50.0 and rows[("auto", "(none)")]["utterances"] == 1
    md = report.to_markdown(grouped)
    assert "## WER % by voice (pooled over languages)" in md and "## Language ID accuracy % by voice" in md


def test_group_by_bins_numbers_at_the_edges_given():
    from babelcast.eval.runner import EvalItem
    from babelcast.manifest import ManifestEntry

    def item(uid, **extra):
        entry = ManifestEntry(Path(f"{uid}.wav"), "a", "en-US", 1.0, 0.0, 1, extra=tuple(extra.items()))
        return EvalItem(uid, entry, "en-US", "a")

    items = [item("a", rate_wpm="99"), item("b", rate_wpm="150"), item("c", rate_wpm="240.5"), item("d"),
             item("e", rate_wpm="fast")]
    binned = grouping("rate_wpm:200,150", items)
    assert binned.order == ("< 150", "150-200", "≥ 200")
    assert dict(binned.value_of) == {"a": "< 150", "b": "150-200", "c": "≥ 200", "d": None, "e": None}
    assert grouping("rate_wpm", items).value_of["c"] == "240.5" and grouping("rate_wpm", items).order == ()
    for bad, message in (("speaker", "no manifest line has a 'speaker' key"), ("rate_wpm:x", "edges must be numbers")):
        with pytest.raises(ValueError, match=message):
            grouping(bad, items)


def test_language_resolution_and_models_without_prompt():
    from babelcast.eval.runner import resolve_language

    class Rec:
        supported_languages = ["auto", "de", "de-DE", "en-US", "es", "es-US"]

    assert resolve_language(Rec(), "de-DE") == "de-DE"
    assert resolve_language(Rec(), "es-ES") == "es"  # the alias: the model's es-US prompt
    assert resolve_language(Rec(), "es_419") == "es"
    assert resolve_language(Rec(), "bg-BG") is None
    assert resolve_language(Rec(), None) is None
    Rec.supported_languages = ["auto"]
    assert resolve_language(Rec(), "en-US") is None

    records = [{"lang_mode": "auto", "language": "en-US", "latency_ms": 80, "reference": "a b", "hypothesis": "a b",
                "detected_language": None, "duration_s": 1.0, "mode": "offline"}]
    summary = report.summarize(records, ["en-US"], [80], ["auto"], "offline", language_id=False)
    assert summary["cells"][0]["lid_accuracy_pct"] is None
    assert "Language ID" not in report.to_markdown(summary)
