"""What a server process (and its children) used during a run: peak resident memory and CPU time."""

from __future__ import annotations

import resource
import threading
from types import TracebackType

import psutil

__all__ = ["MachineCpu", "ProcessUsage", "tree_cpu_seconds"]


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _member_rss(tree: list[psutil.Process]) -> list[int]:
    """The resident bytes of each live member (a member that exits mid-sample drops out)."""
    sizes = []
    for member in tree:
        try:
            sizes.append(member.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return sizes


def _rss(tree: list[psutil.Process]) -> int:
    return sum(_member_rss(tree))


def _cpu_seconds(tree: list[psutil.Process]) -> dict[int, float]:
    """User + system seconds of each live member, by pid (a member that exits mid-run drops out)."""
    seconds = {}
    for member in tree:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[member.pid] = times.user + times.system
    return seconds


def tree_cpu_seconds(pid: int) -> float:
    """User + system seconds the process and its live descendants have used so far."""
    try:
        return sum(_cpu_seconds(_tree(psutil.Process(pid))).values())
    except psutil.NoSuchProcess:
        return 0.0


class ProcessUsage:
    """``with ProcessUsage(pid) as usage: <load>``; then ``usage.peak_rss_mb``, ``peak_process_rss_mb``, ``cpu_s``.

    RSS is the sum over the process and its descendants, sampled every ``interval_s``, and the largest
    of them alone (one worker of several); CPU is the user + system time the same processes spent
    between entering and leaving the block.
    """

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"usage-{pid}", daemon=True)
        self._cpu_start: dict[int, float] = {}
        self.peak_bytes = 0
        self.peak_process_bytes = 0
        self.cpu_s = 0.0

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def peak_process_rss_mb(self) -> float:
        return self.peak_process_bytes / 2**20

    def _sample(self) -> None:
        while True:
            sizes = _member_rss(_tree(self._process))
            self.peak_bytes = max(self.peak_bytes, sum(sizes))
            self.peak_process_bytes = max(self.peak_process_bytes, *sizes, 0)
            if self._stop.wait(self._interval_s):
                return

    def __enter__(self) -> ProcessUsage:
        self._cpu_start = _cpu_seconds(_tree(self._process))
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        end = _cpu_seconds(_tree(self._process))
        self.cpu_s = sum(seconds - self._cpu_start.get(pid, 0.0) for pid, seconds in end.items())


def _busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait, since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0))


def _own_seconds() -> float:
    """CPU seconds of this process and its reaped children (wrk)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class MachineCpu:
    """``with MachineCpu() as cpu: <load>``; ``cpu.busy_s`` of all cores and ``cpu.own_s`` of the bench and wrk."""

    def __init__(self) -> None:
        self._start = (0.0, 0.0)
        self.busy_s = 0.0
        self.own_s = 0.0

    def __enter__(self) -> MachineCpu:
        self._start = (_busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.busy_s = _busy_seconds() - self._start[0]
        self.own_s = _own_seconds() - self._start[1]
