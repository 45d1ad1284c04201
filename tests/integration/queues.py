"""The queue tests' harness, shared by test_queue, test_queue_rabbit and test_queue_claims: a
gateway configuration for CH sending to FR, the real DeliveryWorker with the partner's answers
scripted, and a harness that accepts messages, runs the queue and waits for outcomes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from domain.errors import ErrorCode
from domain.messages import Action, Direction, MessageStatus
from gateway.config import parse_config
from gateway.delivery import DeliveryWorker, _Outcome
from gateway.metrics import Metrics
from gateway import tasks
from gateway.queue import open_queue
from gateway.store.base import MessageRecord, PermitRecord
from tests.rabbit import register

RETRY = {"max_attempts": 3, "first_delay_s": 0.3, "factor": 2.0, "max_delay_s": 5.0}


def gateway_config(tmp_path, *, queue: dict | None = None, lease_s: float = 60.0, poll_s: float = 0.1):
    (tmp_path / "FR.pem").write_text("not read: nothing is verified here\n")
    data = {
        "gateway": {"party": "CH", "data_dir": str(tmp_path)},
        "delivery": {"poll_s": poll_s, "lease_s": lease_s, "concurrency": 8},
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
        self.crashes: list[BaseException] = []

    async def start(self) -> None:
        self.queue = open_queue(self.config, self.store, actor="sender:CH")
        self.worker.queue = self.queue
        await self.queue.open()
        # Supervised as the gateway's own delivery loop is (gateway/tasks.py), a failed run started again.
        [self.task] = tasks.start([("delivery", self.worker.run)], on_crash=lambda name, exc: self.crashes.append(exc), first_delay_s=0.1)

    async def stop(self) -> None:
        if self.task is not None:
            await tasks.stop([self.task])
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
            if hand_over:
                await self.worker.stored(
                    [message], lambda claim: self.store.accept_outbound(permit, [message], actor="test", claim=claim), list
                )
            else:
                await self.store.accept_outbound(permit, [message], actor="test")
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
