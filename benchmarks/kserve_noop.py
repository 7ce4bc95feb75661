"""The ceiling of kserve's own stack: a ``kserve.Model`` whose ``predict`` answers a constant, under ``ModelServer``.

The benchmark sends it the V1 body kxform gets in ``cifar10-1``. kserve parses the JSON, runs its
default ``preprocess``, this ``predict`` (no predictor call, no image decoded) and its default
``postprocess``, and writes the reply: what a kserve transformer costs before it does any work.
kserve's defaults are kept (uvicorn, one worker, a latency log line per request), as a transformer
built on it gets them.

Run: ``python benchmarks/kserve_noop.py --model_name cifar10 --http_port 8080``.
"""

from __future__ import annotations

import argparse
from typing import Any

import kserve

# The shape of kxform's cifar10 reply (10 logits and a class name), so that both write as much JSON.
REPLY = {"predictions": [{"logits": [0.0] * 10, "class": "airplane"}]}


class NoopModel(kserve.Model):  # type: ignore[misc]  # kserve ships no type information
    """Ready at once; every prediction is :data:`REPLY`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True  # kserve 0.21 refuses to start with a model that is not ready

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return REPLY


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])  # --model_name, --http_port, ...
    args, _ = parser.parse_known_args()
    # ModelServer reads its flags (ports, workers) from kserve's own parse of sys.argv.
    kserve.ModelServer().start(models=[NoopModel(args.model_name)])


if __name__ == "__main__":
    main()
