"""Paths written to slip past authentication: encoded slashes and letters, dot-segments, double
slashes, look-alike prefixes. Sent byte for byte over a real socket (an HTTP client would
normalise them first) to a served gateway: none reaches a protected handler without a token, and
each gets a status, a code and a sentence. Last, an X-Request-Id that could pass for other log
fields is replaced, not echoed."""

from __future__ import annotations

import asyncio
import re

import pytest

from simulators.network import build_network
from tests.e2e.conftest import Cluster
from tests.hostile.http import send

NEEDS_TOKEN = (401, "UNAUTHENTICATED", "Send 'Authorization: Bearer <token>' to use this API.")


@pytest.fixture
async def gateway(tmp_path):
    net = build_network(tmp_path / "net", ("CH", "FR"))
    async with Cluster(net).running(["CH"]) as c:
        yield c


async def _send(c: Cluster, target: str, *, method: str = "GET", token: bool = False) -> tuple[int, dict | bytes]:
    return await send(c.url("CH"), method, target, headers=c.headers("CH", operator=True) if token else None)


@pytest.mark.parametrize(
    "target",
    [
        "/exchange%2F..",  # decoded: "/exchange/..", the router: one segment "exchange%2F.."
        "/exchange%2F../v1/messages",
        "/exchange%2F..%2Fv1%2Fmessages",
        "/exchange/%2e%2e/v1/messages",
        "/exchange/../v1/messages",
        "/exchange//v1/messages",
        "/healthz/../v1/messages",
        "/healthz/%2e%2e/v1/messages",
        "/healthz/%2E%2E/v1/messages",
        "/healthz%2F..%2Fv1%2Fmessages",
        "/metrics%2F%2E%2E%2Fv1/messages",
        "/v1/openapi.json%2F..%2Fmessages",
        "/healthzz",  # a public path's name as a prefix is not that path
        "/metrics-admin",
        "//v1/messages",
        "//exchange/v1/messages",
        "/./v1/messages",
        "/%2e%2e/v1/messages",
        "/%2Fv1/messages",
        "/v1%2Fmessages",
        "/v1//messages",
        "/%761/messages",  # %76 is "v": the router matches /v1/messages, which needs a token
        "/v1/messages",
        "/v1/messages?next=/healthz",
        "/v1/messages/..%2F..%2Fhealthz",
        "/v1/messages/%2e%2e",
        "/v1/permits/CH/%2e%2e%2F%2e%2e%2Fhealthz",
        "/v1/verifications/CH/..%2F..%2Fexchange%2Fv1%2Fdirectory",
        "http://gw/v1/messages",
        "http://gw/exchange/../v1/messages",
    ],
)
async def test_no_encoding_reaches_a_protected_handler_without_a_token(gateway, target):
    status, body = await _send(gateway, target)
    assert (status, body["code"], body["message"]) == NEEDS_TOKEN, (target, status, body)
    # With a token, the same bytes reach whatever the router matched (which may refuse the query
    # it was given: the message list takes no ``next``), or nothing.
    status, body = await _send(gateway, target, token=True)
    assert status in (200, 400, 404), (target, status, body)
    if status != 200:
        assert body["code"] == {400: "JSON_MALFORMED", 404: "NOT_FOUND"}[status] and body["message"], body


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        ("GET", "/healthz", 200, None),
        ("GET", "/%68ealthz", 200, None),  # the router decodes %68, and matched /healthz
        ("GET", "/healthz?x=/v1/messages", 200, None),
        ("GET", "/%65xchange/v1/directory", 200, None),
        ("GET", "/exchange/v1/directory", 200, None),
        ("GET", "/exchange/v1/messages", 405, "CONFLICT"),  # a partner using the wrong method hears so
        ("POST", "/healthz", 405, "CONFLICT"),
    ],
)
async def test_public_routes_answer_without_a_token(gateway, method, target, status, code):
    got, body = await _send(gateway, target, method=method)
    assert got == status, (target, got, body)
    if code is not None:
        assert body["code"] == code and f"{method} is not allowed" in body["message"]


async def test_exactly_the_intended_routes_are_public(gateway):
    from gateway.middleware import is_public

    routes = gateway.gateways["CH"].app.router.routes()
    public = {r.resource.canonical for r in routes if is_public(r.resource)}
    assert public == {
        "/healthz", "/readyz", "/metrics", "/v1/openapi.json",
        "/exchange/v1/messages", "/exchange/v1/messages/{message_id}", "/exchange/v1/directory",
        "/exchange/v1/hub/pull", "/exchange/v1/hub/track", "/exchange/v1/hub/ack",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("given", "kept"),
    [("0af7651916cd43dd8448eb211c80319c", True), ("req-2026.11.23:42", True),
     ("x" * 129, False), ("a b", False), ("id code=FORGED", False), ("\udcff", False)],
)
async def test_a_request_id_is_echoed_only_when_it_looks_like_one(gateway, given, kept):
    port = int(gateway.url("CH").rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Request-Id: {given}\r\nConnection: close\r\n\r\n".encode("latin-1", "surrogateescape"))
    head = (await reader.read()).partition(b"\r\n\r\n")[0].decode("latin-1")
    writer.close()
    echoed = [line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("x-request-id:")]
    assert len(echoed) == 1 and (echoed[0] == given) is kept and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", echoed[0])
