"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked without it:
its structure, that every file it mounts or builds from exists, and that the gateway configurations
it mounts load with the real config loader once the test PKI the compose file creates is present."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from gateway.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_have_health_checks_and_existing_files():
    c = compose()
    services = c["services"]
    assert {"postgres", "pki", "gateway-ch", "gateway-fr"} <= set(services)
    for name, service in services.items():
        if name != "pki" and name in ("postgres", "gateway-ch", "gateway-fr", "rabbitmq", "hub"):
            assert "healthcheck" in service, f"{name} has no health check"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
        if "build" in service:
            assert (ROOT / "Dockerfile").is_file()
    for name in ("gateway-ch", "gateway-fr"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY --from"):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_compose_gateway_configs_load(tmp_path, monkeypatch):
    pki = tmp_path / "pki"
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "test-pki", "--parties", "CH,FR", "--dir", str(pki)],
        check=True, capture_output=True, cwd=ROOT,
    )
    env = compose()["x-gateway"]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for party in ("ch", "fr"):
        text = (ROOT / "deploy" / "compose" / f"{party}.toml").read_text().replace("/var/lib/epix/pki", str(pki))
        config = parse_config(tomllib.loads(text), source=f"{party}.toml")
        assert config.party == party.upper()
        assert config.store_url.startswith("postgresql://")
        assert [t.role for t in config.tokens] == ["ma", "operator"]
        assert config.keys_dir.joinpath("keys", party.upper(), "key.pem").is_file()
