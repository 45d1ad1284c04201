"""The customs single window end to end, on both stores: CH issues to FR, FR's customs verify
and write off, the endorsement travels back to CH, whose record shows actual quantities."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from adapters.exchange_xml import exchange_schema
from adapters.ns import EXCHANGE
from domain.messages import Action, MessageStatus
from gateway.store.base import MessageFilter
from gateway.store.sqlite import SqliteStore
from tests.e2e.conftest import FINAL, customs_permit, send_as_issuer

def _declaration(ref: str, quantities: dict[str, str], **extra) -> dict:
    return {
        "declaration": ref,
        "office": "FRCDG",
        "date": datetime.now(timezone.utc).isoformat(),
        "port": "Paris-Charles de Gaulle",
        "transport_document": "AWB 057-12345675",
        "lines": [{"item": i, "quantity": q} for i, q in quantities.items()],
        **extra,
    }


async def _wait(predicate, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_verdicts_for_a_delivered_permit(customs):
    permit = customs_permit("CH26-100001")
    await customs.deliver(permit)
    status, v = await customs.verify("FR", "CH", permit.number, stamp=permit.security_stamp)
    assert status == 200 and v["verdict"] == "VALID", v
    assert v["signer"]["verified"] and v["signer"]["party"] == "CH"
    assert [line["item"] for line in v["permit"]["lines"]] == ["A", "B"]
    assert v["permit"]["lines"][0]["remaining"] == format(permit.items[0].quantity, "f")
    assert "security_stamp" not in json.dumps(v["permit"])  # the stamp is checked, never told
    assert v["risk"]["channel"] in ("green", "yellow", "red") and isinstance(v["risk"]["reasons"], list)

    status, v = await customs.verify("FR", "CH", permit.number, stamp="0000000000")
    assert v["verdict"] == "STAMP_MISMATCH"
    status, v = await customs.verify("FR", "CH", "CH26-FORGED")
    assert status == 200 and v["verdict"] == "NOT_FOUND" and v["permit"] is None
    # A KE customs token asking FR about a CH->FR permit learns nothing about it.
    status, v = await customs.verify("FR", "CH", permit.number, token="ke-customs")
    assert v["verdict"] == "NOT_ADDRESSED_TO_YOU" and v["permit"] is None and v["signer"] is None
    # An MA token is not a customs client.
    status, err = await customs.verify("FR", "CH", permit.number, token="x")
    assert status == 401
    async with customs.http.get(f"{customs.url('FR')}/v1/verifications/CH/{permit.number}", headers=customs.headers("FR")) as resp:
        assert resp.status == 403 and (await resp.json())["code"] == "FORBIDDEN"

    # Every verification is in the audit history, newest first.
    status, h = await customs.call("FR", "GET", f"/v1/verifications/CH/{permit.number}/history", token="fr-customs")
    assert [x["verdict"] for x in h["verifications"]] == ["NOT_ADDRESSED_TO_YOU", "STAMP_MISMATCH", "VALID"]
    assert h["verifications"][-1]["stamp_given"] and h["verifications"][-1]["client"] == "fr-customs"


async def test_cancelled_replaced_expired_not_yet_valid(customs):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    cancelled, replaced = customs_permit("CH26-100010"), customs_permit("CH26-100011", seed=3)
    expired = customs_permit("CH26-100012", issue_date=now - timedelta(days=200), valid_from=now - timedelta(days=200), valid_until=now - timedelta(days=20))
    future = customs_permit("CH26-100013", valid_from=now + timedelta(days=3), valid_until=now + timedelta(days=100))
    for p in (cancelled, replaced, future):
        await customs.deliver(p)
    # Submitted today it would be refused (PERMIT_EXPIRED): it comes in a message CH's gateway
    # made while it was valid, delivered after it expired, which FR stores for customs to judge.
    status, answer = await send_as_issuer(customs, expired, receiver="FR", created_at=now - timedelta(days=21))
    assert status == 200, answer
    status, body = await customs.post_json("CH", f"/v1/permits/CH/{cancelled.number}/cancel", {"reason": "stolen"})
    assert status == 202
    await customs.wait_status("CH", body["messages"][0]["message_id"], FINAL)
    await customs.deliver(customs_permit("CH26-100014", seed=3, replaces=replaced.number))
    verdicts = {}
    for p in (cancelled, replaced, expired, future):
        _, v = await customs.verify("FR", "CH", p.number)
        verdicts[p.number] = v["verdict"]
    assert verdicts == {
        cancelled.number: "CANCELLED", replaced.number: "REPLACED", expired.number: "EXPIRED", future.number: "NOT_YET_VALID",
    }  # fmt: skip
    # Nothing can be written off a cancelled permit, or outside the permit's validity.
    status, err = await customs.write_off("FR", "CH", cancelled.number, _declaration("D-C", {"A": "1"}))
    assert status == 409 and err["code"] == "CONFLICT"
    status, err = await customs.write_off("FR", "CH", expired.number, _declaration("D-E", {"A": "1"}))
    assert status == 409 and "outside the permit's validity" in err["message"]


async def test_a_declaration_on_the_first_or_last_day_is_within_the_validity(customs):
    # Box 2 counts whole days in the permit's own offset (domain.validity): a declaration made on
    # the morning of the first day, before the time of day the permit happens to carry, or on the
    # evening of the last day, is within it; the day after the last is not, nor a day to come.
    zurich = timezone(timedelta(hours=2))
    first = (datetime.now(zurich) - timedelta(days=10)).replace(hour=15, minute=0, second=0, microsecond=0)
    last = first + timedelta(days=7)  # 15:00 on its last day, three days ago
    permit = customs_permit("CH26-100020", issue_date=first - timedelta(hours=1), valid_from=first, valid_until=last)
    status, answer = await send_as_issuer(customs, permit, receiver="FR", created_at=first + timedelta(hours=1))
    assert status == 200, answer

    def declared(ref: str, at: datetime) -> dict:
        return _declaration(ref, {"A": "1"}, date=at.isoformat())

    status, body = await customs.write_off("FR", "CH", permit.number, declared("D-FIRST", first.replace(hour=8)))
    assert status == 201, body
    status, body = await customs.write_off("FR", "CH", permit.number, declared("D-LAST", last.replace(hour=23, minute=30)))
    assert status == 201, body
    status, err = await customs.write_off("FR", "CH", permit.number, declared("D-AFTER", (last + timedelta(days=1)).replace(hour=0, minute=5)))
    assert status == 409 and "outside the permit's validity" in err["message"]
    status, err = await customs.write_off("FR", "CH", permit.number, declared("D-SOON", datetime.now(zurich) + timedelta(days=2)))
    assert (status, err["code"]) == (400, "JSON_MALFORMED") and "still to come" in err["message"], err
    _, v = await customs.verify("FR", "CH", permit.number)
    assert [line["used"] for line in v["permit"]["lines"]][0] == "2"  # the two within, nothing else


async def _tamper(customs, party: str, issuer: str, number: str) -> None:
    """Change one byte of the stored signed permit, as a corrupted or doctored database would."""
    store = customs.store(party)
    if isinstance(store, SqliteStore):
        conn = sqlite3.connect(store.path)
        with conn:
            (xml,) = conn.execute("SELECT signed_xml FROM permits WHERE issuer = ? AND number = ?", (issuer, number)).fetchone()
            conn.execute("UPDATE permits SET signed_xml = ? WHERE issuer = ? AND number = ?", (xml.replace(b"Market Street", b"Market Streat"), issuer, number))
        conn.close()
    else:
        await store.pool.execute(
            "UPDATE permits SET signed_xml = convert_to(replace(convert_from(signed_xml, 'UTF8'), 'Market Street', 'Market Streat'), 'UTF8') "
            "WHERE issuer = $1 AND number = $2", issuer, number,
        )  # fmt: skip


async def test_signature_invalid_when_the_stored_permit_was_changed(customs):
    permit = customs_permit("CH26-100020")
    await customs.deliver(permit)
    _, v = await customs.verify("FR", "CH", permit.number)
    assert v["verdict"] == "VALID"
    await _tamper(customs, "FR", "CH", permit.number)
    _, v = await customs.verify("FR", "CH", permit.number)
    assert v["verdict"] == "SIGNATURE_INVALID" and v["signer"]["verified"] is False
    assert v["signer"]["error"]["code"] == "DIGEST_MISMATCH"
    status, err = await customs.write_off("FR", "CH", permit.number, _declaration("D-S", {"A": "1"}))
    assert status == 422 and err["code"] == "SIGNATURE_INVALID"


async def test_write_off_feedback_reversal_and_exhaustion(customs):
    permit = customs_permit("CH26-100030")
    await customs.deliver(permit)
    qa, qb = permit.items[0].quantity, permit.items[1].quantity
    half = (qa / 2).quantize(Decimal("1")) if permit.items[0].unit == "NAR" else qa / 2
    status, w = await customs.write_off("FR", "CH", permit.number, _declaration("FR-DEC-1", {"A": str(half)}))
    assert status == 201 and not w["replayed"], w
    assert w["balances"][0]["remaining"] == format(qa - half, "f") and w["balances"][1]["remaining"] == format(qb, "f")
    assert w["risk"]["channel"] in ("green", "yellow", "red") and w["feedback_message_id"]
    # The retry of the same declaration is answered the same way and writes nothing more.
    status, again = await customs.write_off("FR", "CH", permit.number, _declaration("FR-DEC-1", {"A": str(half)}))
    assert status == 200 and again["replayed"] and again["balances"] == w["balances"] and again["feedback_message_id"] is None
    # Over-drawing line B refuses the whole declaration (line A too).
    status, err = await customs.write_off("FR", "CH", permit.number, _declaration("FR-DEC-2", {"A": "1", "B": str(qb + 1)}))
    assert status == 409 and err["code"] == "QUANTITY_EXCEEDED" and err["context"]["lines"][0]["item"] == "B"
    _, v = await customs.verify("FR", "CH", permit.number)
    assert [line["remaining"] for line in v["permit"]["lines"]] == [format(qa - half, "f"), format(qb, "f")]

    # The endorsement reached CH, whose record shows actual against permitted.
    sent = await customs.wait_status("FR", w["feedback_message_id"], FINAL)
    assert sent.status is MessageStatus.ACKNOWLEDGED and sent.action is Action.ENDORSE
    status, q = await customs.call("CH", "GET", f"/v1/permits/CH/{permit.number}/quantities", token="ch-customs")
    assert status == 200, q
    assert q["lines"][0]["actual"] == format(half, "f") and q["lines"][0]["permitted"] == format(qa, "f")
    assert q["write_offs"][0]["declaration"] == "FR-DEC-1" and q["write_offs"][0]["origin"] == "endorsement"
    # CH's MA system sees the same through its own token.
    async with customs.http.get(f"{customs.url('CH')}/v1/permits/CH/{permit.number}/quantities", headers=customs.headers("CH")) as resp:
        assert resp.status == 200 and (await resp.json())["lines"][0]["actual"] == format(half, "f")

    # Reversal gives the quantity back, here and at the issuer.
    status, r = await customs.call("FR", "POST", f"/v1/permits/CH/{permit.number}/write-offs/FR-DEC-1/reversal", token="fr-customs", body={"reason": "declaration invalidated"})
    assert status == 200 and r["reversed"] == [{"item": "A", "quantity": format(half, "f")}]
    assert r["balances"][0]["remaining"] == format(qa, "f")
    await customs.wait_status("FR", r["feedback_message_id"], FINAL)
    status, q = await customs.call("CH", "GET", f"/v1/permits/CH/{permit.number}/quantities", token="ch-customs")
    assert q["lines"][0]["actual"] == "0" and q["write_offs"][0]["reversed_at"] is not None

    # Everything written off: EXHAUSTED.
    status, w = await customs.write_off("FR", "CH", permit.number, _declaration("FR-DEC-3", {"A": str(qa), "B": str(qb)}))
    assert status == 201
    _, v = await customs.verify("FR", "CH", permit.number)
    assert v["verdict"] == "EXHAUSTED" and all(line["remaining"] == "0" for line in v["permit"]["lines"])
    await customs.wait_status("FR", w["feedback_message_id"], FINAL)
    status, q = await customs.call("CH", "GET", f"/v1/permits/CH/{permit.number}/quantities", token="ch-customs")
    assert [line["remaining"] for line in q["lines"]] == ["0", "0"]


async def test_customs_tokens_outside_their_scope_are_refused(customs):
    permit = customs_permit("CH26-100040")
    await customs.deliver(permit)
    status, err = await customs.write_off("FR", "CH", permit.number, _declaration("K-1", {"A": "1"}), token="ke-customs")
    assert status == 403 and err["code"] == "FORBIDDEN"
    status, err = await customs.write_off("FR", "CH", permit.number, {**_declaration("O-1", {"A": "1"}), "office": "FRORY"}, token="fr-cdg")
    assert status == 403 and "FRORY" in err["message"]
    async with customs.http.post(
        f"{customs.url('FR')}/v1/permits/CH/{permit.number}/write-offs", json=_declaration("M-1", {"A": "1"}), headers=customs.headers("FR")
    ) as resp:
        assert resp.status == 403
    # The office token writes off as its own office, named or not.
    body = _declaration("O-2", {"A": "1"})
    del body["office"]
    status, w = await customs.write_off("FR", "CH", permit.number, body, token="fr-cdg")
    assert status == 201, w
    # Bad input is refused with a sentence.
    for bad, code in (
        ({"lines": []}, "JSON_MALFORMED"),
        (_declaration("B-1", {"Z": "1"}), "CONFLICT"),
        (_declaration("B-2", {"A": "-3"}), "JSON_MALFORMED"),
        (_declaration("B-3", {"A": "abc"}), "JSON_MALFORMED"),
        ({**_declaration("B-4", {"A": "1"}), "date": "yesterday"}, "JSON_MALFORMED"),
    ):
        status, err = await customs.write_off("FR", "CH", permit.number, bad)
        assert status in (400, 409) and err["code"] == code, (bad, err)


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ("%00", "U+0000"),
        ("FR-DEC-9%0A", "U+000A"),
        ("%E2%80%8BFR-DEC-9", "U+200B"),
        ("D" * 65, "has 65 characters"),
        ("FR-DEC-9%20", "begins or ends with a space"),
        ("FR%20%20DEC-9", "two spaces in a row"),
        ("%2E%2E", "cannot be written in a URL"),
    ],
)
async def test_a_reversal_naming_a_reference_no_write_off_can_have_is_refused_and_changes_nothing(customs, reference, words):
    from yarl import URL

    permit = customs_permit("CH26-100045")
    await customs.deliver(permit)
    status, w = await customs.write_off("FR", "CH", permit.number, _declaration("FR-DEC-9", {"A": "1"}))
    assert status == 201, w
    before = await customs.call("FR", "GET", f"/v1/permits/CH/{permit.number}/quantities", token="fr-customs")
    messages = [m.message_id for m in await customs.store("FR").list_messages(MessageFilter())]  # no new endorsement
    # Sent as written (a client would resolve "%2E%2E" away before sending).
    url = URL(f"{customs.url('FR')}/v1/permits/CH/{permit.number}/write-offs/{reference}/reversal", encoded=True)
    async with customs.http.post(url, json={"reason": "test"}, headers={"Authorization": "Bearer tok-fr-customs"}) as resp:
        status, err = resp.status, await resp.json()
    assert status == 404 and err["code"] == "NOT_FOUND", err
    assert err["message"].startswith("No write-off can have the declaration reference") and words in err["message"]
    assert await customs.call("FR", "GET", f"/v1/permits/CH/{permit.number}/quantities", token="fr-customs") == before
    assert [m.message_id for m in await customs.store("FR").list_messages(MessageFilter())] == messages


@pytest.mark.parametrize(
    ("reference", "words"),
    [("FR-DEC\u0000", "U+0000"), ("FR\u0001DEC", "U+0001"), ("FR  DEC", "two spaces in a row"), ("..", "in a URL"), ("D" * 65, "at most 64")],
)
async def test_a_write_off_with_a_reference_no_reversal_could_name_is_refused(customs, reference, words):
    permit = customs_permit("CH26-100046")
    await customs.deliver(permit)
    reference = reference.encode().decode("unicode_escape")
    status, err = await customs.write_off("FR", "CH", permit.number, _declaration(reference, {"A": "1"}))
    assert status == 400 and err["code"] == "JSON_MALFORMED" and words in err["message"], err
    assert await customs.store("FR").list_write_offs("CH", permit.number) == []


async def test_concurrent_write_offs_over_http_never_overdraw(customs):
    permit = customs_permit("CH26-100050")
    await customs.deliver(permit)
    qb = permit.items[1].quantity
    step = qb / 10
    results = await asyncio.gather(
        *(customs.write_off("FR", "CH", permit.number, _declaration(f"P-{i}", {"B": str(step)})) for i in range(25))
    )
    statuses = sorted(s for s, _ in results)
    assert statuses.count(201) == 10 and statuses.count(409) == 15
    _, v = await customs.verify("FR", "CH", permit.number)
    assert Decimal(v["permit"]["lines"][1]["remaining"]) == 0


async def test_signed_verdict_and_pre_arrival_feed(customs):
    permit = customs_permit("CH26-100060")
    await customs.deliver(permit)
    status, xml = await customs.verify("FR", "CH", permit.number, format="xml")
    assert status == 200
    verified = customs.security("CH").verify(xml, "FR")
    root = verified.signed_root
    assert exchange_schema().validate(root), exchange_schema().error_log
    assert root.findtext(f"{{{EXCHANGE}}}Result") == "VALID" and root.findtext(f"{{{EXCHANGE}}}Signer") == "CH"
    # The permit was pushed to FR's customs as it arrived, with its risk assessment.
    item = await _wait(lambda: _feed_item(customs, permit.number))
    assert item["issuer"] == "CH" and item["permit"]["importer"]["country"] == "FR"
    assert item["risk"]["channel"] in ("green", "yellow", "red") and item["signer"]["party"] == "CH"
    await asyncio.sleep(0.3)
    assert sum(1 for i in customs.feed.items if i["number"] == permit.number and i["message_id"] == item["message_id"]) == 1


async def _feed_item(customs, number):
    found = [i for i in customs.feed.items if i["number"] == number]
    return found[0] if found else None


async def test_annual_report_uses_actual_quantities(customs):
    from gateway.customs.report import annual_rows, to_csv

    permit = customs_permit("CH26-100070")
    await customs.deliver(permit)
    status, w = await customs.write_off("FR", "CH", permit.number, _declaration("R-1", {"A": "1"}))
    assert status == 201
    await customs.wait_status("FR", w["feedback_message_id"], FINAL)
    year = datetime.now(timezone.utc).year
    exports = [r for r in await annual_rows(customs.store("CH"), year, party="CH") if r["permit_number"] == permit.number]
    assert [(r["trade"], r["quantity"], r["quantity_basis"]) for r in exports] == [
        ("export", "1", "actual"), ("export", format(permit.items[1].quantity, "f"), "permitted"),
    ]  # fmt: skip
    assert exports[0]["taxon"] == permit.items[0].scientific_name and exports[0]["importer_country"] == "FR"
    imports = [r for r in await annual_rows(customs.store("FR"), year, party="FR") if r["permit_number"] == permit.number]
    assert {r["trade"] for r in imports} == {"import"}
    text = to_csv(exports)
    assert text.splitlines()[0].startswith("year,trade,appendix,taxon,term,quantity,unit")


async def test_a_withdrawn_signing_certificate_is_caught_at_the_next_start(customs, tmp_path):
    from gateway import cli
    from keys.pki import Algorithm, make_test_ca
    from keys.store import KeyStore

    permit = customs_permit("CH26-100090")
    await customs.deliver(permit)
    assert (await customs.verify("FR", "CH", permit.number))[1]["verdict"] == "VALID"
    # A restart with the same trust keeps the check made when the permit arrived.
    await customs.stop("FR")
    await customs.start("FR")
    status, v = await customs.verify("FR", "CH", permit.number)
    assert (status, v["verdict"]) == (200, "VALID") and v["signer"]["verified"], v
    # FR's operator withdraws the certificate CH signed with, pins another one, and restarts FR:
    # the check made under the old trust is not what the next verification reads.
    other = KeyStore(tmp_path / "other").init_party("CH", Algorithm.RSA2048, ca=make_test_ca("another CA"))
    config = customs.net["FR"].config_path
    text = config.read_text(encoding="utf-8")
    withdrawn = str(customs.net.root / "certs" / "CH.pem")
    assert withdrawn in text
    config.write_text(text.replace(withdrawn, str(other.cert)), encoding="utf-8")
    await customs.stop("FR")
    await customs.start("FR")
    status, v = await customs.verify("FR", "CH", permit.number)
    assert (status, v["verdict"]) == (200, "SIGNATURE_INVALID") and not v["signer"]["verified"], v
    # The operator's own recheck (of one issuer, or all) still runs, and refuses a bad party id.
    assert await asyncio.to_thread(cli.main, ["recheck", "--config", str(config), "--issuer", "CH"]) == 0
    await customs.stop("FR")
    await customs.start("FR")
    status, v = await customs.verify("FR", "CH", permit.number)
    assert (status, v["verdict"]) == (200, "SIGNATURE_INVALID"), v
    assert await asyncio.to_thread(cli.main, ["recheck", "--config", str(config), "--issuer", "c h"]) == 2


async def test_a_signing_certificate_that_ends_later_does_not_unsign_what_it_signed(customs, tmp_path):
    from gateway import cli
    from keys.pki import Algorithm, make_test_ca
    from keys.store import KeyStore

    # CH signs with a certificate that ends in a few seconds, and FR pins it.
    ends = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    short = KeyStore(tmp_path / "short").init_party("CH", Algorithm.RSA2048, ca=make_test_ca("short CA"), not_after=ends)
    await customs.install_certificate("CH", short)
    permit = customs_permit("CH26-100095")
    await customs.deliver(permit)
    assert (await customs.verify("FR", "CH", permit.number))[1]["verdict"] == "VALID"
    await asyncio.sleep(max(0.0, (ends - datetime.now(timezone.utc)).total_seconds()) + 1.1)
    # Ended now, valid when FR received the permit: after a restart (nothing cached) both verdicts
    # still see the signature hold, the JSON one from the check made then, the signed XML one
    # verifying again.
    await customs.stop("FR")
    await customs.start("FR")
    status, v = await customs.verify("FR", "CH", permit.number)
    assert (status, v["verdict"]) == (200, "VALID") and v["signer"]["verified"], v
    status, xml = await customs.verify("FR", "CH", permit.number, format="xml")
    root = customs.security("CH").verify(xml, "FR").signed_root
    assert root.findtext(f"{{{EXCHANGE}}}Result") == "VALID", xml
    # Checked again by hand, the permit still holds.
    config = customs.net["FR"].config_path
    assert await asyncio.to_thread(cli.main, ["recheck", "--config", str(config), "--issuer", "CH"]) == 0
    await customs.stop("FR")
    await customs.start("FR")
    status, v = await customs.verify("FR", "CH", permit.number)
    assert (status, v["verdict"]) == (200, "VALID") and v["signer"]["verified"], v


async def test_a_renewed_signing_key_leaves_the_permits_signed_before_valid(customs):
    from gateway import cli
    from keys.store import load_certificate_pem
    from keys.xmldsig import Verifier

    permit = customs_permit("CH26-100096")
    await customs.deliver(permit)
    before = customs.security("CH").certificate
    # CH's operator renews CH's key (the old certificate is kept in keys/CH/previous/), restarts.
    await customs.stop("CH")
    assert await asyncio.to_thread(cli.main, ["keys", "renew", "--party", "CH", "--dir", str(customs.net["CH"].dir)]) == 0
    await customs.start("CH")
    assert customs.security("CH").certificate.serial_number != before.serial_number
    async with customs.http.get(f"{customs.url('CH')}/exchange/v1/directory") as resp:
        directory = await resp.json()
    assert [load_certificate_pem(p.encode()) for p in directory["previous_certificates_pem"]] == [before]
    # CH's own customs verifies the permit CH signed with the old key afresh (signed XML verdict:
    # nothing cached since the restart), and after a recheck: it still holds, as CH's signature.
    for _ in range(2):
        status, xml = await customs.verify("CH", "CH", permit.number, token="ch-customs", format="xml")
        root = Verifier([customs.security("CH").certificate]).verify(xml, "CH").signed_root  # the verdict: CH's new key
        assert status == 200 and root.findtext(f"{{{EXCHANGE}}}Result") == "VALID", xml
        status, v = await customs.verify("CH", "CH", permit.number, token="ch-customs")
        assert (status, v["verdict"]) == (200, "VALID") and v["signer"]["verified"], v
        assert await asyncio.to_thread(cli.main, ["recheck", "--config", str(customs.net["CH"].config_path)]) == 0
        await customs.stop("CH")
        await customs.start("CH")
