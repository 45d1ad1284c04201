"""Risk scoring: each rule fires with its reason, thresholds pick the channel, random selection is
deterministic given the seed and keeps to its rate; configuration mistakes are refused."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from domain.errors import EpixError, ErrorCode
from domain.ledger import Balance, DrawLine
from domain.risk import Declared, RiskContext, RiskRules, assess, draw, parse_rules
from simulators.samples import make_permit


@pytest.fixture
def permit():
    p = make_permit(random.Random(1), issuer="CH", importer_country="FR", number="CH26-1", items=1)
    item = replace(p.items[0], appendix="II", source="C", scientific_name="Crocodylus niloticus", quantity=Decimal(10), unit="NAR")
    return replace(p, items=(item,))


def _ctx(permit, **kw):
    return RiskContext(today=permit.valid_from, balances=(Balance("A", "NAR", Decimal(10), Decimal(0)),), **kw)


def _rules(**kw):
    return replace(RiskRules(), **kw)


def test_a_plain_permit_is_green_with_no_reasons(permit):
    a = assess(permit, _ctx(permit, first_shipment=False), _rules(), key="k")
    assert (a.score, a.channel, a.reasons) == (0, "green", ())


def test_rules_fire_with_their_reasons(permit):
    item = replace(permit.items[0], appendix="I", source="W", scientific_name="Panthera leo", origin_country="XX")
    p = replace(permit, items=(item,), valid_until=permit.valid_from + timedelta(days=5))
    declared = Declared(lines=(DrawLine("A", Decimal(9)),), exporter_country="KE", species=("Python regius",))
    rules = _rules(species_of_concern=frozenset({"Panthera leo"}), parties_of_concern=frozenset({"XX"}))
    a = assess(p, _ctx(p, first_shipment=True, declared=declared), rules, key="k")
    fired = {r.rule for r in a.reasons}
    assert fired == {
        "appendix_i", "wild_source", "species_of_concern", "party_of_concern", "near_expiry", "first_shipment",
        "near_balance", "declaration_mismatch",
    }  # fmt: skip
    assert a.channel == "red" and a.score == sum(r.points for r in a.reasons)
    assert all(r.sentence for r in a.reasons)
    assert a.to_dict()["reasons"][0].keys() == {"rule", "points", "reason"}


def test_thresholds_pick_the_channel(permit):
    item = replace(permit.items[0], source="W")  # 15 points
    p = replace(permit, items=(item,))
    assert assess(p, _ctx(p), _rules(yellow_at=10, red_at=20), key="k").channel == "yellow"
    assert assess(p, _ctx(p), _rules(yellow_at=5, red_at=15), key="k").channel == "red"
    assert assess(p, _ctx(p), _rules(weights={"wild_source": 0}), key="k").channel == "green"


def test_random_selection_is_deterministic_and_keeps_its_rate(permit):
    rules = _rules(random_rate=0.2, seed="s1")
    picks = [assess(permit, _ctx(permit), rules, key=f"decl-{i}").randomly_selected for i in range(2000)]
    assert picks == [assess(permit, _ctx(permit), rules, key=f"decl-{i}").randomly_selected for i in range(2000)]
    assert 0.16 < sum(picks) / len(picks) < 0.24
    chosen = next(i for i, p in enumerate(picks) if p)
    a = assess(permit, _ctx(permit), rules, key=f"decl-{chosen}")
    assert a.channel == "yellow" and a.reasons[-1].rule == "random_selection"
    other_seed = [assess(permit, _ctx(permit), _rules(random_rate=0.2, seed="s2"), key=f"decl-{i}").randomly_selected for i in range(2000)]
    assert other_seed != picks
    assert draw("s", "k") == draw("s", "k") and 0 <= draw("s", "k") < 1


def test_parse_rules_and_its_refusals():
    rules = parse_rules({"weights": {"appendix_i": 50}, "species_of_concern": ["Panthera leo"], "random_rate": 0.1, "seed": 7})
    assert rules.weights["appendix_i"] == 50 and rules.seed == "7" and "Panthera leo" in rules.species_of_concern
    for bad in ({"weights": {"nope": 1}}, {"random_rate": 2}, {"yellow_at": 50, "red_at": 10}, {"whatever": 1},
                {"random_channel": "green"}, {"weights": {"appendix_i": -1}}, {"near_balance_ratio": "x"}):  # fmt: skip
        with pytest.raises(EpixError) as e:
            parse_rules(bad)
        assert e.value.code is ErrorCode.CONFIG_INVALID
