"""The plot of `docs/benchmarks.md`: p99 latency against spectators, the arena and the peer.

Needs matplotlib (`bench/requirements.txt`), which only the plot needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

STYLES = {
    "arena": ("tab:blue", "o", "arena (Django on daphne)"),
    "peer": ("tab:orange", "s", "peer (sse-starlette)"),
}
TARGETS = [(2000, 250), (5000, 500)]
# Where a step whose p99 is unmeasurable (tokens not delivered in time) is drawn.
OFF_THE_CHART_MS = 5000


def p99_against_spectators(results: Sequence[dict[str, Any]], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for target, (colour, marker, label) in STYLES.items():
        steps = sorted((r for r in results if r["target"] == target), key=lambda r: r["spectators"])
        if not steps:
            continue
        xs = [r["spectators"] for r in steps]
        ys = [r["latency_ms_p99"] if r["latency_ms_p99"] is not None else OFF_THE_CHART_MS for r in steps]
        axes.plot(xs, ys, color=colour, marker=marker, label=label)
        for r, x, y in zip(steps, xs, ys, strict=True):
            if r["broken"]:
                axes.annotate("broke", (x, y), textcoords="offset points", xytext=(4, 6), color=colour)
    for spectators, limit in TARGETS:
        axes.plot([spectators], [limit], marker="_", markersize=22, color="tab:green")
    axes.plot([], [], marker="_", linestyle="none", markersize=12, color="tab:green", label="targets")
    axes.axhline(1000, color="grey", linestyle=":", linewidth=1, label="break (1 s)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("spectators (one battle, 50 tokens/s)")
    axes.set_ylabel("token latency p99 (ms)")
    axes.set_title("One server process on one core")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
