"""The customs ledger in the store, on both backends: write-off, over-draw refused as a whole,
idempotent retry, reversal, the endorsement message in the same transaction, concurrent
write-offs that never take more than the permit allows, the issuer's record of endorsements,
the verification audit and the pre-arrival feed's bookkeeping."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain.errors import EpixError, ErrorCode
from domain.ledger import DrawLine
from domain.messages import Action, Direction, MessageStatus
from gateway.store import MessageRecord, Store
from gateway.store.ledger import PermitCheck, VerificationRecord, WriteOffRequest
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.integration.records import refused
from tests.pg import PG_DSN, PgSchema

T0 = datetime(2026, 11, 23, 14, 0, 0, tzinfo=UTC)
PERMITTED = {"A": (Decimal("100"), "NAR"), "B": (Decimal("12.5"), "KGM")}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "epix.sqlite3", clock=lambda: T0)
        pg = None
    else:
        pg = PgSchema()
        await pg.create()
        s = PostgresStore(PG_DSN, schema=pg.name, clock=lambda: T0, max_size=20)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
        if pg is not None:
            await pg.drop()


def _request(declaration: str, lines: dict[str, str], *, number: str = "CH26-000001", exporter: str | None = "CH:Reptile") -> WriteOffRequest:
    return WriteOffRequest(
        issuer="CH",
        number=number,
        declaration=declaration,
        lines=tuple(DrawLine(i, Decimal(q)) for i, q in lines.items()),
        permitted=PERMITTED,
        declared_at=T0,
        office="FRCDG",
        port="Paris-Charles de Gaulle",
        transport_document="AWB 057-12345675",
        exporter=exporter,
    )


def _endorse_message(*, direction: Direction = Direction.OUTBOUND, message_id: str | None = None, payload: bytes = b"<e/>") -> MessageRecord:
    status = MessageStatus.SEND_ENQUEUED if direction is Direction.OUTBOUND else MessageStatus.RECEIVED
    return MessageRecord(
        message_id=message_id or str(uuid.uuid4()), conversation_id="c", direction=direction,
        sender="FR" if direction is Direction.OUTBOUND else "FR", receiver="CH", document_type="CITESEPermit",
        action=Action.ENDORSE, issuer="CH", number="CH26-000001", version=1, status=status, attempts=0,
        next_attempt_at=T0 if direction is Direction.OUTBOUND else None, lease_until=None, last_error_code=None,
        last_error_detail=None, via=None, receipt=b"<r/>" if direction is Direction.INBOUND else None,
        payload_digest="sha256:" + uuid.uuid4().hex, created_at=T0, updated_at=T0, payload=payload,
    )  # fmt: skip


def _remaining(outcome) -> dict[str, Decimal]:
    return {b.item_id: b.remaining for b in outcome.balances}


async def test_write_off_updates_balances_and_queues_the_endorsement(store):
    message = _endorse_message()
    out = await store.write_off(_request("D1", {"A": "30", "B": "2.25"}), message, actor="customs:fr")
    assert _remaining(out) == {"A": Decimal("70"), "B": Decimal("10.25")}
    assert [line.item_id for line in out.new] == ["A", "B"] and not out.replayed
    assert out.message is not None
    held = await store.get_message(message.message_id)
    assert held.status is MessageStatus.SEND_ENQUEUED and held.action is Action.ENDORSE
    assert [e.status for e in await store.message_events(message.message_id)] == [MessageStatus.SEND_ENQUEUED]
    assert await store.used_quantities("CH", "CH26-000001") == {"A": Decimal("30"), "B": Decimal("2.25")}
    [a, b] = await store.list_write_offs("CH", "CH26-000001")
    assert (a.declaration, a.item_id, a.quantity, a.unit, a.origin, a.message_id) == ("D1", "A", Decimal("30"), "NAR", "customs", message.message_id)
    assert b.quantity == Decimal("2.25") and b.port == "Paris-Charles de Gaulle" and b.reversed_at is None


async def test_over_draw_is_refused_as_a_whole_and_writes_nothing(store):
    await store.write_off(_request("D1", {"A": "90"}), None, actor="c")
    message = _endorse_message()
    with pytest.raises(EpixError) as e:
        await store.write_off(_request("D2", {"B": "1", "A": "11"}), message, actor="c")
    assert e.value.code is ErrorCode.QUANTITY_EXCEEDED
    assert e.value.context["lines"] == [{"item": "A", "requested": "11", "remaining": "10", "unit": "NAR"}]
    # Line B was fine, but the declaration was refused as a whole: nothing of it, no message.
    assert await store.used_quantities("CH", "CH26-000001") == {"A": Decimal("90"), "B": Decimal("0")}
    assert [w.declaration for w in await store.list_write_offs("CH", "CH26-000001")] == ["D1"]
    assert await store.get_message(message.message_id) is None
    # Exactly what is left is allowed.
    out = await store.write_off(_request("D3", {"A": "10"}), None, actor="c")
    assert _remaining(out)["A"] == 0


async def test_retry_of_the_same_declaration_changes_nothing(store):
    first = await store.write_off(_request("D1", {"A": "30"}), _endorse_message(), actor="c")
    again_message = _endorse_message()
    again = await store.write_off(_request("D1", {"A": "30"}), again_message, actor="c")
    assert again.replayed and again.message is None and [line.item_id for line in again.repeated] == ["A"]
    assert again.balances == first.balances
    assert await store.get_message(again_message.message_id) is None  # no second endorsement
    # The same declaration adding a line writes only that line.
    more = await store.write_off(_request("D1", {"A": "30", "B": "1"}), None, actor="c")
    assert [line.item_id for line in more.new] == ["B"] and [line.item_id for line in more.repeated] == ["A"]
    assert _remaining(more) == {"A": Decimal("70"), "B": Decimal("11.5")}


async def test_same_declaration_and_line_with_another_quantity_is_a_conflict(store):
    await store.write_off(_request("D1", {"A": "30"}), None, actor="c")
    with pytest.raises(EpixError) as e:
        await store.write_off(_request("D1", {"A": "31"}), None, actor="c")
    assert e.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert await store.used_quantities("CH", "CH26-000001") == {"A": Decimal("30"), "B": Decimal("0")}


async def test_another_office_cannot_add_lines_under_a_declaration(store):
    from dataclasses import replace

    await store.write_off(_request("D1", {"A": "30"}), None, actor="c")
    for lines in ({"A": "30", "B": "1"}, {"B": "1"}, {"A": "30"}):
        with pytest.raises(EpixError) as e:
            await store.write_off(replace(_request("D1", lines), office="FRORY"), _endorse_message(), actor="ory")
        assert e.value.code is ErrorCode.CONFLICT and "written off by office FRCDG; office FRORY cannot" in e.value.detail
    assert await store.used_quantities("CH", "CH26-000001") == {"A": Decimal("30"), "B": Decimal("0")}
    assert [(w.item_id, w.office) for w in await store.list_write_offs("CH", "CH26-000001")] == [("A", "FRCDG")]
    # Its own office still adds a line.
    more = await store.write_off(_request("D1", {"A": "30", "B": "1"}), None, actor="c")
    assert [line.item_id for line in more.new] == ["B"]


async def test_reversal_gives_the_quantity_back_once(store):
    await store.write_off(_request("D1", {"A": "30", "B": "2"}), None, actor="c")
    await store.write_off(_request("D2", {"A": "5"}), None, actor="c")
    message = _endorse_message()
    out = await store.reverse_write_off("CH", "CH26-000001", "D1", PERMITTED, message, actor="c", at=T0 + timedelta(hours=1))
    assert _remaining(out) == {"A": Decimal("95"), "B": Decimal("12.5")}
    assert {line.item_id for line in out.new} == {"A", "B"} and out.message is not None
    assert (await store.get_message(message.message_id)).status is MessageStatus.SEND_ENQUEUED
    again = await store.reverse_write_off("CH", "CH26-000001", "D1", PERMITTED, _endorse_message(), actor="c", at=T0)
    assert again.replayed and again.message is None and again.balances == out.balances
    rows = {(w.declaration, w.item_id): w for w in await store.list_write_offs("CH", "CH26-000001")}
    assert rows[("D1", "A")].reversed_at is not None and rows[("D2", "A")].reversed_at is None
    # A reversed declaration cannot be reused for another quantity.
    with pytest.raises(EpixError) as e:
        await store.write_off(_request("D1", {"A": "30"}), None, actor="c")
    assert e.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    with pytest.raises(EpixError) as e:
        await store.reverse_write_off("CH", "CH26-000001", "NOPE", PERMITTED, None, actor="c", at=T0)
    assert e.value.code is ErrorCode.NOT_FOUND


async def test_write_offs_and_balances_change_only_as_the_ledger_changes_them(store):
    await store.write_off(_request("D1", {"A": "30"}), None, actor="c")
    await store.write_off(_request("D2", {"A": "5", "B": "2"}), None, actor="c")
    await store.reverse_write_off("CH", "CH26-000001", "D2", PERMITTED, None, actor="c", at=T0 + timedelta(hours=1))
    before = await store.list_write_offs("CH", "CH26-000001")
    later = "'2027-01-01T00:00:00.000000+00:00'"
    d1 = "declaration = 'D1' AND item_id = 'A'"

    for statement in (
        f"UPDATE write_offs SET quantity = '3' WHERE {d1}",
        f"UPDATE write_offs SET reversed_at = {later}, quantity = '3' WHERE {d1}",  # a reversal that also rewrites
        "UPDATE write_offs SET reversed_at = NULL WHERE declaration = 'D2'",  # taking a reversal back
        f"UPDATE write_offs SET reversed_at = {later} WHERE declaration = 'D2'",  # dating it again
        f"DELETE FROM write_offs WHERE {d1}",
        "DELETE FROM permit_balances WHERE item_id = 'A'",
        "UPDATE permit_balances SET permitted = '1000' WHERE item_id = 'A'",
        "UPDATE permit_balances SET unit = 'KGM', used = '0' WHERE item_id = 'A'",
        "UPDATE permit_balances SET item_id = 'Z' WHERE item_id = 'A'",
    ):
        await refused(store, statement)
    copy = "SELECT declaration, issuer, number, item_id, '1', unit, declared_at, office, port, transport_document, officer, exporter, origin, message_id, reversed_at, created_at, actor FROM write_offs"
    if isinstance(store, SqliteStore):
        # INSERT OR REPLACE deletes the row it replaces without firing a delete trigger.
        await refused(store, f"INSERT OR REPLACE INTO write_offs {copy} WHERE {d1}")
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            conn.execute(f"INSERT OR REPLACE INTO permit_balances VALUES ('CH', 'CH26-000001', 'A', 'NAR', '1000', '0', {later})")
            permitted = conn.execute("SELECT permitted, used FROM permit_balances WHERE item_id = 'A'").fetchone()
        finally:
            conn.close()
        assert permitted == ("100", "30")  # ignored, as the ledger's own ON CONFLICT DO NOTHING is
    else:
        await refused(store, "TRUNCATE write_offs")
        await refused(store, "TRUNCATE permit_balances")

    assert await store.list_write_offs("CH", "CH26-000001") == before
    assert await store.used_quantities("CH", "CH26-000001") == {"A": Decimal("30"), "B": Decimal("0")}
    # What the ledger itself does still goes through: a write-off, a reversal, an endorsement's record.
    out = await store.write_off(_request("D3", {"A": "70"}), None, actor="c")
    assert _remaining(out) == {"A": Decimal("0"), "B": Decimal("12.5")}
    out = await store.reverse_write_off("CH", "CH26-000001", "D1", PERMITTED, None, actor="c", at=T0 + timedelta(hours=2))
    assert _remaining(out)["A"] == Decimal("30")


async def test_concurrent_write_offs_never_take_more_than_permitted(store):
    # 60 declarations of 7 each race for line A's 100: exactly 14 fit (98), the rest are refused.
    async def one(i: int):
        try:
            return await store.write_off(_request(f"D{i:03d}", {"A": "7"}), _endorse_message(), actor="c")
        except EpixError as e:
            return e.code

    results = await asyncio.gather(*(one(i) for i in range(60)))
    accepted = [r for r in results if not isinstance(r, ErrorCode)]
    refused = [r for r in results if isinstance(r, ErrorCode)]
    assert len(accepted) == 14 and set(refused) == {ErrorCode.QUANTITY_EXCEEDED}
    used = await store.used_quantities("CH", "CH26-000001")
    assert used["A"] == Decimal("98")
    assert sum(w.quantity for w in await store.list_write_offs("CH", "CH26-000001")) == Decimal("98")
    assert min(b.remaining for r in accepted for b in r.balances) >= 0
    # The same declaration retried concurrently is written once.
    results = await asyncio.gather(
        *(store.write_off(_request("SAME", {"B": "3"}), _endorse_message(), actor="c") for _ in range(10))
    )
    assert sum(1 for r in results if not r.replayed) == 1
    assert (await store.used_quantities("CH", "CH26-000001"))["B"] == Decimal("3")


async def test_concurrent_write_offs_from_two_store_instances(store, tmp_path):
    """Two gateway processes on one database (two pools or two SQLite connections)."""
    if isinstance(store, SqliteStore):
        other: Store = SqliteStore(store.path, clock=lambda: T0)
    else:
        other = PostgresStore(PG_DSN, schema=store.schema, clock=lambda: T0)
    await other.open()
    try:
        async def one(s: Store, i: int):
            try:
                await s.write_off(_request(f"X{i:03d}", {"B": "0.5"}), None, actor="c")
                return True
            except EpixError as e:
                assert e.code is ErrorCode.QUANTITY_EXCEEDED
                return False

        results = await asyncio.gather(*(one(store if i % 2 else other, i) for i in range(40)))
        assert sum(results) == 25  # 12.5 / 0.5
        assert (await store.used_quantities("CH", "CH26-000001"))["B"] == Decimal("12.5")
    finally:
        await other.close()


async def test_issuer_records_endorsements_once_and_their_reversal(store):
    message = _endorse_message(direction=Direction.INBOUND)
    is_new, held = await store.record_endorsement(_request("D1", {"A": "30"}), message, reversal=False, actor="partner:FR")
    assert is_new and held.message_id == message.message_id
    # The same message again, or the same declaration in another message: recorded once.
    again, _ = await store.record_endorsement(_request("D1", {"A": "30"}), message, reversal=False, actor="partner:FR")
    assert not again
    other = _endorse_message(direction=Direction.INBOUND)
    await store.record_endorsement(_request("D1", {"A": "30"}), other, reversal=False, actor="partner:FR")
    assert await store.used_quantities("CH", "CH26-000001") == {"A": Decimal("30"), "B": Decimal("0")}
    [row] = await store.list_write_offs("CH", "CH26-000001")
    assert row.origin == "endorsement" and row.message_id == message.message_id
    # Evidence is recorded even beyond the permit: the issuer learns of the over-use.
    await store.record_endorsement(_request("D2", {"A": "90"}), _endorse_message(direction=Direction.INBOUND), reversal=False, actor="p")
    assert (await store.used_quantities("CH", "CH26-000001"))["A"] == Decimal("120")
    await store.record_endorsement(_request("D2", {}), _endorse_message(direction=Direction.INBOUND), reversal=True, actor="p")
    assert (await store.used_quantities("CH", "CH26-000001"))["A"] == Decimal("30")


async def test_an_endorsement_touches_only_what_its_own_office_reported(store):
    from dataclasses import replace

    await store.write_off(_request("D1", {"A": "10"}), None, actor="ch-customs")  # the issuer's own customs
    await store.record_endorsement(_request("D2", {"A": "20"}), _endorse_message(direction=Direction.INBOUND), reversal=False, actor="partner:FR")
    cases = [
        (_request("D1", {"B": "1"}), False, "partner:FR", "already held here from its own customs"),
        (_request("D1", {}), True, "partner:FR", "already held here from its own customs"),
        (replace(_request("D2", {"B": "1"}), office="FRORY"), False, "partner:FR", "partner:FR, office FRCDG"),
        (_request("D2", {}), True, "partner:KE", "an endorsement from partner:KE"),
    ]
    for request, reversal, actor, words in cases:
        message = _endorse_message(direction=Direction.INBOUND)
        with pytest.raises(EpixError) as e:
            await store.record_endorsement(request, message, reversal=reversal, actor=actor)
        assert e.value.code is ErrorCode.CONFLICT and words in e.value.detail, e.value.detail
        assert await store.get_message(message.message_id) is None  # the message is refused with it
    assert await store.used_quantities("CH", "CH26-000001") == {"A": Decimal("30"), "B": Decimal("0")}
    # The reporting office's own reversal still gives its quantity back.
    await store.record_endorsement(_request("D2", {}), _endorse_message(direction=Direction.INBOUND), reversal=True, actor="partner:FR")
    assert await store.used_quantities("CH", "CH26-000001") == {"A": Decimal("10"), "B": Decimal("0")}


async def test_verification_audit_and_exporter_history(store):
    records = [
        VerificationRecord(str(uuid.uuid4()), "CH", "CH26-000001", v, (f"because {v}",), "fr-customs", "FRCDG", True, T0 + timedelta(seconds=i))
        for i, v in enumerate(["VALID", "EXHAUSTED"])
    ]
    await store.record_verifications(records)
    held = await store.list_verifications("CH", "CH26-000001")
    assert [v.verdict for v in held] == ["EXHAUSTED", "VALID"] and held[0].reasons == ("because EXHAUSTED",)
    assert held[1].stamp_given and held[1].office == "FRCDG"
    assert not await store.exporter_has_shipments("CH:Reptile")
    await store.write_off(_request("D1", {"A": "1"}), None, actor="c")
    assert await store.exporter_has_shipments("CH:Reptile")


async def test_feed_bookkeeping(store):
    inbound = MessageRecord(
        message_id="m-1", conversation_id="c", direction=Direction.INBOUND, sender="CH", receiver="FR",
        document_type="CITESEPermit", action=Action.ISSUE, issuer="CH", number="CH26-000001", version=1,
        status=MessageStatus.RECEIVED, attempts=0, next_attempt_at=None, lease_until=None, last_error_code=None,
        last_error_detail=None, via=None, receipt=b"<r/>", payload_digest="sha256:" + "0" * 64, created_at=T0,
        updated_at=T0, payload=b"<p/>",
    )  # fmt: skip
    await store.store_inbound(None, inbound, actor="partner:CH")
    assert [m.message_id for m in await store.feed_pending(limit=10)] == ["m-1"]
    assert [m.message_id for m in await store.feed_pending(limit=10, not_before=T0)] == ["m-1"]
    assert await store.feed_pending(limit=10, not_before=T0 + timedelta(microseconds=1)) == []
    assert await store.feed_mark_sent("m-1", at=T0, detail="webhook 200")
    assert await store.feed_mark_sent("m-1", at=T0, detail="again")  # at-least-once: marking twice is harmless
    assert await store.feed_pending(limit=10) == []


# --- permit checks: what verification reads instead of the permit ---------------------------------


def _check(p, **kw) -> PermitCheck:
    values = dict(
        issuer=p.issuer, number=p.number, version=p.version, direction=p.direction.value, digest=p.digest,
        signature_ok=True, signer="CH", certificate_subject="CN=CH", certificate_serial="1f", signature_error=None,
        signature_error_code=None, valid_from=T0, valid_until=T0 + timedelta(days=90), stamp="123456",
        countries="CH FR CH", exporter="CH:Reptile", facts='{"summary": {}}', checked_at=T0,
    )  # fmt: skip
    values.update(kw)
    return PermitCheck(**values)


async def _stored(store: Store, number: str = "CH26-000001", *, version: int = 1, xml: bytes | None = None):
    from tests.integration.records import message, permit

    p = permit(number, version=version, direction=Direction.INBOUND, sender="CH", xml=xml)
    is_new, _ = await store.store_inbound(p, message(p), actor="partner:CH")
    assert is_new
    return p


async def _tamper(store: Store, p) -> None:
    if isinstance(store, SqliteStore):
        import sqlite3

        conn = sqlite3.connect(store.path)
        with conn:
            conn.execute("UPDATE permits SET signed_xml = ? WHERE issuer = ? AND number = ?", (b"<doctored/>", p.issuer, p.number))
        conn.close()
    else:
        await store.pool.execute("UPDATE permits SET signed_xml = $3 WHERE issuer = $1 AND number = $2", p.issuer, p.number, b"<doctored/>")


async def test_a_stored_permit_is_queued_for_its_check_and_read_back_in_one_call(store):
    assert await store.verification_facts("CH", "CH26-404") is None
    p = await _stored(store)
    key = ("CH", p.number, 1, "inbound")
    assert await store.permit_checks_due(limit=10) == [key]
    facts = await store.verification_facts("CH", p.number)
    assert facts.check is None and facts.used == {} and not facts.exporter_shipped and facts.version == 1
    assert await store.save_permit_checks([(_check(p), p.signed_xml, p.permit_json)]) == 1
    assert await store.permit_checks_due(limit=10) == []
    facts = await store.verification_facts("CH", p.number)
    assert facts.check == _check(p) and facts.check.status == "VALID"
    # Saving again replaces it (a re-verification on demand).
    assert await store.save_permit_checks([(_check(p, signature_ok=False, signature_error="x"), p.signed_xml, p.permit_json)]) == 1
    assert not (await store.verification_facts("CH", p.number)).check.signature_ok
    # Balances and the exporter's history come with it.
    await store.write_off(_request("D1", {"A": "30", "B": "2.25"}, number=p.number), None, actor="c")
    facts = await store.verification_facts("CH", p.number)
    assert facts.used == {"A": Decimal("30"), "B": Decimal("2.25")} and facts.exporter_shipped and facts.check is not None


async def test_a_check_follows_its_record(store):
    p = await _stored(store)
    await store.save_permit_checks([(_check(p), p.signed_xml, p.permit_json)])
    await store.set_permit_status("CH", p.number, "CANCELLED")
    assert (await store.verification_facts("CH", p.number)).check.status == "CANCELLED"
    # The record edited behind the gateway's back: the check is gone and the version queued again.
    await _tamper(store, p)
    assert (await store.verification_facts("CH", p.number)).check is None
    assert await store.permit_checks_due(limit=10) == [("CH", p.number, 1, "inbound")]
    # A check made from the old bytes is not kept; the version stays queued.
    assert await store.save_permit_checks([(_check(p), p.signed_xml, p.permit_json)]) == 0
    assert (await store.verification_facts("CH", p.number)).check is None
    await store.permit_check_done([("CH", p.number, 1, "inbound")])
    assert await store.permit_checks_due(limit=10) == []


async def test_verification_reads_the_latest_version(store):
    v1 = await _stored(store, version=1)
    v2 = await _stored(store, version=2, xml=b"<CITESEPermit v='2'/>")
    await store.save_permit_checks([(_check(v1), v1.signed_xml, v1.permit_json)])
    facts = await store.verification_facts("CH", v1.number)
    assert facts.version == 2 and facts.check is None  # v1's check does not answer for v2
    await store.save_permit_checks([(_check(v2), v2.signed_xml, v2.permit_json)])
    assert (await store.verification_facts("CH", v1.number)).check.version == 2


async def test_checks_made_under_another_trust_are_made_again(store):
    from tests.integration.records import message, permit

    ch = await _stored(store)
    ke = permit("KE26-000001", issuer="KE", direction=Direction.INBOUND, sender="KE")
    assert (await store.store_inbound(ke, message(ke), actor="partner:KE"))[0]
    # A store that never recorded the trust: every issuer's checks are of unknown trust.
    assert await store.retrust({"CH": "a", "KE": "k"}, now=T0) == {"CH": 1, "KE": 1}
    await store.save_permit_checks([(_check(p), p.signed_xml, p.permit_json) for p in (ch, ke)])
    assert await store.permit_checks_due(limit=10) == []
    # The same trust at the next start: nothing is dropped, nothing queued.
    assert await store.retrust({"CH": "a", "KE": "k"}, now=T0) == {}
    assert (await store.verification_facts("CH", ch.number)).check is not None
    # CH's certificates changed: only CH's checks go, and are queued again.
    assert await store.retrust({"CH": "b", "KE": "k"}, now=T0) == {"CH": 1}
    assert (await store.verification_facts("CH", ch.number)).check is None
    assert (await store.verification_facts("KE", ke.number)).check is not None
    assert await store.permit_checks_due(limit=10) == [("CH", ch.number, 1, "inbound")]
    # KE no longer trusted at all: its checks go too, and its mark with them.
    await store.save_permit_checks([(_check(ch), ch.signed_xml, ch.permit_json)])
    assert await store.retrust({"CH": "b"}, now=T0) == {"KE": 1}
    assert (await store.verification_facts("KE", ke.number)).check is None
    assert await store.retrust({"CH": "b"}, now=T0) == {}
    assert await store.retrust({"CH": "b", "KE": "k"}, now=T0) == {"KE": 1}
