"""docker-compose.yml: two replicas on PostgreSQL and Redis, each started only when healthy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


def _services() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    services: dict[str, Any] = doc["services"]
    return services


def test_compose_runs_two_replicas_on_shared_postgres_and_redis() -> None:
    services = _services()
    replicas = {name: s for name, s in services.items() if name.startswith("cimhub")}
    assert len(replicas) == 2
    assert {"postgres", "redis", "smtp"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    for name, service in replicas.items():
        env = service["environment"]
        assert env["CIMHUB_HOST"] == "0.0.0.0"
        assert "@postgres:5432/" in env["CIMHUB_DATABASE_URL"]
        assert env["CIMHUB_REDIS_URL"].startswith("redis://redis:")
        assert {"CIMHUB_BOOTSTRAP_API_ID", "CIMHUB_BOOTSTRAP_API_KEY"} <= set(env)
        depends = service["depends_on"]
        assert set(depends) == {"postgres", "redis", "smtp"}, name
        assert all(d["condition"] == "service_healthy" for d in depends.values()), name
        assert service["build"]["dockerfile"] == "Dockerfile"
        # Compose's one healthcheck gates traffic, so it is readiness.
        assert "/readyz" in " ".join(service["healthcheck"]["test"]), name
    ports = [p for s in replicas.values() for p in s["ports"]]
    assert len(ports) == len(set(ports))  # the replicas do not clash on the host
    assert (ROOT / "Dockerfile").exists()


def test_prometheus_scrapes_both_replicas_with_the_checked_in_config() -> None:
    services = _services()
    replicas = sorted(name for name in services if name.startswith("cimhub"))
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    [targets] = [c["targets"] for c in job["static_configs"]]
    assert sorted(targets) == [f"{name}:8080" for name in replicas]
    assert config["rule_files"] == ["alerts.yml"]


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


def test_docker_compose_config_validates() -> None:
    if not _compose_available():
        pytest.skip("the docker client with the compose plugin is not installed")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
