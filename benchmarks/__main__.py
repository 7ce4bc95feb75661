"""``python -m benchmarks`` (``make bench``): parse the options, run the benchmark, print and write the results."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .chart import write_chart
from .loadgen import Load, require_wrk
from .processes import installed_plugins
from .profiling import py_spy
from .runner import Options, run_benchmark
from .scenarios import MODELS, Plugins

ROOT = Path(__file__).resolve().parent.parent  # the repository, wherever the command runs from
RESULTS_DIR = ROOT / "benchmarks" / "results"
FALLBACK_CIFAR10 = "test-cifar10"  # tests/plugins' copy of the seeds' cifar10 transformer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models", help="built by `make models`")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run (default: %(default)s)")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of unmeasured load first (default: %(default)s)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=8,
        help="connections of the runs that set none; cifar10-1 also runs at 32 and 64 (default: %(default)s)",
    )
    parser.add_argument("--cifar10-plugin", default="cifar10", help="kxform plugin for cifar10 (default: %(default)s)")
    parser.add_argument(
        "--imagenet-plugin", default="imagenet", help="kxform plugin for resnet50 (default: %(default)s)"
    )
    parser.add_argument(
        "--tensor-plugin", default="tensor", help="kxform passthrough plugin for pooled (default: %(default)s)"
    )
    parser.add_argument("--scenario", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument(
        "--profile", action="store_true", help="also profile kxform under each scenario's load (py-spy)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "latest.json", help="default: %(default)s")
    parser.add_argument(
        "--markdown", type=Path, default=ROOT / "benchmarks" / "RESULTS.md", help="default: %(default)s"
    )
    return parser


def _plugins(args: argparse.Namespace) -> tuple[Plugins, list[str]]:
    """The plugins to serve, falling back where one is not installed; the notes say so."""
    installed, notes = installed_plugins(), []
    cifar10, imagenet, tensor = args.cifar10_plugin, args.imagenet_plugin, args.tensor_plugin
    if cifar10 not in installed:
        notes.append(f"kxform plugin '{cifar10}' is not installed; cifar10 scenarios use '{FALLBACK_CIFAR10}'")
        cifar10 = FALLBACK_CIFAR10
    if imagenet not in installed:
        notes.append(f"kxform plugin '{imagenet}' is not installed; imagenet-1 and imagenet-8 run without kxform")
        imagenet = None
    if tensor not in installed:
        notes.append(f"kxform plugin '{tensor}' is not installed; tensor-8 runs without kxform")
        tensor = None
    return Plugins(cifar10, imagenet, tensor), notes


def _command() -> str:
    """How this run was started, for the report: ``make bench [BENCH_ARGS=...]`` or the module's command."""
    if os.environ.get("MAKELEVEL"):
        return "make bench" + (f" BENCH_ARGS={shlex.quote(shlex.join(sys.argv[1:]))}" if sys.argv[1:] else "")
    return shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])


def main() -> None:
    args = _parser().parse_args()
    require_wrk()
    if args.profile and py_spy() is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install -c requirements/constraints.txt py-spy")
    missing = [model for model in MODELS if not (args.model_repository / model / "config.pbtxt").exists()]
    if missing:
        raise SystemExit(f"the model repository {args.model_repository} has no {', '.join(missing)}: run `make models`")
    plugins, notes = _plugins(args)
    for note in notes:
        print(f"note: {note}", flush=True)
    options = Options(
        repository=args.model_repository,
        load=Load(connections=args.connections, duration_s=args.duration),
        warmup_s=args.warmup,
        plugins=plugins,
        scenarios=tuple(args.scenario),
        profile=args.profile,
        results_dir=RESULTS_DIR,
        command=_command(),
    )
    report = run_benchmark(options)
    report.notes[:0] = notes
    report.write_json(args.json)
    print("\n" + report.text(), flush=True)
    print(f"\nwritten: {args.json}")
    if not args.scenario:  # a partial run does not replace the committed table
        args.markdown.write_text(report.markdown())
        print(f"written: {args.markdown}")
        chart = write_chart(report.measurements, args.markdown.with_suffix(".png"), f"make bench, {report.date}")
        print(f"written: {chart}")


if __name__ == "__main__":
    main()
