"""Permits from a spreadsheet: CSV (UTF-8, comma-separated, a header row), one row per line item.

Each column is named by the path of a field in the permit's JSON form (docs/PERMIT-JSON.md), as
the rules name it in their problems: ``number``, ``exporter.name``, ``exporter.address.country``,
``special_conditions[0]``; a line item's fields start with ``items.`` (``items.scientific_name``,
``items.quantity``, ``items.marks[0]``). The rows of one permit share its ``number``; its other
fields may be repeated on every row or given once, but never differently. Every row that fills an
``items.`` column is one line item, in row order. An empty cell is a field left out.

The result is the permit's JSON form, read by ``permit_from_dict`` as any submission is: nothing
here is guessed, and every refusal names the row and the column it comes from.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from adapters.permit_json import MAX_JSON_BYTES, permit_from_dict
from domain.errors import EpixError, ErrorCode
from domain.model import Permit

ITEMS = "items."
_SEGMENT = re.compile(r"([a-z_]+)(?:\[(\d+)\])?")


@dataclass
class CsvPermit:
    """One permit of the sheet: the rows it came from, and the permit or why it is refused."""

    number: str
    rows: list[int] = field(default_factory=list)  # 2 is the first row under the header
    permit: Permit | None = None
    error: EpixError | None = None


def permits_from_csv(data: bytes, *, max_bytes: int = 20 * MAX_JSON_BYTES) -> list[CsvPermit]:
    """Every permit of the sheet, in the order their first rows come; a sheet that cannot be read
    as a whole (encoding, header) raises ``EpixError(JSON_MALFORMED)``."""
    if len(data) > max_bytes:
        raise EpixError(ErrorCode.PAYLOAD_TOO_LARGE, f"The CSV file is {len(data)} bytes; at most {max_bytes} are read.")
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's byte order mark is not part of the header
    except UnicodeDecodeError as exc:
        raise _bad(f"The CSV file is not UTF-8 (bad byte at offset {exc.start}); save it as CSV UTF-8.") from None
    try:
        return _read(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:  # a cell past csv's size limit, a stray quote in strict places
        raise _bad(f"The CSV file cannot be read as CSV: {exc}.") from None


def _read(reader) -> list[CsvPermit]:
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise _bad("The CSV file has no header row naming its columns.")
    columns = [_column(h.strip(), i) for i, h in enumerate(header)]
    if "number" not in columns:
        raise _bad("The CSV file has no 'number' column: the rows of a permit are told apart by its number.")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise _bad(f"The CSV header names {', '.join(repeated)} more than once.")

    sheets: dict[str, _Sheet] = {}
    for row_number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue  # a blank line between permits
        if len(cells) > len(columns):
            raise _bad(f"Row {row_number} has {len(cells)} cells; the header names {len(columns)} columns.")
        values = {col: cell for col, cell in zip(columns, cells) if cell != ""}
        number = values.get("number", "")
        sheet = sheets.setdefault(number, _Sheet(CsvPermit(number)))
        sheet.add(row_number, values)
    return [sheet.finish() for sheet in sheets.values()]


class _Sheet:
    def __init__(self, result: CsvPermit) -> None:
        self.result = result
        self.fields: dict[str, tuple[str, int]] = {}  # permit-level column -> (value, row it came from)
        self.items: list[tuple[int, dict[str, str]]] = []
        self.conflict: EpixError | None = None

    def add(self, row: int, values: dict[str, str]) -> None:
        self.result.rows.append(row)
        item = {c[len(ITEMS):]: v for c, v in values.items() if c.startswith(ITEMS)}
        if item:
            self.items.append((row, item))
        for column, value in values.items():
            if column.startswith(ITEMS):
                continue
            held = self.fields.setdefault(column, (value, row))
            if held[0] != value and self.conflict is None:
                self.conflict = _bad(
                    f"Row {row}, column {column}: {value!r}, but row {held[1]} of permit {self.result.number!r} "
                    f"says {held[0]!r}; a permit's fields must agree on all its rows.",
                    row=row, column=column,
                )  # fmt: skip

    def finish(self) -> CsvPermit:
        result = self.result
        if not result.number:
            result.error = _bad(f"Row {result.rows[0]} has no number.", row=result.rows[0], column="number")
            return result
        if self.conflict is not None:
            result.error = self.conflict
            return result
        permit: dict[str, Any] = {}
        try:
            for column, (value, row) in self.fields.items():
                _put(permit, column, value, row)
            items = permit.setdefault("items", [])
            for row, item in self.items:
                items.append({})
                for column, value in item.items():
                    _put(items[-1], column, value, row, prefix=ITEMS)
        except EpixError as exc:
            result.error = exc
            return result
        try:
            result.permit = permit_from_dict(permit)
        except EpixError as exc:
            result.error = _located(exc, self.items)
        return result


def _column(name: str, index: int) -> str:
    path = name[len(ITEMS):] if name.startswith(ITEMS) else name
    if not path or not all(_SEGMENT.fullmatch(s) for s in path.split(".")):
        raise _bad(
            f"Column {index + 1} of the header, {name!r}, is not a field path such as exporter.name, "
            "special_conditions[0] or items.quantity.",
            column=name,
        )
    return name


def _put(target: dict[str, Any], column: str, value: str, row: int, *, prefix: str = "") -> None:
    """Set the field at ``column`` (a dotted path with [i] indexes) in ``target`` to ``value``."""

    def refused(why: str) -> EpixError:
        return _bad(f"Row {row}, column {prefix}{column}: {why}", row=row, column=prefix + column)

    node: Any = target
    segments = [_SEGMENT.fullmatch(s).groups() for s in column.split(".")]  # type: ignore[union-attr]
    for depth, (name, index) in enumerate(segments):
        last = depth == len(segments) - 1
        if index is None:
            if last:
                node[name] = value
            elif not isinstance(node := node.setdefault(name, {}), dict):
                raise refused(f"{name} is given both as a value and as fields.")
            continue
        entries, i = node.setdefault(name, []), int(index)
        if not isinstance(entries, list):
            raise refused(f"{name} is given both as a value and as a list.")
        if i > len(entries):
            raise refused(f"entry [{i}] of {name} comes before entry [{len(entries)}]; number the columns of a list from [0] without gaps.")
        if i == len(entries):
            entries.append(value if last else {})
        node = entries[i]


def _located(exc: EpixError, items: list[tuple[int, dict[str, str]]]) -> EpixError:
    """The reader's refusal, with the row of the line item its path names."""
    path = str(exc.context.get("path", ""))
    found = re.match(r"items\[(\d+)\]", path)
    if found and int(found.group(1)) < len(items):
        row = items[int(found.group(1))][0]
        return EpixError(exc.code, f"Row {row}: {exc.detail}", **{**exc.context, "row": row})
    return exc


def _bad(sentence: str, **context: Any) -> EpixError:
    return EpixError(ErrorCode.JSON_MALFORMED, sentence, **context)
