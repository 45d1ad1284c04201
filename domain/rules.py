"""The permit rules: what makes a canonical permit acceptable, with the source of each rule.

``validate(permit)`` returns every problem at once (an MA system fixes a permit in one pass, not
one error per round trip). Each problem has a stable upper-snake ``code``, the ``path`` of the
field (``items[1].quantity``, item indexes count from 0), a sentence for a person, and a
severity: an ERROR makes the permit unacceptable, a WARNING is reported and let through.

Pure and fast: no I/O, no clock (time checks run only when the caller passes ``now``, the moment
it judges the permit at, or ``today``), code lists are precomputed frozensets from ``domain.codes``.

Sources: the Convention text (Articles III, IV, VI), Res. Conf. 12.3 (Rev. CoP19) "Permits and
certificates" and its Annex 2 (the standard form and the instructions for each box), and the
annual-report Guidelines (Notif. 2021/044) for the code lists. ``RULES`` below names the source
of every code; docs/PERMIT-JSON.md repeats it for MA systems.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from unicodedata import category

from domain import codes
from domain.errors import EpixError, ErrorCode
from domain.model import Party, Permit
from domain.validity import day_in


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    path: str
    message: str
    severity: Severity = Severity.ERROR

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message, "severity": self.severity.value}


@dataclass(frozen=True, slots=True)
class Rule:
    severity: Severity
    source: str  # where the rule comes from, for the docs and for people reading a problem


_E, _W = Severity.ERROR, Severity.WARNING


# Every code validate() can return, its severity and its source. A code always has the same
# severity; tests check that the rules emit exactly these codes.
RULES = MappingProxyType(
    {
        "MISSING_REQUIRED": Rule(
            _E,
            "Res. Conf. 12.3 Annex 2: boxes 1, 2, 3, 4, 5a, 6, 7/8, 9, 10, 11 and 13 must be completed; box "
            "14 needs the port and one line per endorsed item",
        ),
        "PERMIT_NUMBER_INVALID": Rule(
            _E,
            "box 1: the number identifies the permit to partners, customs and in URLs: at most 64 characters "
            "(the exchange protocol's limit), no control or invisible characters, no space at either end or "
            'two in a row, not "." or ".."; the same for the number a replacement names (replaces)',
        ),
        "REPLACES_ITSELF": Rule(
            _E,
            "Res. Conf. 12.3: a replacement is a new document, with its own number, that names the one it "
            "replaces; a permit cannot name its own number",
        ),
        "UNKNOWN_DOCUMENT_TYPE": Rule(_E, "EPT v2 document type code: E export, R re-export, I import, O other"),
        "UNKNOWN_PURPOSE": Rule(_E, "Res. Conf. 12.3 Annex 2 box 5a; purpose codes of the Guidelines"),
        "UNKNOWN_SOURCE": Rule(_E, "Res. Conf. 12.3 Annex 2 box 10; source codes of Res. Conf. 12.3"),
        "UNKNOWN_APPENDIX": Rule(_E, "Convention Articles II to V: Appendices I, II and III"),
        "UNKNOWN_TERM": Rule(_E, "Res. Conf. 12.3 Annex 2 box 9; term codes of the Guidelines (May 2021)"),
        "HISTORICAL_TERM": Rule(_W, "term code dropped from the Guidelines (Trade Database guide v9 Table A2.3)"),
        "UNKNOWN_UNIT": Rule(_E, "Res. Conf. 12.3 Annex 2 box 11; UN/ECE Rec 20 units of the Guidelines (May 2021)"),
        "HISTORICAL_UNIT": Rule(
            _W,
            "unit dropped from the Guidelines in May 2021 (Trade Database guide v9 Table A2.4)",
        ),
        "UNKNOWN_COUNTRY": Rule(_E, "ISO 3166-1 alpha-2, as required by Res. Conf. 12.3 Annex 2"),
        "USER_ASSIGNED_COUNTRY": Rule(_W, "ISO 3166-1 user-assigned code (AA, QM-QZ, XA-XZ, ZZ), e.g. XX for unknown"),
        "INVALID_DATE": Rule(_E, "box 2 and 13 dates must be dates with a time"),
        "DATE_WITHOUT_OFFSET": Rule(_W, "a date without a UTC offset is read as UTC; the offset decides the day"),
        "VALIDITY_REVERSED": Rule(_E, "box 2: the validity cannot end before it starts"),
        "ISSUED_AFTER_EXPIRY": Rule(_E, "box 2 and 13: a permit cannot be issued after its validity ends"),
        "VALID_FROM_BEFORE_ISSUE": Rule(
            _E,
            "box 2 and 13: a permit is not valid before it is granted (one day of clock skew allowed)",
        ),
        "VALIDITY_TOO_LONG": Rule(
            _E,
            "Convention Art. VI.2 and Res. Conf. 12.3: export permits and re-export certificates at most 6 "
            "months from issue, import permits at most 12 months; other documents (type O) are held to 12 "
            "months by this gateway",
        ),
        "PERMIT_EXPIRED": Rule(_E, "Res. Conf. 12.3: a permit is not accepted after its last day of validity"),
        "PERMIT_NOT_YET_VALID": Rule(_W, "box 2: the validity has not started yet"),
        "ISSUED_IN_FUTURE": Rule(
            _E,
            "box 13 and Convention Art. VI.2: a permit is valid from the date on which it was granted, so it "
            "cannot be dated on a day that has not begun where it is issued",
        ),
        "SAME_COUNTRY": Rule(_E, "Convention Art. I(c): CITES permits cover trade between countries"),
        "EXPORTER_NOT_IN_ISSUING_COUNTRY": Rule(_W, "Art. VI: an export permit is granted by the State of export"),
        "IMPORTER_NOT_IN_ISSUING_COUNTRY": Rule(_W, "Art. III.3: an import permit is granted by the State of import"),
        "DUPLICATE_ITEM_ID": Rule(_E, "box 14 refers to items by their letter, which must therefore be unique"),
        "QUANTITY_INVALID": Rule(_E, "box 11: the quantity is a finite number"),
        "QUANTITY_NOT_POSITIVE": Rule(_E, "box 11: a permit covers a positive quantity"),
        "QUOTA_NEGATIVE": Rule(_E, "box 11a: quota figures are never negative"),
        "QUOTA_EXCEEDED": Rule(_E, "box 11a: the quantity exported to date cannot exceed the annual quota"),
        "QUOTA_INCOMPLETE": Rule(_W, "box 11a: the quota box gives both the total to date and the annual quota"),
        "APPENDIX_I_COMMERCIAL_WILD": Rule(
            _E,
            "Convention Art. III.3(c): no primarily commercial trade in wild Appendix-I specimens",
        ),
        "IMPORT_PERMIT_NOT_APPENDIX_I": Rule(
            _W,
            "Convention Art. III: import permits are required for Appendix I only (some Parties, e.g. the EU, "
            "require them for more)",
        ),
        "REEXPORT_ORIGIN_MISSING": Rule(
            _E,
            "Res. Conf. 12.3 Annex 2 box 12: a re-export certificate gives the country of origin and its "
            "permit (or box 12a, the last re-export)",
        ),
        "ENDORSEMENT_UNKNOWN_ITEM": Rule(_E, "box 14: an endorsed line refers to an item of the permit"),
        "ENDORSEMENT_DUPLICATE_LINE": Rule(_E, "box 14: one endorsed quantity per item"),
        "ENDORSED_QUANTITY_NOT_POSITIVE": Rule(_E, "box 14: the quantity that crossed the border is positive"),
        "ENDORSED_QUANTITY_EXCEEDS": Rule(_E, "box 14: no more may cross the border than the permit allows (box 11)"),
        "ENDORSED_UNIT_MISMATCH": Rule(_E, "box 14: the endorsed quantity is in the unit of box 11"),
        "ENDORSED_OUTSIDE_VALIDITY": Rule(_W, "box 14 and 2: an endorsement is made while the permit is valid"),
        "TEXT_INVALID": Rule(
            _E,
            "the permit travels as CITESEPermit XML 1.0, whose text cannot hold control characters other than tab "
            "and line breaks, lone surrogates or U+FFFE and U+FFFF",
        ),
    }
)

_PURPOSES = codes.PURPOSE_CODES
_SOURCES = codes.SOURCE_CODES
_APPENDICES = codes.APPENDIX_CODES
_DOC_TYPES = codes.DOCUMENT_TYPE_CODES
_TERMS = codes.TERM_CODES
_OLD_TERMS = codes.HISTORICAL_TERMS
_UNITS = codes.UNIT_CODES
_OLD_UNITS = codes.HISTORICAL_UNITS
_COUNTRIES = codes.COUNTRIES
_USER_COUNTRIES = codes.USER_ASSIGNED_COUNTRIES

_EXPORT_TYPES = frozenset({"E", "R"})
_MAX_MONTHS = MappingProxyType({"E": 6, "R": 6, "I": 12, "O": 12})
_CROSS_BORDER_TYPES = frozenset({"E", "R", "I"})  # "other" documents may not name two countries
_CLOCK_SKEW = timedelta(days=1)
# An MA system stamping the issue date from a clock a few minutes ahead of the judge's, just after
# midnight, dates the permit on a day that has begun where it stands: not a permit from tomorrow.
_CLOCK_DRIFT = timedelta(minutes=5)
_ZERO = Decimal(0)
# Box 1. Res. Conf. 12.3 gives the number no format, and neither the EPT v2 instances (the EPIX
# fixtures carry "XA000000") nor our XSD (ram:IDType, an xs:token without facets) bound it. The
# exchange protocol does: the envelope, the cancellation and the endorsement carry the number as an
# ex:Token64 (schemas/exchange/exchange-1.xsd), so a longer one would be accepted here and then
# fail at every delivery. Real numbers are 8 to 25 characters ("21CH012345", "KWS/CITES/2026/0012").
MAX_NUMBER_LENGTH = 64
# Characters nobody can see or type at a border desk: controls (also refused by XML), format
# characters (zero-width and bidirectional marks, which make two different numbers look alike),
# surrogates (not UTF-8) and line or paragraph separators. Spaces other than U+0020 (no-break,
# thin ...) look like a space but an officer typing the number types U+0020.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_PLAIN_IDENTIFIER = re.compile(r"[!-~]+(?: [!-~]+)*")  # visible ASCII, single spaces between
MAX_TEXT = 512  # the exchange protocol's ex:Text
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # XML 1.0 "Char" excludes these
_TYPE_NAMES = MappingProxyType(
    {"E": "an export permit", "R": "a re-export certificate", "I": "an import permit", "O": "a document of type O (other)"}
)


def validate(
    permit: Permit, *, today: date | None = None, now: datetime | None = None, since: datetime | None = None
) -> list[Problem]:
    """Every problem of ``permit``; an empty list means acceptable.

    The time checks (expired, not yet valid, issued on a day still to come) run only when the
    caller says when it judges the permit: ``now``, an aware instant, whose calendar day is taken
    in each date's own time zone (the issuing MA's), or ``today``, a calendar date as it is.
    ``since`` (with ``now``, not later): the permit has been on its way since then (a partner's
    message created then), so it is expired only if it was by then, while its issue date is judged
    at ``now``: each rule at the moment that favours the permit, whichever clock is off."""
    for name, moment in (("now", now), ("since", since)):
        if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
            raise ValueError(f"{name} must be an aware datetime: the time zone decides which day it is")
    if since is not None and now is None:
        raise ValueError("since needs now: a permit on its way since then is judged up to now")
    if isinstance(today, datetime):  # a datetime is a date too, but does not compare with one
        today = today.date()
    out: list[Problem] = []
    _header(permit, out)
    _dates(permit, out, _Clock(now, today, since) if now is not None or today is not None else None)
    _parties(permit, out)
    item_ids = _items(permit, out)
    if permit.endorsement is not None:
        _endorsement(permit, item_ids, out)
    _texts(permit, out)
    return out


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.ERROR]


def warnings(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.WARNING]


def has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.severity is Severity.ERROR for p in problems)


def ensure_valid(
    permit: Permit, *, today: date | None = None, now: datetime | None = None, since: datetime | None = None
) -> list[Problem]:
    """The warnings of an acceptable permit; raises ``EpixError(PERMIT_INVALID)`` listing every problem otherwise."""
    problems = validate(permit, today=today, now=now, since=since)
    found = errors(problems)
    if found:
        first = found[0].message
        more = f" ({len(found) - 1} more error(s))" if len(found) > 1 else ""
        raise EpixError(
            ErrorCode.PERMIT_INVALID,
            f"The permit breaks the CITES permit rules: {first}{more}",
            permit=getattr(permit, "number", None),
            problems=[p.to_dict() for p in problems],
        )
    return problems


# --- helpers -----------------------------------------------------------------------------------


def _report(out: list[Problem], code: str, path: str, message: str) -> None:
    out.append(Problem(code, path, message, RULES[code].severity))


def _blank(value: object) -> bool:
    """Whether a required text is absent: None, empty or only spaces."""
    return value is None or (isinstance(value, str) and not value.strip())


def _code(out: list[Problem], value: object, allowed: frozenset[str], path: str, what: str, unknown: str) -> bool:
    """Whether ``value`` is in ``allowed``; reports a missing or unknown code otherwise."""
    if isinstance(value, str) and value in allowed:
        return True
    if _blank(value):
        _report(out, "MISSING_REQUIRED", path, f"{what} is missing.")
    else:
        hint = " (codes are written in capitals)" if isinstance(value, str) and value.upper() in allowed else ""
        listed = ", ".join(sorted(allowed)) if len(allowed) <= 12 else None
        tail = f"; it must be one of {listed}" if listed else ""
        _report(out, unknown, path, f"{what} {value!r} is not a known code{tail}{hint}.")
    return False


def _country(out: list[Problem], value: str | None, path: str, what: str, *, required: bool) -> None:
    if isinstance(value, str) and value in _COUNTRIES:
        return
    if _blank(value):
        if required:
            _report(out, "MISSING_REQUIRED", path, f"{what} is missing.")
        return
    if isinstance(value, str) and value in _USER_COUNTRIES:
        _report(
            out,
            "USER_ASSIGNED_COUNTRY",
            path,
            f"{what} {value!r} is an ISO 3166 user-assigned code, not a country; partners may not recognise it.",
        )
        return
    hint = " (country codes are written in capitals)" if isinstance(value, str) and value.upper() in _COUNTRIES else ""
    _report(out, "UNKNOWN_COUNTRY", path, f"{what} {value!r} is not an ISO 3166-1 alpha-2 country code{hint}.")


def _moment(out: list[Problem], value: object, path: str, what: str) -> datetime | None:
    """An aware datetime to compare with, or None (the problem is reported)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            _report(out, "DATE_WITHOUT_OFFSET", path, f"{what} has no UTC offset; it is read as UTC.")
            return value.replace(tzinfo=timezone.utc)
        return value
    if value is None:
        _report(out, "MISSING_REQUIRED", path, f"{what} is missing.")
    else:
        _report(out, "INVALID_DATE", path, f"{what} is not a date with a time.")
    return None


def add_months(day: date, months: int) -> date:
    """``day`` plus calendar months; the 31st becomes the last day of a shorter month."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, monthrange(year, month)[1]))


def _quantity_ok(value: object) -> bool:
    return isinstance(value, (Decimal, int)) and not isinstance(value, bool) and Decimal(value).is_finite()


# --- box 1, 5a, 6 --------------------------------------------------------------------------------


def number_problems(number: object) -> list[Problem]:
    """What makes ``number`` unusable as a permit number (box 1); empty when it is fine. The
    gateway also asks this of a number read from a URL: no permit can have a number refused here."""
    out: list[Problem] = []
    _number(out, number)
    return out


def identifier_problems(value: object, what: str) -> list[str]:
    """Why ``value`` cannot identify something to partners and in URLs, one sentence per fault
    (each naming ``what``); empty when it can. A permit number, the number a replacement names
    and a customs declaration reference all travel as the exchange protocol's ex:Token64 and
    as one URL path segment, so they obey the same rule."""
    if not isinstance(value, str):
        return [f"{what} {value!r} is not text."]
    if len(value) <= MAX_NUMBER_LENGTH and _PLAIN_IDENTIFIER.fullmatch(value) and value not in (".", ".."):
        return []  # the usual case, asked of every permit number in a URL: nothing below can apply
    out: list[str] = []
    if len(value) > MAX_NUMBER_LENGTH:
        out.append(f"{what} has {len(value)} characters; partners accept at most {MAX_NUMBER_LENGTH}.")
    odd = next((c for c in value if category(c) in _INVISIBLE or (category(c) == "Zs" and c != " ")), None)
    if odd is not None:
        out.append(
            f"{what} contains the invisible or control character U+{ord(odd):04X}; "
            "write it with visible characters and plain spaces only."
        )
    # Partners read the value as an xs:token, which drops spaces at the ends and joins runs of
    # spaces into one: such a value would not be the same one at the other end.
    if value != value.strip() or "  " in value:
        out.append(
            f"{what} {value!r} begins or ends with a space or has two spaces in a row, "
            "which partners' XML readers remove."
        )
    # "." and ".." are the dot-segments of RFC 3986: HTTP clients resolve them away (encoded as
    # %2E too), so such a value could never be looked up in a URL.
    if value in (".", ".."):
        out.append(f"{what} {value!r} cannot be written in a URL, where it means a folder.")
    return out


def text_problems(value: object, what: str, *, limit: int | None = MAX_TEXT) -> list[str]:
    """Why ``value`` cannot travel as free text (a reason, a port, an officer's name: the exchange
    protocol's ex:Text), one sentence per fault; empty when it can. Controls other than tab and
    line breaks, lone surrogates and U+FFFE/U+FFFF cannot be written in XML at all: such text
    would fail when the signed document is built, after the request was accepted. ``limit=None``:
    any length (a permit's own text, which the CITESEPermit schema does not bound)."""
    if not isinstance(value, str):
        return [f"{what} must be text, not {type(value).__name__}."]
    out: list[str] = []
    if limit is not None and len(value) > limit:
        out.append(f"{what} has {len(value)} characters; at most {limit} are accepted.")
    odd = _NOT_XML.search(value)
    if odd is not None:
        out.append(f"{what} contains the character U+{ord(odd.group()):04X}, which XML documents cannot carry.")
    return out


def _number(out: list[Problem], number: object) -> None:
    if _blank(number):
        _report(out, "MISSING_REQUIRED", "number", "Box 1: the permit number is missing.")
        return
    for sentence in identifier_problems(number, "Box 1: the permit number"):
        _report(out, "PERMIT_NUMBER_INVALID", "number", sentence)


def _header(permit: Permit, out: list[Problem]) -> None:
    _number(out, permit.number)
    # The replaced permit is looked up by this number and named to partners in the replacement,
    # so it obeys box 1's rule. An empty one is no replacement (as for the outbound service).
    if permit.replaces is not None and permit.replaces != "":
        for sentence in identifier_problems(permit.replaces, "The number of the permit this one replaces"):
            _report(out, "PERMIT_NUMBER_INVALID", "replaces", sentence)
        # A partner would mark the permit replaced by itself (or, had it never been issued, be
        # told of a replacement of nothing); the gateway refuses it before anything is looked up.
        if permit.replaces == permit.number:
            _report(
                out,
                "REPLACES_ITSELF",
                "replaces",
                f"The permit names its own number {permit.number!r} as the permit it replaces; a replacement "
                "permit has a new number and names the number of the permit it replaces.",
            )
    _code(out, permit.type, _DOC_TYPES, "type", "Box 1: the document type", "UNKNOWN_DOCUMENT_TYPE")
    _code(out, permit.purpose, _PURPOSES, "purpose", "Box 5a: the purpose of the transaction", "UNKNOWN_PURPOSE")
    authority = permit.authority
    if authority is None or _blank(authority.name):
        _report(out, "MISSING_REQUIRED", "authority.name", "Box 6: the name of the issuing Management Authority is missing.")
    _country(
        out,
        authority.address.country if authority is not None else None,
        "authority.address.country",
        "Box 6: the country of the issuing Management Authority",
        required=True,
    )


# --- box 2 and 13 ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Clock:
    """When a permit is judged: an instant (from ``since`` on, if given), or a calendar date alone."""

    now: datetime | None
    today: date | None
    since: datetime | None = None

    def day_in(self, tz, *, earliest: bool = False, ahead: timedelta = timedelta(0)) -> date:
        """Today's date where ``tz`` applies (the permit's own offset), ``ahead`` later; with
        ``earliest``, the date at ``since`` (when the permit set out) rather than now."""
        if self.now is None:
            return self.today
        moment = self.since if earliest and self.since is not None else self.now
        try:
            moment += ahead
        except OverflowError:
            pass
        return day_in(moment, tz)


def _dates(permit: Permit, out: list[Problem], clock: _Clock | None) -> None:
    issued = _moment(out, permit.issue_date, "issue_date", "Box 13: the issue date")
    start = _moment(out, permit.valid_from, "valid_from", "Box 2: the start of validity")
    end = _moment(out, permit.valid_until, "valid_until", "Box 2: the end of validity")
    if start is not None and end is not None and start > end:
        _report(
            out,
            "VALIDITY_REVERSED",
            "valid_until",
            f"Box 2: the validity ends ({end.isoformat()}) before it starts ({start.isoformat()}).",
        )
    if issued is not None and end is not None:
        if issued > end:
            _report(
                out,
                "ISSUED_AFTER_EXPIRY",
                "issue_date",
                f"Box 13: the permit is issued ({issued.isoformat()}) after its validity ends ({end.isoformat()}).",
            )
        months = _MAX_MONTHS.get(permit.type)
        if months is not None:
            # Calendar months from the issue date, counted in the issuing MA's own time zone, so a
            # permit issued on 15 January may be valid up to and including 15 July.
            issued_day = issued.date()
            try:
                last_day = add_months(issued_day, months)
            except ValueError:  # after 9999-12-31, where no validity can reach
                last_day = date.max
            end_day = day_in(end, issued.tzinfo)
            if end_day > last_day:
                _report(
                    out,
                    "VALIDITY_TOO_LONG",
                    "valid_until",
                    f"Box 2: {_TYPE_NAMES[permit.type]} may be valid at most {months} months from its issue "
                    f"date (Res. Conf. 12.3); issued {issued_day.isoformat()}, it may be valid until "
                    f"{last_day.isoformat()}, not {end_day.isoformat()}.",
                )
    if issued is not None and start is not None and issued - start > _CLOCK_SKEW:  # no overflow in year 1
        _report(
            out,
            "VALID_FROM_BEFORE_ISSUE",
            "valid_from",
            f"Box 2: the validity starts ({start.isoformat()}) more than a day before the permit "
            f"was issued ({issued.isoformat()}).",
        )
    if clock is None:
        return
    if end is not None:
        today = clock.day_in(end.tzinfo, earliest=True)
        if today > end.date():
            when = "today is" if clock.since is None else "its message was created on"
            _report(
                out,
                "PERMIT_EXPIRED",
                "valid_until",
                f"Box 2: the permit has expired: its last day of validity was {end.date().isoformat()} and {when} "
                f"{today.isoformat()}{_where(end, clock)}.",
            )
    if start is not None:
        today = clock.day_in(start.tzinfo)
        if today < start.date():
            _report(
                out,
                "PERMIT_NOT_YET_VALID",
                "valid_from",
                f"The permit is not valid yet: its validity starts on {start.date().isoformat()} and today is "
                f"{today.isoformat()}{_where(start, clock)}.",
            )
    if issued is not None:
        today = clock.day_in(issued.tzinfo)
        if issued.date() > clock.day_in(issued.tzinfo, ahead=_CLOCK_DRIFT):
            _report(
                out,
                "ISSUED_IN_FUTURE",
                "issue_date",
                f"Box 13: the permit is dated {issued.date().isoformat()}, but today is {today.isoformat()}"
                f"{_where(issued, clock)}; a permit cannot be issued on a day that has not begun.",
            )


def _where(moment: datetime, clock: _Clock) -> str:
    """Which calendar "today" is measured in, when it was worked out from an instant."""
    if clock.now is None:
        return ""
    offset = moment.utcoffset()
    if not offset:
        return " in UTC"
    sign, rest = ("+", offset) if offset >= timedelta(0) else ("-", -offset)
    hours, minutes = divmod(int(rest.total_seconds()) // 60, 60)
    return f" at UTC{sign}{hours:02d}:{minutes:02d}, the permit's time zone"


# --- box 3 and 4 -------------------------------------------------------------------------------


def _party_country(out: list[Problem], party: Party | None, path: str, box: str) -> str | None:
    if party is None or _blank(party.name):
        _report(out, "MISSING_REQUIRED", f"{path}.name", f"{box}: the name is missing.")
    country = party.address.country if party is not None else None
    _country(out, country, f"{path}.address.country", f"{box}: the country", required=True)
    return country or None


def _parties(permit: Permit, out: list[Problem]) -> None:
    exporter = _party_country(out, permit.exporter, "exporter", "Box 4 (exporter)")
    importer = _party_country(out, permit.importer, "importer", "Box 3 (importer)")
    issuer = permit.authority.address.country if permit.authority is not None else None
    kind = permit.type
    if exporter and importer and exporter == importer and kind in _CROSS_BORDER_TYPES:
        _report(
            out,
            "SAME_COUNTRY",
            "importer.address.country",
            f"Box 3 and 4: the importer and the exporter are both in {importer}; a CITES permit covers "
            "trade from one country to another.",
        )
    # A warning, not an error: box 4 may rightly carry a foreign address (a visiting hunter
    # exporting a trophy, a tourist's personal effects), and box 3 of an import permit may name
    # an agent abroad. The issuing MA decides; partners see the warning.
    if issuer and kind in _EXPORT_TYPES and exporter and exporter != issuer:
        _report(
            out,
            "EXPORTER_NOT_IN_ISSUING_COUNTRY",
            "exporter.address.country",
            f"Box 4: the exporter is in {exporter}, but the permit is issued by {issuer}; an export permit "
            "is granted by the country of export.",
        )
    if issuer and kind == "I" and importer and importer != issuer:
        _report(
            out,
            "IMPORTER_NOT_IN_ISSUING_COUNTRY",
            "importer.address.country",
            f"Box 3: the importer is in {importer}, but the import permit is issued by {issuer}; an import "
            "permit is granted by the country of import.",
        )


# --- boxes 7 to 12b -----------------------------------------------------------------------------


def _items(permit: Permit, out: list[Problem]) -> dict[str, object]:
    """Checks every line; returns the lines by id (the first of any duplicates) for box 14."""
    by_id: dict[str, object] = {}
    items = permit.items or ()
    if not items:
        _report(out, "MISSING_REQUIRED", "items", "Boxes 7 to 11: the permit lists no specimens.")
    kind = permit.type
    commercial = permit.purpose == "T"
    for i, item in enumerate(items):
        p = f"items[{i}]"
        label = f"Item {item.id}" if item.id else f"Item {i + 1}"
        if _blank(item.id):
            _report(out, "MISSING_REQUIRED", f"{p}.id", f"{label}: the item letter is missing.")
        elif item.id in by_id:
            _report(out, "DUPLICATE_ITEM_ID", f"{p}.id", f"{label}: another item has the same letter {item.id!r}.")
        else:
            by_id[item.id] = item
        if _blank(item.scientific_name):
            _report(out, "MISSING_REQUIRED", f"{p}.scientific_name", f"{label}, box 7/8: the scientific name is missing.")
        _term(out, item.term, f"{p}.term", label)
        appendix_ok = _code(out, item.appendix, _APPENDICES, f"{p}.appendix", f"{label}, box 10: the Appendix", "UNKNOWN_APPENDIX")
        source_ok = _code(out, item.source, _SOURCES, f"{p}.source", f"{label}, box 10: the source", "UNKNOWN_SOURCE")
        _quantity(out, item.quantity, f"{p}.quantity", label)
        _unit(out, item.unit, f"{p}.unit", label)
        _quota(out, item, p, label)
        _country(out, item.origin_country, f"{p}.origin_country", f"{label}, box 12: the country of origin", required=False)
        _country(out, item.reexport_country, f"{p}.reexport_country", f"{label}, box 12a: the country of last re-export", required=False)
        if appendix_ok and source_ok and commercial and item.appendix == "I" and item.source == "W":
            _report(
                out,
                "APPENDIX_I_COMMERCIAL_WILD",
                f"{p}.source",
                f"{label}: wild-taken (source W) specimens of an Appendix-I species cannot be traded for "
                "commercial purposes (purpose T) (Convention Art. III).",
            )
        if kind == "I" and appendix_ok and item.appendix != "I":
            _report(
                out,
                "IMPORT_PERMIT_NOT_APPENDIX_I",
                f"{p}.appendix",
                f"{label}: the Convention requires an import permit for Appendix-I specimens only; this item "
                f"is in Appendix {item.appendix} (some Parties require one anyway).",
            )
        if kind == "R":
            _reexport_origin(out, item, p, label)
    return by_id


def _term(out: list[Problem], value: str, path: str, label: str) -> None:
    if isinstance(value, str) and value in _TERMS:
        return
    old = _OLD_TERMS.get(value) if isinstance(value, str) else None
    if old is not None:
        instead = f"; use {old.replaced_by} instead" if old.replaced_by else ""
        _report(
            out,
            "HISTORICAL_TERM",
            path,
            f"{label}, box 9: the term {value!r} ({old.description}) is no longer in the CITES Guidelines{instead}.",
        )
        return
    _code(out, value, _TERMS, path, f"{label}, box 9: the term", "UNKNOWN_TERM")


def _unit(out: list[Problem], value: str, path: str, label: str) -> None:
    if isinstance(value, str) and value in _UNITS:
        return
    old = _OLD_UNITS.get(value) if isinstance(value, str) else None
    if old is not None:
        instead = f"; since 2021 the Guidelines use {old.maps_to}" if old.maps_to else ""
        _report(
            out,
            "HISTORICAL_UNIT",
            path,
            f"{label}, box 11: the unit {value!r} ({old.description}) is no longer in the CITES Guidelines{instead}.",
        )
        return
    if _blank(value):
        _report(
            out,
            "MISSING_REQUIRED",
            path,
            f"{label}, box 11: the unit is missing (for a number of specimens write NAR).",
        )
        return
    _code(out, value, _UNITS, path, f"{label}, box 11: the unit", "UNKNOWN_UNIT")


def _quantity(out: list[Problem], value: object, path: str, label: str) -> None:
    if value is None:
        _report(out, "MISSING_REQUIRED", path, f"{label}, box 11: the quantity is missing.")
    elif not _quantity_ok(value):
        _report(out, "QUANTITY_INVALID", path, f"{label}, box 11: the quantity {value!r} is not a finite number.")
    elif value <= _ZERO:
        _report(out, "QUANTITY_NOT_POSITIVE", path, f"{label}, box 11: the quantity must be more than zero, not {value}.")


def _quota(out: list[Problem], item, p: str, label: str) -> None:
    used, annual = item.quota_used, item.quota_annual
    if used is None and annual is None:
        return
    usable = True
    for value, field, what in ((used, "quota_used", "the quantity exported to date"), (annual, "quota_annual", "the annual quota")):
        if value is None:
            continue
        if not _quantity_ok(value) or value < _ZERO:
            _report(out, "QUOTA_NEGATIVE", f"{p}.{field}", f"{label}, box 11a: {what} must be zero or more, not {value}.")
            usable = False
    if used is None or annual is None:
        given = "quota_used" if annual is None else "quota_annual"
        _report(
            out,
            "QUOTA_INCOMPLETE",
            f"{p}.{given}",
            f"{label}, box 11a: give both the quantity exported to date and the annual quota.",
        )
    elif usable and used > annual:
        _report(
            out,
            "QUOTA_EXCEEDED",
            f"{p}.quota_used",
            f"{label}, box 11a: the quantity exported to date ({used}) exceeds the annual quota ({annual}).",
        )


def _reexport_origin(out: list[Problem], item, p: str, label: str) -> None:
    origin_complete = bool(item.origin_country) and item.origin_permit is not None and bool(item.origin_permit.number)
    last_complete = bool(item.reexport_country) and item.reexport_permit is not None and bool(item.reexport_permit.number)
    if origin_complete or last_complete:
        return
    missing = []
    if not item.origin_country:
        missing.append("the country of origin")
    if item.origin_permit is None or not item.origin_permit.number:
        missing.append("the number of the origin permit")
    path = f"{p}.origin_country" if not item.origin_country else f"{p}.origin_permit"
    _report(
        out,
        "REEXPORT_ORIGIN_MISSING",
        path,
        f"{label}, box 12: a re-export certificate must give {' and '.join(missing)} "
        "(or, in box 12a, the country and certificate of the last re-export).",
    )


# --- box 14 ------------------------------------------------------------------------------------


def _endorsement(permit: Permit, by_id: dict, out: list[Problem]) -> None:
    e = permit.endorsement
    if _blank(e.port):
        _report(out, "MISSING_REQUIRED", "endorsement.port", "Box 14: the port of export or import is missing.")
    when = _moment(out, e.date, "endorsement.date", "Box 14: the date of the endorsement")
    start, end = permit.valid_from, permit.valid_until
    if (
        when is not None
        and isinstance(start, datetime)
        and isinstance(end, datetime)
        and start.tzinfo is not None
        and end.tzinfo is not None
        and not (start - _CLOCK_SKEW <= when <= end + _CLOCK_SKEW)
    ):
        _report(
            out,
            "ENDORSED_OUTSIDE_VALIDITY",
            "endorsement.date",
            f"Box 14: the endorsement is dated {when.date().isoformat()}, outside the permit's validity "
            f"({start.date().isoformat()} to {end.date().isoformat()}).",
        )
    if not e.lines:
        _report(out, "MISSING_REQUIRED", "endorsement.lines", "Box 14: the endorsement gives no quantity for any item.")
    seen: set[str] = set()
    for i, line in enumerate(e.lines or ()):
        p = f"endorsement.lines[{i}]"
        item = by_id.get(line.item_id)
        if item is None:
            _report(
                out,
                "ENDORSEMENT_UNKNOWN_ITEM",
                f"{p}.item_id",
                f"Box 14: the endorsement refers to item {line.item_id!r}, which the permit does not list.",
            )
        elif line.item_id in seen:
            _report(out, "ENDORSEMENT_DUPLICATE_LINE", f"{p}.item_id", f"Box 14: item {line.item_id} is endorsed twice.")
        seen.add(line.item_id)
        label = f"Box 14, item {line.item_id}"
        quantity_ok = _quantity_ok(line.quantity)
        if not quantity_ok or line.quantity <= _ZERO:
            _report(
                out,
                "ENDORSED_QUANTITY_NOT_POSITIVE",
                f"{p}.quantity",
                f"{label}: the quantity that crossed the border must be more than zero, not {line.quantity}.",
            )
            quantity_ok = False
        if item is None:
            continue
        if line.unit != item.unit:
            _report(
                out,
                "ENDORSED_UNIT_MISMATCH",
                f"{p}.unit",
                f"{label}: the quantity is given in {line.unit!r} but the permit gives this item in {item.unit!r}.",
            )
        elif quantity_ok and _quantity_ok(item.quantity) and line.quantity > item.quantity:
            _report(
                out,
                "ENDORSED_QUANTITY_EXCEEDS",
                f"{p}.quantity",
                f"{label}: {line.quantity} {line.unit} crossed the border but the permit allows only "
                f"{item.quantity} {item.unit}.",
            )


# --- free text ----------------------------------------------------------------------------------

_PARTIES = (("authority", "Box 6 (issuing authority)"), ("exporter", "Box 4 (exporter)"), ("importer", "Box 3 (importer)"))
_PARTY_TEXT = (("name", "the name"), ("id", "the identifier"))
_ADDRESS_TEXT = (
    ("street", "the street"),
    ("city", "the town"),
    ("postcode", "the postal code"),
    ("country_name", "the country name"),
    ("subdivision", "the state or province"),
)
_PERMIT_TEXT = (
    ("security_stamp", "Box 5b: the security stamp number"),
    ("issued_at", "Box 13: the place of issue"),
    ("signed_by", "Box 13: the signing officer"),
)
_ITEM_TEXT = (
    ("scientific_name", "box 7/8: the scientific name"),
    ("common_name", "box 7/8: the common name"),
    ("description", "box 9: the description"),
    ("origin_country_name", "box 12: the name of the country of origin"),
    ("reexport_country_name", "box 12a: the name of the country of last re-export"),
)
_REF_TEXT = (
    ("origin_permit", "box 12: the origin permit number"),
    ("reexport_permit", "box 12a: the number of the last re-export certificate"),
)
_ENDORSEMENT_TEXT = (
    ("port", "Box 14: the port"),
    ("transport_document", "Box 15: the transport document"),
    ("officer", "Box 14: the endorsing officer"),
)


def _text_fields(permit: Permit, named: bool) -> Iterator[tuple[object, tuple[str, str] | bool]]:
    """Every free-text field the CITESEPermit XML must carry: (value, (JSON path, what a sentence
    calls it)), or (value, False) without ``named``, which spares the formatting when all that is
    wanted is a look at the values."""
    for attr, box in _PARTIES:
        party = getattr(permit, attr, None)
        if party is None:
            continue
        for field, what in _PARTY_TEXT:
            yield getattr(party, field, None), named and (f"{attr}.{field}", f"{box}: {what}")
        address = getattr(party, "address", None)
        for field, what in _ADDRESS_TEXT if address is not None else ():
            yield getattr(address, field, None), named and (f"{attr}.address.{field}", f"{box}: {what}")
    yield from _each(permit.special_conditions, named, "special_conditions", "Box 5: special condition")
    for field, what in _PERMIT_TEXT:
        yield getattr(permit, field), named and (field, what)
    for i, item in enumerate(permit.items or ()):
        p = label = ""
        if named:  # the letter names the item in every sentence, unless it is the faulty text itself
            p = f"items[{i}]"
            clean = isinstance(item.id, str) and not text_problems(item.id, "", limit=None)
            label = f"Item {item.id}" if clean and item.id else f"Item {i + 1}"
        yield item.id, named and (f"{p}.id", f"{label}: the item letter")
        for field, what in _ITEM_TEXT:
            yield getattr(item, field), named and (f"{p}.{field}", f"{label}, {what}")
        for field, what in _REF_TEXT:
            ref = getattr(item, field)
            if ref is not None:
                yield ref.number, named and (f"{p}.{field}.number", f"{label}, {what}")
        yield from _each(item.marks, named, f"{p}.marks", f"{label}, box 9: mark")
    e = permit.endorsement
    for field, what in _ENDORSEMENT_TEXT if e is not None else ():
        yield getattr(e, field), named and (f"endorsement.{field}", what)


def _each(values: object, named: bool, path: str, what: str) -> Iterator[tuple[object, tuple[str, str] | bool]]:
    if isinstance(values, (tuple, list)):
        for i, value in enumerate(values):
            yield value, named and (f"{path}[{i}]", f"{what} {i + 1}")


def _texts(permit: Permit, out: list[Problem]) -> None:
    """Every free-text field the CITESEPermit XML must carry, by its JSON path: the writer would
    refuse the first one it met without naming it, after the request was read. Codes, numbers and
    dates have their own rules above."""
    # Almost every permit's text is all fine: one look at all of it first, and paths and
    # sentences are worked out only when something is wrong (it was most of the rules' time).
    values = [v for v, _ in _text_fields(permit, named=False) if v is not None]
    if all(type(v) is str for v in values) and _NOT_XML.search("".join(values)) is None:
        return
    for value, (path, what) in _text_fields(permit, named=True):
        if value is not None:
            for sentence in text_problems(value, what, limit=None):
                _report(out, "TEXT_INVALID", path, sentence)
