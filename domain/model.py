"""The canonical CITES permit: what every converter reads into and writes from.

Plain frozen dataclasses, standard library only. Codes are kept as the strings found on the
permit (an EPT v1 permit may carry a retired unit such as ``PCS``); ``domain.rules`` says which
values are acceptable, so that reading never loses what a partner sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Address:
    street: str | None = None
    city: str | None = None
    postcode: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    country_name: str | None = None
    subdivision: str | None = None


@dataclass(frozen=True, slots=True)
class Party:
    """Importer (box 3), exporter (box 4) or the issuing Management Authority (box 6)."""

    name: str
    address: Address = field(default_factory=Address)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """A permit referred to from a line item: the origin permit or the last re-export certificate."""

    number: str | None = None
    issue_date: datetime | None = None


@dataclass(frozen=True, slots=True)
class LineItem:
    """One specimen line (boxes 7 to 12b)."""

    id: str  # A, B, C ... as printed on the permit
    scientific_name: str  # box 7/8
    term: str  # box 9: CITES term code (e.g. LIV, SKI, LPS)
    appendix: str  # box 10: I, II or III
    source: str  # box 10: W, C, D ...
    quantity: Decimal  # box 11
    unit: str  # box 11: UN/ECE Rec 20 code as used since 2021 (NAR, KGM ...)
    common_name: str | None = None
    description: str | None = None  # box 9 free text
    origin_country: str | None = None  # box 12
    origin_country_name: str | None = None
    origin_permit: DocumentRef | None = None
    reexport_country: str | None = None  # box 12a: country of last re-export
    reexport_country_name: str | None = None
    reexport_permit: DocumentRef | None = None
    quota_used: Decimal | None = None  # box 11a
    quota_annual: Decimal | None = None
    marks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndorsedLine:
    """Box 14 for one line: the quantity that actually crossed the border."""

    item_id: str
    quantity: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class Endorsement:
    """Box 14 (and 15): the border endorsement by customs or the inspecting authority."""

    date: datetime
    port: str
    lines: tuple[EndorsedLine, ...]
    transport_document: str | None = None  # box 15: bill of lading / air waybill
    officer: str | None = None


@dataclass(frozen=True, slots=True)
class Permit:
    number: str  # box 1
    type: str  # box 1: E export, R re-export, I import, O other
    authority: Party  # box 6: issuing Management Authority
    issue_date: datetime  # box 13 (on)
    valid_from: datetime  # box 2
    valid_until: datetime  # box 2
    purpose: str  # box 5a
    exporter: Party  # box 4
    importer: Party  # box 3
    items: tuple[LineItem, ...]
    special_conditions: tuple[str, ...] = ()  # box 5
    security_stamp: str | None = None  # box 5b
    replaces: str | None = None  # number of the permit this one replaces
    issued_at: str | None = None  # box 13 (at)
    signed_by: str | None = None  # box 13 (by)
    endorsement: Endorsement | None = None  # box 14/15

    @property
    def issuing_country(self) -> str:
        return self.authority.address.country or ""

    @property
    def key(self) -> tuple[str, str]:
        """(issuing country, permit number): the identity partners and customs look a permit up by."""
        return (self.issuing_country, self.number)
