"""Hostile values in the local API's query parameters, path segments, headers and JSON bodies, on
both stores (PostgreSQL refuses a NUL outright, SQLite stores it): each is refused with its status,
code and a sentence naming what is wrong, and nothing is written."""

from __future__ import annotations

import json
import random

import pytest

from adapters.permit_json import permit_from_json, permit_to_json
from domain.messages import MessageStatus
from gateway.store.base import MessageFilter
from simulators.network import build_network
from simulators.samples import make_permit
from tests.e2e.conftest import STORES, Cluster, party_stores, send_as_issuer
from tests.hostile.http import send

PARTIES = ("CH", "FR")
CUSTOMS = {"Authorization": "Bearer tok-fr-customs"}
OFFICE = {"Authorization": "Bearer tok-fr-cdg"}
JSON = {"Content-Type": "application/json"}
NUMBER = "CH26-000777"
DEEP = b"[" * 100_000 + b"]" * 100_000
TOKENS = (
    '\n[[token]]\nname = "fr-customs"\ntoken = "tok-fr-customs"\nrole = "customs"\ncountries = ["FR"]\n'
    '\n[[token]]\nname = "fr-cdg"\ntoken = "tok-fr-cdg"\nrole = "customs"\ncountries = ["FR/FRCDG"]\n'
)


class State:
    """What a refused request must leave as it was."""

    @staticmethod
    async def of(c: Cluster):
        out = {}
        for party in PARTIES:
            store = c.store(party)
            out[party] = (
                sorted(m.message_id for m in await store.list_messages(MessageFilter(limit=1000))),
                [(w.declaration, w.item_id, w.quantity, w.reversed_at) for w in await store.list_write_offs("CH", NUMBER)],
                len(await store.list_verifications("CH", NUMBER)),
                [(v.version, v.status) for v in await store.get_permit_versions("CH", NUMBER)],
            )
        return out


@pytest.fixture(params=STORES)
async def gw(request, tmp_path):
    """CH has issued NUMBER to FR; FR's customs wrote off declaration FR-DEC-1 against it."""
    async with party_stores(request.param, PARTIES, "ha") as store_urls:
        net = build_network(tmp_path / "net", PARTIES, store_urls=store_urls, extra_for={"FR": TOKENS})
        async with Cluster(net).running(PARTIES) as c:
            permit = make_permit(random.Random(7), issuer="CH", importer_country="FR", number=NUMBER, items=2)
            status, body = await c.submit(permit)
            assert status == 202, body
            await c.wait_status("CH", body["messages"][0]["message_id"], {MessageStatus.ACKNOWLEDGED})
            write_off = {"declaration": "FR-DEC-1", "office": "FRCDG", "lines": [{"item": "A", "quantity": "1"}]}
            status, w = await send(c.url("FR"), "POST", f"/v1/permits/CH/{NUMBER}/write-offs", headers={**CUSTOMS, **JSON}, body=json.dumps(write_off).encode())
            assert status == 201, w
            await c.wait_status("FR", w["feedback_message_id"], {MessageStatus.ACKNOWLEDGED})
            yield c


async def _refused(c: Cluster, cases) -> None:
    before = await State.of(c)
    for party, method, target, headers, body, expected, code, words in cases:
        status, answer = await send(c.url(party), method, target, headers=headers, body=body)
        case = (method, target[:80], body[:60])
        assert status == expected and isinstance(answer, dict), (case, status, answer)
        assert answer["code"] == code and words in answer["message"], (case, answer)
        assert answer["message"].endswith("."), (case, answer)
    assert await State.of(c) == before


def _ops(c: Cluster) -> dict[str, str]:
    return c.headers("CH", operator=True)


async def test_hostile_query_parameters_are_refused_with_the_reason(gw):
    op, ma, fr = _ops(gw), gw.headers("CH"), gw.headers("FR")
    bad = 400, "JSON_MALFORMED"
    await _refused(gw, [
        ("CH", "GET", "/v1/messages?limit=-5", op, b"", *bad, "from 1 to 1000"),
        ("CH", "GET", "/v1/messages?limit=0", op, b"", *bad, "from 1 to 1000"),
        ("CH", "GET", "/v1/messages?limit=1001", op, b"", *bad, "from 1 to 1000"),
        ("CH", "GET", "/v1/messages?limit=" + "9" * 5000, op, b"", *bad, "from 1 to 1000"),
        ("CH", "GET", "/v1/messages?limit=1_0", op, b"", *bad, "whole number"),
        ("CH", "GET", "/v1/messages?limit=%D9%A5", op, b"", *bad, "whole number"),  # an Arabic-Indic 5
        ("CH", "GET", "/v1/messages?limit=%205", op, b"", *bad, "whole number"),
        ("CH", "GET", "/v1/messages?before=9999-12-31T23:59:59-12:00", op, b"", *bad, "outside years 1 to 9999"),
        ("CH", "GET", "/v1/messages?before=0001-01-01T00:00:00%2B12:00", op, b"", *bad, "outside years 1 to 9999"),
        ("CH", "GET", "/v1/messages?before=2026-01-01", op, b"", *bad, "a date alone is not enough"),
        ("CH", "GET", "/v1/messages?before=2026-01-01T00:00:00", op, b"", *bad, "with a UTC offset"),
        ("CH", "GET", "/v1/messages?before=%00", op, b"", *bad, "with a UTC offset"),
        ("CH", "GET", "/v1/messages?before_id=x", op, b"", *bad, "send it with before"),
        ("CH", "GET", "/v1/messages?before=2026-01-01T00:00:00Z&before_id=%00", op, b"", *bad, "U+0000"),
        ("CH", "GET", "/v1/messages?sender=%00", op, b"", *bad, "is not a party"),
        ("CH", "GET", "/v1/messages?receiver=" + "X" * 8000, op, b"", *bad, "is not a party"),
        ("CH", "GET", "/v1/messages?issuer=ch", op, b"", *bad, "ISO 3166-1"),
        ("CH", "GET", "/v1/messages?number=CH26%00", op, b"", *bad, "U+0000"),
        ("CH", "GET", "/v1/messages?number=" + "N" * 65, op, b"", *bad, "at most 64"),
        ("CH", "GET", "/v1/messages?status=sent", op, b"", *bad, "is not one of"),
        ("CH", "GET", "/v1/messages?direction=%00", op, b"", *bad, "is not one of"),
        ("CH", "GET", "/v1/messages?statu=SEND_FAILURE", op, b"", *bad, "Unknown query parameter 'statu': the message list takes before, before_id, direction"),
        ("CH", "GET", "/v1/messages?limit=5&%00=1", op, b"", *bad, "Unknown query parameter"),
        ("FR", "GET", "/v1/inbox?limit=-1", fr, b"", *bad, "from 1 to 500"),
        ("FR", "GET", "/v1/inbox?limit=abc", fr, b"", *bad, "whole number"),
        ("FR", "GET", f"/v1/verifications/CH/{NUMBER}?office=%00", CUSTOMS, b"", *bad, "U+0000"),
        ("FR", "GET", f"/v1/verifications/CH/{NUMBER}?office=" + "O" * 5000, CUSTOMS, b"", *bad, "at most 64"),
        ("FR", "GET", f"/v1/verifications/CH/{NUMBER}?office=FR%20%20CDG", CUSTOMS, b"", *bad, "two spaces"),
        ("FR", "GET", f"/v1/verifications/CH/{NUMBER}?office=FRORY", OFFICE, b"", 403, "FORBIDDEN", "may not verify as office FRORY"),
        ("FR", "GET", f"/v1/verifications/CH/{NUMBER}?stamp=" + "1" * 129, CUSTOMS, b"", *bad, "at most 128"),
        ("FR", "GET", f"/v1/verifications/CH/{NUMBER}?format=pdf", CUSTOMS, b"", *bad, "json or xml"),
        ("FR", "GET", f"/v1/verifications/CH/{NUMBER}?Stamp=123", CUSTOMS, b"", *bad, "Unknown query parameter 'Stamp': a verification takes format, office, stamp"),
        ("FR", "GET", "/v1/inbox?limt=5", fr, b"", *bad, "Unknown query parameter 'limt': the inbox takes limit"),
        ("CH", "GET", "/v1/retention?all=1", op, b"", *bad, "the retention log takes limit"),
        ("CH", "GET", "/v1/inbox?limit=501", ma, b"", *bad, "from 1 to 500"),
    ])  # fmt: skip


async def test_message_ids_no_message_can_have_are_not_found_with_the_reason(gw):
    op, fr = _ops(gw), gw.headers("FR")
    await _refused(gw, [
        ("CH", "GET", "/v1/messages/%00", op, b"", 404, "NOT_FOUND", "U+0000"),
        ("CH", "GET", "/v1/messages/" + "x" * 7000, op, b"", 404, "NOT_FOUND", "at most 64"),
        ("CH", "POST", "/v1/messages/%00/retry", op, b"", 404, "NOT_FOUND", "U+0000"),
        ("CH", "POST", "/v1/messages/a%1Fb/retry", op, b"", 404, "NOT_FOUND", "U+001F"),
        ("FR", "POST", "/v1/inbox/%00/ack", fr, b"", 404, "NOT_FOUND", "U+0000"),
        ("FR", "GET", "/exchange/v1/messages/%00", None, b"", 404, "NOT_FOUND", "U+0000"),  # a partner's, without a token
    ])  # fmt: skip


async def test_hostile_json_bodies_are_refused_with_the_reason(gw):
    op, ma = {**_ops(gw), **JSON}, {**gw.headers("CH"), **JSON}
    cus, cdg = {**CUSTOMS, **JSON}, {**OFFICE, **JSON}
    bad = 400, "JSON_MALFORMED"
    write_offs, reversal = f"/v1/permits/CH/{NUMBER}/write-offs", f"/v1/permits/CH/{NUMBER}/write-offs/FR-DEC-1/reversal"

    def w(**changes) -> bytes:
        body = {"declaration": "FR-DEC-2", "lines": [{"item": "A", "quantity": "1"}], **changes}
        return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()

    await _refused(gw, [
        ("CH", "POST", "/v1/messages/retry", op, DEEP, *bad, "nests arrays or objects too deeply"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"limit": Infinity}', *bad, "Infinity is not a number JSON allows"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"limit": 1e400}', *bad, "from 1 to 1000"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"limit": true}', *bad, "from 1 to 1000"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"limit": 2.5}', *bad, "whole number"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"limit": -1}', *bad, "from 1 to 1000"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"receiver": ["FR"]}', *bad, "receiver must be a party"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"receiver": 5}', *bad, "receiver must be a party"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"receiver": "\\u0000"}', *bad, "receiver must be a party"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"status": ["SEND_FAILURE"]}', *bad, "status must be"),
        ("CH", "POST", "/v1/messages/retry", op, b'{"status": "SEND_FAILURE", "status": "REJECTED"}', *bad, "repeats the field"),
        ("CH", "POST", "/v1/messages/retry", op, b"\xff\xfe{}", *bad, "not UTF-8"),
        ("CH", "POST", f"/v1/permits/CH/{NUMBER}/cancel", ma, DEEP, *bad, "too deeply"),
        ("CH", "POST", f"/v1/permits/CH/{NUMBER}/cancel", ma, b'{"reason": "in error\\u0001"}', *bad, "U+0001"),
        ("CH", "POST", f"/v1/permits/CH/{NUMBER}/cancel", ma, b'{"reason": "\\u0000"}', *bad, "U+0000"),
        ("CH", "POST", f"/v1/permits/CH/{NUMBER}/cancel", ma, b'{"reason": "\\ud800"}', *bad, "U+D800"),
        ("FR", "POST", write_offs, cus, DEEP, *bad, "too deeply"),
        ("FR", "POST", write_offs, cus, w(port="CDG\u0001"), *bad, "'port' contains the character U+0001"),
        ("FR", "POST", write_offs, cus, w(officer="J.\u0000Martin"), *bad, "U+0000"),
        ("FR", "POST", write_offs, cus, w(transport_document="AWB\ufffe"), *bad, "U+FFFE"),
        ("FR", "POST", write_offs, cus, w(office="FR\u0000CDG"), *bad, "U+0000"),
        ("FR", "POST", write_offs, cus, w(office="FR  CDG"), *bad, "two spaces"),
        ("FR", "POST", write_offs, cus, w(date=5), *bad, "not a number"),
        ("FR", "POST", write_offs, cus, w(date="2026-11-23"), *bad, "a date alone is not enough"),
        ("FR", "POST", write_offs, cus, w(date="0001-01-01T00:00:00+12:00"), *bad, "outside years 1 to 9999"),
        ("FR", "POST", write_offs, cus, w(declared={"exporter_country": ["CH"]}), *bad, "declared.exporter_country"),
        ("FR", "POST", write_offs, cus, w(declared={"importer_country": "F\u0000R"}), *bad, "U+0000"),
        ("FR", "POST", write_offs, cdg, w(office="FRORY"), 403, "FORBIDDEN", "FRORY"),
        ("FR", "POST", reversal, cus, DEEP, *bad, "too deeply"),
        ("FR", "POST", reversal, cus, b'{"reason": "entered twice\\u0001"}', *bad, "U+0001"),
        ("FR", "POST", reversal, cus, b'{"reason": 5}', *bad, '{"reason": "entered twice"}'),
        ("FR", "POST", reversal, {**CUSTOMS, "Content-Type": "text/plain"}, b"twice", 415, "UNSUPPORTED_MEDIA_TYPE", "reversal"),
        ("CH", "POST", f"/v1/permits/CH/{NUMBER}/cancel", {**gw.headers("CH"), "Content-Type": "text/plain"}, b"stolen", 415,
         "UNSUPPORTED_MEDIA_TYPE", "cancellation as application/json, not text/plain"),
        ("CH", "POST", "/v1/messages/retry", {**_ops(gw), "Content-Type": "application/xml"}, b"<a/>", 415,
         "UNSUPPORTED_MEDIA_TYPE", "retry selection"),
    ])  # fmt: skip


async def test_hostile_idempotency_keys_are_refused_before_anything_is_stored(gw):
    permit = make_permit(random.Random(8), issuer="CH", importer_country="FR", number="CH26-000778")
    body = permit_to_json(permit)
    ma = {**gw.headers("CH"), **JSON}
    words = "printable ASCII"
    await _refused(gw, [
        ("CH", "POST", "/v1/permits", {**ma, "Idempotency-Key": "\udcff\udcfe"}, body, 400, "JSON_MALFORMED", words),  # bytes FF FE
        ("CH", "POST", "/v1/permits", {**ma, "Idempotency-Key": "cl\u00e9"}, body, 400, "JSON_MALFORMED", words),
        ("CH", "POST", "/v1/permits", {**ma, "Idempotency-Key": "k" * 201}, body, 400, "JSON_MALFORMED", words),
    ])  # fmt: skip
    assert await gw.store("CH").get_permit_versions("CH", permit.number) == []
    status, accepted = await send(gw.url("CH"), "POST", "/v1/permits", headers={**ma, "Idempotency-Key": "ch-ecites 2026/0001"}, body=body)
    assert status == 202, accepted


@pytest.mark.parametrize(
    ("issued", "valid_from", "valid_until", "status", "code", "received"),
    [
        ("9999-12-31T23:59:00-12:00", "9999-12-31T23:59:00-12:00", "9999-12-31T23:59:00-12:00", 400, "JSON_MALFORMED", None),  # year 10000 in UTC
        ("0001-01-01T00:00:00+12:00", "0001-01-01T00:00:00+12:00", "0001-02-01T00:00:00+12:00", 400, "JSON_MALFORMED", None),  # year 0 in UTC
        ("9999-07-01T00:00:00-05:00", "9999-07-01T00:00:00-05:00", "9999-12-31T00:00:00-05:00", 422, "ISSUED_IN_FUTURE", 422),  # 6 months on is year 10000
        ("9999-12-31T10:00:00+05:00", "9999-12-31T10:00:00+05:00", "9999-12-31T23:59:00+00:00", 422, "ISSUED_IN_FUTURE", 422),
        ("0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00+00:00", "0001-03-01T00:00:00+00:00", 422, "PERMIT_EXPIRED", 200),
    ],
)
async def test_dates_at_the_ends_of_the_calendar_are_answered_not_crashed_on(gw, issued, valid_from, valid_until, status, code, received):
    permit = make_permit(random.Random(9), issuer="CH", importer_country="FR", number="CH26-000779")
    data = json.loads(permit_to_json(permit))
    data.update(issue_date=issued, valid_from=valid_from, valid_until=valid_until)
    got, answer = await send(gw.url("CH"), "POST", "/v1/permits", headers={**gw.headers("CH"), **JSON}, body=json.dumps(data).encode())
    assert got == status, answer
    if status == 400:
        assert answer["code"] == "JSON_MALFORMED" and "outside years 1 to 9999 in UTC" in answer["message"]
        return
    assert answer["code"] == "PERMIT_INVALID" and code in {p["code"] for p in answer["context"]["problems"]}, answer
    assert await gw.store("CH").get_permit_versions("CH", permit.number) == []
    # The receiver judges the same dates at the message's CreatedAt (here the issue date, never
    # later than now): the permit from year 1 was valid then and is stored, customs calls it
    # EXPIRED; the one dated in year 9999 is dated after now and refused.
    dated = permit_from_json(json.dumps(data).encode())
    got, _ = await send_as_issuer(gw, dated, receiver="FR", created_at=dated.issue_date)
    assert got == received
    if received == 200:
        got, v = await send(gw.url("FR"), "GET", "/v1/verifications/CH/CH26-000779?office=FRCDG", headers=CUSTOMS)
        assert got == 200 and v["verdict"] == "EXPIRED", v
    else:
        assert await gw.store("FR").get_permit_versions("CH", permit.number) == []


async def test_control_characters_in_a_permit_s_text_are_named_field_by_field_before_any_xml_is_built(gw):
    permit = make_permit(random.Random(10), issuer="CH", importer_country="FR", number="CH26-000780", items=2)
    data = json.loads(permit_to_json(permit))
    data["exporter"]["name"] = "Reptile\u0007 Leather SA"
    data["importer"]["address"]["street"] = "8 rue du Faubourg\u0000"
    data["items"][1]["description"] = "Skins\u001b"
    data["items"][0]["marks"] = ["ZW 25 004411", "ZW\ufffe 25"]
    data["special_conditions"] = ["Labels\u000c on each tin."]
    before = await State.of(gw)
    got, answer = await send(gw.url("CH"), "POST", "/v1/permits", headers={**gw.headers("CH"), **JSON}, body=json.dumps(data).encode())
    assert got == 422 and answer["code"] == "PERMIT_INVALID", answer
    assert "cannot be written" not in answer["message"]
    found = {p["path"]: p["message"] for p in answer["context"]["problems"] if p["code"] == "TEXT_INVALID"}
    assert sorted(found) == ["exporter.name", "importer.address.street", "items[0].marks[1]", "items[1].description", "special_conditions[0]"]
    assert found["exporter.name"] == "Box 4 (exporter): the name contains the character U+0007, which XML documents cannot carry."
    assert "U+FFFE" in found["items[0].marks[1]"] and "U+0000" in found["importer.address.street"]
    assert await State.of(gw) == before
    assert await gw.store("CH").get_permit_versions("CH", permit.number) == []
