"""Logs are structured, carry the message id, and never carry keys, passphrases or permit content."""

from __future__ import annotations

import io
import json
import random

import structlog

from domain.messages import MessageStatus
from gateway.logs import configure_logging
from simulators.samples import make_permit


async def test_logs_bind_ids_and_leak_no_payload(cluster):
    buffer = io.StringIO()
    configure_logging(level="DEBUG", json=True, stream=buffer)
    try:
        permit = make_permit(random.Random(11), issuer="CH", importer_country="FR", number="CH26-LOG001")
        status, body = await cluster.submit(permit)
        assert status == 202
        message_id = body["messages"][0]["message_id"]
        await cluster.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
        # and one refusal, whose log line must carry its code
        async with cluster.http.post(f"{cluster.url('FR')}/exchange/v1/messages", data=b"<broken") as resp:
            assert resp.status == 400
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    text = buffer.getvalue()
    delivered = [entry for entry in lines if entry.get("event") == "delivery.acknowledged"]
    assert delivered and delivered[0]["message_id"] == message_id
    received = [entry for entry in lines if entry.get("event") == "inbound.received"]
    assert received and received[0]["message_id"] == message_id and received[0]["sender"] == "CH"
    assert any(entry.get("code") == "XML_MALFORMED" for entry in lines)
    for secret in ("PRIVATE KEY", "CERTIFICATE-----", permit.items[0].scientific_name, permit.exporter.name,
                   permit.importer.name, permit.security_stamp, cluster.net["CH"].ma_token):
        assert secret not in text, f"{secret!r} leaked into the logs"
