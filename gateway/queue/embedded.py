"""The embedded queue: the store's own messages table, polled with leases.

A message waiting to be sent carries the time it becomes due; ``claim_due`` moves due messages to
SENDING with a lease in one transaction. A permit accepted while a slot is free skips that step:
its message is stored already claimed by this sender (``reserve`` / ``hand_over``) and sent at
once. A sender that dies leaves a lease that runs out, and the message is claimed again with the
same id. On a graceful stop, what this process still holds is handed back at once instead of
waiting for the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timezone

import structlog

from domain.messages import MessageStatus
from gateway import tasks
from gateway.config import DeliveryConfig
from gateway.logs import get_logger
from gateway.store.base import MessageRecord, Store

from .base import Deliver, DeliveryQueue

log = get_logger("epix.queue")
HANDOVER_WAIT_S = 5.0  # how long a stop waits for accepts storing messages it reserved slots for


class EmbeddedQueue(DeliveryQueue):
    def __init__(self, store: Store, delivery: DeliveryConfig, *, actor: str) -> None:
        self.store = store
        self.delivery = delivery
        self.actor = actor
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task] = set()
        self._held: set[str] = set()  # claimed by this process and not yet settled
        # Under a backlog, a claim (one write transaction) waits for this many free slots and
        # takes that many messages, instead of one claim per finished delivery.
        self._refill = max(1, min(delivery.batch, delivery.concurrency // 4))
        self._backlog = False  # the last claim was full: more messages are probably due
        self._reserved = 0  # slots promised to messages being stored already claimed
        self._deliver: Deliver | None = None  # set while run() feeds the sender
        self._handed = asyncio.Event()  # set when no reserved slot waits for its hand-over

    def notify(self) -> None:
        self._wake.set()

    async def run(self, deliver: Deliver) -> None:
        log.info("queue.embedded.started")
        self._deliver = deliver
        try:
            while True:
                # Cleared before looking, not on the way to sleep: a notify() that comes while
                # claim_due or next_due_at is awaited is for something they may not have seen,
                # and must cut the nap short instead of being cleared unseen.
                self._wake.clear()
                claimed = await self.run_once(deliver)
                if claimed == 0:
                    await self._sleep()
        finally:
            self._deliver = None
            for task in list(self._inflight):
                task.cancel()
            if self._inflight:
                await asyncio.gather(*self._inflight, return_exceptions=True)
            if self._reserved:
                # Accepts still storing messages claimed for us: wait (briefly) for them, so that
                # what they store is handed back below instead of waiting out its lease.
                self._handed.clear()
                await tasks.nap(self._handed, HANDOVER_WAIT_S)
            await self._release_unfinished()

    def _free(self) -> int:
        return self.delivery.concurrency - len(self._inflight) - self._reserved

    def reserve(self, wanted: int) -> int:
        if self._deliver is None:
            return 0
        taken = max(0, min(wanted, self._free()))
        self._reserved += taken
        return taken

    def hand_over(self, messages: Sequence[MessageRecord], reserved: int) -> None:
        self._reserved -= reserved
        if self._deliver is None:  # stopping: run() hands them back with the rest it holds
            self._held.update(m.message_id for m in messages[:reserved])
            if self._reserved == 0:
                self._handed.set()
            return
        for message in messages[:reserved]:
            self._start(self._deliver, message)
        if len(messages) < reserved or not self._inflight:
            self.notify()  # slots freed: what waits in the store may take them

    def _start(self, deliver: Deliver, message: MessageRecord) -> None:
        self._held.add(message.message_id)
        task = asyncio.create_task(self._deliver_guarded(deliver, message))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def run_once(self, deliver: Deliver) -> int:
        free = self._free()
        if free <= 0 or (self._backlog and free < self._refill):
            if self._inflight:
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            else:  # every slot is reserved for messages being handed over: they will notify
                await self._sleep()
            return 1
        limit = min(free, self.delivery.batch)
        claim = asyncio.ensure_future(
            self.store.claim_due(
                limit=limit,
                lease_s=self.delivery.lease_s,
                now=datetime.now(timezone.utc),
                actor=self.actor,
            )
        )
        try:
            batch = await asyncio.shield(claim)
        except asyncio.CancelledError:
            # Stopping while a claim commits: remember what it took, so that it is released.
            with contextlib.suppress(Exception):
                self._held.update(m.message_id for m in await claim)
            raise
        self._backlog = len(batch) == limit
        for message in batch:
            self._start(deliver, message)
        return len(batch)

    async def _sleep(self) -> None:
        timeout = self.delivery.poll_s
        due = await self.store.next_due_at()
        if due is not None:
            timeout = max(0.0, min(timeout, (due - datetime.now(timezone.utc)).total_seconds()))
        await tasks.nap(self._wake, timeout)

    async def _deliver_guarded(self, deliver: Deliver, message: MessageRecord) -> None:
        structlog.contextvars.bind_contextvars(
            message_id=message.message_id, receiver=message.receiver, action=message.action.value
        )
        try:
            await deliver(message)
            self._held.discard(message.message_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The lease will expire and the message will be taken up again; nothing is lost.
            if self.store.unavailable(exc):
                log.warning("delivery.store_unavailable", error=f"{type(exc).__name__}: {exc}", retry_after_s=self.delivery.lease_s)
            else:
                log.exception("delivery.crashed")
        finally:
            structlog.contextvars.unbind_contextvars("message_id", "receiver", "action")

    async def _release_unfinished(self) -> None:
        """On a graceful stop, hand back what this process still holds instead of letting its
        lease run out, so that a restart (or another instance) takes it up at once."""
        now = datetime.now(timezone.utc)
        for message_id in list(self._held):
            with contextlib.suppress(Exception):
                await self.store.transition(
                    message_id,
                    MessageStatus.SEND_ENQUEUED,
                    actor=self.actor,
                    detail="sender stopped; released for another attempt",
                    next_attempt_at=now,
                )
        self._held.clear()
