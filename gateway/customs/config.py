"""The ``[customs]`` table of the gateway configuration, and what a customs token may do.

    [customs]
    risk_file = "risk.toml"        # rules (docs/CUSTOMS.md); or an inline [customs.risk] table
    feed_url = "http://127.0.0.1:9000/pre-arrival"   # webhook for the pre-arrival feed, or
    feed_amqp_url = "amqp://guest:guest@127.0.0.1:5672/"  # with feed_queue = "customs.pre-arrival"
    feed_poll_s = 0.25
    feed_backfill_s = 86400        # unsent permits older than this are still fed, with a warning
    # feed_since = 2026-11-01T00:00:00Z   # optional: permits received before this are never fed
    verify_signature_every_time = false  # true: re-verify the permit's XML-DSig on every request

A customs token's ``countries`` says where it acts: ``"FR"`` for the whole country's customs,
``"FR/FRCDG"`` for one office (the token may then write off only as that office).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from domain.errors import EpixError, ErrorCode
from domain.risk import RiskRules, parse_rules


@dataclass(frozen=True, slots=True)
class CustomsConfig:
    risk: RiskRules = field(default_factory=RiskRules)
    feed_url: str | None = None
    feed_amqp_url: str | None = None
    feed_queue: str = "customs.pre-arrival"
    feed_poll_s: float = 0.25
    # The feed hands over every permit not handed over yet, however old. One still waiting after
    # this long (a feed down or off for longer) is handed over all the same, with a warning.
    feed_backfill_s: float = 86400.0
    feed_since: datetime | None = None  # the operator's bound: permits received before it are never fed
    verify_signature_every_time: bool = False
    audit_batch: int = 256  # verifications appended to the audit history in one transaction at most

    @property
    def feed_enabled(self) -> bool:
        return bool(self.feed_url or self.feed_amqp_url)


def parse_customs(raw: dict[str, Any] | None, *, source: str = "config", base_dir: Path = Path(".")) -> CustomsConfig:
    raw = dict(raw or {})

    def bad(sentence: str) -> EpixError:
        return EpixError(ErrorCode.CONFIG_INVALID, f"{source}: [customs] {sentence}")

    known = {
        "risk", "risk_file", "feed_url", "feed_amqp_url", "feed_queue", "feed_poll_s", "feed_backfill_s",
        "feed_since", "verify_signature_every_time", "audit_batch",
    }  # fmt: skip
    unknown = set(raw) - known
    if unknown:
        raise bad(f"unknown setting(s) {', '.join(sorted(unknown))}.")
    risk_raw = raw.get("risk", {})
    risk_source = f"{source} [customs.risk]"
    if "risk_file" in raw:
        path = Path(raw["risk_file"])
        path = path if path.is_absolute() else base_dir / path
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise bad(f"risk_file {path} does not exist.") from None
        except tomllib.TOMLDecodeError as exc:
            raise bad(f"risk_file {path} is not valid TOML: {exc}.") from None
        risk_raw, risk_source = data.get("risk", data), str(path)
    feed_url = raw.get("feed_url")
    if feed_url is not None and not str(feed_url).startswith(("http://", "https://")):
        raise bad(f"feed_url must be an http(s) URL, not {feed_url!r}.")
    amqp = raw.get("feed_amqp_url")
    if amqp is not None and not str(amqp).startswith(("amqp://", "amqps://")):
        raise bad(f"feed_amqp_url must be an amqp(s) URL, not {amqp!r}.")
    since = raw.get("feed_since")
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since)
        except ValueError:
            raise bad(f"feed_since {since!r} is not an ISO 8601 date and time.") from None
    if since is not None and (not isinstance(since, datetime) or since.utcoffset() is None):
        raise bad(f"feed_since must be a date and time with its offset (e.g. 2026-11-01T00:00:00Z), not {since!r}.")
    try:
        backfill = float(raw.get("feed_backfill_s", 86400.0))
    except (TypeError, ValueError):
        raise bad(f"feed_backfill_s {raw.get('feed_backfill_s')!r} is not a number of seconds.") from None
    if not backfill > 0:
        raise bad(f"feed_backfill_s must be positive, not {backfill:g}.")
    try:
        return CustomsConfig(
            risk=parse_rules(risk_raw, source=risk_source),
            feed_url=feed_url,
            feed_amqp_url=amqp,
            feed_queue=str(raw.get("feed_queue", "customs.pre-arrival")),
            feed_poll_s=float(raw.get("feed_poll_s", 0.25)),
            feed_backfill_s=backfill,
            feed_since=since,
            verify_signature_every_time=bool(raw.get("verify_signature_every_time", False)),
            audit_batch=int(raw.get("audit_batch", 256)),
        )
    except (TypeError, ValueError) as exc:
        raise bad(f"a value is not readable ({exc}).") from None


# --- scope of a customs token ----------------------------------------------------------------------


@lru_cache(maxsize=1024)  # asked on every verification; a gateway has a handful of tokens
def scope_countries(countries: frozenset[str]) -> frozenset[str]:
    """The countries a token acts for: 'FR' and 'FR/FRCDG' both give FR; '*' stays '*'."""
    return frozenset(c.split("/", 1)[0] for c in countries)


def covers_country(countries: frozenset[str], country: str | None) -> bool:
    return bool(country) and ("*" in countries or country in scope_countries(countries))


def covers_office(countries: frozenset[str], country: str, office: str | None) -> bool:
    """A country-wide token may act as any office of its country; an office token only as its office."""
    if "*" in countries or country in countries:
        return True
    return office is not None and f"{country}/{office}" in countries


def single_office(countries: frozenset[str], country: str) -> str | None:
    """The office an office-scoped token stands for, when it has exactly one in ``country``."""
    offices = [c.split("/", 1)[1] for c in countries if c.startswith(f"{country}/")]
    return offices[0] if len(offices) == 1 and country not in countries else None
