"""Push inbound permits to the local MA system's webhook, as an alternative to polling the inbox.

Each RECEIVED message is POSTed as JSON (the inbox item: message, action, permit) with an HMAC
signature header; a 2xx answer acknowledges it (DELIVERED), anything else is retried with a
growing delay, and after the last attempt the message simply stays in the inbox, where the MA
system can still poll it. Delivery is at least once: the receiver dedupes on ``message_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time

import aiohttp

from gateway.config import GatewayConfig
from gateway.logs import get_logger
from gateway.store.base import MessageRecord, Store

log = get_logger("epix.webhook")
SIGNATURE_HEADER = "X-Epix-Signature"
PAGE = 100  # inbox messages read at a time


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    def __init__(self, config: GatewayConfig, store: Store, http: aiohttp.ClientSession, view) -> None:
        self.config = config
        self.store = store
        self.http = http
        self.view = view  # message -> JSON-able dict (the inbox item), shared with the inbox API
        self._attempts: dict[str, int] = {}
        self._not_before: dict[str, float] = {}

    async def run(self) -> None:
        log.info("webhook.started", url=self.config.webhook.url)
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook.loop_failed")
            await asyncio.sleep(self.config.delivery.poll_s)

    async def run_once(self) -> int:
        now = time.monotonic()
        sent = 0
        after = None
        while True:
            page = await self.store.inbox(self.config.party, limit=PAGE, after=after)
            given_up = 0
            for message in page:
                if self._attempts.get(message.message_id, 0) >= self.config.webhook.max_attempts:
                    given_up += 1
                    continue
                if self._not_before.get(message.message_id, 0.0) > now:
                    continue
                sent += await self._push(message)
            # Messages given up on stay in the inbox, oldest first: a full page of them (an outage
            # of the MA system's endpoint) would otherwise hide every message received after them.
            if len(page) < PAGE or not given_up:
                return sent
            after = (page[-1].created_at, page[-1].message_id)

    async def _push(self, message: MessageRecord) -> int:
        body = json.dumps(await self.view(message), default=str).encode("utf-8")
        headers = {"Content-Type": "application/json", "X-Epix-Message-Id": message.message_id}
        if self.config.webhook.secret:
            headers[SIGNATURE_HEADER] = signature(self.config.webhook.secret, body)
        attempt = self._attempts.get(message.message_id, 0) + 1
        status = None
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
            async with self.http.post(
                self.config.webhook.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                status = resp.status
        if status is not None and 200 <= status < 300:
            await self.store.ack_inbox(message.message_id, actor="webhook")
            self._attempts.pop(message.message_id, None)
            self._not_before.pop(message.message_id, None)
            log.info("webhook.delivered", message_id=message.message_id, attempt=attempt)
            return 1
        self._attempts[message.message_id] = attempt
        self._not_before[message.message_id] = time.monotonic() + min(60.0, 0.5 * 2 ** (attempt - 1))
        log.warning(
            "webhook.failed",
            message_id=message.message_id,
            attempt=attempt,
            http_status=status,
            gave_up=attempt >= self.config.webhook.max_attempts,
        )
        return 0
