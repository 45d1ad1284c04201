"""The queue's behaviour, the same tests on both backends: the embedded store queue and RabbitMQ.

The sender is the real DeliveryWorker (its outcome logic: retry, park, reject) with the HTTP call
replaced by a script, so each test decides what the partner answers and counts what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from domain.errors import ErrorCode
from domain.messages import Action, Direction, MessageStatus
from gateway.config import parse_config
from gateway.delivery import DeliveryWorker, _Outcome
from gateway.metrics import Metrics
from gateway.queue import open_queue
from gateway.store.base import MessageRecord, PermitRecord
from gateway.store.sqlite import SqliteStore
from tests.rabbit import AMQP_URL, delete_everything, register, require_rabbit, unique_prefix

RETRY = {"max_attempts": 3, "first_delay_s": 0.3, "factor": 2.0, "max_delay_s": 5.0}


def gateway_config(tmp_path, *, queue: dict | None = None, lease_s: float = 60.0):
    (tmp_path / "FR.pem").write_text("not read: nothing is verified here\n")
    data = {
        "gateway": {"party": "CH", "data_dir": str(tmp_path)},
        "delivery": {"poll_s": 0.1, "lease_s": lease_s, "concurrency": 8},
        "partner": [{"party": "FR", "endpoint": "http://127.0.0.1:9", "retry": RETRY, "certificates": [str(tmp_path / "FR.pem")]}],
    }
    if queue:
        data["queue"] = queue
    return parse_config(data)


class ScriptedWorker(DeliveryWorker):
    """DeliveryWorker whose partner answers from a script: 'ack' (default), 'retry', 'reject',
    or 'hang' (never answers). Counts every send per message id."""

    def __init__(self, config, store) -> None:
        super().__init__(config, store, security=None, http=None, metrics=Metrics(config.party))
        self.script: dict[str, list[str]] = defaultdict(list)
        self.sent: dict[str, list[float]] = defaultdict(list)
        self.hanging = asyncio.Event()

    async def _send(self, message: MessageRecord) -> bytes:
        self.sent[message.message_id].append(time.monotonic())
        plan = self.script[message.message_id]
        answer = plan.pop(0) if plan else "ack"
        if answer == "retry":
            raise _Outcome(ErrorCode.PARTNER_UNAVAILABLE, "HTTP 503 (scripted)", retryable=True)
        if answer == "reject":
            raise _Outcome(ErrorCode.SCHEMA_INVALID, "refused (scripted)", retryable=False)
        if answer == "hang":
            self.hanging.set()
            await asyncio.Event().wait()
        return b"<receipt/>"


class Harness:
    def __init__(self, config, store) -> None:
        self.config = config
        self.store = store
        self.worker = ScriptedWorker(config, store)
        self.queue = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.queue = open_queue(self.config, self.store, actor="sender:CH")
        self.worker.queue = self.queue
        await self.queue.open()
        self.task = asyncio.create_task(self.worker.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
            if hasattr(self.queue, "queue_names"):
                register(self.config.queue.prefix, self.queue.queue_names())
            await self.queue.close()

    async def accept(self, n: int = 1, *, plan: list[str] | None = None, hand_over: bool = False) -> list[str]:
        """Accept ``n`` messages for FR as OutboundService does; ``plan`` scripts the partner's
        answers to each (set before the sender can see them); ``hand_over``: the sender takes what
        it has room for in the accepting transaction, as OutboundService lets it."""
        ids = []
        for _ in range(n):
            number = f"CH26-{uuid.uuid4().hex[:8]}"
            message_id = str(uuid.uuid4())
            if plan:
                self.worker.script[message_id] = list(plan)
            now = datetime.now(UTC)
            permit = PermitRecord(
                issuer="CH", number=number, version=1, direction=Direction.OUTBOUND, status="VALID",
                permit_json=b"{}", signed_xml=b"<p/>", digest=uuid.uuid4().hex, sender=None, replaces=None,
                replaced_by=None, created_at=now,
            )  # fmt: skip
            message = MessageRecord(
                message_id=message_id, conversation_id=str(uuid.uuid4()), direction=Direction.OUTBOUND,
                sender="CH", receiver="FR", document_type="CITESEPermit", action=Action.ISSUE, issuer="CH",
                number=number, version=1, status=MessageStatus.SEND_ENQUEUED, attempts=0, next_attempt_at=now,
                lease_until=None, last_error_code=None, last_error_detail=None, via=None, receipt=None,
                payload_digest=None, created_at=now, updated_at=now, payload=b"<p/>",
            )  # fmt: skip
            claim = self.worker.claim_at_accept(1) if hand_over else None
            stored = await self.store.accept_outbound(permit, [message], actor="test", claim=claim)
            if hand_over:
                self.worker.accepted([message], stored, claim)
            ids.append(message.message_id)
        if self.queue is not None and not hand_over:
            self.queue.notify()
        return ids

    async def wait(self, ids, statuses, timeout: float = 20.0) -> list[MessageRecord]:
        deadline = time.monotonic() + timeout
        while True:
            held = [await self.store.get_message(i) for i in ids]
            if all(m.status in statuses for m in held):
                return held
            if time.monotonic() > deadline:
                raise AssertionError(f"still {sorted({m.status.value for m in held})}, expected {statuses}")
            await asyncio.sleep(0.05)


@pytest.fixture(params=["embedded", "rabbit"])
async def harness(request, tmp_path):
    queue = None
    if request.param == "rabbit":
        await require_rabbit()
        queue = {"url": AMQP_URL, "prefix": unique_prefix(), "prefetch": 8, "confirm_timeout_s": 5.0}
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    h = Harness(gateway_config(tmp_path, queue=queue), store)
    h.kind = request.param
    try:
        yield h
    finally:
        await h.stop()
        await store.close()
        if queue:
            await delete_everything(queue["prefix"])


async def test_every_accepted_message_is_sent_once_and_acknowledged(harness):
    await harness.start()
    ids = await harness.accept(40)

    held = await harness.wait(ids, {MessageStatus.ACKNOWLEDGED})

    assert {i: len(harness.worker.sent[i]) for i in ids} == {i: 1 for i in ids}
    assert all(m.attempts == 1 for m in held)


async def test_messages_accepted_before_the_queue_starts_are_sent(harness):
    ids = await harness.accept(5)  # e.g. accepted just before a crash
    await harness.start()

    await harness.wait(ids, {MessageStatus.ACKNOWLEDGED})

    assert sorted(harness.worker.sent) == sorted(ids)


async def test_a_retry_waits_longer_each_time_then_succeeds(harness):
    await harness.start()
    [message_id] = await harness.accept(plan=["retry", "retry"])

    [held] = await harness.wait([message_id], {MessageStatus.ACKNOWLEDGED})

    times = harness.worker.sent[message_id]
    assert len(times) == 3 and held.attempts == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert first_gap >= RETRY["first_delay_s"] * 0.9
    assert second_gap >= RETRY["first_delay_s"] * RETRY["factor"] * 0.9


async def test_after_the_last_attempt_it_is_parked_and_an_operator_retry_keeps_the_id(harness):
    await harness.start()
    [message_id] = await harness.accept(plan=["retry"] * RETRY["max_attempts"])

    [parked] = await harness.wait([message_id], {MessageStatus.SEND_FAILURE})
    assert parked.attempts == RETRY["max_attempts"]
    await asyncio.sleep(0.5)
    assert len(harness.worker.sent[message_id]) == RETRY["max_attempts"]  # parked means nobody sends it

    await harness.store.transition(
        message_id, MessageStatus.SEND_ENQUEUED, actor="operator:test", detail="manual retry", next_attempt_at=datetime.now(UTC)
    )
    harness.worker.wake()

    [done] = await harness.wait([message_id], {MessageStatus.ACKNOWLEDGED})
    assert done.message_id == message_id
    assert len(harness.worker.sent[message_id]) == RETRY["max_attempts"] + 1


async def test_a_rejection_is_final_and_never_sent_again(harness):
    await harness.start()
    [message_id] = await harness.accept(plan=["reject"])

    [held] = await harness.wait([message_id], {MessageStatus.REJECTED})
    await asyncio.sleep(0.5)

    assert held.last_error_code == "SCHEMA_INVALID"
    assert len(harness.worker.sent[message_id]) == 1


async def test_a_graceful_stop_hands_back_what_is_in_flight_and_a_restart_sends_it(harness):
    await harness.start()
    [message_id] = await harness.accept(plan=["hang"])
    await asyncio.wait_for(harness.worker.hanging.wait(), 10)

    await harness.stop()
    harness.worker = ScriptedWorker(harness.config, harness.store)  # a new process: answers "ack"
    await harness.start()

    # The lease is 60 s: only the hand-back (embedded) or the broker's redelivery (RabbitMQ)
    # can make this quick.
    [held] = await harness.wait([message_id], {MessageStatus.ACKNOWLEDGED}, timeout=15)
    assert held.message_id == message_id
    assert len(harness.worker.sent[message_id]) == 1


async def test_messages_the_sender_takes_as_they_are_accepted_are_sent_once(harness):
    await harness.start()
    ids = await harness.accept(40, hand_over=True)

    held = await harness.wait(ids, {MessageStatus.ACKNOWLEDGED})

    assert {i: len(harness.worker.sent[i]) for i in ids} == {i: 1 for i in ids}
    assert all(m.attempts == 1 for m in held)
    histories = [[e.status for e in await harness.store.message_events(i)] for i in ids]
    assert all(h == [MessageStatus.SEND_ENQUEUED, MessageStatus.SENDING, MessageStatus.ACKNOWLEDGED] for h in histories)


async def test_only_free_slots_are_taken_at_accept_and_the_rest_waits_for_the_queue(harness):
    if harness.kind != "embedded":
        pytest.skip("RabbitMQ is fed by the outbox relay: nothing is taken at accept (reserve gives 0)")
    await harness.start()
    await asyncio.sleep(0.05)  # the queue's loop runs and can take hand-overs
    hung = await harness.accept(8, plan=["hang"], hand_over=True)  # concurrency is 8: all slots busy
    assert [m.status for m in [await harness.store.get_message(i) for i in hung]] == [MessageStatus.SENDING] * 8
    [waiting] = await harness.accept(1, hand_over=True)

    assert (await harness.store.get_message(waiting)).status is MessageStatus.SEND_ENQUEUED
    assert harness.worker.claim_at_accept(1) is None


async def test_a_graceful_stop_hands_back_a_message_taken_at_accept(harness):
    await harness.start()
    await asyncio.sleep(0.05)
    [message_id] = await harness.accept(plan=["hang"], hand_over=True)
    await asyncio.wait_for(harness.worker.hanging.wait(), 10)

    await harness.stop()
    harness.worker = ScriptedWorker(harness.config, harness.store)
    await harness.start()

    [held] = await harness.wait([message_id], {MessageStatus.ACKNOWLEDGED}, timeout=15)
    assert len(harness.worker.sent[message_id]) == 1
