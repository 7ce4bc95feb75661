"""The results: a table, the kxform / other ratios, the issue's targets, as text, JSON and Markdown."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .scenarios import (
    BUSY_CONNECTIONS,
    SATURATED_CONNECTIONS,
    SHM_IMPLEMENTATION,
    TRANSPORT_SCENARIO,
    WORKERS_IMPLEMENTATION,
)

__all__ = ["Measurement", "Ratio", "Report", "Target", "ratios", "targets"]

RSS_PER_WORKER_LIMIT_MB = 200.0
# Shared memory on the transport-bound scenario, against the best wire transport (gRPC's raw contents).
SHM_OVER_GRPC_RPS = 1.3
SHM_OVER_GRPC_CPU = 0.7


@dataclass(frozen=True, slots=True)
class Measurement:
    """One implementation under one scenario's load."""

    scenario: str
    implementation: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    peak_rss_mb: float | None  # the transformer process and its children; None for Triton itself
    peak_worker_rss_mb: float | None  # the largest of those processes alone: one worker of --workers N
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
        data["targets"] = [asdict(target) for target in targets(self.measurements, self.base_connections)]
        return data

    @property
    def base_connections(self) -> int:
        """The connections of every run that does not set its own (``--connections``)."""
        return int(self.load["connections"])

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
                "ratios (one run; @N: at N connections):",
                *[f"  {ratio.name:<60} {ratio.value:8.2f}" for ratio in ratios(self.measurements)],
                "",
                "targets:",
                *[f"  {_target_line(target)}" for target in targets(self.measurements, self.base_connections)],
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
                "![req/s and p99 per implementation and scenario](RESULTS.png)",
                "",
                "| ratio (one run; @N: at N connections) | value |",
                "|---|---|",
                *[f"| {ratio.name} | {ratio.value:.2f} |" for ratio in ratios(self.measurements)],
                "",
                "| target | value | goal | met |",
                "|---|---|---|---|",
                *[_target_row(target) for target in targets(self.measurements, self.base_connections)],
                *(["", *[f"- {note}" for note in self.notes]] if self.notes else []),
                "",
            ]
        )


_COLUMNS = (
    "scenario",
    "implementation",
    "conns",
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
        str(m.connections),
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


def _find(
    measurements: Sequence[Measurement], scenario: str, connections: int, implementation: str
) -> Measurement | None:
    key = (scenario, connections, implementation)
    return next((m for m in measurements if (m.scenario, m.connections, m.implementation) == key), None)


def _rps(m: Measurement) -> float:
    return m.rps


def _rss(m: Measurement) -> float:
    return m.peak_rss_mb or 0.0


def _cpu(m: Measurement) -> float:
    """The transformer's CPU per request (0 for Triton itself, which has no transformer)."""
    return m.cpu_ms_per_request or 0.0


def _quotient(
    upper: Measurement | None, lower: Measurement | None, metric: Callable[[Measurement], float]
) -> float | None:
    """``metric(upper) / metric(lower)``; None if either is missing or the divisor is 0."""
    if upper is None or lower is None or not metric(lower):
        return None
    return metric(upper) / metric(lower)


_RATIOS = (
    ("kxform", "triton", _rps, "req/s"),
    ("kxform", "triton-ensemble", _rps, "req/s"),
    ("kxform", "reference", _rps, "req/s"),
    ("kxform", "kserve-noop", _rps, "req/s"),
    ("kxform", "reference", _rss, "peak RSS"),
    (WORKERS_IMPLEMENTATION, "triton-ensemble", _rps, "req/s"),
    (WORKERS_IMPLEMENTATION, "kxform", _rps, "req/s"),
    ("kxform-grpc", "kxform", _rps, "req/s"),
    (SHM_IMPLEMENTATION, "kxform-grpc", _rps, "req/s"),
    (SHM_IMPLEMENTATION, "kxform", _rps, "req/s"),
    (SHM_IMPLEMENTATION, "kxform-grpc", _cpu, "transformer CPU ms/req"),
    (SHM_IMPLEMENTATION, "kxform", _cpu, "transformer CPU ms/req"),
)


def _label(scenario: str, connections: int) -> str:
    return f"{scenario} @{connections}"


def ratios(measurements: Sequence[Measurement]) -> list[Ratio]:
    """kxform against the anchors, the reference and its other configurations; per scenario and connections."""
    found = []
    for scenario, connections in dict.fromkeys((m.scenario, m.connections) for m in measurements):
        for top, bottom, metric, unit in _RATIOS:
            upper, lower = (_find(measurements, scenario, connections, i) for i in (top, bottom))
            value = _quotient(upper, lower, metric)
            if value is not None:
                found.append(Ratio(f"{_label(scenario, connections)}: {top} / {bottom} {unit}", value))
    return found


def _at_least(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f">= {goal:g}", None if value is None else value >= goal)


def _at_most(name: str, value: float | None, goal: float) -> Target:
    return Target(name, value, f"<= {goal:g}", None if value is None else value <= goal)


def _kxform_runs(measurements: Sequence[Measurement]) -> list[Measurement]:
    return [m for m in measurements if m.implementation.startswith("kxform")]


def _over_triton(measurements: Sequence[Measurement], scenario: str, connections: int, goal: float) -> Target:
    kxform, triton = (_find(measurements, scenario, connections, i) for i in ("kxform", "triton"))
    return _at_least(
        f"{_label(scenario, connections)}: kxform / Triton direct req/s", _quotient(kxform, triton, _rps), goal
    )


def _over_ensemble(measurements: Sequence[Measurement], scenario: str, connections: int) -> Target:
    """kxform / triton-ensemble >= 1 with the faster of kxform and kxform-workersN, named in the target."""
    found = [_find(measurements, scenario, connections, i) for i in ("kxform", WORKERS_IMPLEMENTATION)]
    candidates = [m for m in found if m is not None]
    best = max(candidates, key=_rps, default=None)
    ensemble = _find(measurements, scenario, connections, "triton-ensemble")
    name = f"{_label(scenario, connections)}: {best.implementation if best else 'kxform'} / triton-ensemble req/s"
    if len(candidates) > 1:
        name += f" (best of {', '.join(m.implementation for m in candidates)})"
    return _at_least(name, _quotient(best, ensemble, _rps), 1.0)


def _shm_over_grpc(
    measurements: Sequence[Measurement], base: int, metric: Callable[[Measurement], float]
) -> float | None:
    """``metric`` of kxform-shm / that of kxform-grpc on the transport-bound scenario."""
    shm, grpc = (_find(measurements, TRANSPORT_SCENARIO, base, i) for i in (SHM_IMPLEMENTATION, "kxform-grpc"))
    return _quotient(shm, grpc, metric)


def _shm_targets(measurements: Sequence[Measurement], base: int) -> list[Target]:
    """kxform-shm against kxform-grpc on the transport-bound scenario: more req/s, less transformer CPU each."""
    label = f"{_label(TRANSPORT_SCENARIO, base)}: {SHM_IMPLEMENTATION} / kxform-grpc"
    return [
        _at_least(f"{label} req/s", _shm_over_grpc(measurements, base, _rps), SHM_OVER_GRPC_RPS),
        _at_most(f"{label} transformer CPU ms/req", _shm_over_grpc(measurements, base, _cpu), SHM_OVER_GRPC_CPU),
    ]


def _triton_batch(measurements: Sequence[Measurement]) -> float | None:
    kxform = _find(measurements, "cifar10-1", BUSY_CONNECTIONS, "kxform")
    return None if kxform is None else kxform.triton_batch


def _tail(measurements: Sequence[Measurement]) -> float | None:
    kxform = _find(measurements, "cifar10-1", SATURATED_CONNECTIONS, "kxform")
    return None if kxform is None or not kxform.p50_ms else kxform.p99_ms / kxform.p50_ms


def _errors(measurements: Sequence[Measurement]) -> float | None:
    runs = _kxform_runs(measurements)
    return float(sum(m.errors for m in runs)) if runs else None


# The footprint target is the framework's: in these two, 8 requests of 4.8 MB each are in flight (their
# bodies, tensors and replies), which is the load's memory, not kxform's. Their RSS is in the table.
_LARGE_TENSOR_SCENARIOS = frozenset({"imagenet-8", "tensor-8"})


def _rss_per_worker(measurements: Sequence[Measurement]) -> float | None:
    values = [
        m.peak_worker_rss_mb
        for m in _kxform_runs(measurements)
        if m.peak_worker_rss_mb and m.scenario not in _LARGE_TENSOR_SCENARIOS
    ]
    return max(values) if values else None


def targets(measurements: Sequence[Measurement], base: int) -> list[Target]:
    """The issue's targets, each measured in this run; ``base`` is the connections of runs without their own."""
    m = measurements
    return [
        _over_triton(m, "cifar10-1", base, 0.5),
        _over_triton(m, "cifar10-8", base, 0.8),
        _over_triton(m, "imagenet-1", base, 0.97),
        _over_ensemble(m, "cifar10-1", base),
        _over_ensemble(m, "cifar10-1", BUSY_CONNECTIONS),
        _over_ensemble(m, "imagenet-1", base),
        _at_least(
            f"{_label('cifar10-1', BUSY_CONNECTIONS)}: Triton images per execution behind kxform", _triton_batch(m), 6
        ),
        _at_most(f"{_label('cifar10-1', SATURATED_CONNECTIONS)}: kxform p99 / p50", _tail(m), 4),
        _at_most("errors, all kxform runs", _errors(m), 0),
        _at_most(
            "kxform peak RSS per worker under load, MB (runs but imagenet-8, tensor-8)",
            _rss_per_worker(m),
            RSS_PER_WORKER_LIMIT_MB,
        ),
        *_shm_targets(m, base),
    ]


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def _target_line(target: Target) -> str:
    value = "-" if target.value is None else f"{target.value:.2f}"
    return f"{target.name:<90} {value:>8}  (goal {target.goal})  {_verdict(target.met)}"


def _target_row(target: Target) -> str:
    value = "-" if target.value is None else f"{target.value:.2f}"
    return f"| {target.name} | {value} | {target.goal} | {_verdict(target.met)} |"
