"""What one predictor call costs the transformer: kxform's HTTP/1.1 client, grpc.aio, and aiohttp.

``python -m benchmarks.predictor_clients`` starts Triton on ``models/`` and sends the cifar10 tensor of
one image (the call kxform makes per batch) from this process, with each client in turn, ``--calls``
times at ``--concurrency`` calls in flight, and prints the process's CPU time per call. aiohttp (with
the same V2 codec) is what kxform's HTTP predictor was built on before its own client.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from kxform.predictor import PredictorSettings, create_predictor
from kxform.testing import start_triton
from kxform.v2 import HEADER_LENGTH, RequestedOutput, V2Tensor, decode_rest_response, encode_rest_request

ROOT = Path(__file__).resolve().parent.parent
Call = Callable[[], Awaitable[Any]]


class AiohttpClient:
    """The predictor client kxform had before (aiohttp, same V2 codec): the yardstick."""

    def __init__(self, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}"
        self.session: aiohttp.ClientSession | None = None

    async def infer(self, model: str, inputs: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
        if self.session is None:
            # Asked for gzip (aiohttp's default), Triton compresses every tensor: ask for none.
            self.session = aiohttp.ClientSession(auto_decompress=False, headers={"Accept-Encoding": "identity"})
        tensors = [V2Tensor.from_array(name, array) for name, array in inputs.items()]
        body, headers = encode_rest_request(tensors, [RequestedOutput(name) for name in outputs])
        async with self.session.post(f"{self.url}/v2/models/{model}/infer", data=body, headers=headers) as reply:
            payload = await reply.read()
            return decode_rest_response(payload, reply.headers.get(HEADER_LENGTH)).arrays()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    """(CPU ms per call, calls per second of wall time) for ``calls`` calls, ``concurrency`` at a time."""
    for _ in range(50):  # warm up: connections, code paths
        await call()
    remaining = calls

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started, cpu = time.perf_counter(), _cpu()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    wall, used = time.perf_counter() - started, _cpu() - cpu
    return used * 1000 / calls, calls / wall


async def _run(http: int, grpc: int, calls: int, concurrency: int) -> None:
    tensor = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    inputs, outputs = {"INPUT__0": tensor}, ["OUTPUT__0"]
    http_client = create_predictor(PredictorSettings(f"127.0.0.1:{http}", "v2"))
    grpc_client = create_predictor(PredictorSettings(f"127.0.0.1:{grpc}", "grpc-v2"))
    aiohttp_client = AiohttpClient("127.0.0.1", http)
    reference = (await http_client.infer("cifar10", inputs, outputs))["OUTPUT__0"]
    np.testing.assert_allclose((await aiohttp_client.infer("cifar10", inputs, outputs))["OUTPUT__0"], reference)
    clients: dict[str, Call] = {
        "kxform's HTTP predictor (httptools)": lambda: http_client.infer("cifar10", inputs, outputs),
        "kxform's gRPC predictor (grpc.aio)": lambda: grpc_client.infer("cifar10", inputs, outputs),
        "aiohttp, same V2 codec": lambda: aiohttp_client.infer("cifar10", inputs, outputs),
    }
    print(f"{calls} calls of cifar10 (1 image), {concurrency} in flight; CPU of this process per call:")
    for name, call in clients.items():
        cpu_ms, rate = await _measure(call, calls, concurrency)
        print(f"  {name:36} {cpu_ms:6.3f} ms CPU/call   {rate:7.0f} calls/s")
    await http_client.close()
    await grpc_client.close()
    await aiohttp_client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.predictor_clients", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        triton = start_triton(args.model_repository, Path(logs))
        try:
            asyncio.run(_run(triton.ports["http"], triton.ports["grpc"], args.calls, args.concurrency))
        finally:
            triton.stop()


if __name__ == "__main__":
    main()
