"""The code lists in domain.codes equal the compiled reference lists in shared/ref/cites-codes.

The CSVs are read where they live (never copied here), so that a change on either side shows
up as a failing test rather than as a permit that one gateway accepts and its partner refuses.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from domain import codes
from tests.conftest import ref_file


def _rows(name: str) -> list[dict[str, str]]:
    with ref_file("cites-codes", name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _units(cell: str) -> tuple[str, ...]:
    return tuple(u for u in cell.split("|") if u)


def test_purposes_equal_reference():
    assert dict(codes.PURPOSES) == {r["code"]: r["description"] for r in _rows("purposes.csv")}
    assert codes.PURPOSE_CODES == set("TZGQSHPMENBL")


def test_sources_equal_reference():
    assert dict(codes.SOURCES) == {r["code"]: r["description"] for r in _rows("sources.csv")}
    assert codes.SOURCE_CODES == set("WXRDACFUIOY")


def test_current_terms_equal_reference_including_unverified_unit_hints():
    rows = _rows("terms.csv")
    assert len(rows) == 91
    expected = {
        r["code"]: (r["description"], _units(r["preferred_unit"]), _units(r["alternative_unit"])) for r in rows
    }
    actual = {t.code: (t.description, t.preferred_units, t.alternative_units) for t in codes.TERMS.values()}
    assert actual == expected
    assert not any(t.historical for t in codes.TERMS.values())
    # The order of the Guidelines' table is kept, for forms that list the terms.
    assert list(codes.TERMS) == [r["code"] for r in rows]


def test_historical_terms_equal_reference():
    rows = [r for r in _rows("terms_extended.csv") if r["status"].startswith("historical")]
    assert len(rows) == 30
    expected = {r["code"]: (r["description"], r["status"]) for r in rows}
    actual = {t.code: (t.description, f"historical: {t.note}") for t in codes.HISTORICAL_TERMS.values()}
    assert actual == expected
    assert all(t.historical for t in codes.HISTORICAL_TERMS.values())


def test_extended_list_marks_exactly_the_current_terms_current():
    current = {r["code"] for r in _rows("terms_extended.csv") if r["status"].startswith("current")}
    assert current == codes.TERM_CODES
    assert not codes.TERM_CODES & codes.HISTORICAL_TERM_CODES


def test_replacements_point_to_current_terms_and_match_the_notes():
    for t in codes.HISTORICAL_TERMS.values():
        said = re.search(r"replaced by ([A-Z]{3})", t.note or "")
        if said:
            assert t.replaced_by == said.group(1), t.code
        if t.replaced_by is not None:
            assert t.replaced_by in codes.TERM_CODES, t.code


def test_current_units_equal_reference():
    rows = _rows("units.csv")
    assert {u.code: u.description for u in codes.UNITS.values()} == {r["code"]: r["description"] for r in rows}
    assert codes.UNIT_CODES == {"GRM", "KGM", "LTR", "MLT", "MTR", "CMQ", "MTK", "MTQ", "NAR"}
    assert not any(u.historical for u in codes.UNITS.values())


def test_historical_units_equal_reference():
    rows = _rows("units_historical.csv")
    blank = [r for r in rows if r["code"] == ""]
    assert len(blank) == 1 and blank[0]["maps_to_current"] == codes.BLANK_UNIT_MEANS
    expected = {r["code"]: (r["description"], r["maps_to_current"]) for r in rows if r["code"]}

    def written(u: codes.Unit) -> str:
        if u.maps_to is None:
            return ""
        return f"{u.maps_to} ({u.conversion})" if u.conversion else u.maps_to

    actual = {u.code: (u.description, written(u)) for u in codes.HISTORICAL_UNITS.values()}
    assert actual == expected
    assert all(u.historical for u in codes.HISTORICAL_UNITS.values())
    assert not codes.UNIT_CODES & codes.HISTORICAL_UNIT_CODES
    for u in codes.HISTORICAL_UNITS.values():
        assert u.maps_to is None or u.maps_to in codes.UNIT_CODES, u.code


def test_unverified_unit_hints_only_name_current_units():
    for t in codes.TERMS.values():
        assert set(t.preferred_units) | set(t.alternative_units) <= codes.UNIT_CODES, t.code


def test_lookup_finds_current_and_historical_codes():
    assert codes.term("LIV").description == "Live"
    assert codes.term("BUL").historical
    assert codes.term("XYZ") is None
    assert codes.unit("KGM").description == "Kilograms (kg)"
    assert codes.unit("KIL").maps_to == "KGM"
    assert codes.unit("") is None


def test_appendices_and_document_types():
    assert codes.APPENDIX_CODES == {"I", "II", "III"}
    assert codes.DOCUMENT_TYPE_CODES == {"E", "R", "I", "O"}


def test_countries_are_the_249_assigned_codes():
    assert len(codes.COUNTRIES) == 249
    assert all(re.fullmatch(r"[A-Z]{2}", c) for c in codes.COUNTRIES)
    assert {"CH", "FR", "KE", "US", "SS", "SX", "CW", "BQ", "AX"} <= codes.COUNTRIES
    # Retired or never assigned codes are not countries.
    assert not {"AN", "YU", "CS", "UK", "EU"} & codes.COUNTRIES


def test_user_assigned_countries_are_separate():
    ua = codes.USER_ASSIGNED_COUNTRIES
    assert len(ua) == 42  # AA, QM–QZ (14), XA–XZ (26), ZZ
    assert {"AA", "QM", "QZ", "XA", "XX", "XZ", "ZZ"} <= ua
    assert not {"QL", "QA"} & ua  # QA is Qatar
    assert not ua & codes.COUNTRIES
    assert codes.is_user_assigned_country("XX") and not codes.is_user_assigned_country("CH")


ISO_CODES_JSON = Path("/usr/share/iso-codes/json/iso_3166-1.json")


@pytest.mark.skipif(not ISO_CODES_JSON.exists(), reason="Debian package iso-codes is not installed")
def test_countries_equal_the_iso_codes_package():
    listed = {c["alpha_2"] for c in json.loads(ISO_CODES_JSON.read_text(encoding="utf-8"))["3166-1"]}
    assert codes.COUNTRIES == listed


def test_lists_are_immutable():
    with pytest.raises(TypeError):
        codes.PURPOSES["X"] = "made up"  # type: ignore[index]
    with pytest.raises(TypeError):
        codes.TERMS["XYZ"] = codes.TERMS["LIV"]  # type: ignore[index]
