"""deploy/observability/: every query of the Grafana dashboard names metrics (and labels) that kxform or Triton
really export: kxform's from its own registry, Triton's from the real server's ``/metrics``."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import kxform.metrics
from kxform.testing import ServerProcess

OBSERVABILITY = Path(__file__).parents[2] / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"

# PromQL words that are not metric names; functions are recognised by the "(" after them.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def queries(dashboard: dict[str, object]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every panel target and query variable."""
    for panel in dashboard["panels"]:  # type: ignore[attr-defined]
        for target in panel.get("targets", ()):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:  # type: ignore[index]
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["definition"]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression (or a ``label_values(metric, label)`` variable) reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", text)
    names = set()
    for found in re.finditer(r"[a-zA-Z_:][\w:]*", text):
        name, rest = found.group(), text[found.end() :].lstrip()
        if name in _KEYWORDS or rest.startswith("(") or name.startswith("__"):
            continue
        names.add(name)
    return names


def grouping_labels(expression: str) -> set[str]:
    """Labels an expression groups by or matches on."""
    labels = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expression):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expression):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    labels |= set(re.findall(r"label_values\(\s*[\w:]+\s*,\s*(\w+)\s*\)", expression))
    return labels


def kxform_exports() -> dict[str, set[str]]:
    """Every sample name kxform's metrics export, with the labels each carries."""
    exported: dict[str, set[str]] = {}
    for value in vars(kxform.metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        labels = set(value._labelnames)
        for family in value.describe():
            for suffix in _SUFFIXES.get(family.type, ("",)):
                exported[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return exported


def unknown_metrics(dashboard: dict[str, object], exported: dict[str, set[str]], prefix: str) -> list[str]:
    """Problems of the dashboard's queries of metrics named ``prefix``*: a name or a label not exported."""
    problems = []
    for title, expression in queries(dashboard):
        names = {name for name in metric_names(expression) if name.startswith(prefix)}
        for name in sorted(names - set(exported)):
            problems.append(f"panel '{title}' queries {name}, which is not exported")
        known = set().union(*(exported[name] for name in names if name in exported))
        if names and names <= set(exported):
            for label in sorted(grouping_labels(expression) - known):
                problems.append(f"panel '{title}' uses label '{label}', which {', '.join(sorted(names))} lack")
    return problems


@pytest.fixture(scope="module")
def dashboard() -> dict[str, object]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_dashboard_queries_only_metrics_and_labels_kxform_exports(dashboard: dict[str, object]) -> None:
    assert unknown_metrics(dashboard, kxform_exports(), "kxform_") == []


def test_dashboard_reads_only_kxform_and_triton_metrics(dashboard: dict[str, object]) -> None:
    names = set().union(*(metric_names(expression) for _, expression in queries(dashboard)))
    assert names
    assert {name for name in names if not name.startswith(("kxform_", "nv_"))} == set()


def test_dashboard_covers_the_operators_questions(dashboard: dict[str, object]) -> None:
    names = set().union(*(metric_names(expression) for _, expression in queries(dashboard)))
    wanted = {
        "kxform_requests_total",  # rate and errors by code
        "kxform_stage_seconds_bucket",  # latency per stage
        "kxform_batch_size_bucket",
        "kxform_batch_queue_seconds_bucket",
        "kxform_predictor_errors_total",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    }
    assert wanted <= names


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        pytest.param("rate(kxform_request_total[5m])", "queries kxform_request_total", id="misspelt-metric"),
        pytest.param("sum by (route) (rate(kxform_requests_total[5m]))", "label 'route'", id="unknown-label"),
        pytest.param('rate(kxform_stage_seconds_count{phase="decode"}[1m])', "label 'phase'", id="unknown-matcher"),
    ],
)
def test_the_dashboard_check_catches_a_metric_or_label_kxform_does_not_export(expression: str, problem: str) -> None:
    broken = {"panels": [{"title": "broken", "targets": [{"expr": expression}]}], "templating": {"list": []}}
    (found,) = unknown_metrics(broken, kxform_exports(), "kxform_")
    assert problem in found


@pytest.mark.integration
def test_dashboard_queries_only_metrics_triton_exports(dashboard: dict[str, object], triton: ServerProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{triton.ports['metrics']}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    exported: dict[str, set[str]] = {}
    for line in text.splitlines():  # the exposition's sample lines, as Prometheus stores them
        sample = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s", line)
        if sample is not None:
            exported.setdefault(sample.group(1), set()).update(re.findall(r'(\w+)="', sample.group(2) or ""))
    assert unknown_metrics(dashboard, exported, "nv_") == []


def test_podmonitors_scrape_the_transformer_and_triton_metrics_ports() -> None:
    monitors = list(yaml.safe_load_all((OBSERVABILITY / "podmonitor.yaml").read_text()))
    components = {m["spec"]["selector"]["matchLabels"]["component"]: m["spec"]["podMetricsEndpoints"] for m in monitors}
    assert {m["kind"] for m in monitors} == {"PodMonitor"}
    base = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "base" / "inferenceservice.yaml").read_text())
    (container,) = base["spec"]["transformer"]["containers"]
    assert components["transformer"][0]["port"] in {port["name"] for port in container["ports"]}
    assert components["predictor"][0]["targetPort"] == 8002  # Triton's metrics port
