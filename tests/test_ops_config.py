"""On-call's files: the Grafana dashboard and the Prometheus alert rules only name metrics the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from pipeline.runtime import metrics
from pipeline.runtime.clock import ManualClock
from pipeline.runtime.freshness import AgeGauge

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"\bstrikeflow_[a-z0-9_]+\b")


def _exported() -> set[str]:
    """Every sample name the process registry can expose (counters as *_total, histograms as their series)."""
    names = set()
    for family in metrics.REGISTRY.collect():
        if isinstance(family, CounterMetricFamily) or family.type == "counter":
            names.add(f"{family.name}_total")
        elif isinstance(family, HistogramMetricFamily) or family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((ROOT / "config" / "grafana" / "strikeflow-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def _alert_rules() -> list[dict]:
    rules = yaml.safe_load((ROOT / "config" / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_metric_the_dashboard_plots_is_exported() -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= _exported(), sorted(used - _exported())


def test_every_metric_an_alert_reads_is_exported_and_the_freshness_signals_page() -> None:
    rules = _alert_rules()
    used = {name for rule in rules for name in METRIC.findall(rule["expr"])}
    assert used <= _exported(), sorted(used - _exported())
    paging = {name for rule in rules if rule["labels"]["severity"] == "page" for name in METRIC.findall(rule["expr"])}
    assert {"strikeflow_feed_data_age_seconds", "strikeflow_tick_age_seconds",
            "strikeflow_bar_written_age_seconds"} <= paging
    assert all(rule["annotations"]["summary"] for rule in rules)


def test_an_age_grows_while_nothing_arrives_and_never_moves_back() -> None:
    clock = ManualClock(1_000.0)
    age = AgeGauge("strikeflow_test_age_seconds", "test", "connection", None, clock)
    age.touch("c1")
    clock.advance(7.5)
    assert age.ages() == {"c1": 7.5}
    age.touch("c1", at=900.0)  # an older time (a late record) does not make it look fresher
    clock.advance(2.5)
    assert age.ages() == {"c1": 10.0}
    age.touch("c1")
    assert age.ages() == {"c1": 0.0}
    samples = {s.labels["connection"]: s.value for family in age.collect() for s in family.samples}
    assert samples == {"c1": 0.0}
