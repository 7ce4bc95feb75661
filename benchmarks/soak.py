"""``python -m benchmarks.soak`` (``make soak``): minutes of mixed valid and invalid load on ``kxform serve``.

Starts the real Triton (``kxform triton`` on ``models/``) and ``kxform serve --transformer cifar10
--transformer text`` in front of it (HTTP predictor), both on free ports of 127.0.0.1, then keeps
``--connections`` asyncio workers (aiohttp, one keep-alive connection each) sending a weighted mix of
request classes for ``--warmup`` + ``--seconds`` seconds. Every class has the one status the server
must answer it with. It prints, and writes to ``benchmarks/results/soak.json``, the requests and
statuses per class and four checks, and exits 1 when one fails:

- no 5xx response;
- no dropped or failed connection (a client-side error: reset, disconnect, timeout), except for the
  oversized-header class, after which the server closes the connection by design (counted apart);
- the transformer's RSS at the end within ``--max-rss-growth`` % of its RSS after the warm-up;
- every class got only its expected status (a valid request answered 400 is a failure too).

It is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shlex
import statistics
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from kxform.testing import ServerProcess, start_serve, start_triton

from .payloads import JSON, v2_images_payload
from .processes import TRITON_ENVIRONMENT, _environment
from .usage import _rss, _tree

__all__ = ["RequestClass", "main", "request_classes"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
REQUESTS_DIR = ROOT / "deploy" / "requests"
TRANSFORMERS = ("cifar10", "text")
TEXTS = ["This movie was absolutely fantastic! Great acting and plot.", "Terrible movie, waste of time."]
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RequestClass:
    """One kind of request of the mix, the status the server must answer it with, and its share."""

    name: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    expected: int
    weight: int
    closes: bool = False  # the server answers and closes the connection (431): a reset is expected


def _gzip_of_zeros(size: int) -> bytes:
    """gzip of ``size`` zero bytes, compressed in 1 MiB steps (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    parts = [compressor.compress(zeros) for _ in range(size // MiB)]
    return b"".join([*parts, compressor.flush()])


def _v2_json(model: str, name: str, shape: list[int], datatype: str, data: list[Any]) -> bytes:
    return orjson.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]})


def request_classes(gzip_bomb_mb: int = 100, header_mb: int = 1) -> list[RequestClass]:
    """The mix: 4 valid classes (about 60 % of requests) and 10 invalid ones."""
    image_json = (REQUESTS_DIR / "cifar10-image.json").read_bytes()
    png = (REQUESTS_DIR / "cifar10-image.png").read_bytes()
    v2_binary = v2_images_payload("cifar10", "image", [png])
    json_headers = {"Content-Type": JSON}
    cifar10_v1, text_v1 = "/v1/models/cifar10:predict", "/v1/models/text:predict"
    text_v2, cifar10_v2 = "/v2/models/text/infer", "/v2/models/cifar10/infer"
    garbage = random.Random(0).randbytes(4096)
    bad_b64 = {"instances": [{"image_bytes": {"b64": "not*base64!" + base64.b64encode(png[:30]).decode()}}]}
    bad_length = {**v2_binary.headers, "Inference-Header-Content-Length": str(len(v2_binary.body) + 1000)}
    return [
        # valid
        RequestClass("v1-cifar10-image", "POST", cifar10_v1, image_json, json_headers, 200, 15),
        RequestClass("v1-text", "POST", text_v1, orjson.dumps({"instances": TEXTS}), json_headers, 200, 15),
        RequestClass(
            "v2-json-text", "POST", text_v2, _v2_json("text", "text", [2], "BYTES", TEXTS), json_headers, 200, 15
        ),
        RequestClass("v2-binary-cifar10", "POST", cifar10_v2, v2_binary.body, v2_binary.headers, 200, 15),
        # invalid
        RequestClass("bad-json", "POST", cifar10_v1, image_json[: len(image_json) // 2], json_headers, 400, 5),
        RequestClass("garbage-as-png", "POST", cifar10_v1, garbage, {"Content-Type": "image/png"}, 400, 5),
        RequestClass(
            "huge-shape",
            "POST",
            cifar10_v2,
            _v2_json("cifar10", "image", [2**31, 2**31, 2**31], "BYTES", ["x"]),
            json_headers,
            413,
            5,
        ),
        RequestClass(
            "bad-base64",
            "POST",
            cifar10_v1,
            orjson.dumps(bad_b64),
            json_headers,
            400,
            5,
        ),
        RequestClass(
            "negative-dims", "POST", text_v2, _v2_json("text", "text", [-1], "BYTES", TEXTS[:1]), json_headers, 400, 5
        ),
        RequestClass("unknown-model", "POST", "/v1/models/no-such-model:predict", image_json, json_headers, 404, 5),
        RequestClass("wrong-method", "GET", cifar10_v1, b"", {}, 405, 5),
        RequestClass("bad-header-length", "POST", cifar10_v2, v2_binary.body, bad_length, 400, 5),
        RequestClass(
            "gzip-bomb",
            "POST",
            cifar10_v1,
            _gzip_of_zeros(gzip_bomb_mb * MiB),
            {**json_headers, "Content-Encoding": "gzip"},
            413,
            1,
        ),
        RequestClass(
            "huge-header",
            "POST",
            cifar10_v1,
            image_json,
            {**json_headers, "X-Padding": "a" * (header_mb * MiB)},
            431,
            1,
            closes=True,
        ),
    ]


# --- load ------------------------------------------------------------------------------------------

_CONNECTION_ERRORS = (aiohttp.ClientError, OSError)


@dataclass
class ClassStats:
    """What one class got: statuses, client-side errors, the server closing after an answer, latencies."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # dropped/failed connections and timeouts
    closed: Counter[str] = field(default_factory=Counter)  # expected: the server closed (431 class only)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values()) + sum(self.closed.values())


@dataclass
class Load:
    classes: list[RequestClass]
    base_url: str
    timeout_s: float
    stats: dict[str, ClassStats]
    first_bodies: dict[str, bytes] = field(default_factory=dict)


async def _send(load: Load, session: aiohttp.ClientSession, request: RequestClass) -> None:
    stats = load.stats[request.name]
    started = time.perf_counter()
    try:
        async with session.request(
            request.method, load.base_url + request.path, data=request.body or None, headers=request.headers
        ) as response:
            body = await response.read()
            stats.statuses[response.status] += 1
            if response.status != request.expected:
                load.first_bodies.setdefault(f"{request.name}/{response.status}", body[:500])
    except TimeoutError:
        stats.errors["timeout"] += 1
        return
    except _CONNECTION_ERRORS as exc:
        (stats.closed if request.closes else stats.errors)[type(exc).__name__] += 1
        return
    stats.latencies_ms.append(1000 * (time.perf_counter() - started))


async def _worker(load: Load, index: int, deadline: float) -> None:
    rng = random.Random(index)
    weights = [request.weight for request in load.classes]
    timeout = aiohttp.ClientTimeout(total=load.timeout_s)
    # One keep-alive connection per worker; the class the server closes after answering gets its own.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as session,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, force_close=True), timeout=timeout) as once,
    ):
        while time.monotonic() < deadline:
            request = rng.choices(load.classes, weights)[0]
            await _send(load, once if request.closes else session, request)


def _rss_mb(process: psutil.Process) -> float:
    return _rss(_tree(process)) / MiB


async def _sample_rss(process: psutil.Process, samples: list[tuple[float, float]], started: float) -> None:
    while True:
        samples.append((round(time.monotonic() - started, 1), round(_rss_mb(process), 1)))
        await asyncio.sleep(1.0)


@dataclass
class LoadResult:
    stats: dict[str, ClassStats]
    unexpected_bodies: dict[str, bytes]
    rss_start_mb: float
    rss_end_mb: float
    rss_samples: list[tuple[float, float]]
    elapsed_s: float


async def _phase(load: Load, connections: int, seconds: float, process: psutil.Process, started: float) -> None:
    """``connections`` workers for ``seconds``, then until each one's request in flight is answered."""
    deadline = time.monotonic() + seconds
    workers = [asyncio.create_task(_worker(load, index, deadline)) for index in range(connections)]
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 10.0))
        sent = sum(stats.sent for stats in load.stats.values())
        print(f"  {time.monotonic() - started:5.0f} s: {sent} requests, RSS {_rss_mb(process):.1f} MB", flush=True)
    await asyncio.gather(*workers)


async def _idle_rss_mb(process: psutil.Process, settle_s: float) -> float:
    """The RSS with no request in flight, ``settle_s`` after the last answer."""
    await asyncio.sleep(settle_s)
    return _rss_mb(process)


async def run_load(base_url: str, pid: int, classes: list[RequestClass], args: argparse.Namespace) -> LoadResult:
    """The warm-up, then the measured load; the transformer's RSS is taken idle after each.

    Both RSS figures are taken with no request in flight (a gzip bomb being inflated holds up to
    ``--max_request_bytes`` while it is), so they compare what the server keeps, not what it is doing.
    """
    load = Load(classes, base_url, args.timeout, {request.name: ClassStats() for request in classes})
    process = psutil.Process(pid)
    started = time.monotonic()
    samples: list[tuple[float, float]] = []
    sampler = asyncio.create_task(_sample_rss(process, samples, started))
    await _phase(load, args.connections, args.warmup, process, started)
    rss_start = await _idle_rss_mb(process, args.settle)
    print(f"  warm-up done ({args.warmup:g} s): transformer RSS {rss_start:.1f} MB, idle", flush=True)
    await _phase(load, args.connections, args.seconds, process, started)
    rss_end = await _idle_rss_mb(process, args.settle)
    print(f"  load done: transformer RSS {rss_end:.1f} MB, idle", flush=True)
    elapsed = time.monotonic() - started - 2 * args.settle
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    return LoadResult(load.stats, load.first_bodies, rss_start, rss_end, samples, elapsed)


async def preflight(base_url: str, classes: list[RequestClass], timeout_s: float) -> dict[str, str]:
    """Each class once, on a fresh connection: ``{name: "status" or "ErrorName"}`` (printed)."""
    outcomes = {}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True), timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as session:
        for request in classes:
            try:
                async with session.request(
                    request.method, base_url + request.path, data=request.body or None, headers=request.headers
                ) as response:
                    body = await response.read()
                    outcome = str(response.status)
            except (TimeoutError, *_CONNECTION_ERRORS) as exc:
                body, outcome = b"", type(exc).__name__
            mark = "ok" if outcome == str(request.expected) or (request.closes and not outcome.isdigit()) else "!!"
            print(f"  [{mark}] {request.name:<20} expected {request.expected}, got {outcome}: {body[:160]!r}")
            outcomes[request.name] = outcome
    return outcomes


# --- report ----------------------------------------------------------------------------------------


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1]


def summarize(result: LoadResult, classes: list[RequestClass], args: argparse.Namespace) -> dict[str, Any]:
    per_class: dict[str, Any] = {}
    five_xx = dropped = unexpected = closed = 0
    for request in classes:
        stats = result.stats[request.name]
        five_xx += sum(count for status, count in stats.statuses.items() if status >= 500)
        dropped += sum(stats.errors.values())
        closed += sum(stats.closed.values())
        wrong = sum(count for status, count in stats.statuses.items() if status != request.expected)
        unexpected += wrong
        p50, p99 = _percentile(stats.latencies_ms, 0.5), _percentile(stats.latencies_ms, 0.99)
        per_class[request.name] = {
            "method": request.method,
            "path": request.path,
            "expected": request.expected,
            "sent": stats.sent,
            "statuses": {str(status): count for status, count in sorted(stats.statuses.items())},
            "errors": dict(stats.errors),
            "closed_by_server": dict(stats.closed),
            "unexpected_statuses": wrong,
            "p50_ms": None if p50 is None else round(p50, 2),
            "p99_ms": None if p99 is None else round(p99, 2),
        }
    growth = 100 * (result.rss_end_mb - result.rss_start_mb) / result.rss_start_mb
    total = sum(entry["sent"] for entry in per_class.values())
    checks = {
        "no_5xx": five_xx == 0,
        "no_dropped_connections": dropped == 0,
        "rss_growth_below_limit": growth < args.max_rss_growth,
        "only_expected_statuses": unexpected == 0,
    }
    return {
        "command": _command(),
        "connections": args.connections,
        "warmup_s": args.warmup,
        "seconds": args.seconds,
        "elapsed_s": round(result.elapsed_s, 1),
        "requests": total,
        "requests_per_s": round(total / result.elapsed_s, 1),
        "classes": per_class,
        "five_xx": five_xx,
        "dropped_connections": dropped,
        "closed_after_431": closed,
        "unexpected_statuses": unexpected,
        "unexpected_bodies": {key: body.decode(errors="replace") for key, body in result.unexpected_bodies.items()},
        "rss_mb": {  # both taken idle, --settle seconds after the last answer of the warm-up and of the load
            "after_warmup": round(result.rss_start_mb, 1),
            "end": round(result.rss_end_mb, 1),
            "growth_pct": round(growth, 2),
            "limit_pct": args.max_rss_growth,
            "peak": max(rss for _, rss in result.rss_samples),
            "samples": result.rss_samples,
        },
        "checks": checks,
        "passed": all(checks.values()),
    }


def _outcomes(entry: dict[str, Any]) -> str:
    parts = [f"{status}: {count}" for status, count in entry["statuses"].items()]
    parts += [f"{name}: {count}" for name, count in entry["errors"].items()]
    parts += [f"closed ({name}): {count}" for name, count in entry["closed_by_server"].items()]
    return ", ".join(parts) or "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report_text(summary: dict[str, Any]) -> str:
    lines = [
        f"soak: {summary['connections']} connections, {summary['warmup_s']:g} s warm-up + {summary['seconds']:g} s, "
        f"{summary['requests']} requests ({summary['requests_per_s']} req/s), warm-up included",
        "",
        f"{'class':<20} {'expected':>8} {'sent':>7} {'p50 ms':>8} {'p99 ms':>8}  statuses",
    ]
    for name, entry in summary["classes"].items():
        flag = "" if entry["unexpected_statuses"] == 0 and not entry["errors"] else "   <-- !!"
        lines.append(
            f"{name:<20} {entry['expected']:>8} {entry['sent']:>7} {_ms(entry['p50_ms']):>8} {_ms(entry['p99_ms']):>8}"
            f"  {_outcomes(entry)}{flag}"
        )
    rss, checks = summary["rss_mb"], summary["checks"]

    def check(label: str, value: object, key: str, note: str = "") -> str:
        return f"{label + ':':<28} {value!s:>6}  [{'ok' if checks[key] else 'FAIL'}]{note}"

    lines += [
        "",
        check("5xx responses", summary["five_xx"], "no_5xx"),
        check(
            "dropped/failed connections",
            summary["dropped_connections"],
            "no_dropped_connections",
            f"  (closed by the server after a 431, expected: {summary['closed_after_431']})",
        ),
        check("unexpected statuses", summary["unexpected_statuses"], "only_expected_statuses"),
        check(
            "transformer RSS growth",
            f"{rss['growth_pct']:+.2f} %",
            "rss_growth_below_limit",
            f"  {rss['after_warmup']:.1f} MB after the warm-up, {rss['end']:.1f} MB at the end (both idle; "
            f"limit {rss['limit_pct']:g} %), peak under load {rss['peak']:.1f} MB",
        ),
    ]
    if "servers_alive" in checks:
        lines.append(check("Triton and serve alive", checks["servers_alive"], "servers_alive"))
    for key, body in summary["unexpected_bodies"].items():
        lines.append(f"first unexpected reply {key}: {body[:300]}")
    lines.append(f"\nsoak {'passed' if summary['passed'] else 'FAILED'}")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------


def _command() -> str:
    if os.environ.get("MAKELEVEL"):
        return "make soak" + (f" SOAK_ARGS={shlex.quote(shlex.join(sys.argv[1:]))}" if sys.argv[1:] else "")
    return shlex.join(["python", "-m", "benchmarks.soak", *sys.argv[1:]])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models", help="built by `make models`")
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of load after the warm-up (%(default)s)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before RSS is first taken")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds before each RSS reading (%(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s (default: %(default)s)")
    parser.add_argument("--max-rss-growth", type=float, default=10.0, help="RSS growth limit, %% (%(default)s)")
    parser.add_argument("--gzip-bomb-mb", type=int, default=100, help="zeros in the gzip bomb, MiB (%(default)s)")
    parser.add_argument("--header-mb", type=int, default=1, help="size of the oversized header, MiB (%(default)s)")
    parser.add_argument("--only", action="append", default=[], help="send only this class (repeatable)")
    parser.add_argument("--skip", action="append", default=[], help="leave this class out (repeatable)")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "soak.json", help="default: %(default)s")
    parser.add_argument("--log-dir", type=Path, default=RESULTS_DIR / "soak-logs", help="default: %(default)s")
    return parser


def _server_log_problems(server: ServerProcess, limit: int = 40) -> list[str]:
    lines = server.log().splitlines()
    return [line for line in lines if "Traceback" in line or " ERROR " in line or "ERROR:" in line][:limit]


def _selected(classes: list[RequestClass], only: list[str], skip: list[str]) -> list[RequestClass]:
    names = {request.name for request in classes}
    if unknown := sorted(set(only + skip) - names):
        raise SystemExit(f"no request class {', '.join(unknown)}; the classes are {', '.join(sorted(names))}")
    chosen = [request for request in classes if (not only or request.name in only) and request.name not in skip]
    if not chosen:
        raise SystemExit("--only and --skip leave no request class to send")
    return chosen


def main() -> None:
    args = _parser().parse_args()
    if not (args.model_repository / "cifar10" / "config.pbtxt").exists():
        raise SystemExit(f"no model repository at {args.model_repository}: run `make models`")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    classes = _selected(request_classes(args.gzip_bomb_mb, args.header_mb), args.only, args.skip)
    with contextlib.ExitStack() as stack:
        with _environment(TRITON_ENVIRONMENT):
            triton = start_triton(args.model_repository, args.log_dir)
        stack.callback(triton.stop)
        print(f"  triton: {shlex.join(triton.command[1:])} (log: {triton.log_path})", flush=True)
        host = f"127.0.0.1:{triton.ports['http']}"
        serve = start_serve(TRANSFORMERS, host, args.log_dir, extra=["--predictor_protocol=v2"])
        stack.callback(serve.stop)
        print(f"  serve: {shlex.join(serve.command[1:])} (log: {serve.log_path})", flush=True)
        assert serve.process is not None
        print("preflight, one request per class:", flush=True)
        asyncio.run(preflight(serve.http_url, classes, args.timeout))
        print(f"load: {args.connections} connections, {args.warmup:g} s warm-up + {args.seconds:g} s", flush=True)
        result = asyncio.run(run_load(serve.http_url, serve.process.pid, classes, args))
        summary = summarize(result, classes, args)
        alive = serve.process.poll() is None and triton.process is not None and triton.process.poll() is None
        summary["checks"]["servers_alive"] = alive
        summary["passed"] = summary["passed"] and alive
        summary["serve_log_problems"] = _server_log_problems(serve)
        summary["logs"] = {"triton": str(triton.log_path), "serve": str(serve.log_path)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + report_text(summary))
    if not alive:
        print("a server exited during the soak: see the logs above")
    if summary["serve_log_problems"]:
        print(f"serve log errors ({serve.log_path}):\n  " + "\n  ".join(summary["serve_log_problems"]))
    print(f"written: {args.json}")
    sys.exit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
