"""The epix command as a user runs it: exit 0 / 1 / 2, reasons on stderr, never a traceback."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from adapters.permit_json import permit_to_json
from simulators.samples import make_permit

EPIX = [sys.executable, "-m", "gateway.cli"]
ROOT = Path(__file__).resolve().parents[2]


def epix(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EPIX, *args], capture_output=True, text=True, cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=120
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def refused(result: subprocess.CompletedProcess, code: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith(code + ":"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    permit = make_permit(random.Random(3), issuer="CH", importer_country="FR", number="CH26-CLI1")
    (d / "permit.json").write_bytes(permit_to_json(permit))
    ok(epix("keys", "init", "--party", "CH", "--algorithm", "rsa2048", "--dir", str(d / "ch")))
    ok(epix("keys", "init", "--party", "FR", "--algorithm", "p256", "--dir", str(d / "fr")))
    return d


def test_every_subcommand_has_help():
    for args in (["--help"], ["keys", "init", "--help"], ["keys", "renew", "--help"], ["keys", "test-pki", "--help"], ["permit", "to-xml", "--help"],
                 ["permit", "to-json", "--help"], ["permit", "validate", "--help"], ["permit", "from-csv", "--help"], ["permit", "sign", "--help"],
                 ["permit", "verify", "--help"], ["serve", "--help"], ["demo", "--help"], ["purge", "--help"]):
        assert "usage: epix" in ok(epix(*args)).stdout


def test_usage_errors_exit_2():
    assert epix().returncode == 2
    assert epix("permit", "verify", "x.xml").returncode == 2  # --cert or --ca is required
    assert epix("keys", "init", "--party", "CH", "--algorithm", "dsa", "--dir", "x").returncode == 2


def test_convert_validate_sign_verify_round_trip(workdir):
    d = workdir
    ok(epix("permit", "to-xml", str(d / "permit.json"), "-o", str(d / "permit.xml")))
    assert b"CITESEPermit" in (d / "permit.xml").read_bytes()
    assert "valid: permit CH/CH26-CLI1" in ok(epix("permit", "validate", str(d / "permit.xml"))).stdout
    ok(epix("permit", "validate", str(d / "permit.json")))
    back = json.loads(ok(epix("permit", "to-json", str(d / "permit.xml"))).stdout)
    assert back == json.loads((d / "permit.json").read_text())
    ch = d / "ch" / "keys" / "CH"
    ok(epix("permit", "sign", str(d / "permit.xml"), "--key", str(ch / "key.pem"), "--cert", str(ch / "cert.pem"), "-o", str(d / "signed.xml")))
    assert "signed by CH" in ok(epix("permit", "verify", str(d / "signed.xml"), "--cert", str(ch / "cert.pem"))).stdout


def test_validate_judges_the_dates_now_unless_told_otherwise(workdir):
    d = workdir
    permit = json.loads((d / "permit.json").read_text())
    until = datetime.fromisoformat(permit["valid_until"])
    (d / "p.json").write_text(json.dumps(permit))
    after = (until + timedelta(days=2)).date().isoformat()
    # Long after its last day it is expired, as a submission then would be refused.
    result = epix("permit", "validate", str(d / "p.json"), "--at", after)
    assert result.returncode == 1 and "PERMIT_EXPIRED" in result.stderr
    ok(epix("permit", "validate", str(d / "p.json"), "--at", until.date().isoformat()))  # its last day
    ok(epix("permit", "validate", str(d / "p.json"), "--at", "none"))
    ok(epix("permit", "validate", str(d / "p.json")))  # now: the sample is valid today
    refused(epix("permit", "validate", str(d / "p.json"), "--at", "2026-07-05T12:00"), "JSON_MALFORMED")
    refused(epix("permit", "validate", str(d / "p.json"), "--at", "yesterday"), "JSON_MALFORMED")


def test_refusals_exit_1_with_code(workdir):
    d = workdir
    ch, fr = d / "ch" / "keys" / "CH", d / "fr" / "keys" / "FR"
    ok(epix("permit", "to-xml", str(d / "permit.json"), "-o", str(d / "p.xml")))
    ok(epix("permit", "sign", str(d / "p.xml"), "--key", str(ch / "key.pem"), "--cert", str(ch / "cert.pem"), "-o", str(d / "s.xml")))
    refused(epix("permit", "verify", str(d / "s.xml"), "--cert", str(fr / "cert.pem")), "SIGNER_UNTRUSTED")
    tampered = (d / "s.xml").read_bytes().replace(b"CH26-CLI1", b"CH26-CLI2", 1)
    (d / "t.xml").write_bytes(tampered)
    refused(epix("permit", "verify", str(d / "t.xml"), "--cert", str(ch / "cert.pem")), "DIGEST_MISMATCH")
    refused(epix("permit", "verify", str(d / "p.xml"), "--cert", str(ch / "cert.pem")), "SIGNATURE_MISSING")
    (d / "bomb.xml").write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><a>&x;</a>')
    refused(epix("permit", "to-json", str(d / "bomb.xml")), "XML_FORBIDDEN_CONSTRUCT")
    (d / "junk.json").write_text("{not json")
    refused(epix("permit", "validate", str(d / "junk.json")), "JSON_MALFORMED")
    bad = json.loads((d / "permit.json").read_text())
    bad["items"][0]["quantity"] = "0"
    (d / "bad.json").write_text(json.dumps(bad))
    result = epix("permit", "validate", str(d / "bad.json"))
    refused_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and refused_line.startswith("PERMIT_INVALID")
    refused(epix("permit", "to-xml", str(d / "missing.json")), "NOT_FOUND")
    refused(epix("permit", "sign", str(d / "p.xml"), "--key", str(fr / "key.pem"), "--cert", str(ch / "cert.pem")), "KEY_ERROR")
    refused(epix("keys", "init", "--party", "CH", "--dir", str(d / "ch")), "CONFLICT")
    refused(epix("serve", "--config", str(d / "nope.toml")), "CONFIG_INVALID")


def test_encrypted_key_needs_its_passphrase(tmp_path):
    env = {"KEY_PASS": "correct horse"}
    ok(epix("keys", "init", "--party", "KE", "--dir", str(tmp_path), "--passphrase-env", "KEY_PASS", env=env))
    key = tmp_path / "keys" / "KE" / "key.pem"
    assert b"ENCRYPTED" in key.read_bytes()
    permit = make_permit(random.Random(4), issuer="KE", importer_country="FR")
    (tmp_path / "p.json").write_bytes(permit_to_json(permit))
    ok(epix("permit", "to-xml", str(tmp_path / "p.json"), "-o", str(tmp_path / "p.xml")))
    cert = tmp_path / "keys" / "KE" / "cert.pem"
    refused(epix("permit", "sign", str(tmp_path / "p.xml"), "--key", str(key), "--cert", str(cert)), "KEY_ERROR")
    refused(
        epix("permit", "sign", str(tmp_path / "p.xml"), "--key", str(key), "--cert", str(cert), "--passphrase-env", "KEY_PASS", env={"KEY_PASS": "wrong"}),
        "KEY_ERROR",
    )
    ok(epix("permit", "sign", str(tmp_path / "p.xml"), "--key", str(key), "--cert", str(cert), "--passphrase-env", "KEY_PASS", env=env))


def test_reads_the_epix_reference_instances(epix_v2_path, epix_v1_path):
    v2 = json.loads(ok(epix("permit", "to-json", str(epix_v2_path))).stdout)
    v1 = json.loads(ok(epix("permit", "to-json", str(epix_v1_path))).stdout)
    assert v2["number"] == v1["number"] == "XA000000"
    assert [i["scientific_name"] for i in v2["items"]] == ["Alligator mississippiensis", "Crocodylus siamensis"]


def test_keys_renew_replaces_the_key_and_keeps_the_old_certificate(tmp_path):
    refused(epix("keys", "renew", "--party", "KE", "--dir", str(tmp_path)), "KEY_ERROR")  # nothing to renew
    ok(epix("keys", "init", "--party", "KE", "--dir", str(tmp_path)))
    folder = tmp_path / "keys" / "KE"
    old_key, old_cert = (folder / "key.pem").read_bytes(), (folder / "cert.pem").read_bytes()
    out = ok(epix("keys", "renew", "--party", "KE", "--dir", str(tmp_path))).stdout
    assert "previous certificate kept in" in out and "pin" in out
    assert (folder / "key.pem").read_bytes() != old_key and (folder / "cert.pem").read_bytes() != old_cert
    [kept] = (folder / "previous").glob("*.pem")
    assert kept.read_bytes() == old_cert
    # Renewed again: both earlier certificates are kept, and the gateway reads them back.
    ok(epix("keys", "renew", "--party", "KE", "--dir", str(tmp_path)))
    from keys.store import KeyStore

    assert len(KeyStore(tmp_path).previous_certificates("KE")) == 2
