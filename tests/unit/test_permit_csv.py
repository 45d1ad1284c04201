"""Permits from a spreadsheet: one row per line item, columns named by JSON field path."""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import replace
from decimal import Decimal

import pytest

from adapters.permit_csv import permits_from_csv
from adapters.permit_json import permit_to_dict
from domain.errors import EpixError, ErrorCode
from simulators.samples import make_permit
from tests.unit.test_cli import epix, ok


def _flat(value, path: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(v, f"{path}.{k}" if path else k, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flat(v, f"{path}[{i}]", out)
    elif value is not None:
        out[path] = str(value)


def sheet(permits, *, repeat: bool = False) -> bytes:
    """The permits as a spreadsheet would hold them: permit fields on the first row of each
    permit (on every row with ``repeat``), one row per line item."""
    rows = []
    for p in permits:
        d = permit_to_dict(p)
        items = d.pop("items")
        head: dict[str, str] = {}
        _flat(d, "", head)
        for i, item in enumerate(items):
            row = dict(head) if (i == 0 or repeat) else {"number": head["number"]}
            flat: dict[str, str] = {}
            _flat(item, "", flat)
            row.update({f"items.{k}": v for k, v in flat.items()})
            rows.append(row)
    columns = sorted({c for r in rows for c in r}, key=lambda c: (c.startswith("items."), c))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _permits(n: int = 3):
    rng = random.Random(11)
    return [make_permit(rng, issuer="CH", importer_country="FR", number=f"CH26-CSV{i}", items=3) for i in range(n)]


@pytest.mark.parametrize("repeat", [False, True])
def test_a_sheet_reads_back_the_very_permits_it_was_made_from(repeat):
    permits = _permits()
    permits[1] = replace(permits[1], number="KWS/CITES/2026/0012", special_conditions=("live animals", "by air"))
    read = permits_from_csv(sheet(permits, repeat=repeat))
    assert [r.error for r in read] == [None, None, None]
    assert [r.permit for r in read] == permits
    assert read[0].rows == [2, 3, 4] and read[1].rows == [5, 6, 7]


def test_a_spreadsheets_byte_order_mark_and_blank_lines_are_not_content():
    permits = _permits(2)
    data = sheet(permits)
    lines = data.split(b"\r\n")
    data = b"\xef\xbb\xbf" + b"\r\n".join(lines[:4] + [b",,,", b""] + lines[4:])
    assert [r.permit for r in permits_from_csv(data)] == permits


def test_each_refusal_names_its_row_and_column_and_the_other_permits_still_read():
    permits = _permits(3)
    rows = list(csv.DictReader(io.StringIO(sheet(permits, repeat=True).decode())))
    rows[1]["exporter.name"] = "Someone Else"  # permit 0, its second row
    rows[4]["items.quantity"] = "twelve"  # permit 1, its second line item: row 6
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    first, second, third = permits_from_csv(buf.getvalue().encode())
    assert first.error.code is ErrorCode.JSON_MALFORMED and first.permit is None
    assert "Row 3, column exporter.name" in first.error.detail and "row 2" in first.error.detail
    assert second.error.code is ErrorCode.JSON_MALFORMED and second.error.detail.startswith("Row 6: ")
    assert second.error.context["path"] == "items[1].quantity"
    assert third.error is None and third.permit == permits[2]


@pytest.mark.parametrize(
    "data, words",
    [
        (b"exporter.name,items.quantity\nA,1\n", "no 'number' column"),
        (b"number,Exporter Name\nX,1\n", "'Exporter Name', is not a field path"),
        (b"number,number\nX,Y\n", "names number more than once"),
        (b"", "no header row"),
        (b"number,purpose\n\xff\xfe,x\n", "not UTF-8"),
        (b"number,purpose\nX,T,extra\n", "Row 2 has 3 cells"),
        (b"number,purpose\nX," + b"T" * 200_000 + b"\n", "cannot be read as CSV"),
    ],
)
def test_a_sheet_that_cannot_be_read_as_a_whole_is_refused_with_the_reason(data, words):
    with pytest.raises(EpixError) as raised:
        permits_from_csv(data)
    assert raised.value.code is ErrorCode.JSON_MALFORMED and words in raised.value.detail, raised.value.detail


def test_list_columns_are_numbered_from_zero_without_gaps():
    [entry] = permits_from_csv(b"number,special_conditions[1]\nCH26-X,by air\n")
    assert entry.error is not None and "entry [1] of special_conditions comes before entry [0]" in entry.error.detail
    assert entry.error.context == {"row": 2, "column": "special_conditions[1]"}


def test_the_command_writes_one_file_per_permit_or_none(tmp_path):
    permits = _permits(2)
    permits[1] = replace(permits[1], number="KWS/CITES/2026/0012")
    (tmp_path / "good.csv").write_bytes(sheet(permits))
    out = ok(epix("permit", "from-csv", str(tmp_path / "good.csv"), "-o", str(tmp_path / "out"))).stdout
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["CH26-CSV0.json", "KWS%2FCITES%2F2026%2F0012.json"] and out.count("wrote ") == 2
    assert json.loads((tmp_path / "out" / "CH26-CSV0.json").read_text())["number"] == "CH26-CSV0"
    ok(epix("permit", "validate", str(tmp_path / "out" / "CH26-CSV0.json")))
    # One permit breaks a rule: nothing is written, and the sheet's row says which.
    empty = replace(permits[0], number="CH26-LATE", items=tuple(replace(i, quantity=Decimal(0)) for i in permits[0].items))
    (tmp_path / "bad.csv").write_bytes(sheet([permits[1], empty]))
    result = epix("permit", "from-csv", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "none"))
    assert result.returncode == 1 and not (tmp_path / "none").exists(), result.stderr
    assert "CH26-LATE (rows 5-7): error: QUANTITY_NOT_POSITIVE at items[0].quantity" in result.stderr, result.stderr
    assert "1 of 2 permit(s)" in result.stderr and "nothing written" in result.stderr


def test_the_example_sheet_in_the_documentation_is_a_valid_permit():
    from datetime import date
    from pathlib import Path

    from domain.rules import Severity, validate

    doc = (Path(__file__).resolve().parents[2] / "docs" / "PERMIT-JSON.md").read_text(encoding="utf-8")
    [entry] = permits_from_csv(doc.split("```csv\n")[-1].split("```")[0].encode())
    assert entry.error is None and entry.rows == [2, 3] and len(entry.permit.items) == 2
    assert [p for p in validate(entry.permit, today=date(2026, 11, 21)) if p.severity is Severity.ERROR] == []
