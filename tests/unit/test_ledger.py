"""Pure ledger rules and verdicts: balances, over-draw refused as a whole, idempotency, reversal,
and every verification verdict with its precedence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import ledger
from domain.errors import EpixError, ErrorCode
from domain.ledger import Balance, DrawLine, HeldWriteOff
from domain.risk import CHANNELS, DEFAULT_WEIGHTS, Assessment, Reason
from gateway.customs.verification import Facts, Verdict, judge
from tests.strategies import permits

D = Decimal
PERMITTED = {"A": (D("10"), "NAR"), "B": (D("2.5"), "KGM")}
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def _balances(used=None):
    return ledger.balances_of(PERMITTED, used or {})


def test_plan_takes_from_the_balance():
    plan = ledger.plan_write_off("D1", [DrawLine("A", D("4")), DrawLine("B", D("2.5"))], _balances(), {})
    assert [b.remaining for b in plan.balances] == [D("6"), D("0")]
    assert not plan.replayed and plan.balances[1].exhausted


def test_over_draw_of_one_line_refuses_the_whole_declaration():
    with pytest.raises(EpixError) as e:
        ledger.plan_write_off("D1", [DrawLine("A", D("1")), DrawLine("B", D("2.6"))], _balances(), {})
    assert e.value.code is ErrorCode.QUANTITY_EXCEEDED and e.value.status == 409
    assert e.value.context["lines"] == [{"item": "B", "requested": "2.6", "remaining": "2.5", "unit": "KGM"}]


def test_same_declaration_and_line_is_a_retry_or_a_conflict():
    held = {"A": HeldWriteOff("A", D("4"), reversed=False)}
    plan = ledger.plan_write_off("D1", [DrawLine("A", D("4"))], _balances({"A": D("4")}), held)
    assert plan.replayed and plan.balances[0].remaining == D("6")
    with pytest.raises(EpixError) as e:
        ledger.plan_write_off("D1", [DrawLine("A", D("5"))], _balances({"A": D("4")}), held)
    assert e.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    with pytest.raises(EpixError) as e:
        ledger.plan_write_off("D1", [DrawLine("A", D("4"))], _balances(), {"A": HeldWriteOff("A", D("4"), reversed=True)})
    assert e.value.code is ErrorCode.IDEMPOTENCY_CONFLICT


def test_reversal_and_issuer_records():
    after = ledger.give_back(_balances({"A": D("7")}), {"A": D("7")})
    assert after[0].remaining == D("10")
    # The issuer records what customs reports, even beyond the permit.
    over = ledger.record_actual(_balances({"A": D("9")}), [DrawLine("A", D("3"))])
    assert over[0].remaining == D("-2")


@pytest.mark.parametrize(
    "lines, code",
    [
        ([], ErrorCode.JSON_MALFORMED),
        ([DrawLine("A", D(1)), DrawLine("A", D(1))], ErrorCode.JSON_MALFORMED),
        ([DrawLine("Z", D(1))], ErrorCode.CONFLICT),
        ([DrawLine("A", D(1), "KGM")], ErrorCode.CONFLICT),
    ],
)
def test_lines_must_be_the_permits(lines, code):
    with pytest.raises(EpixError) as e:
        ledger.check_lines(lines, PERMITTED)
    assert e.value.code is code


@pytest.mark.parametrize("raw", ["0", "-1", "NaN", "Infinity", "1e400", "0.0000001", True, 1.5, None, "x"])
def test_bad_quantities(raw):
    with pytest.raises(EpixError) as e:
        ledger.parse_quantity(raw, "q")
    assert e.value.code is ErrorCode.JSON_MALFORMED


@given(st.lists(st.integers(min_value=1, max_value=5), max_size=30))
def test_a_sequence_of_write_offs_never_goes_below_zero(draws):
    balances = _balances()
    for i, q in enumerate(draws):
        try:
            balances = ledger.plan_write_off(f"D{i}", [DrawLine("A", D(q))], balances, {}).balances
        except EpixError as e:
            assert e.code is ErrorCode.QUANTITY_EXCEEDED
    assert balances[0].remaining >= 0
    assert balances[0].used == D(sum(q for q in draws)) or balances[0].used <= D(10)


def _facts(**kw):
    base = dict(
        issuer="CH", number="N1", found=True, stamp_on_permit="123", valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=10), now=NOW, balances=(Balance("A", "NAR", D(10), D(0)),),
    )  # fmt: skip
    return Facts(**{**base, **kw})


@pytest.mark.parametrize(
    "facts, verdict",
    [
        (_facts(), Verdict.VALID),
        (_facts(stamp_given="123"), Verdict.VALID),
        (_facts(found=False), Verdict.NOT_FOUND),
        (_facts(addressed=False), Verdict.NOT_ADDRESSED_TO_YOU),
        (_facts(signature_error="digest"), Verdict.SIGNATURE_INVALID),
        (_facts(stamp_given="999"), Verdict.STAMP_MISMATCH),
        (_facts(status="CANCELLED"), Verdict.CANCELLED),
        (_facts(status="REPLACED", replaced_by="N2"), Verdict.REPLACED),
        (_facts(now=NOW - timedelta(days=2)), Verdict.NOT_YET_VALID),
        (_facts(now=NOW + timedelta(days=11)), Verdict.EXPIRED),
        (_facts(balances=(Balance("A", "NAR", D(10), D(10)),)), Verdict.EXHAUSTED),
    ],
)
def test_every_verdict(facts, verdict):
    got, reasons = judge(facts)
    assert got is verdict and reasons


ZURICH = timezone(timedelta(hours=2))
LAST_DAY_NOON = datetime(2026, 7, 5, 12, 3, 52, tzinfo=ZURICH)  # an EPIX EndDateTime: a time of day


@pytest.mark.parametrize(
    "now, verdict",
    [
        (datetime(2026, 7, 5, 12, 3, 53, tzinfo=ZURICH), Verdict.VALID),  # after the time, on the last day
        (datetime(2026, 7, 5, 21, 59, 59, tzinfo=UTC), Verdict.VALID),  # 23:59:59 in the permit's offset
        (datetime(2026, 7, 5, 22, 0, 0, tzinfo=UTC), Verdict.EXPIRED),  # the next day there
        (datetime(2026, 7, 5, 23, 0, 0, tzinfo=timezone(timedelta(hours=-5))), Verdict.EXPIRED),  # 6 July in Zurich
    ],
)
def test_a_permit_is_valid_through_its_last_day_in_its_own_offset(now, verdict):
    # As the submission rules read Box 2 (domain.validity): the gateway never accepts a permit as
    # valid today and tells customs the same day that it has expired.
    got, reasons = judge(_facts(valid_from=LAST_DAY_NOON - timedelta(days=30), valid_until=LAST_DAY_NOON, now=now))
    assert got is verdict, reasons
    if verdict is Verdict.EXPIRED:
        assert "last day of validity was 2026-07-05" in reasons[0]


@pytest.mark.parametrize(
    "now, verdict",
    [
        (datetime(2026, 6, 5, 0, 0, 1, tzinfo=ZURICH), Verdict.VALID),  # the first day, before the time on it
        (datetime(2026, 6, 4, 21, 59, 59, tzinfo=UTC), Verdict.NOT_YET_VALID),  # still 4 June in Zurich
    ],
)
def test_a_permit_is_valid_from_the_start_of_its_first_day(now, verdict):
    got, _ = judge(_facts(valid_from=datetime(2026, 6, 5, 15, 0, tzinfo=ZURICH), valid_until=LAST_DAY_NOON, now=now))
    assert got is verdict


def test_precedence_and_all_reasons_are_given():
    verdict, reasons = judge(_facts(status="CANCELLED", now=NOW + timedelta(days=11), stamp_given="999"))
    assert verdict is Verdict.STAMP_MISMATCH and len(reasons) == 3
    assert "cancelled" in reasons[1] and "expired" in reasons[2]
    # A partly used-up permit is still VALID, and says which line is empty.
    verdict, reasons = judge(_facts(balances=(Balance("A", "NAR", D(1), D(1)), Balance("B", "NAR", D(1), D(0)))))
    assert verdict is Verdict.VALID and any("Line(s) A" in r for r in reasons)


# --- a permit's check answers as the permit itself would -------------------------------------------


def _record(permit):
    import hashlib

    from adapters.permit_json import permit_to_json
    from domain.messages import Direction
    from gateway.store.base import PermitRecord

    xml = b"<CITESEPermit/>"
    return PermitRecord(
        issuer=permit.issuing_country, number=permit.number, version=2, direction=Direction.INBOUND, status="REPLACED",
        permit_json=permit_to_json(permit), signed_xml=xml, digest=hashlib.sha256(xml).hexdigest(), sender="CH",
        replaces=None, replaced_by="CH26-000099", created_at=NOW,
    )  # fmt: skip


@given(permit=permits(), used=st.lists(st.decimals(min_value=0, max_value=1000, places=2), min_size=5, max_size=5),
       first=st.booleans(), days=st.integers(-400, 400))  # fmt: skip
def test_the_check_shows_and_scores_the_permit_as_the_permit_itself(permit, used, first, days):
    import json

    from domain.risk import RiskContext, RiskRules, assess
    from gateway.customs.checks import CheckFacts, make_check, permit_json
    from gateway.customs.service import Held, SignatureCheck, permit_summary

    record = _record(permit)
    signature = SignatureCheck(False, None, None, None, 'The "digest" does not match.', "DIGEST_MISMATCH")
    check = make_check(record, permit, signature, NOW)
    facts = CheckFacts.of(check)
    spent = {item.id: q for item, q in zip(permit.items, used)}
    balances = facts.balances(spent)
    assert balances == ledger.balances_of(ledger.permitted_lines(permit), spent)
    assert json.loads(permit_json(check, facts, balances)) == permit_summary(Held(record, permit), balances)
    assert json.loads(facts.signer) == signature.view()
    assert (facts.valid_from, facts.valid_until) == (permit.valid_from, permit.valid_until)
    assert facts.countries == (permit.exporter.address.country, permit.importer.address.country, permit.issuing_country)
    rules = RiskRules(species_of_concern=frozenset(i.scientific_name for i in permit.items[:1]), parties_of_concern=frozenset({"KE"}), random_rate=0.3)
    context = RiskContext(today=permit.valid_until - timedelta(days=days), balances=balances, first_shipment=first)
    assert assess(facts.risk, context, rules, key="k") == assess(permit, context, rules, key="k")


@given(
    reasons=st.lists(st.tuples(st.sampled_from(sorted(DEFAULT_WEIGHTS)), st.integers(0, 100), st.text()), max_size=4),
    selected=st.booleans(), channel=st.sampled_from(CHANNELS),
)  # fmt: skip
def test_an_assessment_is_written_as_its_dict_says(reasons, selected, channel):
    import json

    from gateway.customs.service import assessment_json

    a = Assessment(sum(points for _, points, _ in reasons), channel, tuple(Reason(*r) for r in reasons), selected, 0.25)
    assert json.loads(assessment_json(a)) == a.to_dict()


def test_a_check_in_another_layout_is_made_again():
    from gateway.customs.checks import CheckFacts, make_check
    from gateway.customs.service import SignatureCheck
    from simulators.samples import make_permit
    import random

    permit = make_permit(random.Random(3), issuer="CH", importer_country="FR")
    check = make_check(_record(permit), permit, SignatureCheck(True, "CH", "CN=CH", "1", None, None), NOW)
    assert CheckFacts.of(check) is not None
    assert CheckFacts.of(check._replace(facts=check.facts.replace('"layout":2', '"layout":1'))) is None


# --- the declaration reference of an EPIX ConfirmQuantities that gives none -----------------------

WHEN = datetime(2026, 11, 23, 10, 15, 30, tzinfo=UTC)


def test_a_confirmation_without_reference_keeps_the_short_form():
    assert ledger.fallback_declaration("CH26-200002", WHEN) == "EPIX-CH26-200002-20261123101530"


@pytest.mark.parametrize("number", ["X" * 64, "KWS/CITES/2026/" + "0" * 49, "21 CH " + "1" * 58, "Ö" * 64, "X" * 44])
def test_a_long_number_gets_a_reference_that_fits_the_rule_and_is_the_same_every_time(number):
    ref = ledger.fallback_declaration(number, WHEN)
    assert ledger.declaration_problems(ref) == [] and len(ref) <= ledger.MAX_DECLARATION
    assert ref == ledger.fallback_declaration(number, WHEN)  # a retry writes off nothing twice
    assert ref.startswith("EPIX-" + number[:10]) and ref.endswith("-20261123101530")
    # Another date, another permit with the same first characters: another declaration.
    assert ref != ledger.fallback_declaration(number, WHEN + timedelta(seconds=1))
    assert ref != ledger.fallback_declaration(number[:-1] + "Y", WHEN)


def test_the_transport_document_is_the_reference_when_it_can_be_one():
    assert ledger.fallback_declaration("CH26-1", WHEN, "AWB 057-12345675") == "AWB 057-12345675"
    for unusable in ("AWB  057-1", "A" * 65, " AWB", ""):
        ref = ledger.fallback_declaration("CH26-1", WHEN, unusable)
        assert ref == "EPIX-CH26-1-20261123101530", unusable


def test_a_number_no_permit_can_have_still_gets_a_reference_that_fits():
    ref = ledger.fallback_declaration("CH26\u200b-1  x" * 8, WHEN)
    assert ledger.declaration_problems(ref) == [] and ref.startswith("EPIX-") and ref.endswith("-20261123101530")
