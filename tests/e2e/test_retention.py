"""Retention seen from outside, on both stores: what GET /v1/messages/{id} says of a purged payload
or message, what a partner re-sending a purged id gets, operator retries of what has nothing left
to send, the run log, the background task and ``epix purge``."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.cites_write import permit_to_xml
from adapters.exchange_xml import build_envelope, read_error
from domain.messages import Action, Direction, EnvelopeHeader, MessageStatus
from gateway import appkeys, hub
from gateway.config import RetentionConfig
from gateway.outbound import conversation_id
from gateway.retention import purge
from gateway.store import open_store
from gateway.store.base import MessageRecord, PermitRecord
from simulators.network import build_network
from simulators.samples import make_permit
from tests.e2e.conftest import STORES, Cluster, Feed, party_stores

ROOT = Path(__file__).resolve().parents[2]
POLICY = RetentionConfig(payload_days=30, message_days=365, interval_s=0)
RETENTION_TOML = "[retention]\npayload_days = 30\nmessage_days = 365\ninterval_s = {interval}\n"


@contextlib.asynccontextmanager
async def _with_retention(store: str, root: Path, *, interval: float, prefix: str):
    """CH and FR running, FR with the retention policy purging every ``interval`` s (0: never by itself)."""
    async with party_stores(store, ("CH", "FR"), prefix) as store_urls:
        net = build_network(
            root / "net", ("CH", "FR"), store_urls=store_urls, extra_for={"FR": RETENTION_TOML.format(interval=interval)}
        )
        async with Cluster(net).running(("CH", "FR")) as c:
            yield c


@pytest.fixture(params=STORES)
async def retained(request, tmp_path):
    """FR's retention policy runs only when a test runs it (interval_s = 0)."""
    async with _with_retention(request.param, tmp_path, interval=0, prefix="ret") as c:
        yield c


def _customs(cluster: Cluster, party: str = "FR"):
    """The gateway's [customs] table, which the retention job reads as the gateway runs it."""
    return cluster.gateways[party].app[appkeys.CONFIG].customs


async def _envelope(cluster: Cluster, number: str) -> tuple[str, bytes]:
    """A signed envelope from CH to FR carrying a CH-signed permit, as CH's gateway sends it."""
    permit = make_permit(random.Random(number), issuer="CH", importer_country="FR", number=number)
    security = cluster.security("CH")
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()), conversation_id=conversation_id("CH", number), sender="CH", receiver="FR",
        document_type="CITESEPermit", document_number=number, document_issuer="CH", document_version=1,
        action=Action.ISSUE, created_at=datetime.now(UTC),
    )  # fmt: skip
    payload = security.sign(permit_to_xml(permit))
    return header.message_id, security.sign(build_envelope(header, payload, sent_at=datetime.now(UTC)))


async def _post(cluster: Cluster, body: bytes) -> tuple[int, bytes]:
    async with cluster.http.post(
        f"{cluster.url('FR')}/exchange/v1/messages", data=body, headers={"Content-Type": "application/xml"}
    ) as resp:
        return resp.status, await resp.read()


async def _received_and_acknowledged(cluster: Cluster, number: str) -> tuple[str, bytes, bytes]:
    message_id, body = await _envelope(cluster, number)
    status, receipt = await _post(cluster, body)
    assert status == 200
    status, acked = await cluster.post_json("FR", f"/v1/inbox/{message_id}/ack")
    assert status == 200 and acked["status"] == "DELIVERED"
    return message_id, body, receipt


async def test_a_purged_payload_is_said_so_and_a_resent_id_still_gets_its_receipt(retained):
    message_id, body, receipt = await _received_and_acknowledged(retained, "CH26-RET001")
    status, view = await retained.get("FR", f"/v1/messages/{message_id}")
    assert view["payload"]["held"] is True

    later = datetime.now(UTC) + timedelta(days=31)
    run = await purge(retained.store("FR"), POLICY, actor="test", customs=_customs(retained), now=later)
    assert run.counts.payloads == 1 and run.counts.messages == 0

    status, view = await retained.get("FR", f"/v1/messages/{message_id}")
    assert status == 200 and view["status"] == "DELIVERED"
    assert view["payload"]["held"] is False and view["payload"]["digest"]
    assert f"retention run {run.run_id}" in view["payload"]["detail"] and view["payload"]["removed_at"]
    assert [e["actor"] for e in view["events"]][-1] == "retention"
    # The permit itself is the legal record, and stays whole.
    status, permit = await retained.get("FR", "/v1/permits/CH/CH26-RET001")
    assert status == 200 and permit["permit"]["number"] == "CH26-RET001"
    # CH resending the id (its lost answer): the very same receipt, nothing stored twice.
    status, again = await _post(retained, body)
    assert status == 200 and again == receipt
    inbound = [m for m in await retained.store("FR").messages_for_permit("CH", "CH26-RET001") if m.direction is Direction.INBOUND]
    assert [m.message_id for m in inbound] == [message_id]


async def test_a_purged_message_is_not_found_and_a_copy_of_its_envelope_is_refused(retained, monkeypatch):
    message_id, body, _ = await _received_and_acknowledged(retained, "CH26-RET002")
    later = datetime.now(UTC) + timedelta(days=400)

    run = await purge(retained.store("FR"), POLICY, actor="test", customs=_customs(retained), now=later)
    assert run.counts.messages == 1 and run.counts.events == 2  # RECEIVED, DELIVERED

    status, err = await retained.get("FR", f"/v1/messages/{message_id}")
    assert status == 404 and err["code"] == "NOT_FOUND" and "retention.message_days" in err["message"]
    # The id is forgotten, so only the replay window can refuse a copy of the envelope: the config
    # check makes sure every copy it would let in arrives while the id is still held.
    monkeypatch.setattr(hub, "_now", lambda: later)
    status, answer = await _post(retained, body)
    assert status == 409
    assert read_error(retained.security("CH").verify(answer, "FR").signed_root).code == "REPLAY_REJECTED"
    assert await retained.store("FR").get_message(message_id) is None
    assert len(await retained.store("FR").get_permit_versions("CH", "CH26-RET002")) == 1


async def test_a_resend_with_a_fresh_sent_at_after_the_purge_is_refused(retained):
    """A sender's operator replaying a parked message re-sends its id with a fresh SentAt, which
    the replay window lets in. Past message_days the receiver may have forgotten the id, so it
    refuses what was created longer ago than that (docs/PROTOCOL.md §2) instead of handing its
    MA system the message a second time."""
    number = "CH26-RET004"
    message_id, _, _ = await _received_and_acknowledged(retained, number)
    later = datetime.now(UTC) + timedelta(days=400)
    await purge(retained.store("FR"), POLICY, actor="test", customs=_customs(retained), now=later)
    [held] = await retained.store("FR").get_permit_versions("CH", number)  # the bytes CH sends again
    header = EnvelopeHeader(
        message_id=message_id, conversation_id=conversation_id("CH", number), sender="CH", receiver="FR",
        document_type="CITESEPermit", document_number=number, document_issuer="CH", document_version=1,
        action=Action.ISSUE, created_at=datetime.now(UTC) - timedelta(days=400),
    )  # fmt: skip
    again = retained.security("CH").sign(build_envelope(header, held.signed_xml, sent_at=datetime.now(UTC)))
    inbox_before = await retained.store("FR").inbox("FR")

    status, answer = await _post(retained, again)

    assert status == 409
    error = read_error(retained.security("CH").verify(answer, "FR").signed_root)
    assert error.code == "REPLAY_REJECTED" and "365 days" in error.message
    assert len(await retained.store("FR").get_permit_versions("CH", number)) == 1
    assert await retained.store("FR").inbox("FR") == inbox_before


async def test_a_message_created_within_the_retention_period_is_taken_in(retained):
    number = "CH26-RET005"
    permit = make_permit(random.Random(5), issuer="CH", importer_country="FR", number=number)
    signed = retained.security("CH").sign(permit_to_xml(permit))
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()), conversation_id=conversation_id("CH", number), sender="CH", receiver="FR",
        document_type="CITESEPermit", document_number=number, document_issuer="CH", document_version=1,
        action=Action.ISSUE, created_at=datetime.now(UTC) - timedelta(days=300),
    )  # fmt: skip
    status, _ = await _post(retained, retained.security("CH").sign(build_envelope(header, signed, sent_at=datetime.now(UTC))))
    assert status == 200
    assert len(await retained.store("FR").get_permit_versions("CH", number)) == 1


async def test_what_has_no_payload_left_is_not_sent_again(retained):
    store = retained.store("FR")
    now = datetime.now(UTC)
    record = PermitRecord(
        issuer="FR", number="FR26-RET003", version=1, direction=Direction.OUTBOUND, status="VALID",
        permit_json=b"{}", signed_xml=b"<CITESEPermit/>", digest="d", sender=None, replaces=None, replaced_by=None,
        created_at=now,
    )  # fmt: skip
    message = MessageRecord(
        message_id="fr-rejected-1", conversation_id="c", direction=Direction.OUTBOUND, sender="FR", receiver="CH",
        document_type="CITESEPermit", action=Action.ISSUE, issuer="FR", number="FR26-RET003", version=1,
        status=MessageStatus.SEND_ENQUEUED, attempts=0, next_attempt_at=now + timedelta(days=1), lease_until=None,
        last_error_code=None, last_error_detail=None, via=None, receipt=None, payload_digest="d",
        created_at=now, updated_at=now, payload=b"<CITESEPermit/>",
    )  # fmt: skip
    await store.accept_outbound(record, [message], actor="test")  # due tomorrow: the sender leaves it alone
    await store.transition(message.message_id, MessageStatus.SENDING, actor="test")
    await store.transition(message.message_id, MessageStatus.REJECTED, actor="test", error_code="SCHEMA_INVALID")
    payloads_only = replace(POLICY, message_days=None)
    await purge(store, payloads_only, actor="test", customs=_customs(retained), now=now + timedelta(days=31))

    status, err = await retained.post_json("FR", f"/v1/messages/{message.message_id}/retry", operator=True)
    assert status == 409 and err["code"] == "CONFLICT" and "removed its payload" in err["message"]
    status, bulk = await retained.post_json("FR", "/v1/messages/retry", {"status": "REJECTED"}, operator=True)
    assert status == 202 and bulk["retried"] == [] and bulk["payload_removed"] == [message.message_id]
    assert (await store.get_message(message.message_id)).status is MessageStatus.REJECTED


async def test_the_operator_sees_the_policy_and_every_run(retained):
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    await purge(retained.store("FR"), POLICY, actor="test", customs=_customs(retained), now=tomorrow)
    # A dry run changes nothing, so it is not recorded.
    await purge(retained.store("FR"), POLICY, actor="test", customs=_customs(retained), dry_run=True)

    status, err = await retained.get("FR", "/v1/retention")
    assert status == 403 and err["code"] == "FORBIDDEN"
    status, view = await retained.get("FR", "/v1/retention", operator=True)
    assert status == 200
    assert view["policy"]["payload_days"] == 30 and view["policy"]["message_days"] == 365
    [run] = view["runs"]
    assert run["actor"] == "test" and run["finished_at"] and run["error"] is None
    assert set(run["removed"]) == {"messages", "events", "payloads", "idempotency_keys", "verifications"}
    assert run["kept"] == {"customs_feed": 0}
    assert run["before"]["idempotency_keys"] is None  # no idempotency_days: kept forever
    status, view = await retained.get("CH", "/v1/retention", operator=True)
    assert status == 200 and view["runs"] == [] and view["policy"]["message_days"] is None


@pytest.mark.parametrize("kind", STORES)
async def test_a_permit_customs_has_not_been_handed_outlives_the_purge_until_it_has(kind, tmp_path):
    """FR's customs webhook is down for longer than FR keeps its messages: the permit, final since its
    MA acknowledged it, stays whole until the pre-arrival feed has handed it over, and the run says so."""
    feed = Feed()  # its port goes in FR's configuration; it answers only once started
    feed_toml = f'[customs]\nfeed_url = "http://127.0.0.1:{feed.port}/pre-arrival"\nfeed_poll_s = 0.05\n'
    async with party_stores(kind, ("CH", "FR"), "retfeed") as store_urls:
        extra = {"FR": RETENTION_TOML.format(interval=0) + feed_toml}
        net = build_network(tmp_path / "net", ("CH", "FR"), store_urls=store_urls, extra_for=extra)
        async with Cluster(net).running(("CH", "FR")) as c:
            message_id, _, _ = await _received_and_acknowledged(c, "CH26-RET006")
            store = c.store("FR")
            later = datetime.now(UTC) + timedelta(days=400)

            dry = await purge(store, POLICY, actor="test", customs=_customs(c), now=later, dry_run=True)
            with capture_logs() as logs:
                run = await purge(store, POLICY, actor="test", customs=_customs(c), now=later)

            assert (dry.counts.messages, dry.kept_for_feed) == (0, 1)
            assert (run.counts.messages, run.counts.payloads, run.kept_for_feed) == (0, 0, 1)
            [warning] = [e for e in logs if e["event"] == "retention.kept_for_feed"]
            assert warning["log_level"] == "warning" and warning["messages"] == 1
            status, view = await c.get("FR", f"/v1/messages/{message_id}")
            assert status == 200 and view["payload"]["held"] is True
            status, view = await c.get("FR", "/v1/retention", operator=True)
            assert view["runs"][0]["kept"] == {"customs_feed": 1} and view["runs"][0]["removed"]["messages"] == 0

            await feed.start()
            try:
                deadline = time.monotonic() + 10
                while not feed.items and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert [i["message_id"] for i in feed.items] == [message_id]
                while await store.feed_pending(limit=1) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # marked sent just after customs answered
                run = await purge(store, POLICY, actor="test", customs=_customs(c), now=later)
            finally:
                await feed.stop()
            assert (run.counts.messages, run.kept_for_feed) == (1, 0)
            status, _ = await c.get("FR", f"/v1/messages/{message_id}")
            assert status == 404


@pytest.fixture(params=STORES)
async def purging(request, tmp_path):
    """FR purging in the background, every hour (so: once, when it starts)."""
    async with _with_retention(request.param, tmp_path, interval=3600, prefix="retbg") as c:
        yield c


async def test_the_background_task_purges_when_the_gateway_starts(purging):
    deadline = time.monotonic() + 10
    while not await purging.store("FR").purge_runs() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    [run] = await purging.store("FR").purge_runs()
    assert run.actor == "retention:FR"
    assert await purging.store("CH").purge_runs() == []  # no policy, no task


@pytest.mark.parametrize("kind", STORES)
async def test_epix_purge_reports_what_it_would_remove_and_what_it_removed(kind, tmp_path):
    async with party_stores(kind, ("CH", "FR"), "retcli") as store_urls:
        net = build_network(
            tmp_path / "net", ("CH", "FR"), store_urls=store_urls, extra_for={"FR": RETENTION_TOML.format(interval=0)}
        )
        config = net["FR"].config()
        # A message that became final 400 days ago, stored as the gateway would have then.
        store = await open_store(config.store_url, config.data_dir)
        past = datetime.now(UTC) - timedelta(days=400)
        store._clock = lambda: past  # the store's idea of now, as for a gateway running back then
        permit = PermitRecord(
            issuer="CH", number="CH26-RET9", version=1, direction=Direction.INBOUND, status="VALID", permit_json=b"{}",
            signed_xml=b"<CITESEPermit/>", digest="d", sender="CH", replaces=None, replaced_by=None, created_at=past,
        )  # fmt: skip
        message = MessageRecord(
            message_id="old-1", conversation_id="c", direction=Direction.INBOUND, sender="CH", receiver="FR",
            document_type="CITESEPermit", action=Action.ISSUE, issuer="CH", number="CH26-RET9", version=1,
            status=MessageStatus.RECEIVED, attempts=0, next_attempt_at=None, lease_until=None, last_error_code=None,
            last_error_detail=None, via=None, receipt=b"<Receipt/>", payload_digest="d", created_at=past,
            updated_at=past, payload=b"<CITESEPermit/>",
        )  # fmt: skip
        await store.store_inbound(permit, message, actor="partner:CH")
        await store.ack_inbox("old-1", actor="ma:fr")
        await store.close()

        def epix(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "gateway.cli", "purge", "--config", str(net["FR"].config_path), *args],
                capture_output=True, text=True, cwd=ROOT, timeout=120,
            )  # fmt: skip

        def counted(result: subprocess.CompletedProcess) -> dict[str, str]:
            assert result.returncode == 0, result.stderr
            return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}

        dry = epix("--dry-run")
        assert dry.stdout.startswith("dry run, nothing removed")
        assert counted(dry) == {"messages": "1", "events": "2", "payloads": "0", "idempotency_keys": "-", "verifications": "-"}
        assert "kept forever (no idempotency_days in [retention])" in dry.stdout
        done = epix()
        assert done.stdout.startswith("retention run 1 ")
        assert counted(done) == counted(dry)
        again = epix()
        assert again.stdout.startswith("retention run 2 ") and counted(again)["messages"] == "0"
        no_policy = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "purge", "--config", str(net["CH"].config_path)],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert no_policy.returncode == 0 and "no [retention] policy" in no_policy.stdout
