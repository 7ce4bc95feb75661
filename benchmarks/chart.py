"""The benchmark as a picture: req/s and p99 per implementation and scenario, one PNG next to RESULTS.md.

``make bench`` writes it after the table; ``python -m benchmarks.chart [report.json] [out.png]`` draws one from a
saved report (``benchmarks/results/latest.json`` by default).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import Measurement

__all__ = ["chart_figure", "write_chart"]

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "benchmarks" / "RESULTS.png"


def _label(m: Measurement) -> str:
    return f"{m.scenario}\n{m.connections} conns"


def chart_figure(measurements: Sequence[Measurement]) -> Any:
    """A figure of two bar charts (req/s, p99 ms): a group per scenario and load, a bar per implementation."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(_label(m) for m in measurements))
    implementations = list(dict.fromkeys(m.implementation for m in measurements))
    found = {(_label(m), m.implementation): m for m in measurements}
    figure, axes = plt.subplots(2, 1, figsize=(max(8.0, 1.6 * len(groups)), 8), layout="constrained")
    width = 0.8 / len(implementations)
    for axis, (title, value, log) in zip(
        axes,
        (("throughput (req/s, more is better)", "rps", True), ("p99 latency (ms, less is better)", "p99_ms", True)),
        strict=True,
    ):
        for index, implementation in enumerate(implementations):
            xs = [g + index * width for g, group in enumerate(groups) if (group, implementation) in found]
            ys = [getattr(found[group, implementation], value) for group in groups if (group, implementation) in found]
            axis.bar(xs, ys, width, label=implementation)
        axis.set_title(title)
        axis.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, fontsize=8)
        if log:
            axis.set_yscale("log")
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(ncols=min(4, len(implementations)), fontsize=8)
    return figure


def write_chart(measurements: Sequence[Measurement], path: Path = CHART, title: str = "") -> Path:
    figure = chart_figure(measurements)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)
    return path


def main(argv: Sequence[str]) -> int:
    source = Path(argv[0]) if argv else ROOT / "benchmarks" / "results" / "latest.json"
    target = Path(argv[1]) if len(argv) > 1 else CHART
    report = json.loads(source.read_text())
    measurements = [Measurement(**m) for m in report["measurements"]]
    title = f"make bench, {report['date']}"
    print(f"written: {write_chart(measurements, target, title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
