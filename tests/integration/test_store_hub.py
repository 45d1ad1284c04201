"""The store's hub additions on both backends: relaying, held for pull (never due, never claimed),
event records that change no status, delivery reports."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from domain.messages import MessageStatus
from gateway.store.base import Claim, DeliveryReportRecord
from tests.integration.records import T0, accept, message, permit


async def test_relayed_message_held_for_pull_is_never_due_and_is_listed_until_acknowledged(store):
    held = replace(message(permit("CH-H-1"), receiver="TZ", message_id="relay-1"), next_attempt_at=None)
    pushed = replace(message(permit("CH-H-2"), receiver="KE", message_id="relay-2"), next_attempt_at=T0)
    assert (await store.accept_relay(held, actor="partner:CH", detail="held for TZ"))[0] is True
    assert (await store.accept_relay(pushed, actor="partner:CH", detail="to push"))[0] is True
    again, kept = await store.accept_relay(held, actor="partner:CH", detail="again")
    assert again is False and kept.message_id == "relay-1"

    assert await store.next_due_at() == T0  # only the pushed one
    claimed = await store.claim_due(limit=10, lease_s=30, now=T0 + timedelta(days=1), actor="sender")
    assert [m.message_id for m in claimed] == ["relay-2"]
    assert [m.message_id for m in await store.held_for_pull("TZ")] == ["relay-1"]
    assert await store.held_for_pull("KE") == []

    await store.transition("relay-1", MessageStatus.SENDING, actor="puller:TZ", detail="fetched")
    assert await store.next_due_at() is not None  # the claimed one's lease, not the pulled one
    assert [m.message_id for m in await store.held_for_pull("TZ")] == ["relay-1"]
    await store.record_event("relay-1", actor="puller:TZ", detail="fetched again")
    await store.transition("relay-1", MessageStatus.ACKNOWLEDGED, actor="puller:TZ", receipt=b"<r/>")
    assert await store.held_for_pull("TZ") == []
    events = await store.message_events("relay-1")
    assert [(e.seq, e.status, e.detail) for e in events] == [
        (1, MessageStatus.SEND_ENQUEUED, "held for TZ"),
        (2, MessageStatus.SENDING, "fetched"),
        (3, MessageStatus.SENDING, "fetched again"),
        (4, MessageStatus.ACKNOWLEDGED, None),
    ]


async def test_a_relayed_message_to_push_can_be_taken_by_the_hubs_sender_as_it_is_stored(store):
    claim = Claim(1, "sender:HUB", T0 + timedelta(seconds=30))
    pushed = replace(message(permit("CH-H-4"), receiver="KE", message_id="relay-4"), next_attempt_at=T0)
    held = replace(message(permit("CH-H-5"), receiver="TZ", message_id="relay-5"), next_attempt_at=None)

    new, taken = await store.accept_relay(pushed, actor="partner:CH", detail="to push", claim=claim)
    _, kept = await store.accept_relay(held, actor="partner:CH", detail="held for TZ", claim=claim)

    assert new and (taken.status, taken.lease_until) == (MessageStatus.SENDING, claim.lease_until)
    assert [(e.seq, e.status, e.actor) for e in await store.message_events("relay-4")] == [
        (1, MessageStatus.SEND_ENQUEUED, "partner:CH"),
        (2, MessageStatus.SENDING, "sender:HUB"),
    ]
    assert kept.status is MessageStatus.SEND_ENQUEUED  # held for pull: no sender ever takes it
    assert [m.message_id for m in await store.held_for_pull("TZ")] == ["relay-5"]
    assert await store.claim_due(limit=10, lease_s=30, now=T0, actor="other") == []


async def test_delivery_reports_are_kept_and_each_change_is_recorded_once(store):
    p = permit("CH-H-3")
    [m] = await accept(store, p, "KE")
    await store.transition(m.message_id, MessageStatus.SENDING, actor="s")
    await store.transition(m.message_id, MessageStatus.ACKNOWLEDGED, actor="s", receipt=b"<r/>")
    assert await store.awaiting_delivery_report() == []  # not via a hub

    hubbed = replace(message(p, receiver="TZ", message_id="via-hub"), via="HUB", next_attempt_at=T0)
    assert (await store.accept_relay(hubbed, actor="ma", detail="x"))[0]
    await store.transition("via-hub", MessageStatus.SENDING, actor="s")
    await store.transition("via-hub", MessageStatus.ACKNOWLEDGED, actor="s", receipt=b"<r/>")
    assert [x.message_id for x in await store.awaiting_delivery_report()] == ["via-hub"]

    pending = DeliveryReportRecord("via-hub", "PendingDelivery", "HUB", "at hub", b"<rep/>", T0)
    assert await store.save_delivery_report(pending, actor="hub:HUB") is True
    assert await store.save_delivery_report(pending, actor="hub:HUB") is False
    assert [x.message_id for x in await store.awaiting_delivery_report()] == ["via-hub"]
    done = replace(pending, status="Delivered", detail="signed receipt from TZ verified")
    assert await store.save_delivery_report(done, actor="hub:HUB") is True
    assert await store.awaiting_delivery_report() == []
    assert (await store.delivery_report("via-hub")).status == "Delivered"
    details = [e.detail for e in await store.message_events("via-hub")]
    assert details[-2:] == ["HUB reports PendingDelivery: at hub", "HUB reports Delivered: signed receipt from TZ verified"]
    assert (await store.get_message("via-hub")).status is MessageStatus.ACKNOWLEDGED
