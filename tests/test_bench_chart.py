"""``make bench``'s chart (``benchmarks.chart``): a bar per implementation in each scenario, for req/s and p99."""

from __future__ import annotations

from pathlib import Path

from benchmarks.chart import chart_figure, write_chart
from benchmarks.report import Measurement


def measurement(scenario: str, implementation: str, rps: float, p99: float) -> Measurement:
    return Measurement(scenario, implementation, 8, rps, p99 / 2, p99, 0, 100, None, None, None, 0.3, None, 0.0)


MEASUREMENTS = [
    measurement("cifar10-1", "triton", 2900, 6.0),
    measurement("cifar10-1", "kxform", 1380, 9.4),
    measurement("cifar10-8", "kxform", 464, 26.4),
]


def test_chart_has_a_bar_per_measurement_with_its_value_and_a_legend_per_implementation() -> None:
    throughput, latency = chart_figure(MEASUREMENTS).axes

    assert sorted(bar.get_height() for bar in throughput.patches) == [464, 1380, 2900]
    assert sorted(bar.get_height() for bar in latency.patches) == [6.0, 9.4, 26.4]
    assert [text.get_text() for text in throughput.get_legend().get_texts()] == ["triton", "kxform"]
    assert [tick.get_text() for tick in throughput.get_xticklabels()] == ["cifar10-1\n8 conns", "cifar10-8\n8 conns"]


def test_chart_is_written_as_a_png(tmp_path: Path) -> None:
    path = write_chart(MEASUREMENTS, tmp_path / "RESULTS.png", "make bench")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
