"""The durable store, run for real against both backends: SQLite in a temporary directory and
PostgreSQL in a fresh schema per test (marked ``postgres``: fails when CI=true and the server is
missing, skips otherwise). Every test below runs once per backend."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from domain.errors import EpixError, ErrorCode
from domain.messages import Action, Direction, MessageStatus
from gateway.store import MessageFilter, MessageRecord, PermitRecord, Store
from gateway.store.base import LEASE_EXPIRED_DETAIL, Claim
from gateway.store.postgres import PostgresStore
from gateway.store.schema import MIGRATIONS
from gateway.store.sqlite import SqliteStore
from tests.conftest import IN_CI
from tests.integration.records import T0, accept, message, permit
from tests.pg import PG_DSN, pg_unreachable_reason

ROOT = Path(__file__).resolve().parents[2]


# --- accepting outbound permits ------------------------------------------------------------------


async def test_accept_then_read_back_everything(store):
    p = permit()
    held = await accept(store, p, "FR", "DE")

    assert [m.receiver for m in held] == ["FR", "DE"]
    for m in held:
        assert await store.get_message(m.message_id) == m
        assert m.status is MessageStatus.SEND_ENQUEUED
        assert m.next_attempt_at == T0  # due at once: the queue entry is the message itself
        events = await store.message_events(m.message_id)
        assert [(e.seq, e.status, e.actor) for e in events] == [(1, MessageStatus.SEND_ENQUEUED, "ma-system")]
    assert await store.get_permit_versions("CH", p.number) == [p]
    assert {m.message_id for m in await store.messages_for_permit("CH", p.number)} == {m.message_id for m in held}
    assert await store.get_message("no-such-message") is None


async def test_accept_same_version_and_digest_again_returns_what_is_held(store):
    first = await accept(store, permit(), "FR")
    again = await accept(store, permit(), "FR")  # a retry carries fresh message ids

    assert again == first
    assert await store.counts_by_status() == {"SEND_ENQUEUED": 1}


async def test_accept_same_version_other_content_is_a_version_conflict(store):
    await accept(store, permit())
    with pytest.raises(EpixError) as caught:
        await accept(store, permit(xml=b"<CITESEPermit changed='yes'/>"))

    assert caught.value.code is ErrorCode.VERSION_CONFLICT
    assert await store.counts_by_status() == {"SEND_ENQUEUED": 1}
    # A new version is the legitimate way to change a permit.
    await accept(store, permit(version=2, xml=b"<CITESEPermit changed='yes'/>"))
    assert [v.version for v in await store.get_permit_versions("CH", "CH-2026-0001")] == [1, 2]


async def test_a_hub_holds_a_version_both_as_received_and_as_forwarded(store):
    inbound = permit(issuer="KE", number="KE-1", direction=Direction.INBOUND, sender="KE")
    is_new, _ = await store.store_inbound(inbound, message(inbound, receiver="HUB"), actor="hub")
    forwarded = replace(inbound, direction=Direction.OUTBOUND, sender=None)
    held = await accept(store, forwarded, "FR")

    assert is_new and len(held) == 1
    versions = await store.get_permit_versions("KE", "KE-1")
    assert [(v.version, v.direction) for v in versions] == [(1, Direction.OUTBOUND), (1, Direction.INBOUND)]


async def test_idempotency_key_is_recorded_and_replayed(store):
    held = await accept(store, permit(), "FR", idempotency_key="k-1", principal="ma-ch", request_hash="h-1")

    assert await store.idempotency_lookup("ma-ch", "k-1") == ("h-1", [held[0].message_id])
    assert await store.idempotency_lookup("ma-ch", "k-2") is None
    assert await store.idempotency_lookup("ma-other", "k-1") is None  # keys belong to one principal
    replay = await accept(store, permit(), "FR", idempotency_key="k-1", principal="ma-ch", request_hash="h-1")
    assert replay == held


async def test_idempotency_key_reused_for_another_request_is_refused(store):
    await accept(store, permit(), idempotency_key="k-1", principal="ma-ch", request_hash="h-1")
    with pytest.raises(EpixError) as caught:
        await accept(store, permit("CH-2026-0002"), idempotency_key="k-1", principal="ma-ch", request_hash="h-2")

    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert await store.get_permit_versions("CH", "CH-2026-0002") == []  # nothing of it was kept


async def test_a_refused_write_among_concurrent_ones_leaves_no_trace_and_spares_the_others(store):
    await accept(store, permit("P-HELD"))
    # On SQLite these are committed together in one transaction: the conflict must be undone alone.
    results = await asyncio.gather(
        *(accept(store, permit(f"P-{i}")) for i in range(5)),
        accept(store, permit("P-HELD", xml=b"<other/>")),
        *(accept(store, permit(f"P-{i}")) for i in range(5, 10)),
        return_exceptions=True,
    )

    refused = [r for r in results if isinstance(r, EpixError)]
    assert [e.code for e in refused] == [ErrorCode.VERSION_CONFLICT]
    assert await store.counts_by_status() == {"SEND_ENQUEUED": 11}
    for i in range(10):
        assert len(await store.get_permit_versions("CH", f"P-{i}")) == 1


async def test_accept_refuses_messages_about_another_permit(store):
    other = message(permit("CH-OTHER"))
    with pytest.raises(EpixError) as caught:
        await store.accept_outbound(permit(), [other], actor="ma-system")
    assert caught.value.code is ErrorCode.CONFLICT
    assert await store.get_permit_versions("CH", "CH-2026-0001") == []


async def test_set_permit_status_changes_the_latest_version(store):
    await accept(store, permit())
    await accept(store, permit(version=2, xml=b"<v2/>"))
    await store.set_permit_status("CH", "CH-2026-0001", "REPLACED", replaced_by="CH-2026-0099")

    v1, v2 = await store.get_permit_versions("CH", "CH-2026-0001")
    assert (v1.status, v2.status, v2.replaced_by) == ("VALID", "REPLACED", "CH-2026-0099")
    with pytest.raises(EpixError) as missing:
        await store.set_permit_status("CH", "CH-NONE", "CANCELLED")
    assert missing.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(EpixError) as bad:
        await store.set_permit_status("CH", "CH-2026-0001", "LOST")
    assert bad.value.code is ErrorCode.CONFLICT


# --- transitions and history ---------------------------------------------------------------------


async def test_a_delivery_with_one_retry_leaves_its_history_in_order(store, clock):
    (m,) = await accept(store, permit())
    await store.claim_due(limit=10, lease_s=30, now=clock(), actor="sender-1")
    clock.advance(1)
    retry_at = clock() + timedelta(seconds=5)
    waiting = await store.transition(
        m.message_id, MessageStatus.WAITING_FOR_RETRY, actor="sender-1", detail="connection refused",
        error_code="PARTNER_UNAVAILABLE", next_attempt_at=retry_at, increment_attempts=True,
    )  # fmt: skip
    assert (waiting.attempts, waiting.next_attempt_at, waiting.lease_until) == (1, retry_at, None)
    assert (waiting.last_error_code, waiting.last_error_detail) == ("PARTNER_UNAVAILABLE", "connection refused")
    assert await store.next_due_at() == retry_at

    clock.advance(5)
    assert [c.message_id for c in await store.claim_due(limit=10, lease_s=30, now=clock(), actor="sender-2")] == [
        m.message_id
    ]
    done = await store.transition(m.message_id, MessageStatus.ACKNOWLEDGED, actor="sender-2", receipt=b"<Signed/>")
    assert (done.status, done.receipt, done.lease_until, done.next_attempt_at) == (
        MessageStatus.ACKNOWLEDGED, b"<Signed/>", None, None,
    )  # fmt: skip
    assert await store.get_message(m.message_id) == done
    assert await store.next_due_at() is None

    events = await store.message_events(m.message_id)
    assert [(e.seq, e.status, e.actor, e.error_code) for e in events] == [
        (1, MessageStatus.SEND_ENQUEUED, "ma-system", None),
        (2, MessageStatus.SENDING, "sender-1", None),
        (3, MessageStatus.WAITING_FOR_RETRY, "sender-1", "PARTNER_UNAVAILABLE"),
        (4, MessageStatus.SENDING, "sender-2", None),
        (5, MessageStatus.ACKNOWLEDGED, "sender-2", None),
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)


async def test_a_move_the_lifecycle_forbids_is_refused_and_changes_nothing(store):
    (m,) = await accept(store, permit())
    with pytest.raises(EpixError) as caught:
        await store.transition(m.message_id, MessageStatus.ACKNOWLEDGED, actor="sender", receipt=b"<x/>")

    assert caught.value.code is ErrorCode.CONFLICT
    assert "SEND_ENQUEUED" in caught.value.detail
    assert await store.get_message(m.message_id) == m
    assert len(await store.message_events(m.message_id)) == 1


async def test_transition_of_an_unknown_message_is_not_found(store):
    with pytest.raises(EpixError) as caught:
        await store.transition("m-missing", MessageStatus.SENDING, actor="sender")
    assert caught.value.code is ErrorCode.NOT_FOUND


async def test_an_operator_can_requeue_a_parked_message(store, clock):
    (m,) = await accept(store, permit())
    await store.claim_due(limit=1, lease_s=30, now=clock(), actor="sender")
    await store.transition(m.message_id, MessageStatus.SEND_FAILURE, actor="sender", error_code="PARTNER_UNAVAILABLE")
    assert await store.claim_due(limit=1, lease_s=30, now=clock() + timedelta(days=1), actor="sender") == []

    clock.advance(60)
    requeued = await store.transition(m.message_id, MessageStatus.SEND_ENQUEUED, actor="operator")
    assert requeued.next_attempt_at == clock()
    assert [c.message_id for c in await store.claim_due(limit=1, lease_s=30, now=clock(), actor="s")] == [m.message_id]


async def test_the_event_history_cannot_be_rewritten(backend):
    store = await backend()
    (m,) = await accept(store, permit())
    for statement in ("UPDATE message_events SET actor = 'forger'", "DELETE FROM message_events"):
        if backend.kind == "sqlite":
            conn = sqlite3.connect(store.path)
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
            conn.close()
        else:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await store.pool.execute(statement)
    assert [e.actor for e in await store.message_events(m.message_id)] == ["ma-system"]


# --- the embedded queue --------------------------------------------------------------------------


async def test_claim_takes_only_what_is_due_oldest_first(store, clock):
    later = await accept(store, permit("P-LATER"), due=T0 + timedelta(seconds=60))
    first = await accept(store, permit("P-FIRST"), due=T0 - timedelta(seconds=5))
    now_ = await accept(store, permit("P-NOW"))

    assert await store.next_due_at() == T0 - timedelta(seconds=5)
    claimed = await store.claim_due(limit=10, lease_s=30, now=T0, actor="sender")
    assert [c.message_id for c in claimed] == [first[0].message_id, now_[0].message_id]
    assert all(c.status is MessageStatus.SENDING and c.lease_until == T0 + timedelta(seconds=30) for c in claimed)
    assert await store.claim_due(limit=10, lease_s=30, now=T0, actor="sender") == []
    assert await store.next_due_at() == T0 + timedelta(seconds=30)  # the earliest lease to run out

    claimed = await store.claim_due(limit=10, lease_s=30, now=T0 + timedelta(seconds=29), actor="sender")
    assert claimed == []
    assert await store.get_message(later[0].message_id) == later[0]


async def test_claim_respects_limit_and_receiver(store):
    await accept(store, permit("P-1"), "FR", "DE")
    await accept(store, permit("P-2"), "FR", "JP")

    fr = await store.claim_due(limit=10, lease_s=30, now=T0, actor="sender-fr", receiver="FR")
    assert sorted(m.receiver for m in fr) == ["FR", "FR"]
    one = await store.claim_due(limit=1, lease_s=30, now=T0, actor="sender")
    assert len(one) == 1 and one[0].receiver in {"DE", "JP"}
    assert await store.claim_due(limit=0, lease_s=30, now=T0, actor="sender") == []
    assert await store.counts_by_status() == {"SENDING": 3, "SEND_ENQUEUED": 1}


async def test_an_expired_lease_gives_the_message_to_another_sender(store):
    (m,) = await accept(store, permit())
    (held,) = await store.claim_due(limit=1, lease_s=30, now=T0, actor="sender-crashed")

    assert await store.claim_due(limit=1, lease_s=30, now=T0 + timedelta(seconds=20), actor="sender-2") == []
    (again,) = await store.claim_due(limit=1, lease_s=30, now=T0 + timedelta(seconds=31), actor="sender-2")
    assert again.message_id == m.message_id
    assert again.lease_until == T0 + timedelta(seconds=61)
    events = await store.message_events(m.message_id)
    assert [(e.seq, e.status, e.actor, e.detail) for e in events[1:]] == [
        (2, MessageStatus.SENDING, "sender-crashed", None),
        (3, MessageStatus.SEND_ENQUEUED, "sender-2", LEASE_EXPIRED_DETAIL),
        (4, MessageStatus.SENDING, "sender-2", None),
    ]
    # The crashed sender comes back late: its outcome still lands (the message is SENDING),
    # which is why receivers dedupe on message id.
    assert held.status is MessageStatus.SENDING


async def test_messages_claimed_as_they_are_accepted_are_the_senders_until_their_lease_runs_out(store):
    lease_until = T0 + timedelta(seconds=30)
    mine, queued = await accept(store, permit(), "FR", "DE", claim=Claim(1, "sender-1", lease_until))

    assert (mine.status, mine.lease_until, mine.next_attempt_at) == (MessageStatus.SENDING, lease_until, None)
    assert queued.status is MessageStatus.SEND_ENQUEUED
    assert await store.get_message(mine.message_id) == mine
    events = await store.message_events(mine.message_id)
    assert [(e.seq, e.status, e.actor, e.detail) for e in events] == [
        (1, MessageStatus.SEND_ENQUEUED, "ma-system", "accepted"),
        (2, MessageStatus.SENDING, "sender-1", None),
    ]
    # Only the one left queued is due now; the claimed one comes back only if its sender dies.
    assert [m.message_id for m in await store.claim_due(limit=5, lease_s=60, now=T0, actor="sender-2")] == [queued.message_id]
    (again,) = await store.claim_due(limit=5, lease_s=30, now=T0 + timedelta(seconds=31), actor="sender-2")
    assert again.message_id == mine.message_id
    assert [e.detail for e in (await store.message_events(mine.message_id))[2:]] == [LEASE_EXPIRED_DETAIL, None]
    done = await store.transition(mine.message_id, MessageStatus.ACKNOWLEDGED, actor="sender-1", receipt=b"r")
    assert done.status is MessageStatus.ACKNOWLEDGED


async def test_a_repeated_accept_hands_nothing_claimed_back(store):
    first = await accept(store, permit(), "FR")
    again = await accept(store, permit(), "FR", claim=Claim(1, "sender-1", T0 + timedelta(seconds=30)))

    assert again == first and again[0].status is MessageStatus.SEND_ENQUEUED


async def _claim_until_empty(store: Store, name: str, claimed: list[str]) -> None:
    while batch := await store.claim_due(limit=7, lease_s=60, now=T0, actor=name):
        claimed.extend(m.message_id for m in batch)
        await asyncio.sleep(0)


async def test_concurrent_claimers_never_take_the_same_message(backend):
    store = await backend()
    accepted = []
    for i in range(60):
        accepted += await accept(store, permit(f"P-{i:03}"), "FR", "DE", "JP")
    stores = [store]
    if backend.kind == "postgres":
        stores.append(await backend())  # a second pool: as a second gateway process would have
    else:
        stores.append(await backend())  # a second instance on the same file: BEGIN IMMEDIATE guards it

    claimed: list[str] = []
    await asyncio.gather(*(_claim_until_empty(stores[i % 2], f"sender-{i}", claimed) for i in range(16)))

    assert len(claimed) == len(set(claimed)) == 180
    assert set(claimed) == {m.message_id for m in accepted}
    for m in accepted[:5]:
        assert [e.status for e in await store.message_events(m.message_id)] == [
            MessageStatus.SEND_ENQUEUED,
            MessageStatus.SENDING,
        ]


# --- inbound and the inbox -----------------------------------------------------------------------


def inbound_permit(number: str = "FR-2026-0042", **kw) -> PermitRecord:
    return permit(number, issuer="FR", direction=Direction.INBOUND, sender="FR", **kw)


async def test_inbound_dedupe_by_message_id(store):
    p = inbound_permit()
    m = message(p, receiver="CH", message_id="fr-msg-1")
    assert await store.store_inbound(p, m, actor="receiver") == (True, m)

    is_new, held = await store.store_inbound(p, replace(m, receipt=b"<Other/>"), actor="receiver")
    assert (is_new, held) == (False, m)
    assert len(await store.message_events("fr-msg-1")) == 1  # no second effect


async def test_inbound_dedupe_by_permit_version_and_digest(store):
    p = inbound_permit()
    first = message(p, receiver="CH", message_id="fr-msg-1")
    await store.store_inbound(p, first, actor="receiver")

    is_new, held = await store.store_inbound(p, message(p, receiver="CH", message_id="fr-msg-2"), actor="receiver")
    assert (is_new, held.message_id) == (False, "fr-msg-1")
    assert await store.get_message("fr-msg-2") is None

    changed = inbound_permit(xml=b"<CITESEPermit tampered='1'/>")
    with pytest.raises(EpixError) as caught:
        await store.store_inbound(changed, message(changed, receiver="CH", message_id="fr-msg-3"), actor="receiver")
    assert caught.value.code is ErrorCode.VERSION_CONFLICT
    assert await store.get_message("fr-msg-3") is None


async def test_inbound_cancellation_without_permit_is_deduped_on_its_payload(store):
    p = inbound_permit()
    cancel = replace(message(p, receiver="CH", message_id="fr-cancel-1", action=Action.CANCEL), payload_digest="d1")
    assert (await store.store_inbound(None, cancel, actor="receiver"))[0] is True
    resent = replace(cancel, message_id="fr-cancel-2")
    assert await store.store_inbound(None, resent, actor="receiver") == (False, cancel)
    other = replace(cancel, message_id="fr-cancel-3", payload_digest="d2")
    assert (await store.store_inbound(None, other, actor="receiver"))[0] is True


async def test_concurrent_deliveries_of_one_message_store_it_once(store):
    p = inbound_permit()
    m = message(p, receiver="CH", message_id="fr-msg-1")
    results = await asyncio.gather(*(store.store_inbound(p, m, actor=f"r{i}") for i in range(8)))

    assert sorted(is_new for is_new, _ in results) == [False] * 7 + [True]
    assert len(await store.message_events("fr-msg-1")) == 1


async def test_inbox_lists_received_oldest_first_and_ack_is_idempotent(store):
    msgs = []
    for i, at in enumerate([T0 + timedelta(seconds=3), T0, T0 + timedelta(seconds=1)]):
        p = inbound_permit(f"FR-{i}")
        m = message(p, receiver="CH", message_id=f"fr-{i}", created_at=at)
        await store.store_inbound(p, m, actor="receiver")
        msgs.append(m)
    other = inbound_permit("FR-TO-DE")
    await store.store_inbound(other, message(other, receiver="DE", message_id="fr-de"), actor="receiver")
    await accept(store, permit(), "CH")  # outbound to CH is not CH's inbox

    assert [m.message_id for m in await store.inbox("CH")] == ["fr-1", "fr-2", "fr-0"]
    assert [m.message_id for m in await store.inbox("CH", limit=1)] == ["fr-1"]

    acked = await store.ack_inbox("fr-1", actor="ma-ch")
    assert acked.status is MessageStatus.DELIVERED
    assert await store.ack_inbox("fr-1", actor="ma-ch") == acked
    assert [e.status for e in await store.message_events("fr-1")] == [MessageStatus.RECEIVED, MessageStatus.DELIVERED]
    assert [m.message_id for m in await store.inbox("CH")] == ["fr-2", "fr-0"]

    with pytest.raises(EpixError) as missing:
        await store.ack_inbox("nope", actor="ma-ch")
    assert missing.value.code is ErrorCode.NOT_FOUND


async def test_ack_of_an_outbound_message_is_a_conflict(store):
    (m,) = await accept(store, permit())
    with pytest.raises(EpixError) as caught:
        await store.ack_inbox(m.message_id, actor="ma-ch")
    assert caught.value.code is ErrorCode.CONFLICT


# --- listing -------------------------------------------------------------------------------------


async def _populate(store: Store) -> list[MessageRecord]:
    """Twelve outbound messages (three created in the same microsecond) and four inbound ones."""
    held = []
    for i in range(10):
        p = permit(f"CH-{i:02}")
        receivers = ("FR", "DE", "JP") if i == 9 else ("FR" if i % 2 else "DE",)
        msgs = [message(p, receiver=r, created_at=T0 + timedelta(seconds=i)) for r in receivers]
        held += await store.accept_outbound(p, msgs, actor="ma")
    for i in range(4):
        p = inbound_permit(f"FR-{i}")
        m = message(p, receiver="CH", created_at=T0 + timedelta(seconds=i, milliseconds=500))
        held.append((await store.store_inbound(p, m, actor="receiver"))[1])
    await store.claim_due(limit=3, lease_s=30, now=T0, actor="sender")
    return held


async def test_list_filters(store):
    held = await _populate(store)

    def newest_first(ms):
        return [m.message_id for m in sorted(ms, key=lambda m: (m.created_at, m.message_id), reverse=True)]

    async def ids(**kw):
        return [m.message_id for m in await store.list_messages(MessageFilter(**kw))]

    assert await ids(limit=1000) == newest_first(held)
    assert await ids(direction=Direction.INBOUND) == newest_first(h for h in held if h.direction is Direction.INBOUND)
    assert await ids(receiver="FR") == newest_first(h for h in held if h.receiver == "FR")
    assert await ids(sender="FR") == newest_first(h for h in held if h.sender == "FR")
    assert await ids(issuer="CH", number="CH-09") == newest_first(h for h in held if h.number == "CH-09")
    sending = await store.list_messages(MessageFilter(status=MessageStatus.SENDING))
    assert len(sending) == 3 and all(m.status is MessageStatus.SENDING for m in sending)
    assert await ids(status=MessageStatus.SEND_ENQUEUED, receiver="DE", direction=Direction.OUTBOUND) == [
        m.message_id
        for m in await store.list_messages(MessageFilter(limit=1000))
        if m.status is MessageStatus.SEND_ENQUEUED and m.receiver == "DE"
    ]
    assert await ids(before=T0 + timedelta(seconds=1)) == newest_first(h for h in held if h.created_at < T0 + timedelta(seconds=1))


async def test_list_pages_through_everything_once_even_with_equal_timestamps(store):
    held = await _populate(store)
    seen: list[str] = []
    f = MessageFilter(limit=2)
    while page := await store.list_messages(f):
        seen += [m.message_id for m in page]
        f = replace(f, before=page[-1].created_at, before_id=page[-1].message_id)

    assert sorted(seen) == sorted(m.message_id for m in held)
    assert len(seen) == len(set(seen)) == 16


async def test_list_refuses_absurd_pages(store):
    for f in (MessageFilter(limit=0), MessageFilter(limit=100_000), MessageFilter(before_id="m-1")):
        with pytest.raises(EpixError):
            await store.list_messages(f)


async def test_counts_and_ping(store):
    assert await store.counts_by_status() == {}
    await _populate(store)
    await store.ping()
    assert await store.counts_by_status() == {"SEND_ENQUEUED": 9, "SENDING": 3, "RECEIVED": 4}


# --- opening, migrations, crashes ----------------------------------------------------------------


async def test_opening_again_keeps_data_and_migrates_once(backend):
    first = await backend()
    (m,) = await accept(first, permit())
    second = await backend()  # e.g. a restarted process, or a second one beside it

    assert await second.get_message(m.message_id) == m
    if backend.kind == "sqlite":
        with sqlite3.connect(first.path) as conn:
            rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
    else:
        rows = await first.pool.fetch("SELECT version FROM schema_migrations")
    assert [tuple(r) for r in rows] == [(m.version,) for m in MIGRATIONS]


_CRASHING_WRITER = """
import asyncio, os, sys
sys.path.insert(0, {root!r})
from tests.integration.records import accept, permit
from gateway.store.sqlite import SqliteStore

async def main():
    store = SqliteStore({path!r}, synchronous={sync!r})
    await store.open()
    held = await accept(store, permit("CH-CRASH"), "FR")
    print(held[0].message_id, flush=True)
    os._exit(0)  # no close(), no checkpoint: as if the process were killed here

asyncio.run(main())
"""


@pytest.mark.parametrize("sync", ["FULL", "NORMAL"])
async def test_sqlite_keeps_committed_work_when_the_process_dies(tmp_path, sync):
    path = tmp_path / "epix.sqlite3"
    script = _CRASHING_WRITER.format(root=str(ROOT), path=str(path), sync=sync)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    message_id = done.stdout.strip()
    assert (tmp_path / "epix.sqlite3-wal").exists()  # the commit is in the WAL, never checkpointed

    store = SqliteStore(path)
    await store.open()
    try:
        held = await store.get_message(message_id)
        assert held is not None and held.status is MessageStatus.SEND_ENQUEUED
        now = datetime.now(UTC) + timedelta(minutes=1)  # the crashed writer queued it at its real now
        assert [c.message_id for c in await store.claim_due(limit=5, lease_s=30, now=now, actor="s")] == [message_id]
    finally:
        await store.close()


async def test_sqlite_a_second_instance_sees_writes_of_an_unclosed_one(tmp_path):
    writer = SqliteStore(tmp_path / "epix.sqlite3")
    await writer.open()
    (m,) = await accept(writer, permit())
    reader = SqliteStore(tmp_path / "epix.sqlite3")
    await reader.open()
    try:
        assert await reader.get_message(m.message_id) == m
    finally:
        await reader.close()
        await writer.close()


async def test_sqlite_files_are_in_wal_mode(tmp_path):
    store = SqliteStore(tmp_path / "epix.sqlite3")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "epix.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_postgres_unreachable_is_store_unavailable():
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test")  # nothing listens on port 1
    with pytest.raises(EpixError) as caught:
        await store.open()
    assert caught.value.code is ErrorCode.STORE_UNAVAILABLE


@pytest.mark.postgres
async def test_postgres_unknown_database_is_a_configuration_error():
    reason = await pg_unreachable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    dsn = PG_DSN.rsplit("/", 1)[0] + "/no_such_database_epix"
    with pytest.raises(EpixError) as caught:
        await PostgresStore(dsn).open()
    assert caught.value.code is ErrorCode.CONFIG_INVALID


async def test_sqlite_in_an_unwritable_place_is_store_unavailable(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(EpixError) as caught:
        await SqliteStore(tmp_path / "file" / "epix.sqlite3").open()
    assert caught.value.code is ErrorCode.STORE_UNAVAILABLE


async def test_ping_after_close_is_store_unavailable(backend):
    store = await backend()
    await store.ping()
    await store.close()
    with pytest.raises(EpixError) as caught:
        await store.ping()
    assert caught.value.code is ErrorCode.STORE_UNAVAILABLE
