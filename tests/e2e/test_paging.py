"""GET /v1/messages pages through everything by its own ``next`` links, followed as returned."""

from __future__ import annotations

import random

import pytest

from gateway.store.base import MessageFilter
from simulators.samples import make_permit

# A number with the characters a query string could split or turn into a space.
NUMBER = "CH26 +1&x=2#/3"


async def _seed(cluster) -> None:
    """Ten messages on CH, two of them created in the same microsecond (a replacement goes to
    everyone who had the permit and to its new importer, in one transaction)."""
    for i in range(5):
        permit = make_permit(random.Random(500 + i), issuer="CH", importer_country="FR", number=f"CH26-PAGE{i}")
        assert (await cluster.submit(permit))[0] == 202
    first = make_permit(random.Random(9), issuer="CH", importer_country="FR", number="CH26-PAGE-OLD")
    assert (await cluster.submit(first))[0] == 202
    replacement = make_permit(random.Random(10), issuer="CH", importer_country="KE", number=NUMBER, replaces=first.number)
    status, body = await cluster.submit(replacement)
    assert status == 202 and len(body["messages"]) == 2, body
    assert len({m["created_at"] for m in body["messages"]}) == 1
    for i in range(5, 7):
        permit = make_permit(random.Random(500 + i), issuer="CH", importer_country="KE", number=f"CH26-PAGE{i}")
        assert (await cluster.submit(permit))[0] == 202


async def _follow(cluster, first: str) -> list[str]:
    seen, url, pages = [], first, 0
    while url:
        status, page = await cluster.get("CH", url)
        assert status == 200, (url, page)
        seen += [m["message_id"] for m in page["messages"]]
        url = page.get("next")
        pages += 1
        assert pages <= 20, "the next links never end"
    return seen


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("limit=1", MessageFilter(limit=1000)),
        ("limit=3", MessageFilter(limit=1000)),
        ("limit=2&receiver=FR&direction=outbound", MessageFilter(receiver="FR", limit=1000)),
        ("limit=1&number=" + "CH26%20%2B1%26x%3D2%23%2F3", MessageFilter(number=NUMBER, limit=1000)),
    ],
)
async def test_following_next_links_sees_every_message_once_and_in_order(cluster, query, expected):
    await _seed(cluster)
    everything = [m.message_id for m in await cluster.store("CH").list_messages(expected)]
    assert len(everything) >= 2
    seen = await _follow(cluster, f"/v1/messages?{query}")
    assert seen == everything  # newest first, none skipped, none twice
    assert len(set(seen)) == len(seen)
