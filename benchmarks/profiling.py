"""Where a server's CPU goes under load: py-spy samples the process; the stacks are summed by function.

py-spy attaches to the running ``kxform serve`` (no restart, no instrumentation) and writes
collapsed stacks (``frame;frame;... count``); the summary ranks functions by the share of samples
they are on the CPU in (self) and on the stack in (inclusive), and groups self time by package.

py-spy tells idle threads from busy ones by asking the OS just before each sample, which is racy
(benfred/py-spy#92, #480): here a worker thread parked in ``work_queue.get`` and the event loop in
``epoll_wait`` still show up. Stacks that end in such a wait are dropped, and the summary says how many.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Profile", "ProfileSummary", "py_spy", "summarize"]

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
# Python frames that sit in a blocking C call when they are the leaf: waits, not work.
_WAITS = frozenset(
    {
        "selectors.py:EpollSelector.select",
        "concurrent/futures/thread.py:_worker",
        "threading.py:Thread.run",
        "threading.py:Condition.wait",
        "threading.py:Event.wait",
        "queue.py:Queue.get",
    }
)
_PACKAGE = re.compile(r"(?:site-packages|src|lib/python3\.\d+)/(?P<package>[^/]+)")


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """The ``top`` functions by self and inclusive share of samples, and self share by package."""

    samples: int  # on the CPU, waits removed
    waits: int  # samples dropped as waits
    self_share: list[tuple[str, float]]
    inclusive_share: list[tuple[str, float]]
    package_share: list[tuple[str, float]]

    def text(self) -> str:
        sections = [("self", self.self_share), ("inclusive", self.inclusive_share), ("package", self.package_share)]
        lines = [f"{self.samples} samples on the CPU ({self.waits} more in waits, dropped)"]
        for title, rows in sections:
            lines.append(f"  top by {title}:")
            lines += [f"    {share:6.1%}  {name}" for name, share in rows]
        return "\n".join(lines)


def py_spy() -> str | None:
    """The py-spy executable, if installed (``pip install -c requirements/constraints.txt py-spy``)."""
    beside_python = Path(sys.executable).with_name("py-spy")  # the venv's, when it is not on PATH
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


class Profile:
    """``with Profile(pid, seconds, path): <load>`` records ``pid`` for ``seconds`` into ``path``."""

    def __init__(self, pid: int, seconds: float, path: Path) -> None:
        executable = py_spy()
        if executable is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install -c requirements/constraints.txt py-spy")
        self.path = path
        self._command = [executable, "record", "--pid", str(pid), "--duration", f"{max(1, round(seconds))}"]
        self._command += ["--rate", "200", "--nonblocking", "--format", "raw", "--output", str(path)]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profile:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None
        _, stderr = self._process.communicate(timeout=60)
        if self._process.returncode != 0:
            raise RuntimeError(f"py-spy exited with {self._process.returncode}: {stderr.decode(errors='replace')}")


def _function(frame: str) -> str:
    """``handle (kxform/model.py:123)`` -> ``kxform/model.py:handle``; line numbers merged."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{_short_path(match['file'])}:{match['function']}"


def _short_path(path: str) -> str:
    match = _PACKAGE.search(path)
    return path[match.start("package") :] if match else path


def _package(function: str) -> str:
    return function.split("/", 1)[0].split(":", 1)[0].removesuffix(".py")


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append(([_function(frame) for frame in frames.split(";")], int(count)))
    return stacks


def _top(counter: Counter[str], samples: int, top: int) -> list[tuple[str, float]]:
    return [(name, count / samples) for name, count in counter.most_common(top)]


def summarize(path: Path, top: int = 15) -> ProfileSummary:
    """Rank the functions of the collapsed stacks in ``path``."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = waits = 0
    for frames, count in _stacks(path):
        if frames[-1] in _WAITS:
            waits += count
            continue
        samples += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for function in set(frames):
            inclusive[function] += count
    total = max(samples, 1)
    return ProfileSummary(
        samples, waits, _top(own, total, top), _top(inclusive, total, top), _top(packages, total, top)
    )
