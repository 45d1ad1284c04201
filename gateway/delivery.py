"""The sender: sends each message the queue hands it over HTTP, and records the outcome.

A message leaves SENDING only as ACKNOWLEDGED (a valid signed receipt that names our payload
digest), WAITING_FOR_RETRY (a retry can help: network error, 5xx, 429), SEND_FAILURE (attempts
exhausted: parked for an operator) or REJECTED (the partner refused it for good). A sender that
dies mid-way leaves a lease that expires, and the message is taken up again with the same id, so
the receiver's duplicate detection makes the retry harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import aiohttp

from adapters.exchange_xml import envelope_xml, read_error, read_receipt, root_name
from adapters.xmlparse import parse_xml
from domain.errors import EpixError, ErrorCode
from domain.messages import MessageStatus
from gateway.config import GatewayConfig
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.queue.base import DeliveryQueue
from gateway.queue.embedded import EmbeddedQueue
from gateway.security import Security
from gateway.store.base import Claim, MessageRecord, Store, header_of

log = get_logger("epix.delivery")
T = TypeVar("T")
EXCHANGE_PATH = "/exchange/v1/messages"


class _Outcome(Exception):
    def __init__(self, code: ErrorCode | str, detail: str, *, retryable: bool) -> None:
        super().__init__(detail)
        self.code = code if isinstance(code, str) else code.name
        self.detail = detail
        self.retryable = retryable


class DeliveryWorker:
    """Sends one claimed message at a time and stores the outcome; a ``DeliveryQueue`` decides
    which message and when (the embedded store queue by default, or RabbitMQ)."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        security: Security,
        http: aiohttp.ClientSession,
        metrics: Metrics,
        queue: DeliveryQueue | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.security = security
        self.http = http
        self.metrics = metrics
        self.actor = f"sender:{config.party}"
        self.queue = queue or EmbeddedQueue(store, config.delivery, actor=self.actor)

    def wake(self) -> None:
        self.queue.notify()

    async def stored(
        self,
        built: list[MessageRecord],
        write: Callable[[Claim | None], Awaitable[T]],
        newly: Callable[[T], list[MessageRecord]],
        *,
        take: bool = True,
    ) -> T:
        """Store ``built`` by ``write(claim)``, the sender taking in that very transaction what it
        has a free slot for (store.base.Claim); then send what it took and wake the queue for the
        rest. ``newly``: what of ``write``'s result it stored anew (an idempotent repeat stores
        nothing: what it returns instead is someone else's). ``take=False``: take nothing (a
        message held for a party to pull)."""
        taken = self.queue.reserve(len(built)) if take else 0
        claim = None
        if taken:
            lease_until = datetime.now(timezone.utc) + timedelta(seconds=self.config.delivery.lease_s)
            claim = Claim(taken, self.actor, lease_until)
        try:
            result = await write(claim)
        except BaseException:
            if taken:
                self.queue.hand_over([], taken)
            raise
        fresh = newly(result)
        ours = {m.message_id for m in built[:taken]}
        mine = [m for m in fresh if m.message_id in ours]
        if taken:
            self.queue.hand_over(mine, taken)
        if len(mine) < len(fresh):
            self.queue.notify()
        return result

    async def run(self) -> None:
        log.info("delivery.started", party=self.config.party, queue=type(self.queue).__name__)
        await self.queue.run(self.deliver)

    async def deliver(self, message: MessageRecord) -> MessageRecord:
        """Try a claimed (SENDING) message once and return it as stored with the outcome."""
        attempt = message.attempts + 1
        try:
            receipt = await self._send(message)
        except _Outcome as outcome:
            return await self._failed(message, attempt, outcome)
        stored = await self.store.transition(
            message.message_id,
            MessageStatus.ACKNOWLEDGED,
            actor=self.actor,
            # Through a hub, the receipt is the hub's (pending delivery); the receiver's own comes
            # back later in the hub's delivery report.
            detail=f"signed receipt from {message.via or message.receiver} (attempt {attempt})",
            receipt=receipt,
            increment_attempts=True,
        )
        self.metrics.deliveries.labels("acknowledged").inc()
        self.metrics.delivery_latency.observe((datetime.now(timezone.utc) - message.created_at).total_seconds())
        log.info("delivery.acknowledged", attempt=attempt)
        return stored

    async def _failed(self, message: MessageRecord, attempt: int, outcome: _Outcome) -> MessageRecord:
        agreement = self.config.agreements.get(message.receiver)
        if not outcome.retryable:
            status = MessageStatus.REJECTED
        elif attempt >= agreement.retry.max_attempts:
            status = MessageStatus.SEND_FAILURE
        else:
            status = MessageStatus.WAITING_FOR_RETRY
        next_at = None
        if status is MessageStatus.WAITING_FOR_RETRY:
            next_at = datetime.now(timezone.utc) + timedelta(seconds=agreement.retry.delay_after(attempt))
        detail = f"attempt {attempt}: {outcome.detail}"
        if status is MessageStatus.SEND_FAILURE:
            detail += f" — parked after {attempt} attempts; an operator can retry it"
        stored = await self.store.transition(
            message.message_id,
            status,
            actor=self.actor,
            detail=detail,
            error_code=outcome.code,
            next_attempt_at=next_at,
            increment_attempts=True,
        )
        self.metrics.deliveries.labels(status.value.lower()).inc()
        log.warning("delivery.failed", attempt=attempt, status=status.value, code=outcome.code)
        return stored

    async def _send(self, message: MessageRecord) -> bytes:
        route_agreement = self.config.agreements.get(message.via or message.receiver)
        if not route_agreement.endpoint:
            raise _Outcome(ErrorCode.CONFIG_INVALID, f"No endpoint to reach {message.receiver}.", retryable=False)
        unusable = self.security.unusable(datetime.now(timezone.utc))
        if unusable is not None:
            # The partner would refuse the envelope's signature (as final, for an expired
            # certificate): not sent, and the reason given is ours, not the partner's.
            raise _Outcome(
                ErrorCode.SIGNING_CERT_UNUSABLE,
                f"not sent: this gateway's signing certificate cannot be used now: {unusable.detail} "
                "Install a renewed certificate, restart, and retry the message.",
                retryable=True,
            )
        header = header_of(message)
        # A message this gateway did not originate is one it relays as a hub: the envelope says so.
        relayed_by = None if message.sender == self.config.party else self.config.party
        envelope = self.security.sign_template(
            envelope_xml(header, message.payload, sent_at=datetime.now(timezone.utc), relayed_by=relayed_by)
        )
        url = route_agreement.endpoint + EXCHANGE_PATH
        try:
            async with self.http.post(
                url,
                data=envelope,
                headers={"Content-Type": "application/xml"},
                timeout=aiohttp.ClientTimeout(total=route_agreement.timeout_s),
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _Outcome(
                ErrorCode.PARTNER_UNAVAILABLE, f"{type(exc).__name__} talking to {url}", retryable=True
            ) from None
        if status == 200:
            return self._check_receipt(message, body, route_agreement.party)
        if status == 429 or status >= 500:
            raise _Outcome(ErrorCode.PARTNER_UNAVAILABLE, f"HTTP {status} from {url}", retryable=True)
        raise self._rejection(message, body, status, route_agreement.party)

    def _check_receipt(self, message: MessageRecord, body: bytes, signer: str, *, now: datetime | None = None) -> bytes:
        try:
            verified = self.security.verify_answer(body, signer, earliest=self._earliest(message), now=now)
            receipt = read_receipt(verified.signed_root)
        except EpixError as exc:
            # A partner that answers 200 without a valid receipt may be mid-upgrade; try again.
            raise _Outcome(ErrorCode.RECEIPT_INVALID, f"receipt refused: {exc.code.name}: {exc.detail}", retryable=True) from None
        if receipt.message_id != message.message_id or receipt.payload_digest != message.payload_digest:
            raise _Outcome(
                ErrorCode.RECEIPT_INVALID,
                "the receipt names another message or another payload digest",
                retryable=True,
            )
        return body

    def _earliest(self, message: MessageRecord) -> datetime:
        """The earliest time an answer to ``message`` can have been made (Security.verify_answer)."""
        return message.created_at - timedelta(seconds=self.config.replay_window_s)

    def _rejection(self, message: MessageRecord, body: bytes, status: int, signer: str) -> _Outcome:
        try:
            verified = self.security.verify(body, signer)
            if root_name(verified.signed_root) != "Error":
                raise EpixError(ErrorCode.RECEIPT_INVALID, "not an error signal")
            signal = read_error(verified.signed_root)
        except EpixError:
            snippet = "unsigned or unreadable answer"
            try:
                if root_name(parse_xml(body).getroot()) == "Error":
                    snippet = "unsigned error signal"
            except EpixError:
                pass
            return _Outcome(ErrorCode.PARTNER_REJECTED, f"HTTP {status} from {signer} ({snippet})", retryable=status in (408, 409))
        if signal.message_id is not None and signal.message_id != message.message_id:
            # A genuine refusal of another message (replayed, or a partner's mix-up) says nothing
            # of this one: taking it would reject this message for good on someone else's fault.
            return _Outcome(
                ErrorCode.RECEIPT_INVALID,
                f"HTTP {status} from {signer}: a signed error about message {signal.message_id}, not this one",
                retryable=True,
            )
        return _Outcome(signal.code, signal.describe(signer), retryable=signal.retryable)
