"""`kxform serve` settings: kserve ModelServer's flags plus kxform's own, each also read from KXFORM_<FLAG>."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kxform.batching import DEFAULT_MAX_DELAY_US
from kxform.errors import PluginError
from kxform.limits import Limits
from kxform.logs import FORMATS
from kxform.otel_setup import check_environment
from kxform.predictor import PredictorSettings
from kxform.torchserve_archive import archive_reference, parse_archive_reference
from kxform.tracing import enabled_by_environment

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


SHM_MODES = ("none", "system", "auto")


def parse_shm(text: str) -> str:
    value = text.strip().lower()
    if value not in SHM_MODES:
        raise argparse.ArgumentTypeError(f"expected none, system or auto, got {text!r}")
    return value


SERVERS = ("kxform", "kserve")


def parse_server(text: str) -> str:
    value = text.strip().lower()
    if value not in SERVERS:
        raise argparse.ArgumentTypeError(f"expected kxform or kserve, got {text!r}")
    return value


def parse_workers(text: str) -> int:
    """A positive count, or ``auto``: the CPUs this container may use (its cgroup quota, else affinity)."""
    value = text.strip().lower()
    if value == "auto":
        return available_cpus()
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a positive number of workers or 'auto', got {text!r}")
    return max(1, int(value))  # 0, as kserve's ModelServer takes it (Knative's unlimited concurrency): one


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs the cgroup's quota allows (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), at most those we may run on."""
    cpus = len(os.sched_getaffinity(0))
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (cgroup / quota_file).read_text().split()
            if period_file is not None:
                fields.append((cgroup / period_file).read_text().strip())
        except OSError:
            continue
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit() and int(fields[1]) > 0:
            return max(1, min(cpus, math.ceil(int(fields[0]) / int(fields[1]))))
        return cpus  # "max" (v2) or -1 (v1): no quota
    return cpus


def _positive(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    parse.__name__ = convert.__name__  # argparse names the type in its messages
    return parse


def _non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected 0 or a positive whole number, got {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class ServeSettings:
    transformers: tuple[str, ...]
    model_name: str | None
    predictor: PredictorSettings
    http_port: int
    grpc_port: int
    workers: int
    enable_grpc: bool
    log_level: str
    bind_address: str = "0.0.0.0"  # a pod's transformer must be reachable from the pod network
    limits: Limits = field(default_factory=Limits)
    worker_threads: int = 4
    worker_queue: int = 64
    inline_max_bytes: int = 64 * 1024
    enable_model_repository_api: bool = False
    batch_max_delay_us: int = DEFAULT_MAX_DELAY_US
    server: str = "kxform"  # the fronts: kxform's own, or kserve's ModelServer (kxform.front.kserve)
    log_format: str = "text"
    otel: bool = False  # OpenTelemetry tracing asked for by flag (the OTEL_* variables may also turn it on)
    server_timing: bool = False  # a Server-Timing header with each stage's duration (kxform dev's playground)

    def model_names(self) -> list[str]:
        """The names clients call: ``--model_name`` for a single transformer, else the plugin names
        (a TorchServe archive's: its manifest's model name)."""
        if self.model_name and len(self.transformers) == 1:
            return [self.model_name]
        return [_served_name(reference) for reference in self.transformers]


def _served_name(reference: str) -> str:
    archive = parse_archive_reference(reference)
    return archive.name if archive is not None else reference


def _env(flag: str, default: Any, convert: Callable[[str], Any] = str) -> Any:
    value = os.environ.get(f"KXFORM_{flag.upper()}")
    return default if value is None else convert(value)


def _add_bool(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, default: bool, **kwargs: Any
) -> None:
    """A kserve-style boolean flag: ``--flag`` (true), ``--flag true|false``, or ``KXFORM_<FLAG>``."""
    parser.add_argument(
        f"--{flag}", type=parse_bool, nargs="?", const=True, default=_env(flag, default, parse_bool), **kwargs
    )


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
        "--torchserve_mar",
        "--torchserve-mar",
        action="append",
        default=[m for m in _env("torchserve_mar", "").split(",") if m],
        metavar="FILE[=MODEL]",
        help="serve a TorchServe .mar's handler under its manifest's model name, its inference on Triton model "
        "MODEL (default: that name); repeatable; needs kxform[torchserve] (env KXFORM_TORCHSERVE_MAR, "
        "comma-separated)",
    )
    parser.add_argument(
        "--model_name",
        default=_env("model_name", None),
        help="name clients call (default: the plugin's name)",
    )
    parser.add_argument(
        "--predictor_host",
        default=_env("predictor_host", "127.0.0.1:8000"),
        help="the predictor's host:port (default: %(default)s); over grpc-v2, dns:///HOST:PORT spreads calls "
        "round-robin over every address HOST resolves to (a headless Service's pods)",
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
    _add_bool(parser, "predictor_use_ssl", False)
    parser.add_argument(
        "--predictor_request_timeout_seconds",
        type=float,
        default=_env("predictor_request_timeout_seconds", 60.0, float),
    )
    parser.add_argument("--predictor_request_retries", type=int, default=_env("predictor_request_retries", 2, int))
    parser.add_argument(
        "--predictor_shm",
        type=parse_shm,
        choices=SHM_MODES,
        default=_env("predictor_shm", "auto", parse_shm),
        help="tensors to and from Triton through its system shared memory (/dev/shm) instead of the messages: "
        "system; none; auto: system when the predictor is on this host or pod (localhost) and offers it "
        "(default: %(default)s)",
    )
    parser.add_argument("--http_port", type=int, default=_env("http_port", 8080, int))
    parser.add_argument("--grpc_port", type=int, default=_env("grpc_port", 8081, int))
    parser.add_argument(
        "--workers",
        type=parse_workers,
        default=_env("workers", 1, parse_workers),
        help="serving processes on the same ports, or 'auto' (the container's CPU quota); KServe sets it "
        "from containerConcurrency (default: %(default)s)",
    )
    parser.add_argument(
        "--batch_max_delay_us",
        type=_non_negative_int,
        default=_env("batch_max_delay_us", DEFAULT_MAX_DELAY_US, _non_negative_int),
        help="longest a request waits for others to share its predictor call, in microseconds; 0: no "
        "cross-request batching (default: %(default)s)",
    )
    _add_bool(parser, "enable_grpc", True)
    parser.add_argument(
        "--bind_address",
        default=_env("bind_address", "0.0.0.0"),
        help="address the HTTP and gRPC ports listen on (default: %(default)s, every interface; kxform dev: 127.0.0.1)",
    )
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=_env("server", "kxform", parse_server),
        help="kxform: kxform's own HTTP and gRPC fronts; kserve: kserve's ModelServer (its FastAPI and gRPC "
        "servers) serving the same transformers, in one process (default: %(default)s)",
    )
    parser.add_argument("--log_level", default=_env("log_level", "INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _add_observability_arguments(parser.add_argument_group("observability"))
    _add_limit_arguments(parser.add_argument_group("request limits (each a 4xx naming the flag when exceeded)"))
    _add_worker_arguments(parser.add_argument_group("worker pool (decoding and preprocessing off the event loop)"))
    _add_bool(
        parser,
        "enable_model_repository_api",
        False,
        help="serve /v2/repository/... and the gRPC RepositoryModelLoad/Unload (off: anyone could unload a model)",
    )


_LIMIT_HELP = {
    "max_request_bytes": "largest request body, also after gzip/deflate is undone (413)",
    "max_instances": "most instances one request may carry (413)",
    "max_image_pixels": "most pixels of one image, checked before it is decoded (413)",
    "max_image_aspect_ratio": "longest side / shortest side of an image, checked before any resize (400)",
    "max_tensor_elements": "most elements of one V2 tensor (413)",
    "max_string_bytes": "longest text instance, in UTF-8 bytes (413)",
    "max_json_depth": "deepest nesting of arrays and objects in a JSON body (400)",
    "max_header_bytes": "largest request line + headers, or gRPC metadata (431)",
    "max_headers": "most request headers (431)",
}


def _add_limit_arguments(group: argparse._ArgumentGroup) -> None:
    defaults = Limits()
    for name, help_text in _LIMIT_HELP.items():
        default = getattr(defaults, name)
        convert = _positive(type(default))
        group.add_argument(
            f"--{name}", type=convert, default=_env(name, default, convert), help=f"{help_text} (default: %(default)s)"
        )


def _add_observability_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--log_format",
        choices=FORMATS,
        default=_env("log_format", "text"),
        help="text, or json: one JSON object per line, with request_id and trace_id; a failed request's line "
        "also has model, status, error_kind and stage (default: %(default)s)",
    )
    _add_bool(
        group,
        "otel",
        False,
        help="OpenTelemetry traces of every request, exported as the standard OTEL_* variables say (OTLP over "
        "HTTP to localhost:4318 unless set); also on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER "
        "is set (default: off)",
    )
    _add_bool(
        group,
        "server_timing",
        False,
        help="answer inference requests with a Server-Timing header: each stage's milliseconds (kxform dev "
        "turns it on for its playground; default: off)",
    )


def _add_worker_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--worker_threads",
        type=_positive(int),
        default=_env("worker_threads", 4, int),
        help="threads that decode and preprocess large requests (default: %(default)s)",
    )
    group.add_argument(
        "--worker_queue",
        type=_positive(int),
        default=_env("worker_queue", 64, int),
        help="requests that may wait for a worker thread; more get 503 with Retry-After (default: %(default)s)",
    )
    group.add_argument(
        "--inline_max_bytes",
        type=int,
        default=_env("inline_max_bytes", 64 * 1024, int),
        help="bodies up to this size are decoded on the event loop, unless they hold a large image or text "
        "(default: %(default)s)",
    )


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    try:  # a TorchServe archive is one more source of a transformer (kxform.plugins loads it)
        archives = tuple(archive_reference(option) for option in args.torchserve_mar)
    except PluginError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    transformers = tuple(args.transformer or args.env_transformers) + archives
    if not transformers:
        raise argparse.ArgumentTypeError(
            "name at least one --transformer (see `kxform plugins`) or --torchserve_mar FILE"
        )
    if args.otel or enabled_by_environment():
        problem = check_environment()
        if problem is not None:
            raise argparse.ArgumentTypeError(f"tracing: {problem}")
    if args.server == "kserve" and args.workers > 1:
        # kserve's ModelServer binds its own ports (no inherited socket, no SO_REUSEPORT for uvicorn), so
        # kxform's supervisor cannot share them among N of its processes.
        raise argparse.ArgumentTypeError(
            f"--server kserve serves one process; drop --workers {args.workers} or use --server kxform, "
            "whose workers share the ports"
        )
    return ServeSettings(
        transformers=transformers,
        model_name=args.model_name,
        predictor=PredictorSettings(
            host=args.predictor_host.removeprefix("http://").removeprefix("https://"),
            protocol=args.predictor_protocol,
            use_ssl=args.predictor_use_ssl,
            timeout=args.predictor_request_timeout_seconds,
            retries=args.predictor_request_retries,
            shm=args.predictor_shm,
        ),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        log_level=args.log_level,
        bind_address=args.bind_address,
        limits=Limits(**{name: getattr(args, name) for name in _LIMIT_HELP}),
        worker_threads=args.worker_threads,
        worker_queue=args.worker_queue,
        inline_max_bytes=args.inline_max_bytes,
        enable_model_repository_api=args.enable_model_repository_api,
        batch_max_delay_us=args.batch_max_delay_us,
        server=args.server,
        log_format=args.log_format,
        otel=args.otel,
        server_timing=args.server_timing,
    )
