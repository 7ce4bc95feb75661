"""Triton's own counters: how many images a model inferred and in how many executions (the batch size)."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

__all__ = ["TritonCounters", "read_counters"]

_SAMPLE = re.compile(
    r"^(nv_inference_count|nv_inference_exec_count)\{[^}]*\bmodel=\"([^\"]*)\"[^}]*\} (\d+(?:\.\d+)?)$", re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class TritonCounters:
    """One model's totals: inferences (one per image) and executions (one per batch run)."""

    inferences: float
    executions: float

    def batch_since(self, earlier: TritonCounters) -> float | None:
        """The mean batch size of the executions between ``earlier`` and these counters."""
        executions = self.executions - earlier.executions
        return (self.inferences - earlier.inferences) / executions if executions else None


def read_counters(metrics_url: str, model: str) -> TritonCounters:
    """``model``'s Prometheus counters at ``metrics_url`` (``http://host:port/metrics``), summed over versions.

    One model, not all: behind an ensemble, the ensemble and its preprocessing model count too.
    """
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    totals = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for name, sample_model, value in _SAMPLE.findall(text):
        if sample_model == model:
            totals[name] += float(value)
    return TritonCounters(totals["nv_inference_count"], totals["nv_inference_exec_count"])
