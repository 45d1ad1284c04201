"""The queue port: where accepted outbound messages wait for the sender, whatever carries them.

The store stays the source of truth. An outbound message row is written in the same transaction
as its permit (the outbox), and every outcome is a store transition. A queue only decides *when*
the sender sees a message id, and guarantees it sees it again if it stopped before the outcome
was stored. Two backends: ``EmbeddedQueue`` (the store's own due/lease columns) and
``RabbitQueue`` (durable quorum queues per route on RabbitMQ, fed by an outbox relay).

The sender (``gateway.delivery.DeliveryWorker.deliver``) takes a message already claimed
(SENDING), tries it once, stores the outcome and returns the message as stored. Sending the same
message id twice is harmless: receivers are idempotent on message id.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from gateway.store.base import MessageRecord

# Try a claimed (SENDING) message once; return it as stored afterwards: ACKNOWLEDGED, REJECTED,
# WAITING_FOR_RETRY (with next_attempt_at) or SEND_FAILURE (parked).
Deliver = Callable[[MessageRecord], Awaitable[MessageRecord]]


class DeliveryQueue(ABC):
    @abstractmethod
    async def run(self, deliver: Deliver) -> None:
        """Feed due messages to ``deliver`` until cancelled. On cancellation, hand back what is
        held (so a restart takes it up at once) before returning."""

    @abstractmethod
    def notify(self) -> None:
        """Messages were queued in the store (accepted, cancelled, released, retried by an
        operator): look for them now instead of at the next poll."""

    def reserve(self, wanted: int) -> int:
        """Take up to ``wanted`` free delivery slots for messages about to be stored already
        claimed by this process (``store.base.Claim``); how many were taken. A queue fed otherwise
        (RabbitMQ's outbox relay) takes none, and the messages wait in SEND_ENQUEUED as usual."""
        return 0

    def hand_over(self, messages: Sequence[MessageRecord], reserved: int) -> None:
        """Deliver ``messages`` (stored SENDING under this process's lease) in slots ``reserve``
        took; slots left unused (an idempotent repeat stored nothing new) are freed."""

    async def unpark(self, messages: Sequence[MessageRecord]) -> int:
        """An operator retried ``messages`` (SEND_ENQUEUED again in the store, from which they are
        sent once more): drop what the queue still holds of them as parked; how many entries went.
        Nothing to do where the store is the queue."""
        return 0

    def health(self) -> str | None:
        """None while the queue can take and hand out messages; else why not, in a sentence
        (``/readyz``). Where the store is the queue, the store's own check says it."""
        return None

    async def open(self) -> None:
        """Connect before the gateway serves, so a broker that cannot be reached stops start-up."""

    async def close(self) -> None:
        """Release connections. ``run`` has returned by now."""
