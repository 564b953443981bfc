"""docs/grafana/amqprpc.json graphs only metrics the workers and the bridge really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from amqprpc.metrics.registry import MetricsRegistry
from http_bridge.connections import ConnectionGate
from http_bridge.metrics import BridgeMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "amqprpc.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",)}


def exported_series() -> set[str]:
    """Every series name the exporters can emit (families are listed even before a sample)."""
    text = (MetricsRegistry().render().decode() + BridgeMetrics(lambda: 0).render()
            + ConnectionGate(10).render())
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return set(re.findall(r"\bamqprpc_[a-z_]+\b", " ".join(exprs + variables)))


def test_every_metric_the_dashboard_queries_is_exported():
    queried = queried_metrics()
    assert len(queried) >= 12
    assert queried <= exported_series(), sorted(queried - exported_series())


def test_the_dashboard_graphs_the_documented_worker_metrics():
    documented = set(re.findall(r"`(amqprpc_[a-z_]+)`", (DASHBOARD.parents[1] / "observability.md")
                                .read_text(encoding="utf-8")))
    missing = {name for name in documented if name not in queried_metrics()
               and name + "_bucket" not in queried_metrics()}
    assert not missing, sorted(missing)
