"""Triton's own counters: how many images it inferred and in how many model executions (the batch size)."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

__all__ = ["TritonCounters", "read_counters"]

_SAMPLE = re.compile(r"^(nv_inference_count|nv_inference_exec_count)\{[^}]*\} (\d+(?:\.\d+)?)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class TritonCounters:
    """Totals over all models: inferences (one per image) and executions (one per batch run)."""

    inferences: float
    executions: float

    def batch_since(self, earlier: TritonCounters) -> float | None:
        """The mean batch size of the executions between ``earlier`` and these counters."""
        executions = self.executions - earlier.executions
        return (self.inferences - earlier.inferences) / executions if executions else None


def read_counters(metrics_url: str) -> TritonCounters:
    """Triton's Prometheus counters at ``metrics_url`` (``http://host:port/metrics``), summed over models."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    totals = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for name, value in _SAMPLE.findall(text):
        totals[name] += float(value)
    return TritonCounters(totals["nv_inference_count"], totals["nv_inference_exec_count"])
