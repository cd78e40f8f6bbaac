"""The streams benchmark's own arithmetic: where time-to-final goes, from an engine trace."""
import pytest

from babelcast.bench.streams import final_breakdown


def test_final_breakdown_splits_waiting_from_steps():
    """A flush at 1.0 s rides along with the step at 1.2 s (final at 1.5 s); one at 2.0 s needs two steps
    of its own (2.05 and 2.3 s, final at 2.5 s); steps of other streams are not counted."""
    step = lambda start, rows, flushing: {"start": start, "seconds": 0.2, "right": 3, "k": 1, "rows": rows,  # noqa: E731
                                          "flushing": flushing, "files": False, "oldest_chunk": start}
    trace = {"steps": [step(0.9, 2, []), step(1.2, 3, ["a"]), step(2.05, 1, ["b"]), step(2.3, 1, ["b"])],
             "finals": [("a", 1.0, 1.5), ("b", 2.0, 2.5)]}
    out = final_breakdown(trace)
    assert out["wait_ms"]["p50"] == pytest.approx(125.0)  # 200 and 50 ms
    assert out["steps_ms"]["p50"] == pytest.approx(375.0)  # 300 and 450 ms
    assert out["steps_per_final"] == {"p50": 1.5, "p95": pytest.approx(1.95)}
    assert out["flush_only_steps"] == 2 and out["steps"] == 4 and out["rows"]["max"] == 3
