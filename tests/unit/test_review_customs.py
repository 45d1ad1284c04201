"""Review of the customs single window: defects found, each shown by a test that failed first."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from domain.ledger import Balance
from domain.risk import RiskContext, RiskRules, assess
from simulators.samples import make_permit


def _permit(valid_until: datetime):
    p = make_permit(random.Random(1), issuer="CH", importer_country="FR", number="CH26-1", items=1)
    item = replace(p.items[0], appendix="II", source="C", quantity=Decimal(10), unit="NAR")
    return replace(p, items=(item,), valid_from=valid_until - timedelta(days=90), valid_until=valid_until)


def _fired(permit, today: datetime) -> set[str]:
    context = RiskContext(today=today, balances=(Balance("A", "NAR", Decimal(10), Decimal(0)),), first_shipment=False)
    return {r.rule for r in assess(permit, context, RiskRules(), key="k").reasons}


def test_near_expiry_fires_on_the_permits_last_day_after_the_time_it_carries():
    # Box 2's end often carries the time of day the permit was issued; the permit is valid through
    # the end of that day (domain.validity), so at 15:00 on it customs holds a permit expiring today.
    zurich = timezone(timedelta(hours=2))
    until = datetime(2026, 11, 23, 9, 0, tzinfo=zurich)
    assert "near_expiry" in _fired(_permit(until), datetime(2026, 11, 23, 15, 0, tzinfo=zurich))
    # Counted in calendar days of the permit's offset, as validity is: 14 days before its last day
    # is within near_expiry_days = 14, whatever the time of day; the day after the last is not.
    late = datetime(2026, 11, 23, 23, 30, tzinfo=zurich)
    assert "near_expiry" in _fired(_permit(late), datetime(2026, 11, 9, 8, 0, tzinfo=zurich))
    assert "near_expiry" not in _fired(_permit(until), datetime(2026, 11, 8, 8, 0, tzinfo=zurich))
    assert "near_expiry" not in _fired(_permit(until), datetime(2026, 11, 24, 0, 30, tzinfo=zurich))
