"""What the benchmark ran on: cores, CPU, memory, load, versions; numbers mean little without it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

__all__ = ["machine_facts"]


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def _git_revision() -> str:
    try:
        completed = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip()


def machine_facts() -> dict[str, Any]:
    """The facts, and a one-line ``summary`` of them for the table's heading."""
    cores = os.cpu_count() or 0
    memory_gb = psutil.virtual_memory().total / 2**30
    load = os.getloadavg()
    facts: dict[str, Any] = {
        "cores": cores,
        "cpu": _cpu_model(),
        "memory_gb": round(memory_gb, 1),
        "load_average_at_start": [round(value, 2) for value in load],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "kxform": _git_revision(),
        "kserve": version("kserve"),
        "tritonserver": "nvidia-pytriton " + version("nvidia-pytriton"),
    }
    facts["summary"] = (
        f"{cores} cores ({facts['cpu']}), {memory_gb:.0f} GB, Python {facts['python']}, kxform {facts['kxform']}"
    )
    return facts
