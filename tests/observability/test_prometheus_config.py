"""deploy/prometheus/prometheus.yml passes Prometheus's own checker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.observability.deploy_files import PROMETHEUS_YML, load_yaml


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                          text=True, check=False)


def test_promtool_accepts_the_config() -> None:
    result = _check(PROMETHEUS_YML)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_refuses_a_broken_copy(tmp_path: Path) -> None:
    broken = load_yaml(PROMETHEUS_YML)
    broken["scrape_configs"][0]["scrape_interval"] = "five seconds"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _check(path).returncode != 0


def test_scrapes_the_gateway_metrics_route() -> None:
    job = load_yaml(PROMETHEUS_YML)["scrape_configs"][0]
    assert job["job_name"] == "slagate"
    assert job.get("metrics_path", "/metrics") == "/metrics"
