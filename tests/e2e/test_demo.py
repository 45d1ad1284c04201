"""``epix demo`` as a user runs it (a process, real sockets on 127.0.0.1), with few permits: the
summary it writes with --json must tell the whole story, counted from the stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest

from tests.rabbit import AMQP_URL, require_rabbit

ROOT = Path(__file__).resolve().parents[2]
DEMO_PARTIES = ("CH", "FR", "KE", "TZ", "UG", "HUB-AF")


def run_demo(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--permits", "30", "--seed", "3", "--json", str(out), "--dir", str(tmp_path / "net"), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def assert_whole_story(proc: subprocess.CompletedProcess, s: dict) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert s["settled"] is True
    # Nothing lost, nothing twice, across direct, via-hub and pulled deliveries and the ledgers.
    assert s["lost"] == 0 and s["duplicated"] == 0
    assert s["messages_sent"] == s["delivered_with_receipt"] > 0
    assert s["direct"] > 0 and s["via_hub"] > 0 and 0 < s["pulled"] < s["via_hub"]
    assert s["direct"] + s["via_hub"] == s["messages_sent"]  # each message held by its receiver once
    # The hub told each sender that its message reached the final receiver (receiver's receipt verified).
    assert s["hub_reports"] == {"Delivered": s["via_hub"]}
    # Faults through the proxy were retried into delivery; the KE outage too; nothing had to be parked.
    assert s["faults_injected"].get("5xx", 0) >= 1
    assert s["retried_after_fault"] > 0 and s["retried"] > 0
    assert s["parked"] == 0 and s["refused_by_partner"] == 0
    assert sum(s["rejected_at_submission"].values()) == 6
    # Customs: genuine, forged (wrong stamp), invented, doctored record, used up.
    v = s["verifications"]
    assert v["VALID"] > 0 and v["EXHAUSTED"] == 1 and v["STAMP_MISMATCH"] == 1
    assert v["NOT_FOUND"] == 1 and v["SIGNATURE_INVALID"] == 1
    assert s["exhausted_permit"] is not None and s["overdraw_refused"] == 1
    assert s["write_offs"] > 1 and s["write_off_retries_replayed"] == s["write_offs"] - 1
    # Every write-off was endorsed back to the issuer, whose record holds the same quantities.
    assert s["endorsements_received_by_issuer"] == s["declarations_endorsed_at_issuer"] == s["write_offs"]
    assert s["issuer_quantities_match"] == f"{s['write_offs']}/{s['write_offs']}"
    # The readable part: progress lines and one table with the new rows.
    for row in ("via hub HUB-AF", "of which pulled by UG", "retried after fault", "parked for an operator",
                "customs verifications at FR", "customs write-offs", "endorsements received by CH", "| lost ", "| duplicated "):  # fmt: skip
        assert row in proc.stdout, row
    assert proc.stdout.count("-+\n") == 2  # one table: its top and bottom border


@pytest.mark.slow
def test_demo_tells_the_whole_story(tmp_path):
    proc, summary = run_demo(tmp_path)
    assert_whole_story(proc, summary)


@pytest.mark.slow
@pytest.mark.rabbitmq
async def test_demo_over_rabbitmq(tmp_path):
    await require_rabbit()
    proc, summary = None, None
    try:
        proc, summary = await asyncio.to_thread(run_demo, tmp_path, "--amqp", AMQP_URL)
        assert "delivery queues on RabbitMQ" in proc.stdout
        assert_whole_story(proc, summary)
    finally:
        found = re.search(r"on RabbitMQ under (epix-demo-[0-9a-f]+)\.", proc.stdout if proc else "")
        if found:
            await _delete_queues(found.group(1))


async def _delete_queues(prefix: str) -> None:
    """The run's own queues and exchanges, named from rabbitmqctl when it is at hand."""
    names = []
    with contextlib.suppress(OSError):
        listing = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "-q", "list_queues", "name", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await listing.communicate()
        names = [n.strip() for n in out.decode().splitlines() if n.strip().startswith(prefix + ".")]
    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    try:
        for name in names:
            with contextlib.suppress(Exception):
                await (await connection.channel()).queue_delete(name)
        for party in DEMO_PARTIES:
            with contextlib.suppress(Exception):
                await (await connection.channel()).exchange_delete(f"{prefix}.{party}")
    finally:
        await connection.close()
