"""The results: a table, the kxform/reference ratios, the targets, as text, JSON and Markdown."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Measurement", "Ratio", "Report", "Target", "ratios", "targets"]

RSS_LIMIT_MB = 250.0
GRPC_TOLERANCE = 0.97  # "not slower": gRPC within 3% of HTTP counts, the spread of repeated runs here


@dataclass(frozen=True, slots=True)
class Measurement:
    """One implementation under one scenario's load."""

    scenario: str
    implementation: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    peak_rss_mb: float | None  # the transformer process and its children; None for Triton itself
    cpu_ms_per_request: float | None  # CPU time of the transformer's processes per completed request
    triton_cpu_ms_per_request: float  # the same for Triton (server and model processes)
    triton_batch: float | None  # images per model execution in Triton (its dynamic batching)
    other_cores: float  # CPU used by processes outside the benchmark during the run, in cores


@dataclass(frozen=True, slots=True)
class Ratio:
    name: str
    value: float


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: float | None  # None when a run it needs is missing
    goal: str
    met: bool | None


@dataclass
class Report:
    """Everything one run produced, with what it ran on and how it was started."""

    date: str
    machine: dict[str, Any]
    command: str
    load: dict[str, Any]
    plugins: dict[str, str | None]
    measurements: list[Measurement]
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = [asdict(ratio) for ratio in ratios(self.measurements)]
        data["targets"] = [asdict(target) for target in targets(self.measurements)]
        return data

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def text(self) -> str:
        return "\n".join(
            [
                f"{self.date}  {self.machine['summary']}  load: {self.load['summary']}",
                "",
                _table(self.measurements, markdown=False),
                "",
                "ratios (kxform / other, one run):",
                *[f"  {ratio.name:<52} {ratio.value:8.2f}" for ratio in ratios(self.measurements)],
                "",
                "targets:",
                *[f"  {_target_line(target)}" for target in targets(self.measurements)],
                *(["", "notes:", *[f"  - {note}" for note in self.notes]] if self.notes else []),
            ]
        )

    def markdown(self) -> str:
        return "\n".join(
            [
                "# kxform benchmark: latest results",
                "",
                f"Run on {self.date}, {self.machine['summary']}. Command: `{self.command}`.",
                f"Load: {self.load['summary']}. Written by `benchmarks/report.py`; see `benchmarks/README.md`.",
                "",
                _table(self.measurements, markdown=True),
                "",
                "| ratio (one run) | value |",
                "|---|---|",
                *[f"| {ratio.name} | {ratio.value:.2f} |" for ratio in ratios(self.measurements)],
                "",
                "| target | value | goal | met |",
                "|---|---|---|---|",
                *[_target_row(target) for target in targets(self.measurements)],
                *(["", *[f"- {note}" for note in self.notes]] if self.notes else []),
                "",
            ]
        )


_COLUMNS = (
    "scenario",
    "implementation",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "peak RSS MB",
    "CPU ms/req",
    "Triton CPU ms/req",
    "Triton batch",
    "others' cores",
)


def _optional(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cells(m: Measurement) -> tuple[str, ...]:
    return (
        m.scenario,
        m.implementation,
        f"{m.rps:.1f}",
        f"{m.p50_ms:.2f}",
        f"{m.p99_ms:.2f}",
        str(m.errors),
        _optional(m.peak_rss_mb, 0),
        _optional(m.cpu_ms_per_request, 2),
        f"{m.triton_cpu_ms_per_request:.2f}",
        _optional(m.triton_batch, 1),
        f"{m.other_cores:.2f}",
    )


def _table(measurements: Sequence[Measurement], markdown: bool) -> str:
    rows = [_COLUMNS, *(_cells(m) for m in measurements)]
    if markdown:
        lines = [f"| {' | '.join(row)} |" for row in rows]
        separator = "|---|---|" + "--:|" * (len(_COLUMNS) - 2)
        return "\n".join([lines[0], separator, *lines[1:]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _find(measurements: Sequence[Measurement], scenario: str, implementation: str) -> Measurement | None:
    return next((m for m in measurements if (m.scenario, m.implementation) == (scenario, implementation)), None)


def _quotient(
    measurements: Sequence[Measurement],
    scenario: str,
    top: tuple[str, Callable[[Measurement], float]],
    bottom: tuple[str, Callable[[Measurement], float]],
) -> float | None:
    """``top`` / ``bottom``, each an (implementation, metric) in ``scenario``; None if either is missing."""
    upper, lower = _find(measurements, scenario, top[0]), _find(measurements, scenario, bottom[0])
    if upper is None or lower is None or not bottom[1](lower):
        return None
    return top[1](upper) / bottom[1](lower)


def _rps(m: Measurement) -> float:
    return m.rps


def _rss(m: Measurement) -> float:
    return m.peak_rss_mb or 0.0


def _p50(m: Measurement) -> float:
    return m.p50_ms


def _p99(m: Measurement) -> float:
    return m.p99_ms


def _rps_ratio(measurements: Sequence[Measurement], scenario: str, top: str, bottom: str) -> float | None:
    return _quotient(measurements, scenario, (top, _rps), (bottom, _rps))


_RATIOS = (
    ("kxform", "reference", _rps, "req/s"),
    ("kxform", "triton", _rps, "req/s"),
    ("kxform", "reference", _rss, "peak RSS"),
    ("kxform-grpc", "reference", _rps, "req/s"),
    ("kxform-grpc", "triton", _rps, "req/s"),
    ("kxform-grpc", "kxform", _rps, "req/s"),
)


def ratios(measurements: Sequence[Measurement]) -> list[Ratio]:
    """kxform against the reference, Triton direct and itself over gRPC, scenario by scenario."""
    found = []
    for scenario in dict.fromkeys(m.scenario for m in measurements):
        for top, bottom, metric, unit in _RATIOS:
            value = _quotient(measurements, scenario, (top, metric), (bottom, metric))
            if value is not None:
                found.append(Ratio(f"{scenario}: {top} / {bottom} {unit}", value))
    return found


def _kxform_rss(measurements: Sequence[Measurement]) -> float | None:
    values = [m.peak_rss_mb for m in measurements if m.implementation.startswith("kxform") and m.peak_rss_mb]
    return max(values) if values else None


def _at_least(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f">= {goal:g}", None if value is None else value >= goal)


def _at_most(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f"<= {goal:g}", None if value is None else value <= goal)


def targets(measurements: Sequence[Measurement]) -> list[Target]:
    """The issue's targets, each measured in this run."""
    m = measurements
    p99_over_p50 = _quotient(m, "cifar10-1", ("kxform", _p99), ("reference", _p50))
    return [
        _at_least("cifar10-1: kxform / reference req/s", _rps_ratio(m, "cifar10-1", "kxform", "reference"), 3),
        _at_most("cifar10-1: kxform p99 / reference p50", p99_over_p50, 1),
        _at_least("cifar10-8: kxform / reference req/s", _rps_ratio(m, "cifar10-8", "kxform", "reference"), 6),
        _at_least("cifar10-1: kxform / Triton direct req/s", _rps_ratio(m, "cifar10-1", "kxform", "triton"), 0.4),
        _at_most("kxform peak RSS under load, MB (all runs)", _kxform_rss(m), RSS_LIMIT_MB),
        _at_least(
            "imagenet-1: kxform-grpc / kxform (HTTP) req/s",
            _rps_ratio(m, "imagenet-1", "kxform-grpc", "kxform"),
            GRPC_TOLERANCE,
        ),
    ]


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def _target_line(target: Target) -> str:
    value = "-" if target.value is None else f"{target.value:.2f}"
    return f"{target.name:<48} {value:>8}  (goal {target.goal})  {_verdict(target.met)}"


def _target_row(target: Target) -> str:
    value = "-" if target.value is None else f"{target.value:.2f}"
    return f"| {target.name} | {value} | {target.goal} | {_verdict(target.met)} |"
