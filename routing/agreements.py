"""Partner agreements: who we exchange with, which documents, how, and whom we trust for it.

Loaded from a TOML file once at start-up and checked there, so that a bad entry stops the
gateway with a sentence naming it instead of failing on the first message. ``routing`` decides;
it never sends.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain.codes import COUNTRIES, USER_ASSIGNED_COUNTRIES
from domain.errors import EpixError, ErrorCode
from domain.messages import Action, RetryPolicy

DOCUMENT_TYPES = frozenset({"CITESEPermit"})
ROLES = frozenset({"ma", "hub"})
DELIVERY_MODES = frozenset({"push", "pull"})


@dataclass(frozen=True, slots=True)
class Agreement:
    party: str  # the partner's party id: ISO 3166-1 alpha-2 for a country, a name for a hub
    role: str = "ma"
    endpoint: str | None = None  # base URL of the partner's gateway (None: reached via a hub or pulls)
    via: str | None = None  # party id of the hub that forwards for this partner
    documents: frozenset[str] = frozenset({"CITESEPermit"})
    actions: frozenset[Action] = frozenset(Action)
    certificates: tuple[Path, ...] = ()  # pinned signing certificates (several during rollover)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    receipt_required: bool = True
    delivery: str = "push"  # "pull": the partner collects from us (hub role)
    timeout_s: float = 10.0

    def allows(self, document_type: str, action: Action) -> bool:
        return document_type in self.documents and action in self.actions


@dataclass(frozen=True, slots=True)
class Route:
    """Where a message for ``receiver`` physically goes next."""

    receiver: str
    next_hop: Agreement  # the partner itself, or the hub
    via: str | None


class Agreements:
    def __init__(self, own_party: str, agreements: dict[str, Agreement]) -> None:
        self.own_party = own_party
        self._by_party = agreements

    def __contains__(self, party: str) -> bool:
        return party in self._by_party

    def __iter__(self):
        return iter(self._by_party.values())

    def get(self, party: str) -> Agreement:
        agreement = self._by_party.get(party)
        if agreement is None:
            raise EpixError(
                ErrorCode.UNKNOWN_PARTNER,
                f"There is no agreement with party {party!r} on gateway {self.own_party}.",
                party=party,
            )
        return agreement

    def route(self, receiver: str, document_type: str, action: Action) -> Route:
        agreement = self.get(receiver)
        if not agreement.allows(document_type, action):
            raise EpixError(
                ErrorCode.NOT_AUTHORISED_FOR_DOCUMENT,
                f"The agreement with {receiver} does not cover {document_type} / {action.value}.",
                party=receiver,
            )
        if agreement.via:
            return Route(receiver=receiver, next_hop=self.get(agreement.via), via=agreement.via)
        return Route(receiver=receiver, next_hop=agreement, via=None)


def _fail(source: str, entry: str, sentence: str) -> EpixError:
    return EpixError(ErrorCode.CONFIG_INVALID, f"{source}: partner {entry}: {sentence}", entry=entry)


def _parse_one(raw: dict[str, Any], index: int, source: str, base_dir: Path) -> Agreement:
    name = str(raw.get("party") or f"#{index + 1}")
    known = {
        "party", "role", "endpoint", "via", "documents", "actions", "certificates", "retry",
        "receipt_required", "delivery", "timeout_s",
    }
    unknown = set(raw) - known
    if unknown:
        raise _fail(source, name, f"unknown setting(s) {', '.join(sorted(unknown))}.")
    if "party" not in raw:
        raise _fail(source, name, "the 'party' setting is missing.")
    role = raw.get("role", "ma")
    if role not in ROLES:
        raise _fail(source, name, f"role must be one of {sorted(ROLES)}, not {role!r}.")
    if role == "ma" and name not in COUNTRIES and name not in USER_ASSIGNED_COUNTRIES:
        raise _fail(source, name, "a Management Authority's party id must be an ISO 3166-1 alpha-2 code.")
    endpoint = raw.get("endpoint")
    if endpoint is not None and not str(endpoint).startswith(("http://", "https://")):
        raise _fail(source, name, f"endpoint must be an http(s) URL, not {endpoint!r}.")
    delivery = raw.get("delivery", "push")
    if delivery not in DELIVERY_MODES:
        raise _fail(source, name, f"delivery must be 'push' or 'pull', not {delivery!r}.")
    documents = frozenset(raw.get("documents", ["CITESEPermit"]))
    if not documents <= DOCUMENT_TYPES:
        raise _fail(source, name, f"unknown document type(s) {sorted(documents - DOCUMENT_TYPES)}.")
    try:
        actions = frozenset(Action(a) for a in raw.get("actions", [a.value for a in Action]))
    except ValueError as exc:
        raise _fail(source, name, f"{exc}; actions are {[a.value for a in Action]}.") from None
    certificates = []
    for cert in raw.get("certificates", []):
        path = Path(cert)
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise _fail(source, name, f"certificate file {path} does not exist.")
        certificates.append(path)
    retry_raw = raw.get("retry", {})
    try:
        retry = RetryPolicy(**retry_raw)
    except TypeError:
        raise _fail(source, name, f"retry accepts {list(RetryPolicy.__dataclass_fields__)}.") from None
    if retry.max_attempts < 1 or retry.first_delay_s < 0 or retry.factor < 1:
        raise _fail(source, name, "retry needs max_attempts >= 1, first_delay_s >= 0 and factor >= 1.")
    return Agreement(
        party=name,
        role=role,
        endpoint=str(endpoint).rstrip("/") if endpoint else None,
        via=raw.get("via"),
        documents=documents,
        actions=actions,
        certificates=tuple(certificates),
        retry=retry,
        receipt_required=bool(raw.get("receipt_required", True)),
        delivery=delivery,
        timeout_s=float(raw.get("timeout_s", 10.0)),
    )


def parse_agreements(data: dict[str, Any], *, own_party: str, source: str = "agreements", base_dir: Path = Path(".")) -> Agreements:
    entries = data.get("partner", [])
    if not isinstance(entries, list):
        raise EpixError(ErrorCode.CONFIG_INVALID, f"{source}: [[partner]] must be a list of tables.")
    parsed: dict[str, Agreement] = {}
    for i, raw in enumerate(entries):
        agreement = _parse_one(raw, i, source, base_dir)
        if agreement.party in parsed:
            raise _fail(source, agreement.party, "is listed twice.")
        if agreement.party == own_party:
            raise _fail(source, agreement.party, "is this gateway itself.")
        parsed[agreement.party] = agreement
    for agreement in parsed.values():
        if agreement.via is not None:
            hub = parsed.get(agreement.via)
            if hub is None or hub.role != "hub":
                raise _fail(source, agreement.party, f"via names {agreement.via!r}, which is not a hub partner.")
            if agreement.endpoint:
                raise _fail(source, agreement.party, "has both an endpoint and a hub (via); choose one.")
        elif agreement.endpoint is None and agreement.delivery == "push":
            raise _fail(source, agreement.party, "needs an endpoint, a hub (via) or delivery = 'pull'.")
        if not agreement.certificates:
            raise _fail(source, agreement.party, "has no pinned certificate; its signatures could not be checked.")
    return Agreements(own_party, parsed)


def load_agreements(path: Path, *, own_party: str) -> Agreements:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EpixError(ErrorCode.CONFIG_INVALID, f"The agreements file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise EpixError(ErrorCode.CONFIG_INVALID, f"The agreements file {path} is not valid TOML: {exc}.") from None
    return parse_agreements(data, own_party=own_party, source=str(path), base_dir=path.parent)
