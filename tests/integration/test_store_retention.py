"""Retention in the store, on both backends: payloads dropped with the row and history kept, old
final messages deleted with their history, nothing that is not final touched nor anything the
customs feed has yet to hand over, the history still append-only for everything but a retention
run (whatever the statement), dry runs that change nothing, every run recorded."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest

from domain.errors import EpixError, ErrorCode
from domain.messages import Direction, MessageStatus
from gateway.store import Store
from gateway.store.base import DeliveryReportRecord, MessageAlias
from gateway.store import ledger as lq
from gateway.store import schema as q
from gateway.store.ledger import VerificationRecord
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from gateway.store.retention import NO_FEED, RETENTION_ACTOR, Cutoffs, FeedHold, PurgeCounts
from gateway.store.schema import FINAL_DELIVERY_STATUSES
from tests.integration.records import T0, accept, message, permit, refused
from tests.pg import PG_DSN, PgSchema


def purging_by_hand(**cutoffs: str) -> list[str]:
    """Statements that raise a retention run's flag by hand, as only the retention job should: a
    new run with the given cutoffs (an ended run can no longer be changed, migration 11)."""
    columns = ", ".join(f"{k}_cutoff" for k in cutoffs)
    values = ", ".join(cutoffs.values())
    return [
        f"INSERT INTO retention_runs (run_id, actor, started_at, {columns}) VALUES (999, 'by-hand', '2026-11-23T14:00:00.000000+00:00', {values})",
        "UPDATE retention_runs SET purging = 1 WHERE run_id = 999",
    ]


DAY = 86400.0


async def _outbound(store: Store, number: str, *outcome: MessageStatus, via: str | None = None) -> str:
    """An outbound message taken through ``outcome`` (SENDING first when it needs it)."""
    p = permit(number)
    m = replace(message(p, receiver="FR"), via=via, payload=p.signed_xml)
    [held] = await store.accept_outbound(p, [m], actor="ma-system")
    for status in outcome:
        receipt = b"<Receipt from='FR'/>" if status is MessageStatus.ACKNOWLEDGED else None
        error = "PARTNER_REJECTED" if status in (MessageStatus.REJECTED, MessageStatus.SEND_FAILURE) else None
        await store.transition(held.message_id, status, actor="sender", receipt=receipt, error_code=error)
    return held.message_id


async def _inbound(store: Store, number: str, *, acknowledged: bool, fed: bool = True, at=T0) -> str:
    """A permit FR issued, received by CH at ``at``; ``fed``: CH's pre-arrival feed has handed it to customs."""
    p = permit(number, issuer="FR", direction=Direction.INBOUND, sender="FR")
    m = replace(message(p, receiver="CH", created_at=at), payload=p.signed_xml)
    _, held = await store.store_inbound(p, m, actor="partner:FR")
    if acknowledged:
        await store.ack_inbox(held.message_id, actor="ma:ch")
    if fed:
        assert await store.feed_mark_sent(held.message_id, at=T0, detail="webhook 204")
    return held.message_id


async def _everything(store: Store) -> dict[str, str]:
    """One message in every state retention must tell apart, all last changed at T0."""
    S = MessageStatus
    ids = {
        "acknowledged": await _outbound(store, "P-ACK", S.SENDING, S.ACKNOWLEDGED),
        "rejected": await _outbound(store, "P-REJ", S.SENDING, S.REJECTED),
        "delivered": await _inbound(store, "P-DEL", acknowledged=True),
        "via_hub_done": await _outbound(store, "P-HUB1", S.SENDING, S.ACKNOWLEDGED, via="HUB"),
        # not final, or still waiting for someone:
        "queued": await _outbound(store, "P-Q"),
        "sending": await _outbound(store, "P-S", S.SENDING),
        "waiting_for_retry": await _outbound(store, "P-W", S.SENDING, S.WAITING_FOR_RETRY),
        "parked": await _outbound(store, "P-PARK", S.SENDING, S.SEND_FAILURE),
        "unacknowledged_inbox": await _inbound(store, "P-INBOX", acknowledged=False),
        # final, but customs has not been handed it yet (its pre-arrival feed is down)
        "not_fed": await _inbound(store, "P-NOT-FED", acknowledged=True, fed=False),
        "via_hub_pending": await _outbound(store, "P-HUB2", S.SENDING, S.ACKNOWLEDGED, via="HUB"),
    }
    for key, status in (("via_hub_done", "Delivered"), ("via_hub_pending", "PendingDelivery")):
        report = DeliveryReportRecord(ids[key], status, "HUB", None, b"<DeliveryReport/>", T0)
        await store.save_delivery_report(report, actor="hub:HUB")
    return ids


SETTLED = ("acknowledged", "rejected", "delivered", "via_hub_done")
UNSETTLED = ("queued", "sending", "waiting_for_retry", "parked", "unacknowledged_inbox", "via_hub_pending", "not_fed")


async def _snapshot(store: Store, ids: dict[str, str]):
    return {k: (await store.get_message(i), await store.message_events(i)) for k, i in ids.items()}


async def test_payloads_go_while_the_row_its_digest_receipt_and_history_stay(store, clock):
    ids = await _everything(store)
    before = await _snapshot(store, ids)
    clock.advance(31 * DAY)

    run = await store.purge(Cutoffs(payloads=clock() - timedelta(days=30)), actor="test")

    assert run.counts == PurgeCounts(payloads=len(SETTLED))
    assert run.run_id == 1 and run.finished_at == clock() and run.error is None
    for key in SETTLED:
        held, events = await store.get_message(ids[key]), await store.message_events(ids[key])
        old_message, old_events = before[key]
        assert held.payload is None
        assert replace(held, payload=old_message.payload) == old_message  # digest, receipt, times unchanged
        assert events[:-1] == old_events
        last = events[-1]
        assert (last.seq, last.status, last.actor) == (old_events[-1].seq + 1, old_message.status, RETENTION_ACTOR)
        assert last.at == clock() and "retention run 1" in last.detail
    for key in UNSETTLED:
        assert await _snapshot(store, {key: ids[key]}) == {key: before[key]}
    # The receipt a partner would get again for a re-sent id, and the permit records, are all kept.
    assert (await store.get_message(ids["delivered"])).receipt == b"<Receipt/>"
    assert len(await store.get_permit_versions("FR", "P-DEL")) == 1
    # A second run finds nothing more to do.
    again = await store.purge(Cutoffs(payloads=clock() - timedelta(days=30)), actor="test")
    assert again.counts == PurgeCounts() and again.run_id == 2


async def test_old_final_messages_go_with_their_history_and_nothing_else_does(store, clock):
    ids = await _everything(store)
    before = await _snapshot(store, ids)
    events_of_settled = sum(len(before[k][1]) for k in SETTLED)
    clock.advance(400 * DAY)

    run = await store.purge(Cutoffs(messages=clock() - timedelta(days=365)), actor="test")

    assert run.counts == PurgeCounts(messages=len(SETTLED), events=events_of_settled)
    for key in SETTLED:
        assert await store.get_message(ids[key]) is None
        assert await store.message_events(ids[key]) == []
    assert await store.delivery_report(ids["via_hub_done"]) is None
    assert (await store.delivery_report(ids["via_hub_pending"])).status == "PendingDelivery"
    for key in UNSETTLED:
        assert await _snapshot(store, {key: ids[key]}) == {key: before[key]}
    # Permits are the legal record: every one is still held, whatever became of its messages.
    for issuer, number in (("CH", "P-ACK"), ("CH", "P-REJ"), ("FR", "P-DEL"), ("CH", "P-HUB1")):
        assert len(await store.get_permit_versions(issuer, number)) == 1


async def test_an_id_resent_under_goes_with_the_message_it_names(store, clock):
    kept = await _inbound(store, "P-ALIAS-KEEP", acknowledged=False)
    gone = await _inbound(store, "P-ALIAS-GONE", acknowledged=True)
    first = MessageAlias("resent-1", "FR", gone, "sha256:" + "1" * 64, b"<Receipt n='1'/>", T0)
    assert await store.record_alias(first) == first
    assert await store.record_alias(replace(first, receipt=b"<Receipt n='2'/>")) == first  # the first answer stays
    other = MessageAlias("resent-2", "FR", kept, "sha256:" + "2" * 64, b"<Receipt n='3'/>", T0)
    await store.record_alias(other)
    assert await store.get_alias("never-sent") is None
    # What an incoming id stands for, as the inbound path asks it (one round trip on PostgreSQL).
    assert await store.find_received(kept) == (await store.get_message(kept), None)
    assert await store.find_received("resent-2") == (None, other)
    assert await store.find_received("never-sent") == (None, None)
    clock.advance(400 * DAY)

    await store.purge(Cutoffs(messages=clock() - timedelta(days=365)), actor="test")

    assert await store.get_message(gone) is None and await store.get_alias("resent-1") is None
    assert await store.get_alias("resent-2") == other


async def test_age_counts_from_the_last_change_of_status(store, clock):
    old = await _outbound(store, "P-OLD", MessageStatus.SENDING, MessageStatus.REJECTED)
    retried = await _outbound(store, "P-RETRIED", MessageStatus.SENDING, MessageStatus.REJECTED)
    clock.advance(400 * DAY)
    # An operator replays the second one, and it is refused again: final, but only just.
    for status in (MessageStatus.SEND_ENQUEUED, MessageStatus.SENDING, MessageStatus.REJECTED):
        await store.transition(retried, status, actor="operator")

    run = await store.purge(Cutoffs(messages=clock() - timedelta(days=365), payloads=clock() - timedelta(days=30)), actor="t")

    assert (run.counts.messages, run.counts.payloads) == (1, 0)
    assert await store.get_message(old) is None
    assert (await store.get_message(retried)).payload is not None


async def test_the_history_stays_append_only_outside_a_retention_run(backend, clock):
    store = await backend()
    final = await _outbound(store, "P-ACK", MessageStatus.SENDING, MessageStatus.ACKNOWLEDGED)
    waiting = await _outbound(store, "P-Q")
    clock.advance(400 * DAY)
    cutoff = clock() - timedelta(days=365)
    await store.purge(Cutoffs(payloads=cutoff), actor="test")  # a run exists, with its cutoffs, and is over

    async def refused(statement: str, *, purging_run: bool = False) -> None:
        """The statement fails with the trigger's message; ``purging_run``: inside a transaction that
        sets a run's flag by hand, as only the retention job should."""
        flag = purging_by_hand(message="'2100-01-01T00:00:00.000000+00:00'") if purging_run else []
        if backend.kind == "sqlite":
            conn = sqlite3.connect(store.path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            for raising in flag:
                conn.execute(raising)
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
            conn.execute("ROLLBACK")
            conn.close()
        else:
            async with store.pool.acquire() as conn:
                with pytest.raises(asyncpg.RaiseError, match="append-only"):
                    async with conn.transaction():
                        for raising in flag:
                            await conn.execute(raising)
                        await conn.execute(statement)

    await refused(f"UPDATE message_events SET actor = 'forger' WHERE message_id = '{final}'")
    await refused(f"UPDATE message_events SET actor = 'forger' WHERE message_id = '{final}'", purging_run=True)
    await refused(f"DELETE FROM message_events WHERE message_id = '{final}'")  # final and old, but no run is purging
    await refused(f"DELETE FROM message_events WHERE message_id = '{waiting}'", purging_run=True)  # never if not final
    if backend.kind == "postgres":
        await refused("TRUNCATE message_events")
    assert [e.actor for e in await store.message_events(final)] == ["ma-system", "sender", "sender", RETENTION_ACTOR]
    assert len(await store.message_events(waiting)) == 1


async def test_an_insert_over_a_held_event_is_refused_whatever_its_conflict_clause(backend, clock):
    """SQLite's REPLACE deletes the row in its way without firing delete triggers (unless a
    connection turned recursive_triggers on), so the delete trigger alone would let it rewrite an
    event; an upsert goes through the update trigger instead. Each is refused, even while a run
    is purging, and the event stays as it was written."""
    store = await backend()
    final = await _outbound(store, "P-ACK", MessageStatus.SENDING, MessageStatus.ACKNOWLEDGED)
    clock.advance(400 * DAY)
    await store.purge(Cutoffs(payloads=clock() - timedelta(days=30)), actor="test")  # a run exists, and is over
    before = await store.message_events(final)
    forged = f"({q.EVENT_COLUMNS}) VALUES ('{final}', 1, '2026-11-23T14:00:00.000000+00:00', 'ACKNOWLEDGED', 'forger', 'rewritten', NULL)"
    purging = purging_by_hand(message="'2100-01-01T00:00:00.000000+00:00'")
    upsert = f"INSERT INTO message_events {forged} ON CONFLICT (message_id, seq) DO UPDATE SET actor = 'forger'"

    statements = [upsert]
    if backend.kind == "sqlite":
        statements += [f"INSERT OR REPLACE INTO message_events {forged}", f"REPLACE INTO message_events {forged}"]
    for statement in statements:
        await refused(store, statement)
        await refused(store, statement, first=purging)  # a run that may delete this history may not rewrite it
    if backend.kind == "sqlite":
        await refused(store, f"INSERT OR REPLACE INTO message_events {forged}", first=["PRAGMA recursive_triggers = ON"])

    assert await store.message_events(final) == before
    assert [e.actor for e in before] == ["ma-system", "sender", "sender", RETENTION_ACTOR]
    # What the store itself appends still goes in.
    await store.record_event(final, actor="operator", detail="looked at")
    assert (await store.message_events(final))[:-1] == before


async def test_every_append_only_table_refuses_an_insert_over_a_held_row(tmp_path):
    """On SQLite a table kept by BEFORE UPDATE/DELETE triggers needs a BEFORE INSERT one as well,
    or INSERT OR REPLACE rewrites it: the schema keeps the two together for every such table."""
    store = SqliteStore(tmp_path / "epix.sqlite3")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "epix.sqlite3")
    try:
        triggers = conn.execute("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    finally:
        conn.close()

    def kept_by(table: str, event: str) -> bool:
        return any(t == table and f"BEFORE {event} ON" in " ".join(sql.split()) and "RAISE(" in sql for t, sql in triggers)

    append_only = {t for t, _ in triggers if kept_by(t, "DELETE")}
    assert append_only >= {"message_events", "verifications", "write_offs", "permit_balances"}
    assert {t for t in append_only if not kept_by(t, "INSERT")} == set()


async def test_a_dry_run_counts_what_a_run_would_remove_and_changes_nothing(store, clock):
    ids = await _everything(store)
    await accept(store, permit("P-IDEM"), idempotency_key="k-1", principal="ma", request_hash="h")
    await store.record_verifications([_verification("v-old")])
    clock.advance(400 * DAY)
    young = [await _outbound(store, f"P-YOUNG-{i}", MessageStatus.SENDING, MessageStatus.ACKNOWLEDGED) for i in range(2)]
    clock.advance(60 * DAY)
    cutoffs = Cutoffs(
        messages=clock() - timedelta(days=365),  # the T0 ones go whole
        payloads=clock() - timedelta(days=30),  # the young ones lose their payload
        idempotency_keys=clock() - timedelta(days=30),
        verifications=clock() - timedelta(days=30),
    )
    everything = {**ids, **{f"young-{i}": y for i, y in enumerate(young)}}
    before = await _snapshot(store, everything)

    dry = await store.purge(cutoffs, actor="test", dry_run=True)

    assert dry.dry_run and dry.run_id is None
    assert dry.counts == PurgeCounts(
        messages=len(SETTLED), events=sum(len(before[k][1]) for k in SETTLED), payloads=2, idempotency_keys=1,
        verifications=1,
    )  # fmt: skip
    assert await _snapshot(store, everything) == before
    assert await store.purge_runs() == []
    assert await store.idempotency_lookup("ma", "k-1") is not None
    assert len(await store.list_verifications("CH", "P-1")) == 1
    run = await store.purge(cutoffs, actor="test")
    assert run.counts == dry.counts


@pytest.mark.parametrize("due", ["messages", "payloads", "both"])
async def test_what_customs_has_not_been_fed_stays_until_the_feed_hands_it_over(store, clock, due):
    """The feed down for longer than the retention period: the permit's message is final (its MA
    acknowledged it) and old, but customs has yet to be handed it, so nothing of it goes."""
    waiting = await _inbound(store, "P-WAITING", acknowledged=True, fed=False)
    fed = await _inbound(store, "P-FED", acknowledged=True)
    before = await _snapshot(store, {"waiting": waiting})
    clock.advance(400 * DAY)
    cutoffs = Cutoffs(
        messages=clock() - timedelta(days=365) if due != "payloads" else None,
        payloads=clock() - timedelta(days=30) if due != "messages" else None,
    )

    dry = await store.purge(cutoffs, actor="test", dry_run=True)
    run = await store.purge(cutoffs, actor="test")

    assert await _snapshot(store, {"waiting": waiting}) == before  # row, payload and history
    assert [m.message_id for m in await store.feed_pending(limit=10)] == [waiting]
    if due == "payloads":
        assert (await store.get_message(fed)).payload is None
        assert run.counts == PurgeCounts(payloads=1)
    else:
        assert await store.get_message(fed) is None
        assert run.counts == PurgeCounts(messages=1, events=2)
    assert dry.counts == run.counts
    assert (dry.kept_for_feed, run.kept_for_feed) == (1, 1)
    assert (await store.purge_runs())[0].kept_for_feed == 1

    # Customs has it: the next run takes it like any other.
    assert await store.feed_mark_sent(waiting, at=clock(), detail="webhook 204")
    later = await store.purge(cutoffs, actor="test")
    assert later.kept_for_feed == 0 and await store.feed_pending(limit=10) == []
    if due == "payloads":
        assert later.counts == PurgeCounts(payloads=1) and (await store.get_message(waiting)).payload is None
    else:
        assert later.counts == PurgeCounts(messages=1, events=2) and await store.get_message(waiting) is None


async def test_only_what_the_feed_will_hand_over_is_kept_for_it(store, clock):
    """Before the operator's feed_since the feed never hands a permit over, and a gateway without a
    feed hands over nothing: what only such a feed would want is not kept."""
    early = await _inbound(store, "P-EARLY", acknowledged=True, fed=False)
    clock.advance(10 * DAY)
    late = await _inbound(store, "P-LATE", acknowledged=True, fed=False, at=clock())
    since = clock() - timedelta(days=1)
    clock.advance(400 * DAY)
    cutoffs = Cutoffs(messages=clock() - timedelta(days=365))

    run = await store.purge(cutoffs, actor="test", feed=FeedHold(since=since))

    assert (run.counts.messages, run.kept_for_feed) == (1, 1)
    assert await store.get_message(early) is None
    assert await store.get_message(late) is not None

    run = await store.purge(cutoffs, actor="test", feed=NO_FEED)
    assert (run.counts.messages, run.kept_for_feed) == (1, 0)
    assert await store.get_message(late) is None


def _verification(vid: str, *, at=T0) -> VerificationRecord:
    return VerificationRecord(vid, "CH", "P-1", "VALID", ("ok",), "customs-fr", None, False, at)


async def test_idempotency_keys_and_verifications_go_by_their_own_cutoffs(store, clock):
    await accept(store, permit("P-OLD"), idempotency_key="old", principal="ma", request_hash="h1")
    await store.record_verifications([_verification("v-old")])
    clock.advance(40 * DAY)
    await accept(store, permit("P-NEW"), idempotency_key="new", principal="ma", request_hash="h2")
    await store.record_verifications([_verification("v-new", at=clock())])

    run = await store.purge(Cutoffs(idempotency_keys=clock() - timedelta(days=30)), actor="test")
    assert run.counts == PurgeCounts(idempotency_keys=1)
    assert await store.idempotency_lookup("ma", "old") is None
    assert await store.idempotency_lookup("ma", "new") is not None
    assert [v.id for v in await store.list_verifications("CH", "P-1")] == ["v-new", "v-old"]

    run = await store.purge(Cutoffs(verifications=clock() - timedelta(days=30)), actor="test")
    assert run.counts == PurgeCounts(verifications=1)
    assert [v.id for v in await store.list_verifications("CH", "P-1")] == ["v-new"]
    # The permits the keys were for, and their messages, are not this category's.
    assert len(await store.messages_for_permit("CH", "P-OLD")) == 1


async def test_the_verification_audit_is_append_only_but_for_a_retention_run(backend, clock):
    store = await backend()
    await store.record_verifications([_verification("v-old")])
    clock.advance(40 * DAY)
    await store.record_verifications([_verification("v-new", at=clock())])
    await store.purge(Cutoffs(idempotency_keys=clock()), actor="test")  # a run exists, and is over
    between = "'2026-12-01T00:00:00.000000+00:00'"  # after v-old, before v-new
    purging = purging_by_hand(verification=between)

    await refused(store, "UPDATE verifications SET verdict = 'VALID', principal = 'forger' WHERE id = 'v-old'")
    await refused(store, "UPDATE verifications SET verdict = 'VALID' WHERE id = 'v-old'", first=purging)
    await refused(store, "DELETE FROM verifications WHERE id = 'v-old'")  # old, but no run is purging
    await refused(store, "DELETE FROM verifications", first=purging)  # v-new is younger than the run's cutoff
    values = "VALUES ('v-old', 'CH', 'P-1', 'VALID', '[]', 'forger', NULL, 0, '2026-11-23T14:00:00.000000+00:00')"
    if backend.kind == "sqlite":
        await refused(store, f"INSERT OR REPLACE INTO verifications ({lq.VERIFICATION_COLUMNS}) {values}")
    else:
        await refused(store, f"INSERT INTO verifications ({lq.VERIFICATION_COLUMNS}) {values} ON CONFLICT (id) DO UPDATE SET principal = 'forger'")
        await refused(store, "TRUNCATE verifications")
    assert [(v.id, v.principal) for v in await store.list_verifications("CH", "P-1")] == [("v-new", "customs-fr"), ("v-old", "customs-fr")]

    run = await store.purge(Cutoffs(verifications=clock() - timedelta(days=30)), actor="test")

    assert run.counts == PurgeCounts(verifications=1)
    assert [v.id for v in await store.list_verifications("CH", "P-1")] == ["v-new"]
    await refused(store, "DELETE FROM verifications")  # the run is over: its flag went with its last batch


async def test_a_run_goes_in_small_batches_and_is_recorded(store, clock):
    ids = [await _outbound(store, f"P-{i}", MessageStatus.SENDING, MessageStatus.ACKNOWLEDGED) for i in range(5)]
    clock.advance(400 * DAY)

    run = await store.purge(
        Cutoffs(messages=clock() - timedelta(days=365)), actor="epix purge", batch=2, pause_s=0
    )

    assert run.counts == PurgeCounts(messages=5, events=15)
    assert run.batches == 3  # 2 + 2 + 1
    assert all([await store.get_message(i) is None for i in ids])
    [recorded] = await store.purge_runs()
    assert recorded == run
    assert recorded.actor == "epix purge" and recorded.cutoffs.messages == clock() - timedelta(days=365)
    assert recorded.cutoffs.payloads is None and recorded.started_at <= recorded.finished_at
    with pytest.raises(EpixError) as caught:
        await store.purge(Cutoffs(messages=clock()), actor="t", batch=0)
    assert caught.value.code is ErrorCode.CONFLICT


@pytest.mark.postgres
async def test_only_one_process_purges_a_postgresql_database_at_a_time(clock):
    pg = PgSchema()
    await pg.create()
    first, second = (PostgresStore(PG_DSN, schema=pg.name, clock=clock) for _ in range(2))
    try:
        await first.open()
        await second.open()
        async with first.pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('epix-retention:' || current_schema()))")
            with pytest.raises(EpixError) as caught:
                await second.purge(Cutoffs(messages=clock()), actor="t")
            assert caught.value.code is ErrorCode.CONFLICT
            await conn.execute("SELECT pg_advisory_unlock_all()")
        assert (await second.purge(Cutoffs(messages=clock()), actor="t")).run_id == 1
    finally:
        await first.close()
        await second.close()
        await pg.drop()


def test_the_hub_statuses_retention_waits_for_are_the_hubs_final_ones():
    from gateway.store import retention

    assert retention._HUB_FINAL == ", ".join(f"'{s}'" for s in sorted(FINAL_DELIVERY_STATUSES))


async def test_a_run_that_stops_says_why_and_what_it_removed_stays_removed(backend, clock):
    store = await backend()
    gone = await _outbound(store, "P-ACK", MessageStatus.SENDING, MessageStatus.ACKNOWLEDGED)
    clock.advance(400 * DAY)
    # Sabotage the last category of the run: its batch fails after the messages' batches committed.
    if backend.kind == "sqlite":
        conn = sqlite3.connect(store.path)
        conn.execute("DROP TABLE verifications")
        conn.close()
    else:
        await store.pool.execute("DROP TABLE verifications")
    cutoff = clock() - timedelta(days=365)

    with pytest.raises(Exception, match="verifications"):
        await store.purge(Cutoffs(messages=cutoff, verifications=cutoff), actor="test")

    [run] = await store.purge_runs()
    assert run.finished_at == clock() and "verifications" in run.error
    assert run.counts == PurgeCounts(messages=1, events=3)
    assert await store.get_message(gone) is None


async def test_the_run_log_only_moves_forward_and_an_ended_run_never_changes(backend, clock):
    """Migration 11: the account of every removal is kept like the history it accounts for."""
    store = await backend()
    await _outbound(store, "P-ACK", MessageStatus.SENDING, MessageStatus.ACKNOWLEDGED)
    clock.advance(400 * DAY)
    await store.purge(Cutoffs(messages=clock() - timedelta(days=365)), actor="test")
    (ended,) = await store.purge_runs()
    assert ended.finished_at is not None and ended.counts.messages == 1

    await refused(store, "DELETE FROM retention_runs")
    await refused(store, f"UPDATE retention_runs SET messages = 0 WHERE run_id = {ended.run_id}")
    await refused(store, f"UPDATE retention_runs SET purging = 1 WHERE run_id = {ended.run_id}")  # its flag neither
    await refused(store, f"UPDATE retention_runs SET error = 'rewritten' WHERE run_id = {ended.run_id}")
    # A run still going moves its flag and its counts up, and its cutoffs stay those it began with.
    running = purging_by_hand(message="'2026-01-01T00:00:00.000000+00:00'")
    await refused(store, "UPDATE retention_runs SET message_cutoff = '2100-01-01T00:00:00.000000+00:00' WHERE run_id = 999", first=running)
    await refused(store, "UPDATE retention_runs SET actor = 'someone else' WHERE run_id = 999", first=running)
    await refused(store, "UPDATE retention_runs SET messages = -1 WHERE run_id = 999", first=running)
    # A run starts with nothing counted, unfinished and not purging.
    start = "INSERT INTO retention_runs (run_id, actor, started_at{extra}) VALUES (998, 'by-hand', '2026-11-23T14:00:00.000000+00:00'{value})"
    await refused(store, start.format(extra=", purging", value=", 1"))
    await refused(store, start.format(extra=", messages", value=", 5"))
    await refused(store, start.format(extra=", finished_at", value=", '2026-11-23T14:00:00.000000+00:00'"))
    if backend.kind == "sqlite":
        await refused(store, f"INSERT OR REPLACE INTO retention_runs (run_id, actor, started_at) VALUES ({ended.run_id}, 'forger', '2026-11-23T14:00:00.000000+00:00')")
    else:
        await refused(store, "TRUNCATE retention_runs")

    assert await store.purge_runs() == [ended]
    # The job itself still runs: a run that purges nothing is recorded and ends.
    await store.purge(Cutoffs(messages=clock() - timedelta(days=365)), actor="test")
    assert [r.run_id for r in await store.purge_runs()] == [ended.run_id + 1, ended.run_id]
