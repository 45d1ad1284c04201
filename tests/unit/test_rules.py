"""The permit rules: each rule refuses (or warns about) what it should and lets the rest through."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings

from domain import rules
from domain.errors import EpixError, ErrorCode
from domain.model import Address, DocumentRef, EndorsedLine, Endorsement, LineItem, Party, Permit
from domain.rules import Problem, Severity, add_months, ensure_valid, errors, has_errors, validate, warnings
from simulators.samples import make_permit
from tests.strategies import permits

CET = timezone(timedelta(hours=1))
ISSUED = datetime(2025, 1, 15, 10, 0, tzinfo=CET)


def party(name: str, country: str | None) -> Party:
    return Party(name=name, address=Address(city="Somewhere", country=country))


def item(id: str = "A", **kw) -> LineItem:
    base = dict(
        id=id,
        scientific_name="Crocodylus niloticus",
        term="SKI",
        appendix="II",
        source="C",
        quantity=Decimal("10"),
        unit="NAR",
    )
    base.update(kw)
    return LineItem(**base)


def permit(**kw) -> Permit:
    base = dict(
        number="CH25-000001",
        type="E",
        authority=party("Federal Food Safety and Veterinary Office", "CH"),
        issue_date=ISSUED,
        valid_from=ISSUED,
        valid_until=datetime(2025, 7, 15, 23, 59, tzinfo=CET),
        purpose="T",
        exporter=party("Reptile Leather SA", "CH"),
        importer=party("Atelier du Cuir", "FR"),
        items=(item("A"), item("B", term="LPS", quantity=Decimal("2.5"), unit="KGM")),
    )
    base.update(kw)
    return Permit(**base)


def codes_of(problems: list[Problem]) -> list[str]:
    return [p.code for p in problems]


def the(problems: list[Problem], code: str) -> Problem:
    found = [p for p in problems if p.code == code]
    assert len(found) == 1, problems
    return found[0]


def test_a_good_permit_has_no_problem():
    assert validate(permit()) == []
    assert validate(permit(), today=date(2025, 3, 1)) == []


# --- required boxes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (dict(number=""), "number"),
        (dict(type=""), "type"),
        (dict(purpose=""), "purpose"),
        (dict(authority=party("", "CH")), "authority.name"),
        (dict(authority=party("MA", None)), "authority.address.country"),
        (dict(exporter=party("", "CH")), "exporter.name"),
        (dict(exporter=party("X", None)), "exporter.address.country"),
        (dict(importer=party("", "FR")), "importer.name"),
        (dict(importer=party("X", "")), "importer.address.country"),
        (dict(items=()), "items"),
        (dict(issue_date=None), "issue_date"),
        (dict(valid_from=None), "valid_from"),
        (dict(valid_until=None), "valid_until"),
        (dict(items=(item(id=""),)), "items[0].id"),
        (dict(items=(item(scientific_name=""),)), "items[0].scientific_name"),
        (dict(items=(item(term=""),)), "items[0].term"),
        (dict(items=(item(appendix=""),)), "items[0].appendix"),
        (dict(items=(item(source=""),)), "items[0].source"),
        (dict(items=(item(quantity=None),)), "items[0].quantity"),
        (dict(items=(item(unit=""),)), "items[0].unit"),
    ],
)
def test_a_missing_required_box_is_an_error(change, path):
    problems = validate(permit(**change))
    p = the(problems, "MISSING_REQUIRED")
    assert p.path == path and p.severity is Severity.ERROR
    assert "missing" in p.message or "no specimens" in p.message


def test_missing_unit_message_tells_what_to_write_for_a_count():
    p = the(validate(permit(items=(item(unit=""),))), "MISSING_REQUIRED")
    assert "NAR" in p.message


# --- box 1: the permit number ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "KWS/CITES/2026/0012",
        "21 CH 012345",
        "FR-2106#9",
        "50%?x=1&y={2}",
        "ÖSTERREICH-2026/Nº 7",
        "中华人民共和国-2026-0001",
        "X" * rules.MAX_NUMBER_LENGTH,
        "...",
    ],
)
def test_a_number_may_hold_any_visible_character(number):
    assert validate(permit(number=number)) == []
    assert rules.number_problems(number) == []


@pytest.mark.parametrize(
    ("number", "words"),
    [
        ("X" * (rules.MAX_NUMBER_LENGTH + 1), "has 65 characters; partners accept at most 64"),
        ("CH\x0126", "U+0001"),
        ("CH26\n001", "U+000A"),
        ("CH26\t001", "U+0009"),
        ("CH26-\u200b001", "U+200B"),  # zero-width space
        ("CH26-\u202e100", "U+202E"),  # right-to-left override
        ("CH26\u00a0001", "U+00A0"),  # no-break space
        (" CH26-001", "begins or ends with a space"),
        ("CH26-001 ", "begins or ends with a space"),
        ("21 CH  012345", "two spaces in a row"),
        (".", "cannot be written in a URL"),
        ("..", "cannot be written in a URL"),
        (26001, "is not text"),
    ],
)
def test_a_number_partners_or_urls_cannot_carry_is_an_error(number, words):
    p = the(validate(permit(number=number)), "PERMIT_NUMBER_INVALID")
    assert p.path == "number" and p.severity is Severity.ERROR
    assert words in p.message and p.message.startswith("Box 1:") and p.message.endswith(".")
    assert [x.code for x in rules.number_problems(number)] == ["PERMIT_NUMBER_INVALID"]


def test_a_blank_number_is_missing_not_invalid():
    assert codes_of(rules.number_problems("  ")) == ["MISSING_REQUIRED"]
    assert codes_of(rules.number_problems(None)) == ["MISSING_REQUIRED"]


def test_a_number_with_several_faults_gets_each_named():
    problems = rules.number_problems(" " + "X\x00" * 40)
    assert codes_of(problems) == ["PERMIT_NUMBER_INVALID"] * 3


@pytest.mark.parametrize(
    ("replaces", "words"),
    [
        ("X" * (rules.MAX_NUMBER_LENGTH + 1), "has 65 characters; partners accept at most 64"),
        ("CH25-\x00001", "U+0000"),
        ("CH25-\u200b001", "U+200B"),
        ("CH25-000001 ", "begins or ends with a space"),
        ("   ", "begins or ends with a space"),
        ("..", "cannot be written in a URL"),
        (25001, "is not text"),
    ],
)
def test_the_number_a_replacement_names_obeys_box_1s_rule(replaces, words):
    p = the(validate(permit(number="CH25-000002", replaces=replaces)), "PERMIT_NUMBER_INVALID")
    assert p.path == "replaces" and p.severity is Severity.ERROR
    assert p.message.startswith("The number of the permit this one replaces") and words in p.message


@pytest.mark.parametrize(
    ("text", "words"),
    [("in error\x00", "U+0000"), ("a\x0bb", "U+000B"), ("\ud800", "U+D800"), ("x\uffff", "U+FFFF"), ("x" * 513, "513 characters"), (5, "must be text")],
)
def test_free_text_xml_cannot_carry_is_named(text, words):
    [sentence] = rules.text_problems(text, "The reason")
    assert sentence.startswith("The reason") and words in sentence and sentence.endswith(".")


def test_free_text_may_hold_line_breaks_tabs_and_any_script():
    assert rules.text_problems("Entered twice.\r\n\tJ. Müller — 税関 😀", "The reason") == []


@pytest.mark.parametrize(
    ("issued", "until"),
    [
        (datetime(9999, 7, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc)),  # 6 months on: year 10000
        (datetime(9999, 12, 31, 10, tzinfo=timezone(timedelta(hours=5))), datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc)),
        (datetime(1, 1, 1, tzinfo=timezone.utc), datetime(1, 3, 1, tzinfo=timezone.utc)),  # a day before: year 0
    ],
)
def test_dates_at_the_ends_of_the_calendar_are_judged_not_crashed_on(issued, until):
    problems = validate(permit(issue_date=issued, valid_from=issued, valid_until=until), today=date(2026, 1, 1))
    assert {p.code for p in problems} <= {"PERMIT_EXPIRED", "PERMIT_NOT_YET_VALID", "ISSUED_IN_FUTURE"}
    problems = validate(permit(issue_date=issued, valid_from=issued, valid_until=until), now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert {p.code for p in problems} <= {"PERMIT_EXPIRED", "PERMIT_NOT_YET_VALID", "ISSUED_IN_FUTURE"}


@pytest.mark.parametrize("replaces", [None, "", "KWS/CITES/2026/0012", "21 CH 012345", "X" * rules.MAX_NUMBER_LENGTH])
def test_a_replacement_may_name_any_number_a_permit_can_have(replaces):
    assert validate(permit(number="CH25-000002", replaces=replaces)) == []


def test_a_permit_cannot_replace_itself():
    p = the(validate(permit(number="CH25-000002", replaces="CH25-000002")), "REPLACES_ITSELF")
    assert p.path == "replaces" and p.severity is Severity.ERROR
    assert "CH25-000002" in p.message and "its own number" in p.message
    # Another number, even one that differs only in case or a space, is another permit.
    assert validate(permit(number="CH25-000002", replaces="ch25-000002")) == []
    assert validate(permit(number="21 CH 012345", replaces="21CH012345")) == []


# --- code lists ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        (dict(type="X"), "UNKNOWN_DOCUMENT_TYPE", "type"),
        (dict(purpose="K"), "UNKNOWN_PURPOSE", "purpose"),
        (dict(items=(item(source="K"),)), "UNKNOWN_SOURCE", "items[0].source"),
        (dict(items=(item(appendix="IV"),)), "UNKNOWN_APPENDIX", "items[0].appendix"),
        (dict(items=(item(term="ZZZ"),)), "UNKNOWN_TERM", "items[0].term"),
        (dict(items=(item(unit="LBS"),)), "UNKNOWN_UNIT", "items[0].unit"),
        (dict(importer=party("X", "UK")), "UNKNOWN_COUNTRY", "importer.address.country"),
        (dict(authority=party("MA", "C1")), "UNKNOWN_COUNTRY", "authority.address.country"),
        (dict(items=(item(origin_country="YU"),)), "UNKNOWN_COUNTRY", "items[0].origin_country"),
        (dict(items=(item(reexport_country="EU"),)), "UNKNOWN_COUNTRY", "items[0].reexport_country"),
    ],
)
def test_an_unknown_code_is_an_error(change, code, path):
    p = the(validate(permit(**change)), code)
    assert p.path == path and p.severity is Severity.ERROR
    assert "not" in p.message


def test_a_lower_case_code_is_refused_with_a_hint():
    problems = validate(permit(purpose="t", importer=party("X", "fr")))
    assert "capitals" in the(problems, "UNKNOWN_PURPOSE").message
    assert "capitals" in the(problems, "UNKNOWN_COUNTRY").message


def test_a_historical_term_is_a_warning_naming_its_replacement():
    problems = validate(permit(items=(item(term="PEA"),)))
    p = the(problems, "HISTORICAL_TERM")
    assert p.severity is Severity.WARNING and p.path == "items[0].term" and "PRL" in p.message
    assert not has_errors(problems)


def test_a_historical_unit_is_a_warning_naming_the_current_unit():
    problems = validate(permit(items=(item(unit="KIL"),)))
    p = the(problems, "HISTORICAL_UNIT")
    assert p.severity is Severity.WARNING and "KGM" in p.message
    assert not has_errors(problems)
    assert the(validate(permit(items=(item(unit="PCS"),))), "HISTORICAL_UNIT").severity is Severity.WARNING


def test_a_user_assigned_country_is_a_warning():
    problems = validate(permit(items=(item(origin_country="XX"),)))
    p = the(problems, "USER_ASSIGNED_COUNTRY")
    assert p.severity is Severity.WARNING and p.path == "items[0].origin_country"
    assert not has_errors(problems)


def test_the_unverified_preferred_unit_is_not_enforced():
    # LIV's preferred unit is NAR in the unverified table; KGM is still accepted without a word.
    assert validate(permit(items=(item(term="LIV", unit="KGM"),))) == []


# --- quantities and quotas ---------------------------------------------------------------------


@pytest.mark.parametrize("qty", [Decimal(0), Decimal("-1"), Decimal("-0.001")])
def test_a_quantity_must_be_positive(qty):
    p = the(validate(permit(items=(item(quantity=qty),))), "QUANTITY_NOT_POSITIVE")
    assert p.path == "items[0].quantity"


@pytest.mark.parametrize("qty", [Decimal("NaN"), Decimal("Infinity"), Decimal("sNaN"), 1.5, "3", True])
def test_a_quantity_must_be_a_finite_decimal(qty):
    p = the(validate(permit(items=(item(quantity=qty),))), "QUANTITY_INVALID")
    assert p.path == "items[0].quantity"


def test_a_small_positive_quantity_and_an_integer_are_fine():
    assert validate(permit(items=(item(quantity=Decimal("0.001")), item("B", quantity=3)))) == []


def test_quota_used_may_not_exceed_the_annual_quota():
    p = the(validate(permit(items=(item(quota_used=Decimal(501), quota_annual=Decimal(500)),))), "QUOTA_EXCEEDED")
    assert p.path == "items[0].quota_used" and "500" in p.message
    assert validate(permit(items=(item(quota_used=Decimal(500), quota_annual=Decimal(500)),))) == []
    assert validate(permit(items=(item(quota_used=Decimal(0), quota_annual=Decimal(0)),))) == []


def test_quota_figures_may_not_be_negative():
    problems = validate(permit(items=(item(quota_used=Decimal(-1), quota_annual=Decimal(-2)),)))
    assert sorted(p.path for p in problems if p.code == "QUOTA_NEGATIVE") == ["items[0].quota_annual", "items[0].quota_used"]
    assert "QUOTA_EXCEEDED" not in codes_of(problems)


def test_half_a_quota_box_is_a_warning():
    p = the(validate(permit(items=(item(quota_annual=Decimal(500)),))), "QUOTA_INCOMPLETE")
    assert p.severity is Severity.WARNING


# --- dates ---------------------------------------------------------------------------------------


def test_validity_may_not_end_before_it_starts():
    p = the(validate(permit(valid_from=ISSUED + timedelta(days=10), valid_until=ISSUED + timedelta(days=5))), "VALIDITY_REVERSED")
    assert p.path == "valid_until"


def test_a_permit_may_not_be_issued_after_its_validity_ends():
    problems = validate(permit(valid_from=ISSUED - timedelta(days=10), valid_until=ISSUED - timedelta(days=2)))
    assert the(problems, "ISSUED_AFTER_EXPIRY").path == "issue_date"


def test_validity_may_start_at_most_a_day_before_issue():
    assert validate(permit(valid_from=ISSUED - timedelta(hours=23))) == []
    p = the(validate(permit(valid_from=ISSUED - timedelta(days=2))), "VALID_FROM_BEFORE_ISSUE")
    assert p.path == "valid_from"


@pytest.mark.parametrize(
    ("kind", "ok_until", "too_long"),
    [
        ("E", date(2025, 7, 15), date(2025, 7, 16)),
        ("R", date(2025, 7, 15), date(2025, 7, 16)),
        ("I", date(2026, 1, 15), date(2026, 1, 16)),
        ("O", date(2026, 1, 15), date(2026, 1, 16)),
    ],
)
def test_validity_is_limited_in_calendar_months_by_type(kind, ok_until, too_long):
    def at(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, 23, 59, tzinfo=CET)

    extra = {}
    if kind == "R":
        extra["items"] = (item(origin_country="ZA", origin_permit=DocumentRef(number="ZA123")),)
    if kind == "I":
        extra.update(items=(item(appendix="I", source="D"),), exporter=party("Farm", "ZA"), importer=party("Zoo", "CH"))
    assert validate(permit(type=kind, valid_until=at(ok_until), **extra)) == []
    p = the(validate(permit(type=kind, valid_until=at(too_long), **extra)), "VALIDITY_TOO_LONG")
    assert p.path == "valid_until" and ok_until.isoformat() in p.message
    assert ("6 months" if kind in "ER" else "12 months") in p.message


def test_validity_is_counted_in_the_issuers_time_zone():
    # 15 July 23:30 in Bern is 16 July in Tokyo: still within 6 months of a 15 January issue.
    tokyo = timezone(timedelta(hours=9))
    assert validate(permit(valid_until=datetime(2025, 7, 16, 6, 30, tzinfo=tokyo))) == []


def test_the_31st_plus_months_ends_on_the_last_day_of_the_shorter_month():
    assert add_months(date(2024, 8, 31), 6) == date(2025, 2, 28)
    assert add_months(date(2023, 8, 31), 6) == date(2024, 2, 29)
    assert add_months(date(2024, 2, 29), 12) == date(2025, 2, 28)
    assert add_months(date(2024, 11, 30), 2) == date(2025, 1, 30)
    issued = datetime(2024, 8, 31, 9, 0, tzinfo=timezone.utc)
    ok = permit(issue_date=issued, valid_from=issued, valid_until=datetime(2025, 2, 28, 12, tzinfo=timezone.utc))
    assert validate(ok) == []
    assert "VALIDITY_TOO_LONG" in codes_of(validate(replace(ok, valid_until=datetime(2025, 3, 1, 12, tzinfo=timezone.utc))))


def test_a_date_without_offset_is_read_as_utc_with_a_warning():
    naive = ISSUED.replace(tzinfo=None)
    problems = validate(permit(issue_date=naive, valid_from=naive))
    assert codes_of(problems) == ["DATE_WITHOUT_OFFSET", "DATE_WITHOUT_OFFSET"]
    assert all(p.severity is Severity.WARNING for p in problems)


def test_a_date_that_is_not_a_datetime_is_an_error():
    p = the(validate(permit(issue_date="2025-01-15")), "INVALID_DATE")
    assert p.path == "issue_date"


def test_expiry_is_checked_only_when_today_is_given():
    expired = permit()
    assert validate(expired) == []
    assert validate(expired, today=date(2025, 7, 15)) == []  # the last day still counts
    p = the(validate(expired, today=date(2025, 7, 16)), "PERMIT_EXPIRED")
    assert p.severity is Severity.ERROR and p.path == "valid_until"


def test_not_yet_valid_is_a_warning():
    later = permit(valid_from=ISSUED + timedelta(days=30))
    p = the(validate(later, today=date(2025, 1, 20)), "PERMIT_NOT_YET_VALID")
    assert p.severity is Severity.WARNING
    assert validate(later, today=date(2025, 2, 14)) == []


# --- parties --------------------------------------------------------------------------------------


def test_importer_and_exporter_must_be_in_different_countries():
    p = the(validate(permit(importer=party("Shop", "CH"))), "SAME_COUNTRY")
    assert p.severity is Severity.ERROR and p.path == "importer.address.country"
    # A document of type O (e.g. a certificate of ownership) may name one country only.
    assert "SAME_COUNTRY" not in codes_of(validate(permit(type="O", importer=party("Shop", "CH"))))


@pytest.mark.parametrize("kind", ["E", "R"])
def test_an_exporter_outside_the_issuing_country_is_a_warning(kind):
    origin = {"items": (item(origin_country="ZA", origin_permit=DocumentRef(number="ZA1")),)} if kind == "R" else {}
    problems = validate(permit(type=kind, exporter=party("Visiting hunter", "US"), **origin))
    p = the(problems, "EXPORTER_NOT_IN_ISSUING_COUNTRY")
    assert p.severity is Severity.WARNING and p.path == "exporter.address.country"
    assert not has_errors(problems)


def test_an_importer_outside_the_issuing_country_of_an_import_permit_is_a_warning():
    imp = permit(type="I", items=(item(appendix="I", source="D"),), exporter=party("Farm", "ZA"), importer=party("Zoo", "DE"))
    p = the(validate(imp), "IMPORTER_NOT_IN_ISSUING_COUNTRY")
    assert p.severity is Severity.WARNING
    assert validate(replace(imp, importer=party("Zoo", "CH"))) == []


# --- species rules --------------------------------------------------------------------------------


def test_wild_appendix_i_specimens_are_not_for_commercial_trade():
    wild_i = item(appendix="I", source="W", term="LIV")
    p = the(validate(permit(items=(wild_i,))), "APPENDIX_I_COMMERCIAL_WILD")
    assert p.severity is Severity.ERROR and p.path == "items[0].source"
    assert validate(permit(purpose="S", items=(wild_i,))) == []  # scientific: allowed
    assert validate(permit(items=(replace(wild_i, source="D"),))) == []  # registered captive breeding
    assert validate(permit(items=(replace(wild_i, appendix="II"),))) == []


def test_an_import_permit_for_a_non_appendix_i_item_is_a_warning():
    imp = permit(type="I", exporter=party("Farm", "ZA"), importer=party("Zoo", "CH"), items=(item(appendix="II"),))
    p = the(validate(imp), "IMPORT_PERMIT_NOT_APPENDIX_I")
    assert p.severity is Severity.WARNING and p.path == "items[0].appendix"
    assert validate(replace(imp, items=(item(appendix="I", source="D"),))) == []


def test_a_reexport_needs_origin_or_last_reexport_on_every_item():
    good = item("A", origin_country="ZA", origin_permit=DocumentRef(number="ZA123"))
    via_12a = item("B", reexport_country="SG", reexport_permit=DocumentRef(number="SG9"))
    assert validate(permit(type="R", items=(good, via_12a))) == []
    bare = item("C")
    no_number = item("D", origin_country="ZA", origin_permit=DocumentRef(issue_date=ISSUED))
    problems = validate(permit(type="R", items=(good, bare, no_number)))
    found = [p for p in problems if p.code == "REEXPORT_ORIGIN_MISSING"]
    assert [p.path for p in found] == ["items[1].origin_country", "items[2].origin_permit"]
    assert "country of origin" in found[0].message and "origin permit" in found[0].message
    # An export permit does not need box 12.
    assert validate(permit(type="E", items=(bare,))) == []


def test_item_letters_must_be_unique():
    p = the(validate(permit(items=(item("A"), item("A")))), "DUPLICATE_ITEM_ID")
    assert p.path == "items[1].id"


# --- endorsement (box 14) ----------------------------------------------------------------------


def endorsed(*lines: EndorsedLine, when: datetime = ISSUED + timedelta(days=3), port: str = "Geneva airport") -> Permit:
    return permit(endorsement=Endorsement(date=when, port=port, lines=lines))


def test_a_proper_endorsement_passes():
    assert validate(endorsed(EndorsedLine("A", Decimal(10), "NAR"), EndorsedLine("B", Decimal("1.2"), "KGM"))) == []


def test_an_endorsement_may_not_exceed_the_permitted_quantity():
    p = the(validate(endorsed(EndorsedLine("A", Decimal("10.5"), "NAR"))), "ENDORSED_QUANTITY_EXCEEDS")
    assert p.severity is Severity.ERROR and p.path == "endorsement.lines[0].quantity"


def test_an_endorsement_refers_to_existing_items():
    p = the(validate(endorsed(EndorsedLine("Z", Decimal(1), "NAR"))), "ENDORSEMENT_UNKNOWN_ITEM")
    assert p.path == "endorsement.lines[0].item_id"


def test_an_endorsement_quantity_is_positive():
    p = the(validate(endorsed(EndorsedLine("A", Decimal(0), "NAR"))), "ENDORSED_QUANTITY_NOT_POSITIVE")
    assert p.path == "endorsement.lines[0].quantity"


def test_an_endorsement_uses_the_items_unit():
    p = the(validate(endorsed(EndorsedLine("B", Decimal(1), "GRM"))), "ENDORSED_UNIT_MISMATCH")
    assert p.path == "endorsement.lines[0].unit"


def test_an_item_is_endorsed_once():
    lines = (EndorsedLine("A", Decimal(1), "NAR"), EndorsedLine("A", Decimal(1), "NAR"))
    assert the(validate(endorsed(*lines)), "ENDORSEMENT_DUPLICATE_LINE").path == "endorsement.lines[1].item_id"


def test_an_endorsement_needs_a_port_and_lines():
    problems = validate(endorsed(port=""))
    assert sorted(p.path for p in problems if p.code == "MISSING_REQUIRED") == ["endorsement.lines", "endorsement.port"]


def test_an_endorsement_outside_the_validity_is_a_warning():
    p = the(validate(endorsed(EndorsedLine("A", Decimal(1), "NAR"), when=datetime(2025, 8, 1, tzinfo=CET))), "ENDORSED_OUTSIDE_VALIDITY")
    assert p.severity is Severity.WARNING


# --- all at once, helpers, the catalogue ---------------------------------------------------------


def test_every_problem_is_returned_at_once():
    bad = permit(
        number="",
        purpose="K",
        importer=party("Shop", "CH"),
        valid_until=datetime(2026, 1, 1, tzinfo=CET),
        items=(item(quantity=Decimal(0), unit="LBS"), item("B", term="ZZZ", appendix="IV")),
        endorsement=Endorsement(date=ISSUED, port="Basel", lines=(EndorsedLine("Q", Decimal(1), "NAR"),)),
    )
    found = set(codes_of(validate(bad)))
    assert found == {
        "MISSING_REQUIRED",
        "UNKNOWN_PURPOSE",
        "SAME_COUNTRY",
        "VALIDITY_TOO_LONG",
        "QUANTITY_NOT_POSITIVE",
        "UNKNOWN_UNIT",
        "UNKNOWN_TERM",
        "UNKNOWN_APPENDIX",
        "ENDORSEMENT_UNKNOWN_ITEM",
    }


def test_errors_warnings_and_has_errors():
    problems = validate(permit(purpose="K", items=(item(term="PEA"),)))
    assert codes_of(errors(problems)) == ["UNKNOWN_PURPOSE"]
    assert codes_of(warnings(problems)) == ["HISTORICAL_TERM"]
    assert has_errors(problems)
    assert not has_errors(warnings(problems))
    assert not has_errors([])


def test_ensure_valid_raises_with_every_problem_and_returns_warnings():
    with pytest.raises(EpixError) as caught:
        ensure_valid(permit(purpose="K", number=""))
    err = caught.value
    assert err.code is ErrorCode.PERMIT_INVALID
    assert "1 more error" in err.detail
    assert {p["code"] for p in err.context["problems"]} == {"UNKNOWN_PURPOSE", "MISSING_REQUIRED"}
    assert codes_of(ensure_valid(permit(items=(item(unit="KIL"),)))) == ["HISTORICAL_UNIT"]


def test_problems_are_frozen_and_serialisable():
    p = validate(permit(purpose="K"))[0]
    with pytest.raises(AttributeError):
        p.code = "OTHER"  # type: ignore[misc]
    assert p.to_dict() == {"code": "UNKNOWN_PURPOSE", "path": "purpose", "message": p.message, "severity": "error"}


def test_the_catalogue_lists_exactly_the_codes_the_rules_emit():
    # The catalogue is what the docs and MA systems rely on: a new code must be added there.
    import inspect
    import re

    source = inspect.getsource(rules)
    emitted = set(re.findall(r'_report\(\s*out,\s*"([A-Z_]+)"', source))
    emitted |= set(re.findall(r'"(UNKNOWN_[A-Z_]+)"\)', source))
    assert emitted == set(rules.RULES), emitted ^ set(rules.RULES)
    assert all(re.fullmatch(r"[A-Z][A-Z_]+", c) for c in rules.RULES)
    assert all(r.severity in (Severity.ERROR, Severity.WARNING) and r.source for r in rules.RULES.values())


# --- the sample permits pass -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["E", "R", "I", "O"])
def test_sample_permits_have_no_errors(kind):
    issuers = ["CH", "FR", "KE", "DE", "TH", "US"]
    for seed in range(300):
        rng = random.Random(seed)
        issuer = rng.choice(issuers)
        importer = rng.choice([c for c in ["US", "JP", "ZA", "BR", "CH", "FR"] if c != issuer])
        p = make_permit(rng, issuer=issuer, importer_country=importer, doc_type=kind)
        found = errors(validate(p))
        assert found == [], (seed, found)


def test_sample_fixture_is_clean(sample_permit):
    assert validate(sample_permit) == []


def test_blank_text_counts_as_missing():
    problems = validate(permit(number="  ", exporter=party(" ", "CH"), items=(item(scientific_name="\t", unit=" "),)))
    assert sorted(p.path for p in problems if p.code == "MISSING_REQUIRED") == [
        "exporter.name",
        "items[0].scientific_name",
        "items[0].unit",
        "number",
    ]


def test_values_of_the_wrong_type_are_reported_not_raised():
    problems = validate(permit(purpose=["T"], items=(item(term=7, unit=None, appendix=("I",)),)))
    assert {"UNKNOWN_PURPOSE", "UNKNOWN_TERM", "UNKNOWN_APPENDIX", "MISSING_REQUIRED"} <= set(codes_of(problems))


def test_today_may_be_given_as_a_datetime():
    assert "PERMIT_EXPIRED" in codes_of(validate(permit(), today=datetime(2025, 8, 1, 12, tzinfo=CET)))


@settings(max_examples=300)
@given(permits())
def test_any_permit_gets_a_list_of_catalogued_problems_never_an_exception(p):
    problems = validate(p, today=date(2030, 1, 1)) + validate(p, now=datetime(2030, 1, 1, tzinfo=timezone.utc))
    for problem in problems:
        assert problem.code in rules.RULES and problem.message.endswith(".")
        assert problem.severity is rules.RULES[problem.code].severity


# --- time checks against the moment of submission ---------------------------------------------------


def test_expiry_against_now_counts_the_last_day_in_the_permit_s_own_time_zone():
    p = permit()  # valid until 2025-07-15 23:59 at UTC+01:00
    assert validate(p, now=datetime(2025, 7, 15, 22, 30, tzinfo=timezone.utc)) == []  # 23:30 in Bern
    problem = the(validate(p, now=datetime(2025, 7, 15, 23, 30, tzinfo=timezone.utc)), "PERMIT_EXPIRED")  # 00:30 on the 16th
    assert problem.severity is Severity.ERROR and problem.path == "valid_until"
    assert "2025-07-15" in problem.message and "2025-07-16" in problem.message


def test_a_permit_from_year_one_is_expired_now():
    ancient = datetime(1, 1, 1, tzinfo=timezone.utc)
    p = permit(issue_date=ancient, valid_from=ancient, valid_until=datetime(1, 3, 1, tzinfo=timezone.utc))
    assert codes_of(validate(p, now=datetime(2026, 12, 1, 12, tzinfo=timezone.utc))) == ["PERMIT_EXPIRED"]


def test_a_permit_cannot_be_issued_on_a_day_that_has_not_begun():
    tomorrow = ISSUED + timedelta(days=1)
    p = permit(issue_date=tomorrow, valid_from=tomorrow)
    problem = the(validate(p, now=ISSUED), "ISSUED_IN_FUTURE")
    assert problem.severity is Severity.ERROR and problem.path == "issue_date"
    assert "2025-01-16" in problem.message and "2025-01-15" in problem.message
    # Later the same day is today, and a clock a few minutes fast at midnight is no lie either.
    assert validate(permit(issue_date=ISSUED + timedelta(hours=8)), now=ISSUED) == []
    midnight = datetime(2025, 1, 16, 0, 2, tzinfo=CET)
    early = permit(issue_date=midnight, valid_from=midnight)
    assert errors(validate(early, now=midnight - timedelta(minutes=4))) == []
    assert "ISSUED_IN_FUTURE" in codes_of(validate(early, now=midnight - timedelta(minutes=30)))
    assert "ISSUED_IN_FUTURE" in codes_of(validate(permit(issue_date=datetime(9999, 7, 1, tzinfo=CET)), now=ISSUED))


def test_a_validity_starting_later_is_a_warning_against_now():
    later = permit(valid_from=ISSUED + timedelta(days=60))
    problem = the(validate(later, now=ISSUED), "PERMIT_NOT_YET_VALID")
    assert problem.severity is Severity.WARNING and not has_errors(validate(later, now=ISSUED))


def test_the_time_checks_need_an_aware_now():
    with pytest.raises(ValueError, match="time zone"):
        validate(permit(), now=datetime(2025, 3, 1))
    assert validate(permit()) == []  # without now or today: the same today and tomorrow


# --- free text the permit's XML must carry -------------------------------------------------------


def test_every_free_text_field_xml_cannot_carry_is_named_by_its_path_all_at_once():
    bell = "\x07"
    addr = Address(street=f"12 Market{bell} Street", city="Bern", postcode=f"30{bell}11", country="CH", country_name=f"Swi{bell}", subdivision=f"BE{bell}")
    p = permit(
        authority=Party(name=f"FSVO{bell}", address=Address(city=f"Bern\x00", country="CH"), id=f"MA{bell}"),
        exporter=Party(name="Reptile Leather SA", address=addr),
        importer=Party(name=f"Atelier\x1b du Cuir", address=Address(city="Paris", country="FR")),
        items=(
            item(
                "A", scientific_name=f"Crocodylus\ufffe niloticus", common_name=f"Nile{bell}", description=f"Skins{bell}",
                origin_country="ZW", origin_country_name=f"Zim{bell}", origin_permit=DocumentRef(number=f"ZW{bell}1"),
                reexport_country="ZA", reexport_country_name=f"SA{bell}", reexport_permit=DocumentRef(number=f"ZA{bell}2"),
                marks=("ok", f"tag\ud800"),
            ),
            item(f"B{bell}"),
        ),
        special_conditions=("Valid with labels.", f"Not\x0c valid"),
        security_stamp=f"44{bell}71",
        issued_at=f"Bern{bell}",
        signed_by=f"J. Doe{bell}",
        endorsement=Endorsement(
            date=ISSUED + timedelta(days=3), port=f"Geneva{bell}", lines=(EndorsedLine("A", Decimal(1), "NAR"),),
            transport_document=f"AWB{bell}", officer=f"M. Rossi{bell}",
        ),
    )  # fmt: skip
    found = [x for x in validate(p) if x.code == "TEXT_INVALID"]
    assert all(x.severity is Severity.ERROR and "which XML documents cannot carry" in x.message for x in found)
    assert sorted(x.path for x in found) == sorted([
        "authority.name", "authority.id", "authority.address.city",
        "exporter.address.street", "exporter.address.postcode", "exporter.address.country_name", "exporter.address.subdivision",
        "importer.name",
        "items[0].scientific_name", "items[0].common_name", "items[0].description", "items[0].origin_country_name",
        "items[0].origin_permit.number", "items[0].reexport_country_name", "items[0].reexport_permit.number", "items[0].marks[1]",
        "items[1].id",
        "special_conditions[1]", "security_stamp", "issued_at", "signed_by",
        "endorsement.port", "endorsement.transport_document", "endorsement.officer",
    ])  # fmt: skip
    by_path = {x.path: x.message for x in found}
    assert by_path["importer.name"] == "Box 3 (importer): the name contains the character U+001B, which XML documents cannot carry."
    assert "U+D800" in by_path["items[0].marks[1]"] and by_path["items[0].marks[1]"].startswith("Item A, box 9: mark 2")
    assert by_path["items[1].id"].startswith("Item 2: the item letter")  # not the letter itself, which holds the bell


def test_free_text_of_any_length_and_script_with_line_breaks_is_fine():
    long = "Valid only with the original labels on each tin.\r\n\t" + "税関 😀 " * 2000
    assert validate(permit(special_conditions=(long,), items=(item(description=long, marks=(long,)),))) == []


def test_free_text_of_the_wrong_type_is_named():
    p = the(validate(permit(signed_by=7)), "TEXT_INVALID")
    assert p.path == "signed_by" and "must be text" in p.message


def test_a_permit_on_its_way_is_expired_only_if_it_was_when_it_set_out():
    p = permit()  # valid until 2025-07-15 23:59 at UTC+01:00
    later = datetime(2025, 8, 1, tzinfo=timezone.utc)
    assert validate(p, now=later, since=datetime(2025, 7, 10, tzinfo=timezone.utc)) == []  # expired in transit
    problem = the(validate(p, now=later, since=datetime(2025, 7, 20, tzinfo=timezone.utc)), "PERMIT_EXPIRED")
    assert "its message was created on 2025-07-20" in problem.message
    # The issue date is judged at now: a message created, by a slow clock, before the permit's date.
    assert validate(p, now=ISSUED + timedelta(days=1), since=ISSUED - timedelta(days=300)) == []
    assert "ISSUED_IN_FUTURE" in codes_of(validate(permit(issue_date=ISSUED + timedelta(days=2)), now=ISSUED, since=ISSUED))
    with pytest.raises(ValueError, match="since needs now"):
        validate(p, since=later)
