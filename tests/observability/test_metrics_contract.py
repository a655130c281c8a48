"""DESIGN.md §3's metric names and labels, and the series added for operations."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from tests.observability.support import exported_names, series, value

# DESIGN.md §3 (all prefixed gateway_) plus this engine, target and health series.
CONTRACT: dict[str, set[str]] = {
    "gateway_requests_total": {"class", "outcome"},
    "gateway_queue_depth": {"class"},
    "gateway_queue_wait_seconds_bucket": {"class"},
    "gateway_ttft_seconds_bucket": {"class"},
    "gateway_tpot_seconds_bucket": {"class"},
    "gateway_e2e_seconds_bucket": {"class"},
    "gateway_slo_met_total": {"class"},
    "gateway_slo_missed_total": {"class"},
    "gateway_tokens_total": {"class", "kind"},
    "gateway_engine_inflight": {"engine"},
    "gateway_engine_concurrency_limit": {"engine"},
    "gateway_engine_ttft_seconds_bucket": {"engine"},
    "gateway_engine_kv_cache_usage": {"engine"},
    "gateway_engine_healthy": {"engine"},
    "gateway_ready": set(),
    "gateway_engine_running": {"engine"},
    "gateway_engine_waiting": {"engine"},
    "gateway_engine_preemptions_total": {"engine"},
    "gateway_ttft_target_seconds": {"class"},
    "gateway_tpot_target_seconds": {"class"},
    "gateway_event_loop_lag_seconds_bucket": set(),
    "gateway_process_cpu_seconds_total": set(),
    "gateway_process_resident_memory_bytes": set(),
    "gateway_child_process_cpu_seconds_total": set(),
    "gateway_child_process_resident_memory_bytes": set(),
}


def _touch_request_instruments(metrics: GatewayMetrics) -> None:
    """Create one child per labelled instrument, by the contract's label *names*:
    ``labels(**kw)`` refuses names the instrument was not declared with."""
    for instrument in vars(metrics).values():
        if not isinstance(instrument, MetricWrapperBase):
            continue
        name = next(iter(instrument.describe())).name
        wanted = next((labels for sample, labels in CONTRACT.items()
                       if sample.startswith(name) and labels), None)
        if wanted is not None:
            instrument.labels(**{label: "probe" for label in wanted})


def test_every_contract_series_exists_with_its_labels(metrics: GatewayMetrics) -> None:
    _touch_request_instruments(metrics)
    for name, labels in CONTRACT.items():
        found = series(metrics.registry, name)
        assert found, f"{name} is not exported"
        for sample_labels in found:
            assert set(sample_labels) - {"le"} == labels, (name, sample_labels)


def test_names_keep_the_gateway_prefix(metrics: GatewayMetrics) -> None:
    # python_info is prometheus-client's platform collector, kept under its standard name.
    foreign = {n for n in exported_names(metrics.registry) if not n.startswith("gateway_")}
    assert foreign == {"python_info"}


def test_targets_follow_the_configured_classes(metrics: GatewayMetrics,
                                               config: GatewayConfig) -> None:
    assert {s["class"] for s in series(metrics.registry, "gateway_ttft_target_seconds")} == {
        c.name for c in config.classes}
    for c in config.classes:
        assert value(metrics.registry, "gateway_ttft_target_seconds",
                     **{"class": c.name}) == c.ttft_target_ms / 1000
        assert value(metrics.registry, "gateway_tpot_target_seconds",
                     **{"class": c.name}) == c.tpot_target_ms / 1000
