"""`kxform serve` settings: kserve ModelServer's flags plus kxform's own, each also read from KXFORM_<FLAG>."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kxform.predictor import PredictorSettings

__all__ = ["ServeSettings", "add_serve_arguments", "serve_settings"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE | _FALSE:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in _TRUE


def parse_protocol(text: str) -> str:
    value = text.strip().lower()
    if value == "v1":
        raise argparse.ArgumentTypeError("Triton speaks the V2 protocol: use v2 (HTTP) or grpc-v2")
    if value not in ("v2", "grpc-v2"):
        raise argparse.ArgumentTypeError(f"expected v2 or grpc-v2, got {text!r}")
    return value


def parse_workers(text: str) -> int:
    # kserve spawns extra workers by re-importing its app: kxform's routes and plugins would be missing there.
    if text.strip() != "1":
        raise argparse.ArgumentTypeError(
            f"{text} workers: kxform serves one worker per process; run more replicas instead "
            "(KServe scales the transformer out; plugins may set offload_hooks to decode on threads)"
        )
    return 1


@dataclass(frozen=True, slots=True)
class ServeSettings:
    transformers: tuple[str, ...]
    model_name: str | None
    predictor: PredictorSettings
    http_port: int
    grpc_port: int
    workers: int
    enable_grpc: bool
    max_instances: int
    log_level: str

    def model_names(self) -> list[str]:
        """The names clients call: ``--model_name`` for a single transformer, else the plugin names."""
        if self.model_name and len(self.transformers) == 1:
            return [self.model_name]
        return list(self.transformers)


def _env(flag: str, default: Any, convert: Callable[[str], Any] = str) -> Any:
    value = os.environ.get(f"KXFORM_{flag.upper()}")
    return default if value is None else convert(value)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kxform serve``; names follow kserve's ModelServer so KServe's appended args work."""
    env_transformers = [t for t in _env("transformer", "").split(",") if t]
    parser.add_argument(
        "--transformer",
        action="append",
        default=None,
        metavar="NAME",
        help="plugin to serve (repeatable; env KXFORM_TRANSFORMER, comma-separated)",
    )
    parser.set_defaults(env_transformers=env_transformers)
    parser.add_argument(
        "--model_name",
        default=_env("model_name", None),
        help="name clients call (default: the plugin's name)",
    )
    parser.add_argument(
        "--predictor_host",
        default=_env("predictor_host", "127.0.0.1:8000"),
        help="the predictor's host:port (default: %(default)s)",
    )
    protocol = _env("predictor_protocol", _env("protocol", "v2"), parse_protocol)
    parser.add_argument(
        "--predictor_protocol",
        "--protocol",
        dest="predictor_protocol",
        type=parse_protocol,
        default=protocol,
        help="v2 (HTTP, binary tensors) or grpc-v2 (default: %(default)s)",
    )
    parser.add_argument(
        "--predictor_use_ssl",
        type=parse_bool,
        nargs="?",
        const=True,
        default=_env("predictor_use_ssl", False, parse_bool),
    )
    parser.add_argument(
        "--predictor_request_timeout_seconds",
        type=float,
        default=_env("predictor_request_timeout_seconds", 60.0, float),
    )
    parser.add_argument("--predictor_request_retries", type=int, default=_env("predictor_request_retries", 2, int))
    parser.add_argument("--http_port", type=int, default=_env("http_port", 8080, int))
    parser.add_argument("--grpc_port", type=int, default=_env("grpc_port", 8081, int))
    parser.add_argument(
        "--workers",
        type=parse_workers,
        default=_env("workers", 1, parse_workers),
        help="uvicorn workers; only 1: scale out with replicas (the transformer is stateless)",
    )
    parser.add_argument(
        "--enable_grpc", type=parse_bool, nargs="?", const=True, default=_env("enable_grpc", True, parse_bool)
    )
    parser.add_argument(
        "--max_instances",
        type=int,
        default=_env("max_instances", 1024, int),
        help="most instances one request may carry (default: %(default)s)",
    )
    parser.add_argument("--log_level", default=_env("log_level", "INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    transformers = tuple(args.transformer or args.env_transformers)
    if not transformers:
        raise argparse.ArgumentTypeError("name at least one --transformer (see `kxform plugins`)")
    return ServeSettings(
        transformers=transformers,
        model_name=args.model_name,
        predictor=PredictorSettings(
            host=args.predictor_host.removeprefix("http://").removeprefix("https://"),
            protocol=args.predictor_protocol,
            use_ssl=args.predictor_use_ssl,
            timeout=args.predictor_request_timeout_seconds,
            retries=args.predictor_request_retries,
        ),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        max_instances=args.max_instances,
        log_level=args.log_level,
    )
