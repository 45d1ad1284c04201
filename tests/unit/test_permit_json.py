"""The JSON form of the permit: exact round trip, clear refusals, and agreement with its JSON Schema."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.permit_json import MAX_JSON_BYTES, permit_from_dict, permit_from_json, permit_to_dict, permit_to_json, read_json
from domain import model
from domain.errors import EpixError, ErrorCode
from domain.model import EndorsedLine, Endorsement, Permit
from simulators.samples import make_permit
from tests.strategies import permits

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "permit.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def sample(seed: int = 7, **kw) -> Permit:
    return make_permit(random.Random(seed), issuer="CH", importer_country="FR", **kw)


def as_dict(permit: Permit) -> dict[str, Any]:
    """What an MA system would send: the JSON form, parsed the way the gateway parses it."""
    return json.loads(permit_to_json(permit), parse_float=Decimal, parse_int=Decimal)


def refused(data: bytes | dict) -> EpixError:
    with pytest.raises(EpixError) as caught:
        permit_from_json(data) if isinstance(data, (bytes, str)) else permit_from_dict(data)
    err = caught.value
    assert err.code is ErrorCode.JSON_MALFORMED
    assert "path" in err.context
    return err


# --- round trip -------------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(permits())
def test_round_trip_is_exact(permit):
    data = permit_to_json(permit)
    back = permit_from_json(data)
    assert back == permit
    # Equality of aware datetimes ignores the offset; the bytes do not, nor Decimal exponents.
    assert permit_to_json(back) == data
    for a, b in zip(back.items, permit.items):
        assert a.quantity.as_tuple() == b.quantity.as_tuple()
    assert back.issue_date.utcoffset() == permit.issue_date.utcoffset()


@pytest.mark.parametrize("seed", range(20))
def test_sample_permits_round_trip(seed):
    for kind in "ERIO":
        p = sample(seed, doc_type=kind)
        assert permit_from_json(permit_to_json(p)) == p
        assert permit_from_dict(permit_to_dict(p)) == p


def test_the_same_permit_always_gives_the_same_bytes():
    assert permit_to_json(sample(3)) == permit_to_json(sample(3))


def test_output_is_compact_utf8_in_model_field_order():
    p = make_permit(random.Random(1), issuer="FR", importer_country="JP")
    text = permit_to_json(p).decode("utf-8")
    assert "Ministère" in text  # not \u-escaped
    assert "\n" not in text and '", "' not in text  # compact
    keys = list(json.loads(text))
    order = [f.name for f in dataclasses.fields(Permit)]
    assert keys == [k for k in order if k in keys]
    assert text.startswith('{"number":')


def test_indented_output_is_the_same_json():
    p = replace(sample(), special_conditions=())
    pretty = permit_to_json(p, indent=2)
    assert pretty.startswith(b'{\n  "number": ')
    assert b'\n    "address": {\n      "street": ' in pretty
    assert json.loads(pretty, parse_float=Decimal) == json.loads(permit_to_json(p), parse_float=Decimal)
    assert permit_from_json(pretty) == p
    # what the standard library would print, Decimal aside
    assert pretty.decode() == json.dumps(json.loads(pretty), indent=2, ensure_ascii=False)


def test_a_dict_dumped_with_default_str_reads_back():
    p = sample()
    assert permit_from_json(json.dumps(permit_to_dict(p), default=str).encode()) == p


def test_decimals_are_written_exactly_as_json_numbers():
    item = sample().items[0]
    p = replace(
        sample(),
        items=(replace(item, quantity=Decimal("12.50"), quota_used=Decimal("1E+3"), quota_annual=Decimal("0.000001")),),
    )
    text = permit_to_json(p).decode()
    assert '"quantity":12.50,' in text
    assert '"quota_used":1E+3,' in text
    assert '"quota_annual":0.000001' in text
    back = permit_from_json(text.encode()).items[0]
    assert str(back.quantity) == "12.50" and str(back.quota_used) == "1E+3"


def test_optional_fields_are_left_out_when_empty():
    d = permit_to_dict(sample(items=1))
    assert "endorsement" not in d and "replaces" not in d
    assert "origin_permit" not in d["items"][0]
    assert all(v is not None for v in d.values())


def test_endorsement_round_trips():
    p = sample()
    e = Endorsement(
        date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
        port="JFK",
        lines=(EndorsedLine(p.items[0].id, Decimal("1.5"), p.items[0].unit),),
        transport_document="AWB 123-4567",
    )
    q = replace(p, endorsement=e)
    d = permit_to_dict(q)
    assert d["endorsement"]["date"] == "2026-01-02T03:04:05-05:00"
    assert permit_from_json(permit_to_json(q)) == q


# --- what input is accepted -----------------------------------------------------------------------


def test_numbers_may_be_numeric_strings():
    d = as_dict(sample())
    d["items"][0]["quantity"] = "12.50"
    assert permit_from_dict(d).items[0].quantity.as_tuple() == Decimal("12.50").as_tuple()


def test_floats_from_a_plain_json_parse_are_read_by_their_shortest_repr():
    d = json.loads(permit_to_json(sample()))  # no parse_float: 0.1 becomes a float
    d["items"][0]["quantity"] = 0.1
    assert permit_from_dict(d).items[0].quantity == Decimal("0.1")


def test_utc_may_be_written_z():
    d = as_dict(sample())
    d["issue_date"] = "2026-03-01T08:00:00Z"
    issued = permit_from_dict(d).issue_date
    assert issued == datetime(2026, 3, 1, 8, tzinfo=timezone.utc) and issued.utcoffset() == timedelta(0)


def test_optional_fields_may_be_null_or_absent():
    d = as_dict(sample(items=1))
    d["replaces"] = None
    d["special_conditions"] = None
    d["importer"]["address"] = None
    d["items"][0]["origin_permit"] = None
    p = permit_from_dict(d)
    assert p.replaces is None and p.special_conditions == () and p.importer.address == model.Address()


def test_text_may_be_given_as_str():
    assert permit_from_json(permit_to_json(sample()).decode()) == sample()


# --- what input is refused --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda d: d["items"][0].__setitem__("quantity", True), "items[0].quantity", "number"),
        (lambda d: d["items"][0].__setitem__("quantity", "12,5"), "items[0].quantity", "not one"),
        (lambda d: d["items"][0].__setitem__("quantity", "NaN"), "items[0].quantity", "not one"),
        (lambda d: d["items"][0].__setitem__("quantity", Decimal("1E+999")), "items[0].quantity", "outside"),
        (lambda d: d["items"][0].__setitem__("quantity", Decimal("1." + "1" * 40)), "items[0].quantity", "outside"),
        (lambda d: d.__setitem__("number", 42), "number", "string"),
        (lambda d: d.pop("purpose"), "purpose", "missing"),
        (lambda d: d.__setitem__("purpose", None), "purpose", "null"),
        (lambda d: d["items"][0].pop("unit"), "items[0].unit", "missing"),
        (lambda d: d.__setitem__("items", {"A": 1}), "items", "array"),
        (lambda d: d.__setitem__("items", [1]), "items[0]", "object"),
        (lambda d: d.__setitem__("colour", "green"), "colour", "Unknown field"),
        (lambda d: d["exporter"]["address"].__setitem__("town", "Bern"), "exporter.address.town", "Unknown field"),
        (lambda d: d.__setitem__("issue_date", "2026-03-01"), "issue_date", "a date alone"),
        (lambda d: d.__setitem__("issue_date", "2026-03-01T10:00:00"), "issue_date", "UTC offset"),
        (lambda d: d.__setitem__("issue_date", "2026-02-30T10:00:00Z"), "issue_date", "not a real date"),
        (lambda d: d.__setitem__("valid_until", 1767225600), "valid_until", "ISO 8601"),
        (lambda d: d.__setitem__("special_conditions", "one"), "special_conditions", "array"),
        (lambda d: d.__setitem__("special_conditions", [1]), "special_conditions[0]", "string"),
        (lambda d: d.__setitem__("signed_by", "\ud800"), "signed_by", "surrogate"),
        (lambda d: d["items"][0].__setitem__("quantity", "\u0661\u0662"), "items[0].quantity", "not one"),
        (lambda d: d.__setitem__("issue_date", "\u0662026-03-01T10:00:00Z"), "issue_date", "UTC offset"),
        (lambda d: d.__setitem__("valid_until", "9999-12-31T23:00:00-02:00"), "valid_until", "outside years 1 to 9999 in UTC"),
        (lambda d: d.__setitem__("issue_date", "0001-01-01T01:00:00+02:00"), "issue_date", "outside years 1 to 9999 in UTC"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(mutate, path, words):
    d = as_dict(sample())
    mutate(d)
    err = refused(d)
    assert err.context["path"] == path
    assert path in err.detail and words in err.detail


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"<permit/>", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'"permit"', "must be a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"number": "\u00e9"}'.encode("latin-1"), "not UTF-8"),
        (b'{"number": "a", "number": "b"}', "repeats the field 'number'"),
        (b'{"items": [{"quantity": NaN}]}', "not valid JSON"),
        (b'{"items": [{"quantity": Infinity}]}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "too deeply"),
        (b"{}", "required field number is missing"),
    ],
)
def test_bad_bodies_are_refused_with_a_sentence(data, words):
    err = refused(data)
    assert words in err.detail
    assert err.context["path"] in {"$", "number"}


def test_any_json_body_is_read_as_strictly_as_a_permit():
    assert read_json(b'{"limit": 2.50, "n": 7}') == {"limit": Decimal("2.50"), "n": Decimal(7)}  # exact, never a float
    for data, words in (
        (b"[" * 100_000 + b"]" * 100_000, "too deeply"),
        (b'{"a": Infinity}', "not valid JSON"),
        (b'{"a": 1, "a": 2}', "repeats the field"),
        (b"\xff{}", "not UTF-8"),
    ):
        with pytest.raises(EpixError) as caught:
            read_json(data)
        assert caught.value.code is ErrorCode.JSON_MALFORMED and words in caught.value.detail


def test_oversize_bodies_are_refused_before_parsing():
    big = b" " * (MAX_JSON_BYTES + 1)
    err = refused(big)
    assert "at most" in err.detail and str(MAX_JSON_BYTES) in err.detail
    with pytest.raises(EpixError):
        permit_from_json(permit_to_json(sample()), max_bytes=100)


def test_non_bytes_input_is_refused():
    with pytest.raises(EpixError) as caught:
        permit_from_json(12)  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.JSON_MALFORMED and "bytes" in caught.value.detail
    assert "JSON object" in refused([1]).detail  # a dict-level caller passing a list


def test_invalid_json_error_points_at_the_place():
    err = refused(b'{\n  "number": "X",\n  oops\n}')
    assert err.context["line"] == 3


_json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.decimals(allow_nan=False, allow_infinity=False)
_json_values = st.recursive(_json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)


def _leaf_paths(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaf_paths(v, path + (k,))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaf_paths(v, path + (i,))]
    return [path]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_damage_gives_a_permit_or_a_json_error_never_a_traceback(data):
    d = as_dict(sample(data.draw(st.integers(0, 5))))
    paths = [p for p in _leaf_paths(d) if p]
    target = data.draw(st.sampled_from(paths))
    replacement = data.draw(_json_values)
    node = d
    for key in target[:-1]:
        node = node[key]
    node[target[-1]] = replacement
    try:
        result = permit_from_dict(d)
    except EpixError as err:
        assert err.code is ErrorCode.JSON_MALFORMED and err.detail
    else:
        assert isinstance(result, Permit)


@given(st.binary(max_size=200))
def test_any_bytes_give_a_permit_or_a_json_error(blob):
    try:
        permit_from_json(blob)
    except EpixError as err:
        assert err.code is ErrorCode.JSON_MALFORMED


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(permits())
def test_the_compact_writer_writes_what_the_full_writer_writes(permit):
    """permit_to_json writes compact JSON straight from the model; the general writer (the dict,
    with every field's path for its errors) must give the very same bytes."""
    from adapters.permit_json import _write

    parts: list[str] = []
    _write(permit_to_dict(permit), parts, "$", None, 0)
    assert permit_to_json(permit) == "".join(parts).encode("utf-8")


# --- writing refuses what JSON cannot carry exactly ---------------------------------------------------


def test_writing_a_non_finite_quantity_is_refused():
    p = sample()
    bad = replace(p, items=(replace(p.items[0], quantity=Decimal("NaN")),))
    with pytest.raises(EpixError) as caught:
        permit_to_json(bad)
    assert caught.value.code is ErrorCode.PERMIT_INVALID and "items[0].quantity" in caught.value.detail


def test_writing_a_naive_date_is_refused():
    p = sample()
    with pytest.raises(EpixError) as caught:
        permit_to_json(replace(p, valid_until=p.valid_until.replace(tzinfo=None)))
    assert "valid_until" in caught.value.detail


# --- the JSON Schema ------------------------------------------------------------------------------------
# jsonschema is not installed in this venv, so here is the small subset of draft 2020-12 that
# schemas/permit.schema.json uses. Unknown keywords fail, so the schema cannot outgrow this check.

_KNOWN_KEYWORDS = {
    "$schema", "$id", "$defs", "$ref", "title", "description", "examples", "format",
    "type", "anyOf", "pattern", "properties", "required", "additionalProperties", "items",
}
_TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float, Decimal)) and not isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def schema_errors(node: dict, value: Any, root: dict, path: str = "$") -> list[str]:
    unknown = set(node) - _KNOWN_KEYWORDS
    assert not unknown, f"schema keyword(s) {unknown} are not understood by this check"
    found: list[str] = []
    if "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        found += schema_errors(target, value, root, path)
    if "anyOf" in node and all(schema_errors(s, value, root, path) for s in node["anyOf"]):
        found.append(f"{path}: matches none of the alternatives")
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if not any(_TYPES[t](value) for t in types):
            return found + [f"{path}: not of type {types}"]
    if "pattern" in node and isinstance(value, str) and not re.search(node["pattern"], value):
        found.append(f"{path}: does not match {node['pattern']}")
    if isinstance(value, dict):
        props = node.get("properties", {})
        found += [f"{path}: required {k} missing" for k in node.get("required", []) if k not in value]
        if node.get("additionalProperties") is False:
            found += [f"{path}: unexpected {k}" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                found += schema_errors(props[k], v, root, f"{path}.{k}")
    if isinstance(value, list) and "items" in node:
        for i, v in enumerate(value):
            found += schema_errors(node["items"], v, root, f"{path}[{i}]")
    return found


def test_schema_is_draft_2020_12(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("seed", range(25))
def test_sample_permits_validate_against_the_schema(schema, seed):
    for kind in "ERIO":
        assert schema_errors(schema, as_dict(sample(seed, doc_type=kind)), schema) == []


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(permits())
def test_any_permit_written_validates_against_the_schema(schema, permit):
    assert schema_errors(schema, as_dict(permit), schema) == []


def test_the_schema_check_can_fail(schema):
    good = as_dict(sample())
    for mutate, expected in [
        (lambda d: d.pop("number"), "required number missing"),
        (lambda d: d.__setitem__("colour", 1), "unexpected colour"),
        (lambda d: d.__setitem__("issue_date", "2026-03-01T10:00:00"), "does not match"),
        (lambda d: d["items"][0].__setitem__("quantity", "12,5"), "none of the alternatives"),
        (lambda d: d["items"][0].__setitem__("marks", "x"), "not of type"),
    ]:
        d = json.loads(json.dumps(good, default=str))
        mutate(d)
        found = schema_errors(schema, d, schema)
        assert any(expected in e for e in found), (expected, found)
        with pytest.raises(EpixError):  # and the adapter agrees
            permit_from_dict(d)


_DEF_OF = {
    model.Address: "address",
    model.Party: "party",
    model.DocumentRef: "document_ref",
    model.LineItem: "line_item",
    model.EndorsedLine: "endorsed_line",
    model.Endorsement: "endorsement",
}


@pytest.mark.parametrize("cls", [Permit, *_DEF_OF])
def test_schema_fields_match_the_model(schema, cls):
    node = schema if cls is Permit else schema["$defs"][_DEF_OF[cls]]
    fields = dataclasses.fields(cls)
    assert list(node["properties"]) == [f.name for f in fields]
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert node.get("required", []) == required
    assert node["additionalProperties"] is False


# --- docs/PERMIT-JSON.md stays true --------------------------------------------------------------------

DOC_PATH = SCHEMA_PATH.parents[1] / "docs" / "PERMIT-JSON.md"


def _doc_example() -> str:
    blocks = re.findall(r"```json\n(.*?)```", DOC_PATH.read_text(encoding="utf-8"), flags=re.S)
    return next(b for b in blocks if b.startswith('{\n  "number"'))


def test_the_documented_example_reads_is_written_back_identically_and_breaks_no_rule():
    from domain.rules import validate

    example = _doc_example()
    permit = permit_from_json(example.encode())
    assert permit_to_json(permit, indent=2).decode() + "\n" == example
    assert validate(permit) == []


def test_the_docs_name_every_field_and_every_rule():
    from domain.rules import RULES

    doc = DOC_PATH.read_text(encoding="utf-8")
    for cls in [Permit, *_DEF_OF]:
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in doc, (cls.__name__, f.name)
    for code in RULES:
        assert f"| `{code}` | {RULES[code].severity.value} |" in doc, code
