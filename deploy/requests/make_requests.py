"""Writes the sample requests docs/deploy.md sends to a deployed cifar10 InferenceService.

Standard library only, so it runs anywhere: python3 deploy/requests/make_requests.py [OUT_DIR]

  cifar10-image.png       a 32x32 RGB test picture
  cifar10-image.json      V1 body for the kxform transformer: {"instances": [{"image_bytes": {"b64": ...}}]}
  cifar10-v2.json         V2 REST body for Triton directly: INPUT__0, FP32 [1,3,32,32]
  cifar10-v2-grpc.json    the same tensor as a gRPC ModelInferRequest for grpcurl (raw_input_contents)

The tensor is the picture as the seeds' transformer prepares it: CHW, scaled to [0, 1], then
normalised with mean 0.5 and std 0.5, i.e. pixel / 127.5 - 1.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import zlib
from pathlib import Path

SIZE = 32


def pixel(x: int, y: int) -> tuple[int, int, int]:
    """A sky-to-sea gradient with a dark hull in the middle: deterministic, not noise."""
    if 12 <= y <= 19 and 6 <= x <= 25 - (y - 12):
        return (60, 50, 45)
    if y < 16:
        return (120 + 3 * y, 170 + 2 * y, 235)
    return (20, 60 + 2 * y, 120 + 3 * y)


def pixels() -> list[list[tuple[int, int, int]]]:
    return [[pixel(x, y) for x in range(SIZE)] for y in range(SIZE)]


def encode_png(rows: list[list[tuple[int, int, int]]]) -> bytes:
    """An 8-bit RGB PNG; stored (level 0) deflate, so every zlib writes the same bytes."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + bytes(channel for rgb in row for channel in rgb) for row in rows)
    header = struct.pack(">IIBBBBB", len(rows[0]), len(rows), 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")


def tensor(rows: list[list[tuple[int, int, int]]]) -> list[float]:
    """CHW, flattened: the three colour planes one after the other."""
    return [rgb[c] / 127.5 - 1.0 for c in range(3) for row in rows for rgb in row]


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = pixels()
    png = encode_png(rows)
    data = tensor(rows)
    shape = [1, 3, SIZE, SIZE]
    (out / "cifar10-image.png").write_bytes(png)
    image = {"instances": [{"image_bytes": {"b64": base64.b64encode(png).decode()}}]}
    (out / "cifar10-image.json").write_text(json.dumps(image) + "\n")
    v2 = {"inputs": [{"name": "INPUT__0", "shape": shape, "datatype": "FP32", "data": data}]}
    (out / "cifar10-v2.json").write_text(json.dumps(v2) + "\n")
    raw = struct.pack(f"<{len(data)}f", *data)
    grpc = {
        "model_name": "cifar10",
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": shape}],
        "raw_input_contents": [base64.b64encode(raw).decode()],
    }
    (out / "cifar10-v2-grpc.json").write_text(json.dumps(grpc, indent=2) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
