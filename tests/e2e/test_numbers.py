"""Permit numbers as Management Authorities print them ("KWS/CITES/2026/0012", "21 CH 012345"),
over real sockets on both stores: each is addressed as one percent-encoded path segment by the MA
system, the partner and customs alike, and the URLs the gateway hands out work as they are."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from adapters.cites_read import read_permit
from domain.messages import MessageStatus
from gateway.store.base import MessageFilter
from simulators.network import build_network
from simulators.samples import make_permit
from tests.e2e.conftest import STORES, Cluster, Feed, party_stores

PARTIES = ("CH", "FR")
FINAL = {MessageStatus.ACKNOWLEDGED, MessageStatus.REJECTED, MessageStatus.SEND_FAILURE}
# "/", spaces and non-ASCII, and every other character a path or its matching could trip on.
NUMBER = "CH/CITES/2026 Nº 0012#ä?%{1}+&"
ENCODED = "CH%2FCITES%2F2026%20N%C2%BA%200012%23%C3%A4%3F%25%7B1%7D%2B%26"
CUSTOMS = {"Authorization": "Bearer tok-fr-customs"}


class NumbersCluster(Cluster):
    feed: list[dict]

    async def call(self, party: str, method: str, path: str, *, headers: dict[str, str] | None = None, body=None):
        async with self.http.request(method, self.url(party) + path, json=body, headers=headers or self.headers(party)) as resp:
            return resp.status, await (resp.json() if resp.content_type == "application/json" else resp.read())

    async def settle(self, answer: dict) -> None:
        for m in answer["messages"]:
            sent = await self.wait_status(m["sender"], m["message_id"], FINAL)
            assert sent.status is MessageStatus.ACKNOWLEDGED, sent


@pytest.fixture(params=STORES)
async def numbers(request, tmp_path):
    """CH issues to FR; FR has a customs token and a pre-arrival feed (a webhook in this test)."""
    feed = Feed()
    await feed.start()
    token = '\n[[token]]\nname = "fr-customs"\ntoken = "tok-fr-customs"\nrole = "customs"\ncountries = ["FR"]\n'
    feed_config = f'\n[customs]\nfeed_url = "http://127.0.0.1:{feed.port}/pre-arrival"\nfeed_poll_s = 0.05\n'
    try:
        async with party_stores(request.param, PARTIES, "num") as store_urls:
            net = build_network(tmp_path / "net", PARTIES, store_urls=store_urls, extra_for={"FR": token + feed_config})
            c = NumbersCluster(net)
            c.feed = feed.items
            async with c.running(PARTIES):
                yield c
    finally:
        await feed.stop()


async def _feed_item(c: NumbersCluster, number: str, timeout: float = 10.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = [i for i in c.feed if i["number"] == number]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{number!r} never reached the customs feed")


async def test_a_number_with_reserved_characters_is_addressed_by_its_encoded_segment(numbers):
    c = numbers
    assert quote(NUMBER, safe="") == ENCODED
    permit = make_permit(random.Random(42), issuer="CH", importer_country="FR", number=NUMBER, items=2)
    status, accepted = await c.submit(permit)
    assert status == 202, accepted
    assert accepted["number"] == NUMBER and accepted["permit_url"] == f"/v1/permits/CH/{ENCODED}"
    permit_url = accepted["permit_url"]

    # On the issuer's gateway: the URL handed out, followed as it is, then the signed XML it names.
    status, view = await c.call("CH", "GET", permit_url)
    assert status == 200 and view["number"] == NUMBER and view["status"] == "VALID", view
    assert view["xml_url"] == f"/v1/permits/CH/{ENCODED}/xml"
    status, xml = await c.call("CH", "GET", view["xml_url"])
    assert status == 200
    assert read_permit(c.security("FR").verify(xml, "CH").signed_root.getroottree()).number == NUMBER
    # Unencoded, the "/" splits the number into segments that name nothing.
    status, err = await c.call("CH", "GET", "/v1/permits/CH/CH/CITES/2026")
    assert status == 404 and err["code"] == "NOT_FOUND"
    await c.settle(accepted)

    # At the importer: the MA system and customs use the same encoded segment.
    status, view = await c.call("FR", "GET", permit_url)
    assert status == 200 and view["number"] == NUMBER and view["direction"] == "inbound"
    item = await _feed_item(c, NUMBER)
    assert item["verification_url"] == f"/v1/verifications/CH/{ENCODED}"
    status, v = await c.call("FR", "GET", item["verification_url"] + "?stamp=" + quote(permit.security_stamp), headers=CUSTOMS)
    assert status == 200 and v["verdict"] == "VALID" and v["number"] == NUMBER, v
    status, history = await c.call("FR", "GET", item["verification_url"] + "/history", headers=CUSTOMS)
    assert status == 200 and [h["verdict"] for h in history["verifications"]] == ["VALID"]

    # Write-off, its record, and its reversal, by a declaration that has a "/" of its own.
    declaration = "FR/2026 Nº 7"
    body = {
        "declaration": declaration, "office": "FRCDG", "date": datetime.now(timezone.utc).isoformat(),
        "port": "Paris-Charles de Gaulle", "lines": [{"item": "A", "quantity": "1"}],
    }  # fmt: skip
    status, w = await c.call("FR", "POST", permit_url + "/write-offs", headers=CUSTOMS, body=body)
    assert status == 201 and w["number"] == NUMBER, w
    status, q = await c.call("FR", "GET", permit_url + "/quantities", headers=CUSTOMS)
    assert status == 200 and q["number"] == NUMBER and q["write_offs"][0]["declaration"] == declaration
    reversal = f"{permit_url}/write-offs/{quote(declaration, safe='')}/reversal"
    status, r = await c.call("FR", "POST", reversal, headers=CUSTOMS, body={"reason": "entered twice"})
    assert status == 200 and r["reversed"] == [{"item": "A", "quantity": "1"}], r

    # The issuer cancels through the same URL; the cancellation reaches customs.
    status, cancelled = await c.call("CH", "POST", permit_url + "/cancel", body={"reason": "issued in error"})
    assert status == 202 and cancelled["permit_url"] == permit_url, cancelled
    await c.settle(cancelled)
    status, v = await c.call("FR", "GET", item["verification_url"], headers=CUSTOMS)
    assert status == 200 and v["verdict"] == "CANCELLED", v


@pytest.mark.parametrize(
    ("number", "words"),
    [
        ("X" * 65, "at most 64"),
        ("CH26-000001 ", "ends with a space"),
        ("21 CH  012345", "two spaces in a row"),
        ("CH26-\u200b000001", "U+200B"),
        ("CH26\x01000001", "U+0001"),
        ("..", "cannot be written in a URL"),
    ],
)
async def test_a_number_partners_or_urls_cannot_carry_is_refused_and_nothing_is_stored(numbers, number, words):
    c = numbers
    status, err = await c.submit(make_permit(random.Random(1), issuer="CH", importer_country="FR", number=number))
    assert status == 422 and err["code"] == "PERMIT_INVALID", err
    [problem] = err["context"]["problems"]
    assert problem["code"] == "PERMIT_NUMBER_INVALID" and problem["path"] == "number" and words in problem["message"]
    assert await c.store("CH").get_permit_versions("CH", number) == []
    assert await c.store("CH").list_messages(MessageFilter()) == []


@pytest.mark.parametrize(
    ("replaces", "words"),
    [("CH26-000001\x00", "U+0000"), ("X" * 65, "at most 64"), ("CH26-000001 ", "ends with a space"), ("..", "in a URL")],
)
async def test_a_replacement_naming_a_number_no_permit_can_have_is_refused_and_nothing_is_stored(numbers, replaces, words):
    c = numbers
    permit = make_permit(random.Random(2), issuer="CH", importer_country="FR", number="CH26-000002", replaces=replaces)
    status, err = await c.submit(permit)
    assert status == 422 and err["code"] == "PERMIT_INVALID", err
    [problem] = err["context"]["problems"]
    assert problem["code"] == "PERMIT_NUMBER_INVALID" and problem["path"] == "replaces" and words in problem["message"]
    assert await c.store("CH").get_permit_versions("CH", permit.number) == []
    assert await c.store("CH").list_messages(MessageFilter()) == []


@pytest.mark.parametrize(
    ("method", "path", "customs", "words"),
    [
        ("GET", "/v1/permits/CH/CH26%00001", False, "U+0000"),
        ("GET", "/v1/permits/CH/CH26-000001%20/xml", False, "ends with a space"),
        ("POST", "/v1/permits/CH/" + "X" * 65 + "/cancel", False, "at most 64"),
        ("GET", "/v1/verifications/CH/CH26%0A001", True, "U+000A"),
        ("GET", "/v1/verifications/CH/%2E%2E%2E%2E/history", True, None),  # "...." is a fine number, just unknown
        ("POST", "/v1/permits/CH/CH26%E2%80%8B001/write-offs", True, "U+200B"),
        ("GET", "/v1/permits/C%00H/CH26-000001/quantities", True, "ISO 3166-1"),
    ],
)
async def test_a_url_naming_what_no_permit_can_be_is_not_found_with_the_reason(numbers, method, path, customs, words):
    c = numbers
    status, err = await c.call("FR", method, path, headers=CUSTOMS if customs else None, body={} if method == "POST" else None)
    if words is None:
        assert status == 200 and err["verifications"] == []
        return
    assert status == 404 and err["code"] == "NOT_FOUND", err
    assert words in err["message"]
    assert await c.store("FR").list_messages(MessageFilter()) == []
