"""The benchmark harness end to end at a tiny size, so that `make bench` keeps working.

Not a benchmark: five spectators, a one-second window, no matplotlib. It starts the arena under
daphne (on the bench settings, with its own SQLite database) and the sse-starlette peer, each with a
load process, exactly as `make bench` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run

pytestmark = [pytest.mark.e2e, pytest.mark.one_pass]

SPECTATORS = 5


def test_the_harness_measures_the_arena_and_the_peer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "wait_for_quiet", lambda: 0.0)  # a busy test machine must not stall it
    out = tmp_path / "docs"

    run.main(
        ["--steps", str(SPECTATORS), "--warmup", "0.5", "--window", "1", "--grace", "0.5", "--out", str(out)]
    )

    document = json.loads((out / "benchmarks.json").read_text())
    results = {r["target"]: r for r in document["results"]}
    assert set(results) == {"arena", "peer"}
    for result in results.values():
        assert result["spectators"] == SPECTATORS
        problems = [result[key] for key in ("connect_errors", "dropped", "gaps", "undelivered")]
        assert problems == [0, 0, 0, 0]
        # Tokens flowed, and every one reached every spectator. How many a second is the clock's
        # schedule (tests/test_bench_clock.py) and the machine's speed, not something to bound here.
        assert result["tokens_sent_per_second"] > 0
        assert result["tokens_delivered_per_spectator_per_second"] == result["tokens_sent_per_second"]
        assert 0 < result["latency_ms_p50"] <= result["latency_ms_p99"] <= result["latency_ms_max"]
        assert result["server_cpu_percent"] > 0 and result["server_peak_rss_kb"] > 0
        assert not result["broken"]
    report = (out / "benchmarks.md").read_text()
    assert "| 5 | arena |" in report and "| 5 | peer |" in report
    assert "matplotlib is not installed" in report or (out / "benchmarks-p99.png").exists()
