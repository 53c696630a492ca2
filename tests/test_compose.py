"""docker-compose.yml: valid under the Compose Specification, and the stack it describes.

The file is checked against the specification's own JSON schema (vendored in
tests/schemas/, see the README there), the one the Docker Compose CLI applies
itself, so CI needs neither Docker nor its compose plugin.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    # The schema declares draft-07 by a URL jsonschema does not recognise.
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def test_compose_file_is_valid_under_the_compose_specification_schema() -> None:
    assert _schema_errors(_compose()) == []


def test_the_schema_refuses_what_compose_would_refuse() -> None:
    """The positive control: the check above can fail, on the project's own file."""
    good = _compose()
    misspelt = copy.deepcopy(good)
    misspelt["services"]["cimhub-1"]["healthchek"] = misspelt["services"]["cimhub-1"].pop(
        "healthcheck"
    )
    bad_condition = copy.deepcopy(good)
    bad_condition["services"]["cimhub-2"]["depends_on"]["redis"]["condition"] = "service_ready"
    bad_port = copy.deepcopy(good)
    bad_port["services"]["smtp"]["ports"] = "8025:8025"
    for broken in (misspelt, bad_condition, bad_port):
        assert _schema_errors(broken), broken


def test_two_replicas_share_one_postgresql_and_redis_and_start_once_all_are_healthy() -> None:
    services = _compose()["services"]
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
    # One database and one Redis: both replicas name the same ones.
    for setting in ("CIMHUB_DATABASE_URL", "CIMHUB_REDIS_URL"):
        assert len({s["environment"][setting] for s in replicas.values()}) == 1, setting
    assert len({s["environment"]["CIMHUB_REPLICA_ID"] for s in replicas.values()}) == 2
    ports = [p for s in replicas.values() for p in s["ports"]]
    assert len(ports) == len(set(ports))  # the replicas do not clash on the host
    assert (ROOT / "Dockerfile").exists()


def test_prometheus_scrapes_both_replicas_with_the_checked_in_config() -> None:
    services = _compose()["services"]
    replicas = sorted(name for name in services if name.startswith("cimhub"))
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    [targets] = [c["targets"] for c in job["static_configs"]]
    assert sorted(targets) == [f"{name}:8080" for name in replicas]
    assert config["rule_files"] == ["alerts.yml"]
