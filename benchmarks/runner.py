"""One benchmark run: start the servers, drive every scenario's implementations in turn, collect a Report."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kxform.plugins import load_plugin
from kxform.testing import ServerProcess

from .loadgen import Load, run_wrk, send_once
from .machine import machine_facts
from .payloads import decode_reply
from .processes import TRITON_ENVIRONMENT, Servers, start_servers
from .profiling import Profile, summarize
from .report import Measurement, Report
from .repository import build_repository
from .scenarios import (
    BUSY_CONNECTIONS,
    SATURATED_CONNECTIONS,
    SHM_IMPLEMENTATION,
    Plugins,
    Run,
    Scenario,
    build_scenarios,
    server_specs,
)
from .triton_metrics import read_counters
from .usage import MachineCpu, ProcessUsage, tree_cpu_seconds

__all__ = ["Options", "run_benchmark"]

OTHERS_LIMIT_CORES = 0.15  # more CPU than this used outside the benchmark during a run is noted
# wrk leaves its last requests in flight when it stops, and the servers finish them: at imagenet-8's ~5 s
# per request, what a warm-up left would take a quarter of a 20 s run. The servers are idle once Triton
# and the transformer together use less than IDLE_CORES for a poll.
DRAIN_POLL_S = 0.3
IDLE_CORES = 0.1
DRAIN_TIMEOUT_S = 120.0
# Whose outputs must equal kxform's for the same images: the independent implementations of the same
# preprocessing; Triton sent the tensor directly (the bench makes it with the plugins' pipelines, and
# tensor-8's plugin must pass it through unchanged); kxform-shm, whose tensors take another road to
# Triton. kserve-noop answers a constant; kxform-grpc and kxform-workersN send what kxform does.
COMPARED = ("reference", "triton-ensemble", "triton", SHM_IMPLEMENTATION)


@dataclass(frozen=True, slots=True)
class Options:
    repository: Path
    load: Load
    warmup_s: float
    plugins: Plugins
    scenarios: tuple[str, ...]  # names to run; empty: all
    profile: bool
    results_dir: Path
    command: str


@dataclass
class _Session:
    """What the runs of one benchmark share: options, servers, the report being filled."""

    options: Options
    servers: Servers
    report: Report
    replies: dict[tuple[str, str], Any]  # (scenario, implementation) -> the first reply's JSON


def _v2_input_name(plugin: str) -> str:
    """The V2 input the plugin declares (kxform takes any name when it declares none)."""
    inputs = load_plugin(plugin).transformer.inputs
    return inputs[0].name if inputs else "image"


def _v2_input_names(plugins: Plugins) -> dict[str, str]:
    """The V2 input names of the plugins the V2 scenarios send to: cifar10's and the tensor plugin's."""
    return {name: _v2_input_name(name) for name in (plugins.cifar10, plugins.tensor) if name is not None}


def _check_first_reply(session: _Session, scenario: Scenario, run: Run) -> None:
    """One request before the load: a failure is noted (the load's errors will show it too)."""
    reply = send_once(session.servers.get(run.server).http_url, run.payload)
    if reply.status != 200:
        note = f"{scenario.name}/{run.implementation}: first request got {reply.status}: {reply.body[:300]!r}"
        session.report.notes.append(note)
        return
    with contextlib.suppress(ValueError):
        session.replies[(scenario.name, run.implementation)] = decode_reply(reply.body, reply.header_length)


def _pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def _load(options: Options, scenario: Scenario, run: Run) -> Load:
    return replace(
        options.load,
        duration_s=options.load.duration_s * scenario.duration_scale,
        connections=run.connections or options.load.connections,
    )


def _servers_cpu_s(pids: set[int]) -> float:
    return sum(tree_cpu_seconds(pid) for pid in pids)


def _drain(session: _Session, scenario: Scenario, run: Run) -> None:
    """Wait until Triton and the run's transformer have finished what the last load left in flight."""
    pids = {_pid(session.servers.triton), _pid(session.servers.get(run.server))}
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    before = _servers_cpu_s(pids)
    while time.monotonic() < deadline:
        time.sleep(DRAIN_POLL_S)
        now = _servers_cpu_s(pids)
        if now - before < IDLE_CORES * DRAIN_POLL_S:
            return
        before = now
    session.report.notes.append(
        f"{scenario.name}/{run.implementation}: the servers were still busy {DRAIN_TIMEOUT_S:g} s after a load ended"
    )


def _measure(session: _Session, scenario: Scenario, run: Run) -> Measurement:
    """Check one reply, warm up, then measure under load with the transformer's and Triton's usage."""
    server, triton = session.servers.get(run.server), session.servers.triton
    load = _load(session.options, scenario, run)
    _check_first_reply(session, scenario, run)
    run_wrk(server.http_url, run.payload, replace(load, duration_s=session.options.warmup_s))
    _drain(session, scenario, run)
    metrics_url = f"http://127.0.0.1:{triton.ports['metrics']}/metrics"
    counters = read_counters(metrics_url, scenario.model)
    with MachineCpu() as machine, ProcessUsage(_pid(triton)) as triton_usage, ProcessUsage(_pid(server)) as usage:
        result = run_wrk(server.http_url, run.payload, load)
    batch = read_counters(metrics_url, scenario.model).batch_since(counters)
    served = max(result.requests, 1)
    transformer_cpu_s = usage.cpu_s if server is not triton else 0.0
    others_s = machine.busy_s - machine.own_s - triton_usage.cpu_s - transformer_cpu_s
    return Measurement(
        scenario=scenario.name,
        implementation=run.implementation,
        connections=load.connections,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        requests=result.requests,
        peak_rss_mb=usage.peak_rss_mb if server is not triton else None,
        peak_worker_rss_mb=usage.peak_process_rss_mb if server is not triton else None,
        cpu_ms_per_request=1000 * usage.cpu_s / served if server is not triton else None,
        triton_cpu_ms_per_request=1000 * triton_usage.cpu_s / served,
        triton_batch=batch,
        other_cores=max(others_s, 0.0) / result.duration_s,
    )


def _profile(session: _Session, scenario: Scenario, run: Run) -> None:
    """py-spy on the transformer during another run of the same load; the summary goes in the report."""
    server = session.servers.get(run.server)
    path = session.options.results_dir / f"profile-{scenario.name}-{run.implementation}.txt"
    load = _load(session.options, scenario, run)
    with Profile(_pid(server), load.duration_s, path.with_suffix(".collapsed")):
        result = run_wrk(server.http_url, run.payload, load)
    summary = f"{result.rps:.1f} req/s while profiled; " + summarize(path.with_suffix(".collapsed")).text()
    path.write_text(summary + "\n")
    session.report.profiles[f"{scenario.name}/{run.implementation}"] = summary
    print(f"\nprofile {scenario.name}/{run.implementation} ({path}):\n{summary}", flush=True)


def _as_numbers(value: Any) -> list[float] | None:
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]
    return None


def _as_probabilities(value: Any) -> list[float] | None:
    """The probabilities of a top-k list, as the imagenet plugin replies: ``[{"class", "probability"}, ...]``."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "probability" in v for v in value):
        return [float(v["probability"]) for v in value]
    return None


def _first(value: Any, found: Callable[[Any], list[float] | None]) -> list[float] | None:
    """What ``found`` finds first in a reply, depth first: the scores of its first image."""
    if (here := found(value)) is not None:
        return here
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((result for child in children if (result := _first(child, found)) is not None), None)


def _first_output_row(reply: dict[str, Any]) -> list[float] | None:
    """The first image's values of a V2 reply's first output (its ``shape`` is a list of numbers too)."""
    output = reply["outputs"][0]
    data, shape = output.get("data"), output.get("shape", [])
    return _as_numbers(data[: math.prod(shape[1:])] if data and len(shape) > 1 else data)


def _scores(reply: Any) -> list[float] | None:
    """The first image's logits in a reply, or else its top-k probabilities."""
    if isinstance(reply, dict) and reply.get("outputs"):
        return _first_output_row(reply)
    logits = _first(reply, _as_numbers)
    return logits if logits is not None else _first(reply, _as_probabilities)


def _top_probabilities(logits: list[float], k: int) -> list[float]:
    """The k largest softmax probabilities of ``logits``, largest first: logits made comparable to top-k replies."""
    exponentials = np.exp(np.asarray(logits, dtype=np.float64) - max(logits))
    return sorted((exponentials / exponentials.sum()).tolist(), reverse=True)[:k]


def _max_difference(ours: list[float], theirs: list[float]) -> float | None:
    """The largest difference of two replies' scores; logits against top-k probabilities as probabilities."""
    if len(ours) < len(theirs):
        theirs = _top_probabilities(theirs, len(ours))
    if len(ours) != len(theirs):
        return None
    return max(abs(a - b) for a, b in zip(ours, theirs, strict=True))


def _note_agreement(session: _Session, scenario: Scenario) -> None:
    """Whether kxform and the others of COMPARED computed the same outputs for the same images."""
    ours = _scores(session.replies.get((scenario.name, "kxform")))
    for other in COMPARED:
        theirs = _scores(session.replies.get((scenario.name, other)))
        delta = None if ours is None or theirs is None else _max_difference(ours, theirs)
        if delta is None:
            continue
        verdict = "agree" if math.isclose(delta, 0.0, abs_tol=1e-3) else "DIFFER"
        session.report.notes.append(f"{scenario.name}: kxform and {other} outputs {verdict} (max |diff| {delta:.1e})")


def _run_scenario(session: _Session, scenario: Scenario) -> None:
    print(f"\n{scenario.name}: {scenario.description}", flush=True)
    for run in scenario.runs:
        measurement = _measure(session, scenario, run)
        session.report.measurements.append(measurement)
        rss = "" if measurement.peak_rss_mb is None else f", peak RSS {measurement.peak_rss_mb:.0f} MB"
        print(
            f"  {run.implementation:<16} {measurement.connections:3d} conns  {measurement.rps:8.1f} req/s  "
            f"p50 {measurement.p50_ms:7.2f} ms  p99 {measurement.p99_ms:7.2f} ms  errors {measurement.errors}{rss}",
            flush=True,
        )
        if measurement.other_cores > OTHERS_LIMIT_CORES:
            session.report.notes.append(
                f"{scenario.name}/{run.implementation} ({measurement.connections} connections): other processes used "
                f"{measurement.other_cores:.2f} cores during the run; its numbers are lower than on a quiet machine"
            )
        _drain(session, scenario, run)  # what this load left queued is not the next run's
    _note_agreement(session, scenario)


def _selected(scenarios: list[Scenario], names: tuple[str, ...]) -> list[Scenario]:
    unknown = set(names) - {scenario.name for scenario in scenarios}
    if unknown:
        raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; choose from {[s.name for s in scenarios]}")
    return [scenario for scenario in scenarios if not names or scenario.name in names]


def _new_report(options: Options) -> Report:
    load = options.load
    return Report(
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        machine=machine_facts(),
        command=options.command,
        load={
            "connections": load.connections,
            "duration_s": load.duration_s,
            "warmup_s": options.warmup_s,
            "wrk_threads": load.threads,
            "triton_environment": TRITON_ENVIRONMENT,
            "summary": (
                f"wrk, {load.connections} connections (cifar10-1 also {BUSY_CONNECTIONS} and "
                f"{SATURATED_CONNECTIONS}), {load.duration_s:g} s per run "
                f"after {options.warmup_s:g} s of warm-up; Triton with "
                + " ".join(f"{name}={value}" for name, value in TRITON_ENVIRONMENT.items())
                + " as in the seeds' InferenceService"
            ),
        },
        plugins={
            "cifar10": options.plugins.cifar10,
            "imagenet": options.plugins.imagenet,
            "tensor": options.plugins.tensor,
        },
        measurements=[],
    )


def run_benchmark(options: Options) -> Report:
    """Start Triton and the transformers, measure each selected scenario, profile if asked; stop all."""
    report = _new_report(options)
    with contextlib.ExitStack() as stack:
        scenarios = _selected(build_scenarios(options.plugins, _v2_input_names(options.plugins)), options.scenarios)
        needed = {run.server for scenario in scenarios for run in scenario.runs}
        specs = [spec for spec in server_specs(options.plugins) if spec.key in needed]
        # One Triton for every implementation: the user's models and the ensembles (triton-ensemble) side by side.
        repository = build_repository(
            options.repository, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kxform-bench-models-")))
        )
        print(
            f"starting Triton on {options.repository} and the ensembles ({repository}), the transformers ...",
            flush=True,
        )
        servers = start_servers(stack, repository, specs, options.results_dir / "logs")
        session = _Session(options, servers, report, {})
        for scenario in scenarios:
            _run_scenario(session, scenario)
        for scenario in scenarios if options.profile else []:
            for run in (r for r in scenario.runs if r.implementation.startswith("kxform") and r.connections is None):
                _profile(session, scenario, run)
    return report
