"""Customs risk targeting for CITES shipments: a score with its reasons, then a channel.

Customs risk management combines three things (WCO Risk Management Compendium): rules that score
what is known about a consignment, targeting of known concerns (species, parties), and a random
selection that keeps compliant traders honest. Here each rule that fires adds its weight and a
sentence saying why; the total picks green / yellow / red at configured thresholds; a random
draw selects a configured share of green shipments for a check anyway.

The draw is a hash of the configured seed and the shipment's key (permit, declaration), not a
random number generator: the same shipment gets the same answer every time it is asked, on any
gateway instance, and an auditor can recompute it. Pure: no I/O, no clock (``today`` is given).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from domain import validity
from domain.errors import EpixError, ErrorCode
from domain.ledger import Balance, DrawLine
from domain.model import Permit

CHANNELS = ("green", "yellow", "red")

# rule name -> default weight. The rules and what makes each fire are documented in docs/CUSTOMS.md.
DEFAULT_WEIGHTS: dict[str, int] = {
    "appendix_i": 30,  # a line of Appendix I: trade only in exceptional circumstances
    "wild_source": 15,  # a line of source W (taken from the wild)
    "species_of_concern": 35,  # a listed species (configured list)
    "party_of_concern": 25,  # exporter, importer or origin country on the configured list
    "near_balance": 15,  # the declaration takes a line to (near) nothing left
    "near_expiry": 10,  # the permit expires within near_expiry_days
    "first_shipment": 15,  # no earlier write-off of this exporter is known
    "declaration_mismatch": 50,  # the declaration says something the permit does not
    "exhausted_line": 20,  # a line has nothing left already
}


@dataclass(frozen=True, slots=True)
class RiskRules:
    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    species_of_concern: frozenset[str] = frozenset()
    parties_of_concern: frozenset[str] = frozenset()
    near_balance_ratio: Decimal = Decimal("0.9")  # used / permitted at or above this after the declaration
    near_expiry_days: int = 14
    yellow_at: int = 30
    red_at: int = 60
    random_rate: float = 0.0  # share of green shipments selected at random (0 to 1)
    random_channel: str = "yellow"
    seed: str = "epix"


@dataclass(frozen=True, slots=True)
class Declared:
    """What a customs declaration says about the goods, to compare with the permit."""

    lines: tuple[DrawLine, ...] = ()
    exporter_country: str | None = None
    importer_country: str | None = None
    species: tuple[str, ...] = ()  # scientific names declared


class RiskContext(NamedTuple):
    today: datetime
    balances: tuple[Balance, ...] = ()
    first_shipment: bool | None = None  # None: unknown (not counted)
    declared: Declared | None = None


class Reason(NamedTuple):
    rule: str
    points: int
    sentence: str


class Assessment(NamedTuple):
    score: int
    channel: str
    reasons: tuple[Reason, ...]
    randomly_selected: bool
    draw: float  # in [0, 1): selected when below random_rate and the score alone gave green

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "channel": self.channel,
            "randomly_selected": self.randomly_selected,
            "reasons": [{"rule": r.rule, "points": r.points, "reason": r.sentence} for r in self.reasons],
        }


def draw(seed: str, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assess(permit: Permit, context: RiskContext, rules: RiskRules, *, key: str) -> Assessment:
    """Score ``permit`` (and the declaration in ``context``, if any) under ``rules``."""
    found: list[tuple[str, str]] = []
    for item in permit.items:
        if item.appendix == "I":
            found.append(("appendix_i", f"Line {item.id} ({item.scientific_name}) is Appendix I."))
        if item.source == "W":
            found.append(("wild_source", f"Line {item.id} ({item.scientific_name}) is taken from the wild (source W)."))
        if item.scientific_name in rules.species_of_concern:
            found.append(("species_of_concern", f"Line {item.id}: {item.scientific_name} is on the list of species of concern."))
    if rules.parties_of_concern:  # none listed (the default): no country can be one
        countries = {
            "exporter": permit.exporter.address.country,
            "importer": permit.importer.address.country,
            **{f"origin of line {i.id}": i.origin_country for i in permit.items if i.origin_country},
        }
        for role, country in countries.items():
            if country and country in rules.parties_of_concern:
                found.append(("party_of_concern", f"The {role} country {country} is on the list of parties of concern."))
    # Whole days in the permit's own offset, as box 2 is read (domain.validity): the time of day
    # its end carries is not when it stops being valid, so its last day counts in full.
    last_day = permit.valid_until.date()
    days_left = (last_day - validity.day_in(context.today, permit.valid_until.tzinfo)).days
    if 0 <= days_left <= rules.near_expiry_days:
        sentence = f"The permit's last day of validity, {last_day.isoformat()}, is {days_left} day(s) away, within {rules.near_expiry_days}."
        found.append(("near_expiry", sentence))
    if context.first_shipment:
        found.append(("first_shipment", "No earlier shipment of this exporter is on record."))
    declared = context.declared
    taking = {line.item_id: line.quantity for line in declared.lines} if declared else {}
    for b in context.balances:
        if b.permitted <= 0:
            continue
        if b.exhausted and b.item_id not in taking:
            found.append(("exhausted_line", f"Line {b.item_id} has nothing left."))
            continue
        if b.item_id in taking:
            after = (b.used + taking[b.item_id]) / b.permitted
            if after >= rules.near_balance_ratio:
                found.append(
                    ("near_balance", f"Line {b.item_id}: this declaration brings use to {after:.0%} of the permitted quantity.")
                )
    if declared is not None:
        by_item = {b.item_id: b for b in context.balances}
        found += [("declaration_mismatch", s) for s in _mismatches(permit, declared, by_item)]
    weights = rules.weights
    reasons = tuple([Reason(rule, points, sentence) for rule, sentence in found if (points := int(weights.get(rule, 0)))])
    score = sum([r.points for r in reasons])
    channel = "red" if score >= rules.red_at else "yellow" if score >= rules.yellow_at else "green"
    value = draw(rules.seed, key)
    selected = channel == "green" and value < rules.random_rate
    if selected:
        channel = rules.random_channel
        reasons += (Reason("random_selection", 0, f"Selected at random ({rules.random_rate:.0%} of green shipments are)."),)
    return Assessment(score, channel, reasons, selected, value)


def _mismatches(permit: Permit, declared: Declared, by_item: Mapping[str, Balance]) -> list[str]:
    out = []
    if declared.exporter_country and declared.exporter_country != permit.exporter.address.country:
        out.append(f"Declared exporter country {declared.exporter_country} is not the permit's {permit.exporter.address.country}.")
    if declared.importer_country and declared.importer_country != permit.importer.address.country:
        out.append(f"Declared importer country {declared.importer_country} is not the permit's {permit.importer.address.country}.")
    names = {i.scientific_name for i in permit.items}
    for species in declared.species:
        if species not in names:
            out.append(f"Declared species {species} is not on the permit.")
    for line in declared.lines:
        b = by_item.get(line.item_id)
        if b is not None and line.unit is not None and line.unit != b.unit:
            out.append(f"Line {line.item_id} is declared in {line.unit}, the permit says {b.unit}.")
    return out


def parse_rules(raw: Mapping[str, Any], *, source: str = "risk rules") -> RiskRules:
    """Rules from a TOML table (see docs/CUSTOMS.md); every mistake is CONFIG_INVALID with its place."""

    def bad(sentence: str) -> EpixError:
        return EpixError(ErrorCode.CONFIG_INVALID, f"{source}: {sentence}")

    known = {
        "weights", "species_of_concern", "parties_of_concern", "near_balance_ratio", "near_expiry_days",
        "yellow_at", "red_at", "random_rate", "random_channel", "seed",
    }  # fmt: skip
    unknown = set(raw) - known
    if unknown:
        raise bad(f"unknown setting(s) {', '.join(sorted(unknown))}.")
    weights = dict(DEFAULT_WEIGHTS)
    for name, value in dict(raw.get("weights", {})).items():
        if name not in DEFAULT_WEIGHTS:
            raise bad(f"weights.{name} is not a rule; the rules are {', '.join(DEFAULT_WEIGHTS)}.")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f"weights.{name} must be a whole number >= 0.")
        weights[name] = value
    try:
        rules = RiskRules(
            weights=weights,
            species_of_concern=frozenset(str(s) for s in raw.get("species_of_concern", [])),
            parties_of_concern=frozenset(str(s) for s in raw.get("parties_of_concern", [])),
            near_balance_ratio=Decimal(str(raw.get("near_balance_ratio", "0.9"))),
            near_expiry_days=int(raw.get("near_expiry_days", 14)),
            yellow_at=int(raw.get("yellow_at", 30)),
            red_at=int(raw.get("red_at", 60)),
            random_rate=float(raw.get("random_rate", 0.0)),
            random_channel=str(raw.get("random_channel", "yellow")),
            seed=str(raw.get("seed", "epix")),
        )
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise bad(f"a number is not readable ({exc}).") from None
    if not 0 <= rules.random_rate <= 1:
        raise bad("random_rate must be between 0 and 1.")
    if rules.random_channel not in CHANNELS[1:]:
        raise bad("random_channel must be 'yellow' or 'red'.")
    if not 0 < rules.yellow_at <= rules.red_at:
        raise bad("thresholds need 0 < yellow_at <= red_at.")
    return rules
