"""The verdict on a permit presented at the border: pure rules over what the gateway knows.

Precedence follows what a border officer must act on first: a permit we do not hold, or that is
not for this border, says nothing more; a signature that does not verify or a security stamp
that does not match means the paper is not the permit; then the permit's life (cancelled,
replaced, not yet valid, expired); then its quantities. Every finding becomes a reason, so the
answer explains itself even when several apply (expired *and* exhausted).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from domain import validity
from domain.ledger import Balance


class Verdict(StrEnum):
    VALID = "VALID"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    CANCELLED = "CANCELLED"
    REPLACED = "REPLACED"
    EXHAUSTED = "EXHAUSTED"
    STAMP_MISMATCH = "STAMP_MISMATCH"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    NOT_FOUND = "NOT_FOUND"
    NOT_ADDRESSED_TO_YOU = "NOT_ADDRESSED_TO_YOU"


PRECEDENCE = (
    Verdict.NOT_FOUND,
    Verdict.NOT_ADDRESSED_TO_YOU,
    Verdict.SIGNATURE_INVALID,
    Verdict.STAMP_MISMATCH,
    Verdict.CANCELLED,
    Verdict.REPLACED,
    Verdict.NOT_YET_VALID,
    Verdict.EXPIRED,
    Verdict.EXHAUSTED,
    Verdict.VALID,
)
_RANK = {verdict: rank for rank, verdict in enumerate(PRECEDENCE)}


class Facts(NamedTuple):
    issuer: str
    number: str
    found: bool
    addressed: bool = True
    signature_error: str | None = None  # the verifier's sentence when the signature fails
    stamp_given: str | None = None
    stamp_on_permit: str | None = None
    status: str = "VALID"  # VALID | CANCELLED | REPLACED
    replaced_by: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    now: datetime | None = None
    balances: tuple[Balance, ...] = ()


def judge(f: Facts) -> tuple[Verdict, list[str]]:
    """(the verdict, every reason found, most serious first)."""
    key = f"{f.issuer}/{f.number}"
    if not f.found:
        return Verdict.NOT_FOUND, [f"No permit {key} is known to this gateway: it was never received here (a forgery, or not yet sent)."]
    if not f.addressed:
        return Verdict.NOT_ADDRESSED_TO_YOU, [f"Permit {key} is not addressed to a country this client acts for."]
    found: list[tuple[Verdict, str]] = []
    if f.signature_error is not None:
        found.append((Verdict.SIGNATURE_INVALID, f"The issuer's signature on permit {key} does not verify: {f.signature_error}"))
    if f.stamp_given is not None:
        expected = (f.stamp_on_permit or "").strip()
        if not expected or not hmac.compare_digest(f.stamp_given.strip().encode(), expected.encode()):
            found.append((Verdict.STAMP_MISMATCH, "The security stamp given does not match the one on the permit (box 5b)."))
    if f.status == "CANCELLED":
        found.append((Verdict.CANCELLED, f"Permit {key} was cancelled by the issuing Management Authority."))
    elif f.status == "REPLACED":
        found.append((Verdict.REPLACED, f"Permit {key} was replaced by {f.replaced_by or 'a later permit'}."))
    # By calendar day in the permit's own offset, as the permit was judged when it was accepted.
    if f.now is not None and f.valid_from is not None and validity.before_first_day(f.valid_from, f.now):
        found.append((Verdict.NOT_YET_VALID, f"Permit {key} is valid from {f.valid_from.date().isoformat()}."))
    if f.now is not None and f.valid_until is not None and validity.after_last_day(f.valid_until, f.now):
        found.append((Verdict.EXPIRED, f"Permit {key} expired: its last day of validity was {f.valid_until.date().isoformat()}."))
    exhausted = [b for b in f.balances if b.exhausted]
    if f.balances and len(exhausted) == len(f.balances):
        found.append((Verdict.EXHAUSTED, f"Every line of permit {key} has been written off in full."))
    elif exhausted:
        # Partly used up is still usable for the other lines: a reason, not the verdict.
        found.append((Verdict.VALID, f"Line(s) {', '.join(b.item_id for b in exhausted)} have nothing left."))
    if not any(v is not Verdict.VALID for v, _ in found):
        found.insert(0, (Verdict.VALID, f"Permit {key} is genuine, in force and has quantity left."))
    found.sort(key=lambda vr: _RANK[vr[0]])
    return found[0][0], [reason for _, reason in found]
