"""The ``kxform`` command line: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from kxform.errors import KxformError

__all__ = ["main"]


class _StopSignalError(Exception):
    """Raised by the SIGINT/SIGTERM handler to unwind into the command's clean-up."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopSignalError(signal.Signals(signum).name)


def _on_stop_signals() -> None:
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)


def _add_triton(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "triton",
        help="run the real Triton server on a model repository (TorchScript, .pt2 and ONNX models on the CPU)",
        description="Serve a Triton model repository as uploaded for KServe's Triton predictor. "
        "pytorch_libtorch (model.pt), torch_aoti (model.pt2) and onnxruntime_onnx (model.onnx) models are served "
        "through a generated Python-backend model that loads the same file with torch.jit.load, "
        "torch._inductor.aoti_load_package or onnxruntime.",
    )
    parser.add_argument("--model-repository", type=Path, required=True, metavar="DIR")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--startup-timeout", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument(
        "--triton-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to tritonserver as it is (repeatable), e.g. --triton-arg=--trace-config=mode=opentelemetry",
    )
    parser.set_defaults(run=_run_triton)


def _run_triton(args: argparse.Namespace) -> int:
    from kxform.triton import TritonPorts, TritonServer

    server = TritonServer(
        args.model_repository,
        TritonPorts(args.http_port, args.grpc_port, args.metrics_port),
        address=args.address,
        startup_timeout=args.startup_timeout,
        extra_args=tuple(args.triton_arg),
    )
    _on_stop_signals()
    try:
        server.start()
        _print_triton_ready(server)
        status = server.wait()
        print(f"kxform triton: tritonserver exited with status {status}", file=sys.stderr)
        return 1
    except _StopSignalError:
        print("kxform triton: stopping", file=sys.stderr)
        return 0
    finally:
        server.stop()


def _print_triton_ready(server: object) -> None:
    from kxform.triton import TritonServer

    assert isinstance(server, TritonServer)
    states = server.model_states()
    where = f"HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}"
    print(f"kxform triton: ready on {where}")
    for model in server.models:
        how = model.describe()
        print(f"  model {model.name}: {states.get(model.name, 'UNKNOWN')} ({how})")
    print(f"  try: curl -s {server.http_url}/v2/models/{server.models[0].name}")
    sys.stdout.flush()


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from kxform.settings import add_serve_arguments

    parser = commands.add_parser(
        "serve",
        help="serve transformer plugins in front of a predictor (the InferenceService transformer container)",
        description="Serve the named plugins: V1 and V2 REST on --http_port, V2 gRPC on --grpc_port, forwarding "
        "to the Triton predictor at --predictor_host. Flag names follow kserve's ModelServer. Requests over a "
        "limit get a 4xx naming the flag below; the error list is docs/errors.md.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from kxform import kserve_import
    from kxform.logs import configure_logging
    from kxform.settings import serve_settings
    from kxform.workers import serve

    try:
        settings = serve_settings(args)
    except argparse.ArgumentTypeError as exc:
        print(f"kxform serve: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers == 1:  # this process imports kserve (a supervisor of N does not)
        kserve_import.load()
    return serve(settings)


def _add_plugins(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "plugins", help="list installed transformer plugins and the model each calls (imports none of them)"
    )
    parser.set_defaults(run=_run_plugins)


def _run_plugins(args: argparse.Namespace) -> int:
    from kxform.plugins import declared_predictor_model, discover

    rows = [("NAME", "DISTRIBUTION", "VERSION", "MODEL", "ENTRY POINT")]
    for name, claims in discover().items():
        rows += [
            (name, info.distribution, info.version, declared_predictor_model(info), info.target) for info in claims
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _add_dev(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dev",
        help="local dev server: real Triton on a model repository + kxform serve for the example plugins",
        description="Start `kxform triton` and `kxform serve` on localhost, wait until both are ready, print "
        "the URLs and curl lines, stream both logs; Ctrl-C stops both.",
    )
    parser.add_argument("--model-repository", type=Path, default=Path("models"), metavar="DIR")
    parser.add_argument(
        "--transformer",
        action="append",
        metavar="NAME",
        help="plugin to serve (repeatable; default: the installed kxform-example-* plugins)",
    )
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--triton-http-port", type=int, default=8000)
    parser.add_argument("--triton-grpc-port", type=int, default=8001)
    parser.add_argument("--triton-metrics-port", type=int, default=8002)
    parser.add_argument("--playground_port", type=int, default=8090, help="the playground page (default: %(default)s)")
    parser.add_argument(
        "--predictor_protocol", "--protocol", dest="predictor_protocol", default="v2", choices=["v2", "grpc-v2"]
    )
    parser.set_defaults(run=_run_dev)


def _run_dev(args: argparse.Namespace) -> int:
    from kxform.devserver import DevServer, DevSettings, default_transformers

    settings = DevSettings(
        model_repository=args.model_repository.resolve(),
        transformers=tuple(args.transformer or default_transformers()),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        triton_http_port=args.triton_http_port,
        triton_grpc_port=args.triton_grpc_port,
        triton_metrics_port=args.triton_metrics_port,
        predictor_protocol=args.predictor_protocol,
        playground_port=args.playground_port,
    )
    server = DevServer(settings)
    _on_stop_signals()
    try:
        server.start()
        print(server.banner(), flush=True)
        exited = server.wait()
        print(f"kxform dev: {exited} exited; stopping", file=sys.stderr)
        return 1
    except _StopSignalError:
        print("kxform dev: stopping", file=sys.stderr)
        return 0
    finally:
        server.stop()


def _add_new(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "new",
        help="write a new plugin package (entry point, transformer, tests, README) ready to pip install -e",
        description="Write the plugin package NAME: pyproject.toml with the kxform.transformers entry point, the "
        "transformer module, tests that use kxform's pytest fixtures, and a README with its curl line. With "
        "--model-repository and --model, inputs, outputs and a first preprocess/postprocess come from the model's "
        "config.pbtxt (an image input gets an ImagePipeline, a BYTES input text). Never overwrites.",
    )
    parser.add_argument("name", help="distribution and entry-point name, e.g. my-model (module: my_model)")
    parser.add_argument("--model-repository", type=Path, metavar="DIR", help="the Triton model repository")
    parser.add_argument("--model", metavar="M", help="the model of --model-repository the plugin calls")
    parser.add_argument("--dir", type=Path, metavar="PATH", help="where to write the package (default: ./NAME)")
    parser.set_defaults(run=_run_new)


def _run_new(args: argparse.Namespace) -> int:
    from kxform.scaffold import create_plugin

    scaffold = create_plugin(args.name, args.dir, args.model_repository, args.model)
    where = args.dir or Path(args.name)
    entry = f"{scaffold.module}:{scaffold.class_name}"
    print(f"kxform new: wrote {where}/ ({scaffold.kind} plugin {scaffold.name}: {entry})")
    print(f"  pip install -e '{where}[test]'   # then `kxform plugins` lists {scaffold.name}")
    print(f"  pytest {where}")
    return 0


def _add_infer(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "infer", help="send image files or a JSON request to a running transformer and print the answer"
    )
    parser.add_argument("model", help="the transformer's name (--model_name of kxform serve)")
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="image files (sent as instances of base64 images) or one JSON request body",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the transformer (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.set_defaults(run=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    from kxform.client import predict_files

    status, reply = predict_files(args.url, args.model, args.inputs, args.timeout)
    print(reply)
    return 0 if status == 200 else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a ``kxform`` command line (``parse_args(["serve", ...])``), as the console script does."""
    return _build_parser().parse_args(argv)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kxform", description="Pluggable KServe transformers for Triton.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(commands)
    return parser


_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_dev,
    _add_serve,
    _add_triton,
    _add_infer,
    _add_plugins,
    _add_new,
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kxform`` console script; returns the process exit status."""
    args = parse_args(argv)
    try:
        return int(args.run(args))
    except KxformError as exc:
        print(f"kxform {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    except _StopSignalError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
