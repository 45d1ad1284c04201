"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked without it:
its structure, that every file it mounts or builds from exists, and that the gateway configurations
it mounts load with the real config loader once the test PKI the compose file creates is present."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from domain.messages import Action
from gateway.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def pki_parties() -> list[str]:
    """The parties the compose pki service makes keys for (from its command line)."""
    words = shlex.split(compose()["services"]["pki"]["command"][0])
    return words[words.index("--parties") + 1].split(",")


def load(name: str, pki: Path):
    text = (ROOT / "deploy" / "compose" / f"{name}.toml").read_text().replace("/var/lib/epix/pki", str(pki))
    return parse_config(tomllib.loads(text), source=f"{name}.toml")


@pytest.fixture
def pki(tmp_path, monkeypatch) -> Path:
    """The test PKI the compose pki service makes, and the environment the gateways get."""
    pki = tmp_path / "pki"
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "test-pki", "--parties", ",".join(pki_parties()), "--dir", str(pki)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    for key, value in compose()["x-gateway"]["environment"].items():
        monkeypatch.setenv(key, value)
    return pki


def test_compose_services_have_health_checks_and_existing_files():
    c = compose()
    services = c["services"]
    assert {"postgres", "pki", "gateway-ch", "gateway-fr", "hub"} <= set(services)
    for name, service in services.items():
        if name != "pki" and name in ("postgres", "gateway-ch", "gateway-fr", "rabbitmq", "hub"):
            assert "healthcheck" in service, f"{name} has no health check"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
        if "build" in service:
            assert (ROOT / "Dockerfile").is_file()
    for name in ("gateway-ch", "gateway-fr", "hub"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["pki"]["condition"] == "service_completed_successfully"
        # the config it serves is one of the mounted files
        config = services[name]["command"][services[name]["command"].index("--config") + 1]
        assert config.startswith("/etc/epix/") and (ROOT / "deploy" / "compose" / config.removeprefix("/etc/epix/")).is_file()
    assert "readyz" in " ".join(services["hub"]["healthcheck"]["test"])
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY --from"):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_compose_gateway_configs_load(pki):
    for party in ("ch", "fr"):
        config = load(party, pki)
        assert config.party == party.upper()
        assert config.store_url.startswith("postgresql://")
        assert [t.role for t in config.tokens] == ["ma", "operator"]
        assert config.keys_dir.joinpath("keys", party.upper(), "key.pem").is_file()
        # TZ is reached only through the hub, which the gateway knows how to reach and trust.
        route = config.agreements.route("TZ", "CITESEPermit", Action.ISSUE)
        assert (route.via, route.next_hop.role, route.next_hop.endpoint) == ("HUB-AF", "hub", "http://hub:8440")
        assert config.agreements.get("TZ").certificates[0].is_file()


def test_compose_hub_config_loads(pki):
    config = load("hub", pki)
    assert (config.party, config.role) == ("HUB-AF", "hub")
    assert config.store_url.startswith("postgresql://") and "schema=gw_hub" in config.store_url
    assert [t.role for t in config.tokens] == ["operator"]
    assert config.keys_dir.joinpath("keys", "HUB-AF", "key.pem").is_file()
    members = {a.party: a for a in config.agreements}
    assert set(members) == {"CH", "FR", "TZ"} and all(a.role == "ma" for a in members.values())
    assert members["CH"].endpoint == "http://gateway-ch:8440" and members["FR"].endpoint == "http://gateway-fr:8440"
    # TZ accepts no connection: the hub holds its envelopes until it pulls them.
    assert (members["TZ"].delivery, members["TZ"].endpoint) == ("pull", None)
