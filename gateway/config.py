"""Typed gateway configuration, loaded once from a TOML file and checked before anything starts."""

from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.exchange_xml import is_party_id
from domain.errors import EpixError, ErrorCode
from domain.rules import identifier_problems
from routing.agreements import Agreements, load_agreements, parse_agreements

if TYPE_CHECKING:
    from gateway.customs.config import CustomsConfig

ROLES = ("ma", "customs", "operator")


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token of a local client: its role and the countries it may act for."""

    name: str
    sha256: str  # hex digest of the token; the token itself is never stored in config or logs
    role: str
    countries: frozenset[str]

    def covers(self, country: str) -> bool:
        return "*" in self.countries or country in self.countries


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    # Messages in flight at once. Under load each send waits behind the busy event loops at both
    # ends, and shares the sender's loop with the API taking new permits: more in flight keeps
    # both gateways at work and delivery abreast of intake. Bench e2e direct (runs taken
    # alternately, three rounds): 64 delivered 10% more than 32 on SQLite (0.35 of the floor
    # against 0.32) and the same on PostgreSQL; 128 no more than 64. (32 had beaten 16 by 8-10%.)
    concurrency: int = 64
    batch: int = 64
    lease_s: float = 30.0
    poll_s: float = 0.5


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """[queue]: absent (or no url) = the embedded queue in the store; ``amqp://...`` = RabbitMQ."""

    url: str | None = field(default=None, repr=False)  # may carry a password
    # Unacknowledged deliveries per consumer (one per partner queue); the HTTP connection limit
    # ([delivery] concurrency) still bounds the sends at once. Bench e2e rabbitmq/SQLite, two
    # rounds alternating: 16 delivered 0.23 and 0.19 of the floor, 32 0.26 and 0.22, 64 0.24 and 0.24.
    prefetch: int = 64
    confirm_timeout_s: float = 5.0  # how long to wait for the broker to confirm a publish
    prefix: str = "epix"  # queue and exchange names start with <prefix>.<party>.

    @property
    def broker(self) -> bool:
        return self.url is not None


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Push received permits to the local MA system (besides the inbox it can poll)."""

    url: str | None = None
    max_attempts: int = 5
    secret: str | None = field(default=None, repr=False)  # HMAC key for the X-Epix-Signature header


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """[retention]: how long final messages and the rest are kept (README, "Retention").

    Every ``*_days`` left out (the default) keeps that category forever: what the store holds is
    evidence (receipts, histories, audit rows), how long it must be kept is each Management
    Authority's legal decision, and a deletion cannot be undone, so the gateway deletes nothing
    until an operator has chosen."""

    payload_days: int | None = None  # drop the document bytes of final messages (row, digest, receipt, history kept)
    message_days: int | None = None  # delete final messages with their history
    idempotency_days: int | None = None  # forget Idempotency-Key values
    verification_days: int | None = None  # customs verification audit rows
    interval_s: float = 3600.0  # how often `epix serve` purges; 0: only `epix purge` does
    batch: int = 200  # rows per transaction (on SQLite ~5 ms of the writer)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) is not None for name in RETENTION_DAYS)


RETENTION_DAYS = ("payload_days", "message_days", "idempotency_days", "verification_days")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    party: str
    agreements: Agreements
    role: str = "national"  # "national" or "hub"
    host: str = "127.0.0.1"
    port: int = 8440
    workers: int = 1  # processes serving the port (gateway/workers.py)
    data_dir: Path = Path("data")
    store_url: str | None = None
    key_dir: Path | None = None
    key_passphrase: str | None = field(default=None, repr=False)
    tokens: tuple[Token, ...] = ()
    replay_window_s: float = 900.0
    max_body_bytes: int = 2 * 1024 * 1024
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    start_delivery: bool = True
    customs: "CustomsConfig | None" = None  # [customs]: gateway.customs.config (None: defaults)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    @property
    def keys_dir(self) -> Path:
        return self.key_dir or self.data_dir  # KeyStore keeps keys under <dir>/keys/<party>/

    def token_for(self, presented: str) -> Token | None:
        # Digested once and compared with every token in constant time: how long it takes says
        # nothing about which token, if any, came close.
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()
        found = None
        for token in self.tokens:
            if hmac.compare_digest(digest, token.sha256):
                found = token
        return found


def _bad(source: str, sentence: str) -> EpixError:
    return EpixError(ErrorCode.CONFIG_INVALID, f"{source}: {sentence}")


_GATEWAY_KEYS = {
    "party", "role", "host", "port", "workers", "data_dir", "store_url", "agreements", "replay_window_s",
    "max_body_bytes", "start_delivery",
}


def _table(cls, raw: dict[str, Any], name: str, source: str):
    try:
        return cls(**raw)
    except TypeError:
        allowed = ", ".join(f for f in cls.__dataclass_fields__ if f != "secret")
        raise _bad(source, f"[{name}] accepts {allowed}; got {', '.join(sorted(raw))}.") from None


def _scope(raw: Any, name: str, source: str) -> frozenset[str]:
    """A token's countries: '*', parties (FR, HUB-AF) and customs offices (FR/FRCDG). A string
    alone is refused rather than read as its letters ("FR" as F and R would cover nothing)."""
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
        raise _bad(source, f'token {name}: countries must list at least one country, as a list such as ["FR"] (or ["*"]).')
    for entry in raw:
        party, slash, office = entry.partition("/")
        party_ok = is_party_id(party) and party.isupper()
        office_ok = not slash or (bool(office) and not identifier_problems(office, "The office"))
        if entry == "*" or (party_ok and office_ok):
            continue
        raise _bad(source, f"token {name}: {entry!r} in countries is not '*', a country such as FR, or an office such as FR/FRCDG.")
    return frozenset(raw)


def _tokens(raw: list[dict[str, Any]], source: str) -> tuple[Token, ...]:
    tokens = []
    for i, t in enumerate(raw):
        name = t.get("name", f"token #{i + 1}")
        if t.get("role") not in ROLES:
            raise _bad(source, f"token {name}: role must be one of {ROLES}.")
        if "sha256" in t:
            digest = str(t["sha256"]).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise _bad(source, f"token {name}: sha256 must be the 64 hex digits of the token's SHA-256.")
        elif "token" in t:
            digest = hashlib.sha256(str(t["token"]).encode()).hexdigest()
        elif "token_env" in t:
            value = os.environ.get(t["token_env"])
            if not value:
                raise _bad(source, f"token {name}: environment variable {t['token_env']} is not set.")
            digest = hashlib.sha256(value.encode()).hexdigest()
        else:
            raise _bad(source, f"token {name}: give sha256, token_env or token.")
        countries = _scope(t.get("countries", []), name, source)
        # The name keys a client's Idempotency-Key values and names it in every audit row; a
        # secret matches only the first entry that holds it, leaving any later one unused.
        for j, other in enumerate(tokens):
            if other.name == name:
                raise _bad(source, f"the name {name} is given to tokens #{j + 1} and #{i + 1}; each token needs its own.")
            if hmac.compare_digest(other.sha256, digest):
                raise _bad(source, f"tokens {other.name} and {name} have the same secret; give each its own.")
        tokens.append(Token(name=name, sha256=digest, role=t["role"], countries=countries))
    return tuple(tokens)


def parse_config(data: dict[str, Any], *, source: str = "config", base_dir: Path = Path(".")) -> GatewayConfig:
    gw = data.get("gateway")
    if not isinstance(gw, dict) or "party" not in gw:
        raise _bad(source, "the [gateway] table with 'party' is required.")
    party = str(gw["party"])
    role = gw.get("role", "national")
    if role not in ("national", "hub"):
        raise _bad(source, f"gateway.role must be 'national' or 'hub', not {role!r}.")

    def path(value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else base_dir / p

    if "agreements" in gw:
        agreements = load_agreements(path(gw["agreements"]), own_party=party)
    else:
        agreements = parse_agreements(data, own_party=party, source=source, base_dir=base_dir)
    keys = data.get("keys", {})
    passphrase = None
    if "passphrase_env" in keys:
        passphrase = os.environ.get(keys["passphrase_env"])
        if passphrase is None:
            raise _bad(source, f"keys.passphrase_env names {keys['passphrase_env']}, which is not set.")
    unknown = set(gw) - _GATEWAY_KEYS
    if unknown:
        raise _bad(source, f"[gateway] has unknown setting(s) {', '.join(sorted(unknown))}.")
    delivery = _table(DeliveryConfig, data.get("delivery", {}), "delivery", source)
    webhook_raw = dict(data.get("webhook", {}))
    if "secret_env" in webhook_raw:
        var = webhook_raw.pop("secret_env")
        webhook_raw["secret"] = os.environ.get(var)
        if webhook_raw["secret"] is None:
            raise _bad(source, f"webhook.secret_env names {var}, which is not set.")
    webhook = _table(WebhookConfig, webhook_raw, "webhook", source)
    store_url = gw.get("store_url") or os.environ.get("EPIX_STORE_URL") or None
    replay_window_s = float(gw.get("replay_window_s", 900))
    customs = _customs(data.get("customs"), source, base_dir)
    return GatewayConfig(
        party=party,
        agreements=agreements,
        role=role,
        host=gw.get("host", "127.0.0.1"),
        port=int(gw.get("port", 8440)),
        workers=_workers(gw.get("workers", 1), source),
        data_dir=path(gw.get("data_dir", "data")),
        store_url=store_url,
        key_dir=path(keys.get("dir")),
        key_passphrase=passphrase,
        tokens=_tokens(data.get("token", []), source),
        replay_window_s=replay_window_s,
        max_body_bytes=int(gw.get("max_body_bytes", 2 * 1024 * 1024)),
        delivery=delivery,
        webhook=webhook,
        queue=_queue(data.get("queue", {}), source),
        start_delivery=bool(gw.get("start_delivery", True)),
        customs=customs,
        retention=_retention(data.get("retention", {}), source, replay_window_s=replay_window_s),
    )


def _workers(raw: Any, source: str) -> int:
    from gateway.workers import MAX_WORKERS

    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_WORKERS:
        raise _bad(source, f"[gateway] workers must be a whole number from 1 to {MAX_WORKERS} (processes serving the port), not {raw!r}.")
    return raw


def _customs(raw: dict[str, Any] | None, source: str, base_dir: Path) -> "CustomsConfig":
    from gateway.customs.config import parse_customs  # the customs package reads its own table

    return parse_customs(raw, source=source, base_dir=base_dir)


def _queue(raw: dict[str, Any], source: str) -> QueueConfig:
    unknown = set(raw) - {"url", "prefetch", "confirm_timeout_s", "prefix"}
    if unknown:
        raise _bad(source, f"[queue] does not know {', '.join(sorted(unknown))}.")
    url = raw.get("url") or os.environ.get("EPIX_QUEUE_URL") or None
    if url is not None and not str(url).startswith(("amqp://", "amqps://")):
        raise _bad(source, "queue.url must be an amqp:// or amqps:// URL (leave it out for the embedded queue).")
    defaults = QueueConfig()
    prefetch = int(raw.get("prefetch", defaults.prefetch))
    timeout = float(raw.get("confirm_timeout_s", defaults.confirm_timeout_s))
    prefix = str(raw.get("prefix", defaults.prefix))
    if prefetch < 1 or timeout <= 0:
        raise _bad(source, "queue.prefetch must be at least 1 and queue.confirm_timeout_s above 0.")
    if not prefix or not all(c.isalnum() or c in "-_." for c in prefix):
        raise _bad(source, "queue.prefix may hold only letters, digits, '-', '_' and '.'.")
    return QueueConfig(url=url, prefetch=prefetch, confirm_timeout_s=timeout, prefix=prefix)


def _retention(raw: Any, source: str, *, replay_window_s: float) -> RetentionConfig:
    if not isinstance(raw, dict):
        raise _bad(source, "[retention] must be a table.")
    known = (*RETENTION_DAYS, "interval_s", "batch")
    unknown = set(raw) - set(known)
    if unknown:
        raise _bad(source, f"[retention] does not know {', '.join(sorted(unknown))}; it accepts {', '.join(known)}.")
    for name in RETENTION_DAYS:
        value = raw.get(name)
        if value is not None and (type(value) is not int or value < 1):
            raise _bad(
                source,
                f"retention.{name} must be a whole number of days, at least 1, not {value!r} "
                "(leave it out to keep that forever).",
            )
    interval, batch = raw.get("interval_s", 3600.0), raw.get("batch", 200)
    if type(interval) not in (int, float) or interval < 0:
        raise _bad(source, f"retention.interval_s must be a number of seconds, 0 or more, not {interval!r}.")
    if type(batch) is not int or not 1 <= batch <= 10_000:
        raise _bad(source, f"retention.batch must be a whole number from 1 to 10000, not {batch!r}.")
    policy = RetentionConfig(**{name: raw.get(name) for name in RETENTION_DAYS}, interval_s=float(interval), batch=batch)
    payload_days, message_days = policy.payload_days, policy.message_days
    if payload_days is not None and message_days is not None and payload_days > message_days:
        raise _bad(
            source,
            f"retention.payload_days ({payload_days}) is longer than retention.message_days ({message_days}): "
            "a message and its payload go together after message_days; shorten payload_days or leave it out.",
        )
    if message_days is not None:
        kept_s = message_days * 86400
        # A received envelope's SentAt is within one window of its arrival, and a copy of that
        # envelope passes the replay check for one more window: the id must be held that long, or
        # the copy would be taken for a new message and accepted twice.
        if kept_s <= 2 * replay_window_s:
            raise _bad(
                source,
                f"retention.message_days = {message_days} keeps a received message id {kept_s} s, not longer than "
                f"twice gateway.replay_window_s (2 x {replay_window_s:g} s): a copy of an envelope would still pass "
                "the replay window after its message was purged, and be accepted twice. Raise message_days or "
                "lower replay_window_s.",
            )
    return policy


def load_config(path: Path) -> GatewayConfig:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EpixError(ErrorCode.CONFIG_INVALID, f"The configuration file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise EpixError(ErrorCode.CONFIG_INVALID, f"The configuration file {path} is not valid TOML: {exc}.") from None
    except TypeError as exc:
        raise EpixError(ErrorCode.CONFIG_INVALID, f"{path}: {exc}.") from None
    return parse_config(data, source=str(path), base_dir=Path(path).resolve().parent)
