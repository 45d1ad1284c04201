"""Configuration and partner agreements: a bad entry stops start-up with a sentence naming it."""

from __future__ import annotations

import hashlib
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.errors import EpixError, ErrorCode
from domain.messages import Action
from gateway.config import load_config, parse_config
from routing.agreements import parse_agreements


@pytest.fixture
def cert(tmp_path) -> Path:
    path = tmp_path / "fr.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return path


def _partner(cert: Path, **overrides) -> dict:
    entry = {"party": "FR", "endpoint": "http://127.0.0.1:9", "certificates": [str(cert)]}
    entry.update(overrides)
    return entry


def _refused(data: dict, *, own_party: str = "CH") -> str:
    with pytest.raises(EpixError) as info:
        parse_agreements(data, own_party=own_party, source="partners.toml")
    assert info.value.code is ErrorCode.CONFIG_INVALID
    return info.value.detail


def test_a_valid_agreement_routes_direct_and_via_hub(cert):
    agreements = parse_agreements(
        {
            "partner": [
                _partner(cert),
                {"party": "HUB-AF", "role": "hub", "endpoint": "http://127.0.0.1:10", "certificates": [str(cert)]},
                {"party": "KE", "via": "HUB-AF", "certificates": [str(cert)], "actions": ["issue", "cancel"]},
            ]
        },
        own_party="CH",
    )
    direct = agreements.route("FR", "CITESEPermit", Action.ISSUE)
    assert direct.via is None and direct.next_hop.endpoint == "http://127.0.0.1:9"
    hub = agreements.route("KE", "CITESEPermit", Action.CANCEL)
    assert hub.via == "HUB-AF" and hub.next_hop.party == "HUB-AF"
    with pytest.raises(EpixError) as info:
        agreements.route("KE", "CITESEPermit", Action.REPLACE)
    assert info.value.code is ErrorCode.NOT_AUTHORISED_FOR_DOCUMENT
    with pytest.raises(EpixError) as info:
        agreements.route("BR", "CITESEPermit", Action.ISSUE)
    assert info.value.code is ErrorCode.UNKNOWN_PARTNER


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"colour": "blue"}, "unknown setting(s) colour"),
        ({"party": "Narnia"}, "ISO 3166-1 alpha-2"),
        ({"endpoint": "ftp://x"}, "http(s) URL"),
        ({"role": "broker"}, "role must be one of"),
        ({"delivery": "carrier-pigeon"}, "delivery must be"),
        ({"documents": ["SPSCertificate"]}, "unknown document type"),
        ({"actions": ["burn"]}, "actions are"),
        ({"certificates": ["/no/such.pem"]}, "does not exist"),
        ({"certificates": []}, "no pinned certificate"),
        ({"retry": {"max_attempts": 0}}, "max_attempts >= 1"),
        ({"retry": {"tries": 3}}, "retry accepts"),
        ({"via": "HUB-X"}, "not a hub partner"),
        ({"endpoint": None}, "needs an endpoint"),
    ],
)
def test_each_bad_entry_is_named(cert, overrides, words):
    entry = _partner(cert, **overrides)
    if entry.get("endpoint") is None:
        entry.pop("endpoint")
    detail = _refused({"partner": [entry]})
    assert words in detail
    assert "partners.toml" in detail


def test_duplicates_and_self_are_refused(cert):
    assert "listed twice" in _refused({"partner": [_partner(cert), _partner(cert)]})
    assert "this gateway itself" in _refused({"partner": [_partner(cert, party="CH")]})


def test_config_tokens_are_hashed_and_scoped(cert, monkeypatch):
    monkeypatch.setenv("OPS_TOKEN", "operator-secret")
    config = parse_config(
        {
            "gateway": {"party": "CH", "port": 8500},
            "token": [
                {"name": "ma", "token": "ma-secret", "role": "ma", "countries": ["CH"]},
                {"name": "ops", "token_env": "OPS_TOKEN", "role": "operator", "countries": ["*"]},
                {"name": "customs", "sha256": hashlib.sha256(b"c").hexdigest(), "role": "customs", "countries": ["CH"]},
            ],
            "partner": [_partner(cert)],
        }
    )
    assert config.token_for("ma-secret").name == "ma"
    assert config.token_for("operator-secret").covers("KE")
    assert config.token_for("c").role == "customs"
    assert config.token_for("wrong") is None
    assert "ma-secret" not in repr(config)
    ma = config.token_for("ma-secret")
    assert ma.covers("CH") and not ma.covers("FR")


@pytest.mark.parametrize(
    "data, words",
    [
        ({}, "[gateway] table"),
        ({"gateway": {"party": "CH", "role": "relay"}}, "gateway.role"),
        ({"gateway": {"party": "CH"}, "token": [{"name": "t", "role": "king", "countries": ["CH"]}]}, "role must be"),
        ({"gateway": {"party": "CH"}, "token": [{"name": "t", "role": "ma", "countries": ["CH"]}]}, "give sha256"),
        ({"gateway": {"party": "CH"}, "token": [{"name": "t", "role": "ma", "token": "x"}]}, "countries must list"),
        # A string alone would be read as its letters, F and R, and cover nothing.
        ({"gateway": {"party": "CH"}, "token": [{"name": "t", "role": "ma", "token": "x", "countries": "FR"}]}, "as a list such as"),
        ({"gateway": {"party": "CH"}, "token": [{"name": "t", "role": "ma", "token": "x", "countries": ["fr"]}]}, "'fr' in countries is not"),
        ({"gateway": {"party": "CH"}, "token": [{"name": "t", "role": "customs", "token": "x", "countries": ["FR/"]}]}, "an office such as FR/FRCDG"),
        ({"gateway": {"party": "CH"}, "token": [{"name": "t", "role": "ma", "sha256": "abc", "countries": ["CH"]}]}, "64 hex digits"),
        ({"gateway": {"party": "CH"}, "token": [{"name": "t", "role": "ma", "token_env": "NOPE_NOT_SET", "countries": ["CH"]}]}, "is not set"),
        ({"gateway": {"party": "CH"}, "keys": {"passphrase_env": "NOPE_NOT_SET"}}, "is not set"),
        ({"gateway": {"party": "CH", "prot": 1}}, "unknown setting(s) prot"),
        ({"gateway": {"party": "CH"}, "delivery": {"speed": "fast"}}, "[delivery] accepts"),
        ({"gateway": {"party": "CH"}, "webhook": {"uri": "x"}}, "[webhook] accepts"),
    ],
)
def test_bad_config_is_refused_with_a_sentence(data, words):
    with pytest.raises(EpixError) as info:
        parse_config(data, source="gateway.toml")
    assert info.value.code is ErrorCode.CONFIG_INVALID
    assert words in info.value.detail


def test_load_config_file_errors(tmp_path):
    with pytest.raises(EpixError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nparty=")
    with pytest.raises(EpixError, match="not valid TOML"):
        load_config(bad)


# --- [retention] ---------------------------------------------------------------------------------


def _with_retention(retention: dict, **gateway) -> dict:
    return {"gateway": {"party": "CH", **gateway}, "retention": retention}


def test_retention_is_off_unless_an_operator_sets_it():
    policy = parse_config({"gateway": {"party": "CH"}}).retention
    assert not policy.enabled
    assert (policy.payload_days, policy.message_days, policy.idempotency_days, policy.verification_days) == (None,) * 4
    policy = parse_config(_with_retention({"payload_days": 30, "message_days": 730, "interval_s": 0})).retention
    assert policy.enabled and (policy.payload_days, policy.message_days, policy.interval_s) == (30, 730, 0.0)


@pytest.mark.parametrize(
    "retention, gateway, words",
    [
        ({"payload_day": 3}, {}, "[retention] does not know payload_day"),
        ({"payload_days": 0}, {}, "retention.payload_days must be a whole number of days, at least 1, not 0"),
        ({"message_days": 1.5}, {}, "retention.message_days must be a whole number"),
        ({"idempotency_days": "30"}, {}, "retention.idempotency_days must be"),
        ({"verification_days": True}, {}, "retention.verification_days must be"),
        ({"interval_s": -1}, {}, "retention.interval_s must be"),
        ({"batch": 0}, {}, "retention.batch must be"),
        ({"payload_days": 90, "message_days": 30}, {}, "payload_days (90) is longer than retention.message_days (30)"),
        # a message id must outlive every copy of its envelope that the replay window still lets in
        ({"message_days": 1}, {"replay_window_s": 43200}, "not longer than twice gateway.replay_window_s"),
    ],
)
def test_a_bad_retention_entry_is_named(retention, gateway, words):
    with pytest.raises(EpixError) as info:
        parse_config(_with_retention(retention, **gateway), source="gateway.toml")
    assert info.value.code is ErrorCode.CONFIG_INVALID
    assert info.value.detail.startswith("gateway.toml: ")
    assert words in info.value.detail


def test_message_retention_must_outlive_twice_the_replay_window_but_not_the_customs_feed_backfill():
    assert parse_config(_with_retention({"message_days": 1}, replay_window_s=43199)).retention.message_days == 1
    # Retention keeps what the feed has yet to hand over, however late (gateway/store/retention.py),
    # so a message retention shorter than the feed's backfill loses nothing and is allowed.
    with_feed = {**_with_retention({"message_days": 1}), "customs": {"feed_url": "http://127.0.0.1:9/feed", "feed_backfill_s": 172800}}
    assert parse_config(with_feed).retention.message_days == 1


def test_the_customs_feed_bound_is_an_instant_with_its_offset_and_the_backfill_a_positive_time():
    from gateway.customs.config import parse_customs

    raw = tomllib.loads('feed_url = "http://127.0.0.1:9/feed"\nfeed_since = 2026-11-01T00:00:00Z\n')
    assert parse_customs(raw).feed_since == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_customs({"feed_since": "2026-11-01T01:00:00+01:00"}).feed_since == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_customs({}).feed_since is None
    for bad, words in (
        ({"feed_since": datetime(2026, 11, 1)}, "with its offset"),  # TOML's local date-time: whose midnight?
        ({"feed_since": "last week"}, "not an ISO 8601"),
        ({"feed_since": 1730419200}, "with its offset"),
        ({"feed_backfill_s": 0}, "must be positive"),
        ({"feed_backfill_s": "a day"}, "not a number"),
    ):
        with pytest.raises(EpixError, match=words):
            parse_customs(bad)


def test_workers_default_to_one_and_a_bad_count_is_refused_naming_it():
    assert parse_config({"gateway": {"party": "CH"}}).workers == 1
    assert parse_config({"gateway": {"party": "CH", "workers": 4}}).workers == 4
    for bad in (0, 65, "2", True, 1.5):
        with pytest.raises(EpixError) as info:
            parse_config({"gateway": {"party": "CH", "workers": bad}}, source="gateway.toml")
        assert info.value.code is ErrorCode.CONFIG_INVALID
        assert info.value.detail.startswith("gateway.toml: [gateway] workers must be a whole number from 1 to 64")
