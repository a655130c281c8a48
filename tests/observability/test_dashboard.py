"""The Grafana dashboard: panels for the issue's list, queries over names we export."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from gateway.gpu_metrics import start_gpu_metrics
from gateway.metrics import GatewayMetrics
from tests.observability.deploy_files import (
    DATASOURCES,
    dashboard_queries,
    load_dashboard,
    load_yaml,
)
from tests.observability.fake_nvml import two_gpus
from tests.observability.promql import as_promql, metric_names
from tests.observability.support import exported_names


def _exported(metrics: GatewayMetrics) -> set[str]:
    """What a live gateway registry exports, GPU gauges included (a fake NVML)."""
    gpus = start_gpu_metrics(metrics.registry, two_gpus)
    assert gpus is not None
    try:
        return exported_names(metrics.registry)
    finally:
        gpus.close()


def test_queries_use_only_exported_metric_names(metrics: GatewayMetrics) -> None:
    exported = _exported(metrics)
    used = set()
    for title, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exported, f"{title}: not exported: {sorted(names - exported)}"
        used |= names
    # Sanity of the comparison itself: a misspelt name is not "exported".
    assert "gateway_ttft_second_bucket" not in exported
    assert len(used) >= 20


def test_exported_set_comes_from_the_registry() -> None:
    # A registry without the gateway's collectors exports none of the dashboard's names.
    assert not {n for _, e in dashboard_queries() for n in metric_names(e)} & exported_names(
        CollectorRegistry())


def test_histogram_quantiles_read_bucket_series_by_le() -> None:
    quantiles = [e for _, e in dashboard_queries() if "histogram_quantile" in e]
    assert len(quantiles) >= 5
    for expr in quantiles:
        assert re.search(r"by \([^)]*\ble\b[^)]*\)", expr), expr
        assert all(n.endswith("_bucket") for n in metric_names(expr)), expr


def _panel_metrics() -> dict[str, set[str]]:
    panels: dict[str, set[str]] = {}
    for title, expr in dashboard_queries():
        panels.setdefault(title, set()).update(metric_names(expr))
    return panels


def test_the_issue_panels_are_there() -> None:
    panels = _panel_metrics()

    def panel_with(*names: str) -> str:
        found = [t for t, used in panels.items() if set(names) <= used]
        assert found, f"no panel shows {names}"
        return found[0]

    panel_with("gateway_ttft_seconds_bucket", "gateway_ttft_target_seconds")  # p99 vs target
    panel_with("gateway_queue_depth")
    shed = panel_with("gateway_rejections_total")
    assert any("reason" in e for t, e in dashboard_queries() if t == shed)
    panel_with("gateway_engine_concurrency_limit")
    panel_with("gateway_engine_kv_cache_usage")
    panel_with("gateway_tokens_total")  # throughput
    panel_with("gateway_gpu_utilization_ratio")
    panel_with("gateway_process_cpu_seconds_total")
    panel_with("gateway_event_loop_lag_seconds_bucket")


def test_panels_are_well_formed_and_use_the_provisioned_datasource() -> None:
    dashboard = load_dashboard()
    uid = load_yaml(DATASOURCES)["datasources"][0]["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
    assert dashboard["uid"] == "slagate"


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Each query as a recording rule: promtool parses it with Prometheus's own parser."""
    rules = [{"record": f"slagate:check:{i}", "expr": as_promql(expr)}
             for i, (_, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    ok = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(rules)} rules found" in ok.stdout
    # ... and would refuse a broken one.
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [
        {"record": "slagate:bad", "expr": "sum by (class (gateway_queue_depth)"}]}]}))
    bad = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                         text=True, check=False)
    assert bad.returncode != 0
