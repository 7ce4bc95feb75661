"""``python -m benchmarks.stall``: health and small-request latency while huge images are being decoded.

Starts Triton and ``kxform serve --transformer imagenet --transformer cifar10``, sends ``--huge``
concurrent requests each carrying one 9000x9000 JPEG, and meanwhile probes ``/v2/health/live`` and a
small cifar10 request every 50 ms until the huge ones are done. Prints the probes' p50/p99/max; the
tests assert only that the probes are answered while the huge requests are in flight.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from kxform.testing import start_serve, start_triton

ROOT = Path(__file__).resolve().parents[1]


def _post(url: str, body: bytes, timeout: float = 300) -> int:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _timed(call: object) -> float:
    started = time.perf_counter()
    call()  # type: ignore[operator]
    return 1000 * (time.perf_counter() - started)


def _body(side: int, quality: int = 50) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(buffer, format="JPEG", quality=quality)
    return json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(buffer.getvalue()).decode()}}]}).encode()


def _summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{name}: n={len(values)} p50 {statistics.median(values):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"


def run(huge: int, extra: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch:
        triton = start_triton(ROOT / "models", Path(scratch))
        serve = start_serve(["imagenet", "cifar10"], f"127.0.0.1:{triton.ports['http']}", Path(scratch), extra=extra)
        try:
            return _measure(serve.http_url, huge)
        finally:
            serve.stop()
            triton.stop()


def _measure(base: str, huge: int) -> dict[str, object]:
    big, small = _body(9000), _body(32)
    live: list[float] = []
    predict: list[float] = []
    done = threading.Event()
    with ThreadPoolExecutor(max_workers=huge) as clients:
        started = time.perf_counter()
        futures = [clients.submit(_post, f"{base}/v1/models/imagenet:predict", big) for _ in range(huge)]
        threading.Thread(target=lambda: (all(f.result() for f in futures), done.set()), daemon=True).start()
        time.sleep(0.3)
        while not done.is_set():
            live.append(_timed(lambda: urllib.request.urlopen(f"{base}/v2/health/live", timeout=300).read()))
            predict.append(_timed(lambda: _post(f"{base}/v1/models/cifar10:predict", small)))
            time.sleep(0.05)
        statuses = [future.result() for future in futures]
    return {
        "huge_seconds": time.perf_counter() - started,
        "huge_statuses": statuses,
        "live_ms": live,
        "small_predict_ms": predict,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge", type=int, default=12, help="concurrent 9000x9000 requests (default: %(default)s)")
    parser.add_argument("serve_args", nargs="*", help="extra kxform serve flags (after --)")
    args = parser.parse_args()
    result = run(args.huge, args.serve_args)
    print(f"{args.huge} huge requests: statuses {sorted(set(result['huge_statuses']))}, {result['huge_seconds']:.1f} s")
    print(_summary("GET /v2/health/live during them", result["live_ms"]))  # type: ignore[arg-type]
    print(_summary("small cifar10 predict during them", result["small_predict_ms"]))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
