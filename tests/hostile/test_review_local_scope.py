"""The local API's authorisation, seen from the principals it must keep apart: a token reaches
nothing outside its role and country scope, through any route."""

from __future__ import annotations

import random

from domain.messages import MessageStatus
from simulators.network import build_network
from simulators.samples import make_permit
from tests.e2e.conftest import Cluster
from tests.hostile.http import send
from tests.hostile.test_local_api_inputs import CUSTOMS, OFFICE, TOKENS
from tests.integration.conftest import backend, clock, store  # noqa: F401 -- fixtures, once per store


async def test_customs_tokens_cannot_read_permits_through_the_ma_permit_view(tmp_path):
    """FR received CH's replacement because it received the original, but the replacement goes to
    KE: FR customs' verification says NOT_ADDRESSED_TO_YOU and nothing about it (and audits the
    question). The MA view of the same permit, with its content, deliveries and signed XML, must
    not answer the same token either: customs reads permits through the verification only."""
    parties = ("CH", "FR", "KE")
    net = build_network(tmp_path / "net", parties, extra_for={"FR": TOKENS})
    async with Cluster(net).running(parties) as c:
        rng = random.Random(11)
        original = make_permit(rng, issuer="CH", importer_country="FR", number="CH26-000801")
        status, body = await c.submit(original)
        assert status == 202, body
        await c.wait_status("CH", body["messages"][0]["message_id"], {MessageStatus.ACKNOWLEDGED})
        replacement = make_permit(rng, issuer="CH", importer_country="KE", number="CH26-000802", replaces="CH26-000801")
        status, body = await c.submit(replacement)
        assert status == 202, body
        assert {m["receiver"] for m in body["messages"]} == {"FR", "KE"}
        for m in body["messages"]:
            await c.wait_status("CH", m["message_id"], {MessageStatus.ACKNOWLEDGED})
        assert await c.store("FR").get_permit_versions("CH", "CH26-000802")

        status, verdict = await send(c.url("FR"), "GET", "/v1/verifications/CH/CH26-000802", headers=CUSTOMS)
        assert status == 200 and verdict["verdict"] == "NOT_ADDRESSED_TO_YOU" and verdict["permit"] is None

        for headers in (CUSTOMS, OFFICE):
            for target in ("/v1/permits/CH/CH26-000802", "/v1/permits/CH/CH26-000802/xml", "/v1/permits/CH/CH26-000801"):
                status, answer = await send(c.url("FR"), "GET", target, headers=headers)
                assert status == 403 and isinstance(answer, dict), (target, status, answer)
                assert answer["code"] == "FORBIDDEN" and "needs ma or operator" in answer["message"], (target, answer)
        # The MA and the operator still read it.
        for operator in (False, True):
            status, view = await send(c.url("FR"), "GET", "/v1/permits/CH/CH26-000802", headers=c.headers("FR", operator=operator))
            assert status == 200 and view["permit"]["number"] == "CH26-000802"


class _Hook:
    """The MA system's webhook endpoint: answers ``status`` and notes which messages it was sent."""

    def __init__(self) -> None:
        self.status = 503
        self.posted: list[str] = []

    def post(self, url, *, data, headers, timeout):
        self.posted.append(headers["X-Epix-Message-Id"])
        hook = self

        class _Answer:
            status = hook.status

            async def __aenter__(self):
                return self

            async def __aexit__(self, *exc):
                return False

        return _Answer()


async def test_messages_the_webhook_gave_up_on_do_not_starve_the_ones_received_after_them(tmp_path):
    """The MA system's webhook was down while 100 permits arrived: each is given up after its last
    attempt and stays in the inbox (to be polled). Once the webhook is back, a permit received
    later must still be pushed, although the 100 older ones fill a whole inbox page."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gateway.config import DeliveryConfig, WebhookConfig
    from gateway.store.sqlite import SqliteStore
    from gateway.webhook import WebhookNotifier
    from tests.integration.records import T0, message
    from tests.integration.test_store import inbound_permit

    store = SqliteStore(tmp_path / "epix.sqlite3")
    await store.open()
    try:

        async def receive(i: int) -> None:
            p = inbound_permit(f"FR-2026-{i:04d}")
            await store.store_inbound(p, message(p, receiver="CH", message_id=f"fr-{i:04d}", created_at=T0 + timedelta(seconds=i)), actor="receiver")

        for i in range(100):
            await receive(i)
        config = SimpleNamespace(party="CH", webhook=WebhookConfig(url="http://ma.invalid/hook", max_attempts=1), delivery=DeliveryConfig())
        hook = _Hook()

        async def view(m):
            return {"message_id": m.message_id}

        notifier = WebhookNotifier(config, store, hook, view)
        assert await notifier.run_once() == 0
        assert len(hook.posted) == 100  # each tried once, and given up

        hook.status, hook.posted = 200, []
        await receive(100)
        assert await notifier.run_once() == 1
        assert hook.posted == ["fr-0100"]
        assert (await store.get_message("fr-0100")).status is MessageStatus.DELIVERED
        assert len(await store.inbox("CH", limit=1000)) == 100  # the given-up ones wait to be polled
    finally:
        await store.close()


async def test_the_inbox_continues_after_a_page_on_both_stores(store):
    """The cursor the webhook pages with: messages created in the same microsecond are neither
    skipped nor seen twice."""
    from tests.integration.records import T0, message
    from tests.integration.test_store import inbound_permit

    for i, at in enumerate([T0, T0, T0, T0.replace(second=1)]):
        p = inbound_permit(f"FR-2026-{i:04d}")
        await store.store_inbound(p, message(p, receiver="CH", message_id=f"fr-{i}", created_at=at), actor="receiver")
    first = await store.inbox("CH", limit=2)
    assert [m.message_id for m in first] == ["fr-0", "fr-1"]
    rest = await store.inbox("CH", limit=2, after=(first[-1].created_at, first[-1].message_id))
    assert [m.message_id for m in rest] == ["fr-2", "fr-3"]
    assert await store.inbox("CH", after=(rest[-1].created_at, rest[-1].message_id)) == []


def test_two_tokens_under_one_name_or_with_one_secret_are_refused_at_start_up():
    """Idempotency keys are kept per token name and every audit row names the token: two tokens
    sharing a name would share (and refuse each other's) Idempotency-Key values and be one actor
    in the history. Two entries with one secret would make the second one's role and countries
    dead letters: the first always matches."""
    import pytest

    from domain.errors import EpixError, ErrorCode
    from gateway.config import parse_config

    def tokens(*entries):
        return {"gateway": {"party": "CH"}, "token": list(entries)}

    cases = [
        (
            tokens(
                {"name": "ecites", "token": "secret-a", "role": "ma", "countries": ["CH"]},
                {"name": "ecites", "token": "secret-b", "role": "operator", "countries": ["CH"]},
            ),
            "name ecites is given to tokens #1 and #2",
        ),
        (
            tokens(
                {"name": "ch-ma", "token": "s3cr3t-shared", "role": "ma", "countries": ["CH"]},
                {"name": "ch-ops", "token": "s3cr3t-shared", "role": "operator", "countries": ["*"]},
            ),
            "tokens ch-ma and ch-ops have the same secret",
        ),
    ]
    for data, words in cases:
        with pytest.raises(EpixError) as info:
            parse_config(data, source="gateway.toml")
        assert info.value.code is ErrorCode.CONFIG_INVALID and words in info.value.detail, info.value.detail
        assert "s3cr3t" not in info.value.detail  # the secret itself is never shown
