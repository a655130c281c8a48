"""docker-compose.yml, the Dockerfile and deploy/gateway.yaml, checked without a Docker daemon."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

from gateway.config import GatewayConfig, parse_config
from tests.observability.deploy_files import (
    COMPOSE,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    GATEWAY_YAML,
    PROMETHEUS_YML,
    ROOT,
    bind_mounts,
    dockerfile_instructions,
    exec_form,
    load_yaml,
)


def _compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where the plugin exists, else v1 (`make tools`)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    assert legacy, "no docker compose here: `make tools` installs docker-compose"
    return [legacy]


def test_compose_validates_with_docker_compose(tmp_path: Path) -> None:
    # `config` validates against the compose schema and resolves paths: no daemon needed.
    result = subprocess.run([*_compose_command(), "-f", str(COMPOSE), "config"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"gateway", "prometheus", "grafana"}
    # A broken copy is refused: the check above really validates.
    broken = load_yaml(COMPOSE)
    broken["services"]["gateway"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"] = "gpu"
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    refused = subprocess.run([*_compose_command(), "-f", str(bad), "config", "-q"],
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "capabilities" in refused.stdout + refused.stderr


def test_gateway_reserves_an_nvidia_gpu() -> None:
    gateway = load_yaml(COMPOSE)["services"]["gateway"]
    devices = gateway["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gateway["build"] in (".", {"context": "."})
    assert "8000:8000" in gateway["ports"]


def test_bind_mounts_name_files_in_the_repo() -> None:
    services = load_yaml(COMPOSE)["services"]
    checked = 0
    for name, service in services.items():
        for host, _ in bind_mounts(service):
            if host.startswith("$"):
                continue  # operator-supplied (the model directory)
            assert (ROOT / host).exists(), f"{name}: {host} does not exist"
            checked += 1
    assert checked >= 4


def test_services_are_wired_to_each_other() -> None:
    services = load_yaml(COMPOSE)["services"]
    mounts = {name: dict(bind_mounts(s)) for name, s in services.items()}
    # Prometheus reads our config where its command says, and scrapes the gateway service.
    config_flag = next(a for a in services["prometheus"]["command"]
                       if a.startswith("--config.file="))
    assert mounts["prometheus"]["./deploy/prometheus/prometheus.yml"] == config_flag.split("=")[1]
    targets = [t for job in load_yaml(PROMETHEUS_YML)["scrape_configs"]
               for sc in job["static_configs"] for t in sc["targets"]]
    port = parse_deploy_config().server.port
    assert targets == [f"gateway:{port}"]
    # The gateway container reads the mounted config at the path the image's CMD names.
    command = _image_command()
    assert mounts["gateway"]["./deploy/gateway.yaml"] == command[command.index("--config") + 1]
    # Grafana: provisioning mounted where Grafana reads it; the provider's path is mounted.
    assert mounts["grafana"]["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider_path = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]["options"]["path"]
    assert mounts["grafana"]["./deploy/grafana/dashboards"] == provider_path
    datasource = load_yaml(DATASOURCES)["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"


def _image_command() -> list[str]:
    instructions = dockerfile_instructions()
    entry = next(exec_form(a) for i, a in instructions if i == "ENTRYPOINT")
    cmd = next(exec_form(a) for i, a in instructions if i == "CMD")
    return entry + cmd


def test_dockerfile_runs_the_gateway_on_a_cuda_vllm_image() -> None:
    instructions = dockerfile_instructions()
    image = next(a for i, a in instructions if i == "ARG" and a.startswith("VLLM_IMAGE="))
    assert image.split("=", 1)[1].startswith("vllm/vllm-openai:v")
    assert ("FROM", "${VLLM_IMAGE}") in instructions
    assert any(i == "RUN" and 'pip install ".[cuda]"' in a for i, a in instructions)
    assert _image_command() == ["python3", "-m", "gateway", "--config",
                                "/etc/slagate/gateway.yaml", "--host", "0.0.0.0"]
    health = next(a for i, a in instructions if i == "HEALTHCHECK")
    assert "/health/live" in health


def test_dockerfile_copies_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["setuptools"]["packages"])
    copied = set()
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                copied.add(source)
    assert packages <= copied


def parse_deploy_config() -> GatewayConfig:
    # The model directory exists only in the container: point it at a real directory.
    text = GATEWAY_YAML.read_text().replace("/models/model", str(ROOT / "deploy"))
    return parse_config(text, str(GATEWAY_YAML))


def test_deploy_config_is_a_valid_two_engine_gpu_config() -> None:
    """Engine argument names are checked against vLLM's AsyncEngineArgs by the loader."""
    config = parse_deploy_config()
    fractions = [float(e.args["gpu_memory_utilization"]) for e in config.engines]
    assert len(fractions) == 2
    assert sum(fractions) <= 0.9
    assert config.server.host == "0.0.0.0"
