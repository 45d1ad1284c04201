"""Typed gateway configuration, loaded once from a TOML file and checked before anything starts."""

from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.errors import EpixError, ErrorCode
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

    def matches(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode("utf-8")).hexdigest()
        return hmac.compare_digest(digest, self.sha256)

    def covers(self, country: str) -> bool:
        return "*" in self.countries or country in self.countries


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    concurrency: int = 16
    batch: int = 64
    lease_s: float = 30.0
    poll_s: float = 0.5


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """[queue]: absent (or no url) = the embedded queue in the store; ``amqp://...`` = RabbitMQ."""

    url: str | None = field(default=None, repr=False)  # may carry a password
    prefetch: int = 16  # unacknowledged deliveries per consumer
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
class GatewayConfig:
    party: str
    agreements: Agreements
    role: str = "national"  # "national" or "hub"
    host: str = "127.0.0.1"
    port: int = 8440
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

    @property
    def keys_dir(self) -> Path:
        return self.key_dir or self.data_dir  # KeyStore keeps keys under <dir>/keys/<party>/

    def token_for(self, presented: str) -> Token | None:
        for token in self.tokens:
            if token.matches(presented):
                return token
        return None


def _bad(source: str, sentence: str) -> EpixError:
    return EpixError(ErrorCode.CONFIG_INVALID, f"{source}: {sentence}")


_GATEWAY_KEYS = {
    "party", "role", "host", "port", "data_dir", "store_url", "agreements", "replay_window_s",
    "max_body_bytes", "start_delivery",
}


def _table(cls, raw: dict[str, Any], name: str, source: str):
    try:
        return cls(**raw)
    except TypeError:
        allowed = ", ".join(f for f in cls.__dataclass_fields__ if f != "secret")
        raise _bad(source, f"[{name}] accepts {allowed}; got {', '.join(sorted(raw))}.") from None


def _tokens(raw: list[dict[str, Any]], source: str) -> tuple[Token, ...]:
    tokens = []
    for i, t in enumerate(raw):
        name = t.get("name", f"token #{i + 1}")
        if t.get("role") not in ROLES:
            raise _bad(source, f"token {name}: role must be one of {ROLES}.")
        if "sha256" in t:
            digest = str(t["sha256"]).lower()
        elif "token" in t:
            digest = hashlib.sha256(str(t["token"]).encode()).hexdigest()
        elif "token_env" in t:
            value = os.environ.get(t["token_env"])
            if not value:
                raise _bad(source, f"token {name}: environment variable {t['token_env']} is not set.")
            digest = hashlib.sha256(value.encode()).hexdigest()
        else:
            raise _bad(source, f"token {name}: give sha256, token_env or token.")
        countries = frozenset(t.get("countries", []))
        if not countries:
            raise _bad(source, f"token {name}: countries must list at least one country (or '*').")
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
    return GatewayConfig(
        party=party,
        agreements=agreements,
        role=role,
        host=gw.get("host", "127.0.0.1"),
        port=int(gw.get("port", 8440)),
        data_dir=path(gw.get("data_dir", "data")),
        store_url=store_url,
        key_dir=path(keys.get("dir")),
        key_passphrase=passphrase,
        tokens=_tokens(data.get("token", []), source),
        replay_window_s=float(gw.get("replay_window_s", 900)),
        max_body_bytes=int(gw.get("max_body_bytes", 2 * 1024 * 1024)),
        delivery=delivery,
        webhook=webhook,
        queue=_queue(data.get("queue", {}), source),
        start_delivery=bool(gw.get("start_delivery", True)),
        customs=_customs(data.get("customs"), source, base_dir),
    )


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
    prefetch = int(raw.get("prefetch", 16))
    timeout = float(raw.get("confirm_timeout_s", 5.0))
    prefix = str(raw.get("prefix", "epix"))
    if prefetch < 1 or timeout <= 0:
        raise _bad(source, "queue.prefetch must be at least 1 and queue.confirm_timeout_s above 0.")
    if not prefix or not all(c.isalnum() or c in "-_." for c in prefix):
        raise _bad(source, "queue.prefix may hold only letters, digits, '-', '_' and '.'.")
    return QueueConfig(url=url, prefetch=prefetch, confirm_timeout_s=timeout, prefix=prefix)


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
