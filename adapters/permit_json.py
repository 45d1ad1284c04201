"""The JSON form of the canonical permit, for Management Authority systems.

Field names are the model's own (snake_case), objects nest as the dataclasses do; the box number
of every field is in docs/PERMIT-JSON.md and schemas/permit.schema.json describes the same shape.

Choices, each for exactness:
- Date-times are ISO 8601 / RFC 3339 with a UTC offset (``2025-01-15T10:00:00+01:00`` or ``...Z``).
  A date alone or a time without offset is refused, not guessed: the offset decides on which day
  a permit expires.
- Quantities are ``Decimal`` end to end: read with ``parse_float=Decimal`` (numeric strings are
  accepted too) and written as JSON numbers with exactly the digits of the Decimal, so
  ``12.50`` stays ``12.50``. ``permit_to_dict`` therefore holds ``Decimal`` values; serialise it
  with ``permit_to_json`` (plain ``json.dumps`` refuses Decimal; with ``default=str`` it writes
  quantities as strings, which the reader accepts too).
- Optional fields that are null or empty are left out of the output; on input they may be absent
  or ``null``. Unknown fields and repeated keys are refused, so a typo never silently drops a box.
- The field list is derived from ``domain.model`` at import time: a new model field that this
  module cannot map fails loudly here instead of being lost on the way through.

Every bad input raises ``EpixError(ErrorCode.JSON_MALFORMED, sentence, path=...)``. Whether the
permit obeys the CITES rules is a separate question for ``domain.rules``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from json.encoder import encode_basestring  # the C-accelerated string escaper json.dumps uses
from typing import Any

from domain import model
from domain.errors import EpixError, ErrorCode
from domain.model import Permit

MAX_JSON_BYTES = 1_000_000  # a 50-item permit is ~40 kB; this leaves room and caps hostile bodies
MAX_DIGITS = 30  # significant digits of a quantity
MAX_EXPONENT = 30  # |adjusted exponent| of a quantity: 1e-30 .. 1e30 covers grams to tonnes of anything

# ASCII digits only: Decimal() and fromisoformat() would also take other scripts' digits.
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})", re.ASCII)
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?", re.ASCII)


# --- the field table, derived from the model -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: str  # "str", "datetime", "decimal" or "object"
    cls: type | None  # the dataclass of an "object"
    many: bool  # a tuple of values in the model, an array in JSON
    required: bool  # no default in the model: must be present and not null


_SCALARS = {"str": "str", "datetime": "datetime", "Decimal": "decimal"}
_CLASSES = {
    c.__name__: c for c in (model.Address, model.Party, model.DocumentRef, model.LineItem, model.EndorsedLine, model.Endorsement, Permit)
}


def _field(f: dataclasses.Field) -> _Field:
    annotation = str(f.type).replace(" | None", "")
    many = annotation.startswith("tuple[") and annotation.endswith(", ...]")
    inner = annotation[6:-6] if many else annotation
    if inner in _SCALARS:
        kind, cls = _SCALARS[inner], None
    elif inner in _CLASSES:
        kind, cls = "object", _CLASSES[inner]
    else:  # pragma: no cover - a model change this module must learn about
        raise TypeError(f"permit_json cannot map field {f.name!r} of type {f.type!r}")
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    return _Field(f.name, kind, cls, many, required)


_SPEC: dict[type, tuple[_Field, ...]] = {
    cls: tuple(_field(f) for f in dataclasses.fields(cls)) for cls in _CLASSES.values()
}
_NAMES: dict[type, frozenset[str]] = {cls: frozenset(f.name for f in fields) for cls, fields in _SPEC.items()}


# --- writing ---------------------------------------------------------------------------------------


def permit_to_dict(permit: Permit) -> dict[str, Any]:
    """The JSON form as Python values: strings, lists, dicts, and ``Decimal`` for quantities."""
    return _object_to_dict(permit)


def permit_to_json(permit: Permit, *, indent: int | None = None) -> bytes:
    """UTF-8 JSON, fields in model order: the same permit always gives the same bytes.

    Compact by default (what travels and is stored); ``indent`` pretty-prints for people.
    """
    parts: list[str] = []
    if indent is None:
        try:
            _write_compact(permit, parts)
        except _NotPlain:
            parts = []  # written again below, where what cannot be written is named
    if not parts:
        _write(permit_to_dict(permit), parts, "$", "\n" if indent is not None else None, indent or 0)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EpixError(ErrorCode.PERMIT_INVALID, "The permit contains text that cannot be written as UTF-8.") from exc


class _NotPlain(Exception):
    """A value ``_write_compact`` leaves to the full writer, which says what is wrong with it."""


def _write_compact(obj: Any, parts: list[str]) -> None:
    """``_write(_object_to_dict(obj))``'s compact output written straight from the model objects:
    every permit stored or sent is written once on each side of an exchange, and the dicts and
    the field paths that the full writer keeps for its error messages cost more than the text."""
    parts.append("{")
    first = True
    for f in _SPEC[type(obj)]:
        value = getattr(obj, f.name)
        if not f.required and (value is None or (f.many and not value)):
            continue
        parts.append(f'"{f.name}":' if first else f',"{f.name}":')  # field names are Python identifiers
        first = False
        if value is None:
            parts.append("null")
        elif f.many:
            if not value:
                parts.append("[]")
                continue
            parts.append("[")
            for i, item in enumerate(value):
                if i:
                    parts.append(",")
                _write_compact_value(f, item, parts)
            parts.append("]")
        else:
            _write_compact_value(f, value, parts)
    parts.append("}")


def _write_compact_value(f: _Field, value: Any, parts: list[str]) -> None:
    kind, kind_of = f.kind, type(value)
    if kind == "str" and kind_of is str:
        parts.append(encode_basestring(value))
    elif kind == "decimal" and kind_of is Decimal and value.is_finite():
        parts.append(str(value))
    elif kind == "datetime" and kind_of is datetime:
        offset = value.utcoffset()
        if offset is None or offset % _MINUTE:
            raise _NotPlain
        parts.append(f'"{value.isoformat()}"')
    elif kind == "object" and kind_of is f.cls:
        _write_compact(value, parts)
    else:
        raise _NotPlain


_MINUTE = timedelta(minutes=1)


def _object_to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in _SPEC[type(obj)]:
        value = getattr(obj, f.name)
        if not f.required and (value is None or (f.many and not value)):
            continue
        if f.many:
            out[f.name] = [_value_to_json(f, v, f.name) for v in value]
        else:
            out[f.name] = _value_to_json(f, value, f.name)
    return out


def _value_to_json(f: _Field, value: Any, name: str) -> Any:
    if value is None:
        return None
    if f.kind == "object":
        return _object_to_dict(value)
    if f.kind == "datetime" and isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise EpixError(ErrorCode.PERMIT_INVALID, f"The date {name} has no UTC offset and cannot be written exactly.", field=name)
        if offset % timedelta(minutes=1):
            raise EpixError(ErrorCode.PERMIT_INVALID, f"The date {name} has a UTC offset with seconds, which ISO 8601 cannot carry.", field=name)
        return value.isoformat()
    return value


def _write(value: Any, parts: list[str], path: str, newline: str | None, step: int) -> None:
    """Appends ``value`` as JSON; ``newline`` is None for compact output, else the current indentation."""
    if isinstance(value, str):
        parts.append(encode_basestring(value))
    elif isinstance(value, (dict, list)):
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        if not value:
            parts.append(opening + closing)
            return
        inner = newline + " " * step if newline is not None else None
        parts.append(opening)
        entries = value.items() if isinstance(value, dict) else enumerate(value)
        for i, (key, item) in enumerate(entries):
            parts.append("," if i else "")
            if inner is not None:
                parts.append(inner)
            if isinstance(value, dict):
                parts.append(encode_basestring(key))
                parts.append(": " if inner is not None else ":")
                sub = key if path == "$" else f"{path}.{key}"
            else:
                sub = f"{path}[{key}]"
            _write(item, parts, sub, inner, step)
        if newline is not None:
            parts.append(newline)
        parts.append(closing)
    elif value is None:
        parts.append("null")
    elif isinstance(value, bool):
        parts.append("true" if value else "false")
    elif isinstance(value, (Decimal, int)):
        number = Decimal(value)
        if not number.is_finite():
            raise EpixError(
                ErrorCode.PERMIT_INVALID, f"{path}: {value} is not a finite number and cannot be written in JSON.", path=path
            )
        parts.append(str(number))  # exactly the Decimal's digits and exponent, valid JSON number syntax
    else:
        raise EpixError(
            ErrorCode.PERMIT_INVALID, f"{path}: a value of type {type(value).__name__} cannot be written in JSON.", path=path
        )


# --- reading ---------------------------------------------------------------------------------------


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Repeated(key)
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def permit_from_json(data: bytes, *, max_bytes: int = MAX_JSON_BYTES) -> Permit:
    """A permit from its JSON form; ``EpixError(JSON_MALFORMED)`` naming the field otherwise."""
    return permit_from_dict(read_json(data, max_bytes=max_bytes))


def read_json(data: bytes, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Any JSON document, read as strictly as a permit: UTF-8, no NaN or Infinity, no field twice,
    no deeper nesting than the parser can follow, numbers as exact ``Decimal`` (never a float).
    Every other JSON body of the local API is read with it too. ``EpixError(JSON_MALFORMED)``
    with the reason otherwise."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _bad("$", f"JSON must be given as bytes, not {type(data).__name__}.")
    if len(data) > max_bytes:
        raise _bad("$", f"The JSON body is {len(data)} bytes; the gateway accepts at most {max_bytes} bytes.")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("$", f"The JSON body is not UTF-8 (invalid byte at offset {exc.start}).") from exc
    try:
        return json.loads(
            text, parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constants, object_pairs_hook=_no_repeats
        )
    except json.JSONDecodeError as exc:
        raise _bad("$", f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).", line=exc.lineno, column=exc.colno) from exc
    except _Repeated as exc:
        raise _bad("$", f"A JSON object repeats the field {exc.key!r}; each field may appear once.") from exc
    except ValueError as exc:  # NaN / Infinity literals
        raise _bad("$", f"The body is not valid JSON: {exc}.") from exc
    except RecursionError as exc:
        raise _bad("$", "The JSON nests arrays or objects too deeply.") from exc


def permit_from_dict(d: dict[str, Any]) -> Permit:
    """A permit from its JSON form as Python values (as ``json.loads`` returns them)."""
    return _read_object(Permit, d, "$")


def _bad(path: str, sentence: str, **context: Any) -> EpixError:
    return EpixError(ErrorCode.JSON_MALFORMED, sentence, path=path, **context)


def _join(path: str, name: str) -> str:
    return name if path == "$" else f"{path}.{name}"


_JSON_TYPE = {str: "a string", bool: "a boolean", dict: "an object", list: "an array", type(None): "null"}


def _json_type(value: Any) -> str:
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPE.get(type(value), f"a {type(value).__name__}")


def _read_object(cls: type, value: Any, path: str) -> Any:
    what = "The permit" if path == "$" else path
    if not isinstance(value, dict):
        raise _bad(path, f"{what} must be a JSON object, not {_json_type(value)}.")
    unknown = [k for k in value if k not in _NAMES[cls]]
    if unknown:
        known = ", ".join(f.name for f in _SPEC[cls])
        where = "the permit" if path == "$" else path
        upath = _join(path, str(unknown[0]))
        raise _bad(upath, f"Unknown field {upath}; the fields of {where} are: {known}.")
    kwargs: dict[str, Any] = {}
    for f in _SPEC[cls]:
        fpath = _join(path, f.name)
        raw = value.get(f.name)
        if raw is None:
            if f.required:
                said = "is null" if f.name in value else "is missing"
                raise _bad(fpath, f"The required field {fpath} {said}.")
            continue  # the dataclass default
        if f.many:
            if not isinstance(raw, list):
                raise _bad(fpath, f"{fpath} must be an array, not {_json_type(raw)}.")
            kwargs[f.name] = tuple(_read_value(f, v, f"{fpath}[{i}]") for i, v in enumerate(raw))
        else:
            kwargs[f.name] = _read_value(f, raw, fpath)
    return cls(**kwargs)


def _read_value(f: _Field, raw: Any, path: str) -> Any:
    if f.kind == "str":
        if not isinstance(raw, str):
            raise _bad(path, f"{path} must be a string, not {_json_type(raw)}.")
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _bad(path, f"{path} contains a lone surrogate escape, which is not text.") from exc
        return raw
    if f.kind == "decimal":
        return _read_decimal(raw, path)
    if f.kind == "datetime":
        return read_datetime(raw, path)
    return _read_object(f.cls, raw, path)


def _read_decimal(raw: Any, path: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, (Decimal, int, float, str)):
        raise _bad(path, f"{path} must be a number (or a string holding one), not {_json_type(raw)}.")
    if isinstance(raw, str):
        if not _NUMBER.fullmatch(raw):
            raise _bad(path, f"{path} must be a number, and {raw[:40]!r} is not one (write e.g. 12.5).")
        number = Decimal(raw)
    elif isinstance(raw, float):
        # Only reached when a caller parsed JSON without parse_float=Decimal: the shortest repr is
        # the text that was most probably written.
        number = Decimal(repr(raw))
    else:
        number = Decimal(raw)
    if not number.is_finite():
        raise _bad(path, f"{path} must be a finite number.")
    if number and (len(number.as_tuple().digits) > MAX_DIGITS or abs(number.adjusted()) > MAX_EXPONENT):
        raise _bad(path, f"{path} is outside what the gateway accepts (at most {MAX_DIGITS} digits, between 1e-{MAX_EXPONENT} and 1e{MAX_EXPONENT}).")
    return number


def read_datetime(raw: Any, path: str) -> datetime:
    """An ISO 8601 date and time with a UTC offset (also for query parameters such as ``before``)."""
    if not isinstance(raw, str):
        raise _bad(path, f"{path} must be a date and time as an ISO 8601 string, not {_json_type(raw)}.")
    if not _DATETIME.fullmatch(raw):
        hint = " a date alone is not enough," if _DATE_ONLY.fullmatch(raw) else ""
        raise _bad(
            path,
            f"{path} must be a date and time with a UTC offset, e.g. 2025-01-15T10:00:00+01:00;{hint} got {raw[:40]!r}.",
        )
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise _bad(path, f"{path} is not a real date and time: {raw!r}.") from exc
    offset = value.utcoffset()
    if offset is None or abs(offset) >= timedelta(hours=24):  # pragma: no cover - the pattern requires an offset
        raise _bad(path, f"{path} must carry a UTC offset.")
    try:
        value.astimezone(timezone.utc)  # every instant is stored and compared in UTC
    except OverflowError:
        raise _bad(path, f"{path} is {raw!r}, which is outside years 1 to 9999 in UTC.") from None
    return value
