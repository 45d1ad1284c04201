"""Hypothesis strategies for canonical permits: any value a converter must carry unchanged.

Texts avoid what XML itself cannot carry exactly (control characters, CR, lone surrogates) and
empty strings (an absent element reads back as None).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import strategies as st

from domain.model import Address, DocumentRef, EndorsedLine, Endorsement, LineItem, Party, Permit

_ALPHABET = st.characters(
    blacklist_categories=("Cs", "Cc"),
    blacklist_characters="\r\ufffe\uffff",
)
text = st.text(_ALPHABET, min_size=1, max_size=40).filter(lambda s: s.strip() == s and s != "")
opt_text = st.none() | text
code = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=3)
country = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)

tz = st.integers(min_value=-12 * 4, max_value=14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))
moments = st.builds(
    lambda d, t: d.replace(tzinfo=t),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
    tz,
)
quantities = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1000000"), places=3, allow_nan=False, allow_infinity=False)

addresses = st.builds(
    Address,
    street=opt_text,
    city=opt_text,
    postcode=opt_text,
    country=st.none() | country,
    country_name=opt_text,
    subdivision=opt_text,
)
parties = st.builds(Party, name=text, address=addresses, id=opt_text)
authorities = st.builds(
    Party,
    name=text,
    address=st.builds(Address, street=opt_text, city=opt_text, postcode=opt_text, country=country, country_name=opt_text, subdivision=opt_text),
    id=opt_text,
)
doc_refs = st.builds(DocumentRef, number=opt_text, issue_date=st.none() | moments).filter(
    lambda r: r.number is not None or r.issue_date is not None
)


@st.composite
def line_items(draw, item_id: str) -> LineItem:
    return LineItem(
        id=item_id,
        scientific_name=draw(text),
        term=draw(code),
        appendix=draw(st.sampled_from(["I", "II", "III"])),
        source=draw(st.sampled_from(list("WXRDACFUIOY"))),
        quantity=draw(quantities),
        unit=draw(st.sampled_from(["NAR", "KGM", "GRM", "LTR", "MLT", "MTR", "CMQ", "MTK", "MTQ"])),
        common_name=draw(opt_text),
        description=draw(opt_text),
        origin_country=draw(st.none() | country),
        origin_country_name=draw(opt_text),
        origin_permit=draw(st.none() | doc_refs),
        reexport_country=draw(st.none() | country),
        reexport_country_name=draw(opt_text),
        reexport_permit=draw(st.none() | doc_refs),
        quota_used=draw(st.none() | quantities),
        quota_annual=draw(st.none() | quantities),
        marks=tuple(draw(st.lists(text, max_size=3))),
    )


@st.composite
def endorsements(draw, items: tuple[LineItem, ...]) -> Endorsement:
    chosen = draw(st.lists(st.sampled_from(items), min_size=1, max_size=len(items), unique_by=lambda i: i.id))
    return Endorsement(
        date=draw(moments),
        port=draw(text),
        lines=tuple(EndorsedLine(item_id=i.id, quantity=draw(quantities), unit=i.unit) for i in chosen),
        transport_document=draw(opt_text),
        officer=draw(opt_text),
    )


@st.composite
def permits(draw) -> Permit:
    n = draw(st.integers(min_value=1, max_value=4))
    items = tuple(draw(line_items(chr(ord("A") + i))) for i in range(n))
    issued = draw(moments)
    return Permit(
        number=draw(text),
        type=draw(st.sampled_from(["E", "R", "I", "O"])),
        authority=draw(authorities),
        issue_date=issued,
        valid_from=draw(moments),
        valid_until=draw(moments),
        purpose=draw(st.sampled_from(list("TZGQSHPMENBL"))),
        exporter=draw(parties),
        importer=draw(parties),
        items=items,
        special_conditions=tuple(draw(st.lists(text, max_size=3))),
        security_stamp=draw(opt_text),
        replaces=draw(opt_text),
        issued_at=draw(opt_text),
        signed_by=draw(opt_text),
        endorsement=draw(st.none() | endorsements(items)),
    )
