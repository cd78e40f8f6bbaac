"""The "nothing on silence" check: `babelcast eval` on clips without speech (empty references) counts
the transcripts that are not empty, apart from the error rates and language ID.

On demo model v2 the check failed (it wrote letters for tones, clicks and hum: e.g. 'N', 'Kt.'); the
bundled demo model v3, trained on clips without speech (issue 19), writes nothing for these seven
(README "Demo model"). That the check counts what a model does write is the unit test's part."""
from __future__ import annotations

import json

import pytest
import torch

from babelcast import cli
from babelcast.data.nonspeech import plan_nonspeech, write_nonspeech
from babelcast.eval import report


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    jobs = plan_nonspeech(["en-US", "de-DE"], 7, "test", seed=0, duration_s=3.0)  # one clip of each kind
    return write_nonspeech(jobs, tmp_path_factory.mktemp("nonspeech"))


def test_summary_counts_non_empty_transcripts_and_keeps_them_out_of_error_rates():
    records = [{"reference": "", "hypothesis": h, "lang_mode": "given", "latency_ms": 80, "language": "en-US",
                "utt": f"/x/test_{kind}_00000{i}_abc.wav"} for i, (h, kind) in enumerate([("", "tone"), ("N", "tone"),
                                                                                (" ", "music"), ("Kt.", "clicks")])]
    rows = report._nonspeech(records, [80], ["given"])
    assert rows == [{"lang_mode": "given", "latency_ms": 80, "clips": 4, "non_empty": 2, "non_empty_pct": 50.0,
                     "by_kind": {"clicks": {"non_empty": 1, "clips": 1}, "music": {"non_empty": 0, "clips": 1},
                                 "tone": {"non_empty": 1, "clips": 2}},
                     "examples": [["test_tone_000001_abc.wav", "N"], ["test_clicks_000003_abc.wav", "Kt."]]}]
    assert all(report.is_nonspeech(r) for r in records)
    assert not report.is_nonspeech({"reference": "Hallo."})


def test_the_check_on_the_bundled_demo_model(clips, tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = cli.main(["eval", str(clips), "--latency", "1120", "--lang-mode", "given", "--mode", "offline",
                         "--out-dir", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    results = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    (row,) = summary["nonspeech"]
    assert row["clips"] == 7 == len(results)
    assert row["non_empty"] == sum(bool(r["hypothesis"].strip()) for r in results)
    assert f"{row['non_empty']} of 7" in printed and "Non-speech clips" in printed
    assert row["non_empty"] == 0  # demo model v3 (v2 wrote letters on tones, clicks and hum: 2 or more)
    assert all(c["error_rate_pct"] is None for c in summary["cells"])  # no speech: no error rate
