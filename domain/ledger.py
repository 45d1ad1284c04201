"""The quantity ledger of a permit: what each line allows, what customs wrote off, what is left.

Pure rules, no I/O: the store calls ``plan_write_off`` inside the transaction that holds the
permit's balance rows locked, so that the check and the write see the same balances and two
concurrent declarations can never both take the last specimens.

A write-off is idempotent on (declaration, line): the same declaration writing off the same line
again with the same quantity changes nothing (a retry), with another quantity is a conflict (the
declaration must be reversed first). A reversal gives the quantity back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from domain import rules
from domain.errors import EpixError, ErrorCode
from domain.model import Permit

ZERO = Decimal(0)
MAX_LINES = 100  # a permit has a handful of lines; more in one request is a mistake
MAX_DECLARATION = rules.MAX_NUMBER_LENGTH


class Balance(NamedTuple):
    """One permit line: permitted (box 11), written off so far (box 14, summed), and what is left.
    (A named tuple: every verification makes one per line, and frozen dataclasses cost several
    times as much to make.)"""

    item_id: str
    unit: str
    permitted: Decimal
    used: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.permitted - self.used

    @property
    def exhausted(self) -> bool:
        return self.remaining <= ZERO


@dataclass(frozen=True, slots=True)
class DrawLine:
    """One line of a customs declaration against a permit line."""

    item_id: str
    quantity: Decimal
    unit: str | None = None  # when given, must be the permit line's unit


@dataclass(frozen=True, slots=True)
class HeldWriteOff:
    """A write-off already recorded for (declaration, line)."""

    item_id: str
    quantity: Decimal
    reversed: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """What a write-off request does: the lines to record now and those that are retries."""

    new: tuple[DrawLine, ...]
    repeated: tuple[DrawLine, ...]
    balances: tuple[Balance, ...]  # after the new lines

    @property
    def replayed(self) -> bool:
        return not self.new


def permitted_lines(permit: Permit) -> dict[str, tuple[Decimal, str]]:
    """item id -> (permitted quantity, unit), from the permit's box 11."""
    return {item.id: (item.quantity, item.unit) for item in permit.items}


def balances_of(permitted: Mapping[str, tuple[Decimal, str]], used: Mapping[str, Decimal]) -> tuple[Balance, ...]:
    return tuple(Balance(i, unit, qty, used.get(i, ZERO)) for i, (qty, unit) in permitted.items())


def declaration_problems(reference: object) -> list[str]:
    """Why ``reference`` cannot be a customs declaration reference, one sentence per fault; empty
    when it can. With the permit line it is the key of a write-off; it travels to the issuer in
    the endorsement (an ex:Token64) and names the declaration in the reversal URL, so it obeys the
    permit number's rule. The write-off body and the reversal path both ask this."""
    if reference is None or reference == "":
        return ["The declaration reference is missing."]
    return rules.identifier_problems(reference, "The declaration reference")


def fallback_declaration(number: str, when: datetime, transport_document: str | None = None) -> str:
    """The declaration reference of a confirmation that names none (EPIX ConfirmQuantities without
    DeclarationReference): its transport document (box 15) if that can be a reference, else
    ``EPIX-{number}-{when}``. A retry of the same confirmation must get the same reference, to
    write nothing off twice, so it is derived, never drawn; and it must obey the declaration rule,
    or the confirmation would be refused for a reference its sender never gave. A permit number
    may take the 64 characters alone: then the number is cut short and a digest of the whole
    reference keeps it apart from any other permit or date."""
    if transport_document and not declaration_problems(transport_document):
        return transport_document
    stamp = f"{when:%Y%m%d%H%M%S}"
    whole = f"EPIX-{number}-{stamp}"
    if not declaration_problems(whole):
        return whole
    digest = hashlib.sha256(whole.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    room = MAX_DECLARATION - len(f"EPIX---{digest}{stamp}")
    short = f"EPIX-{number[:room]}-{digest}-{stamp}" if room > 0 else ""
    # A held number obeys box 1's rule, and so does any prefix of it inside this reference; a
    # request naming a number no permit can have gets the digest alone (and then NOT_FOUND).
    return short if short and not declaration_problems(short) else f"EPIX-{digest}-{stamp}"


def parse_quantity(raw: object, what: str) -> Decimal:
    """A positive, finite decimal from a JSON number or string; anything else is refused."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str, Decimal)):
        raise EpixError(ErrorCode.JSON_MALFORMED, f"{what} must be a decimal number written as a string or an integer.")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise EpixError(ErrorCode.JSON_MALFORMED, f"{what} {raw!r} is not a decimal number.") from None
    if not value.is_finite() or value <= ZERO:
        raise EpixError(ErrorCode.JSON_MALFORMED, f"{what} must be a positive number, not {raw!r}.")
    if value.as_tuple().exponent < -6 or value.adjusted() > 12:
        raise EpixError(ErrorCode.JSON_MALFORMED, f"{what} {raw!r} has more than 6 decimals or is impossibly large.")
    return value


def check_lines(lines: Sequence[DrawLine], permitted: Mapping[str, tuple[Decimal, str]]) -> None:
    """The request is about lines the permit has, each once, in the permit's units."""
    if not lines:
        raise EpixError(ErrorCode.JSON_MALFORMED, "A write-off needs at least one line.")
    if len(lines) > MAX_LINES:
        raise EpixError(ErrorCode.JSON_MALFORMED, f"A write-off has at most {MAX_LINES} lines.")
    seen: set[str] = set()
    for line in lines:
        if line.item_id in seen:
            raise EpixError(
                ErrorCode.JSON_MALFORMED, f"Line {line.item_id} appears twice; give one quantity per line.", item=line.item_id
            )
        seen.add(line.item_id)
        if line.item_id not in permitted:
            raise EpixError(
                ErrorCode.CONFLICT,
                f"The permit has no line {line.item_id!r}; its lines are {', '.join(permitted)}.",
                item=line.item_id,
            )
        unit = permitted[line.item_id][1]
        if line.unit is not None and line.unit != unit:
            raise EpixError(
                ErrorCode.CONFLICT,
                f"Line {line.item_id} is permitted in {unit}, not {line.unit}; declare it in the permit's unit.",
                item=line.item_id,
                unit=unit,
            )


def plan_write_off(
    declaration: str,
    lines: Sequence[DrawLine],
    balances: Iterable[Balance],
    held: Mapping[str, HeldWriteOff],
) -> Plan:
    """Decide a write-off against the current balances and what this declaration already holds.

    Raises IDEMPOTENCY_CONFLICT when (declaration, line) is held with another quantity or was
    reversed, and QUANTITY_EXCEEDED when any new line would go below zero: then nothing at all
    is written (the request is refused as a whole).
    """
    by_id = {b.item_id: b for b in balances}
    new: list[DrawLine] = []
    repeated: list[DrawLine] = []
    for line in lines:
        before = held.get(line.item_id)
        if before is None:
            new.append(line)
            continue
        if before.reversed:
            raise EpixError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                f"Declaration {declaration} line {line.item_id} was reversed; a new declaration needs a new reference.",
                declaration=declaration,
                item=line.item_id,
            )
        if before.quantity != line.quantity:
            raise EpixError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                f"Declaration {declaration} already wrote off {before.quantity} on line {line.item_id}, "
                f"not {line.quantity}; reverse it first to correct it.",
                declaration=declaration,
                item=line.item_id,
                held=str(before.quantity),
            )
        repeated.append(line)
    over = []
    for line in new:
        b = by_id[line.item_id]
        if line.quantity > b.remaining:
            over.append({"item": line.item_id, "requested": str(line.quantity), "remaining": str(b.remaining), "unit": b.unit})
    if over:
        first = over[0]
        raise EpixError(
            ErrorCode.QUANTITY_EXCEEDED,
            f"Line {first['item']} has {first['remaining']} {first['unit']} left, not {first['requested']}; "
            "the whole declaration was refused.",
            declaration=declaration,
            lines=over,
        )
    taken = {line.item_id: line.quantity for line in new}
    after = tuple(Balance(b.item_id, b.unit, b.permitted, b.used + taken.get(b.item_id, ZERO)) for b in by_id.values())
    return Plan(tuple(new), tuple(repeated), after)


def give_back(balances: Iterable[Balance], reversed_lines: Mapping[str, Decimal]) -> tuple[Balance, ...]:
    """Balances after a reversal returned ``reversed_lines`` (item id -> quantity)."""
    return tuple(
        Balance(b.item_id, b.unit, b.permitted, b.used - reversed_lines.get(b.item_id, ZERO)) for b in balances
    )


def record_actual(balances: Iterable[Balance], lines: Sequence[DrawLine]) -> tuple[Balance, ...]:
    """The issuer's side: customs reports what crossed; it is recorded even beyond the permit
    (the report is evidence of an over-use, not a request the issuer may refuse)."""
    taken: dict[str, Decimal] = {}
    for line in lines:
        taken[line.item_id] = taken.get(line.item_id, ZERO) + line.quantity
    return tuple(Balance(b.item_id, b.unit, b.permitted, b.used + taken.get(b.item_id, ZERO)) for b in balances)
