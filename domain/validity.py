"""Box 2 by calendar day: a permit is valid from its first day through its last, each read in the
permit's own offset (Res. Conf. 12.3: not accepted *after its last day* of validity).

One reading for the submission rules, the border verdict and the write-off date, so that the
gateway never accepts a permit as valid today and then tells customs it expired this morning: an
e-permit's end of validity often carries the time of day it was issued (EPIX instances have
``EndDateTime`` 2014-07-05T12:03:52+02:00), which is not when the permit stops being valid.
"""

from __future__ import annotations

from datetime import date, datetime


def day_in(moment: datetime, tz) -> date:
    """The calendar day of ``moment`` in time zone ``tz``; at the edge of years 1 and 9999 the
    day may not exist, and the first or last one stands for it."""
    try:
        return moment.astimezone(tz).date()
    except OverflowError:
        return date.max if moment.year > 1 else date.min


def before_first_day(valid_from: datetime, moment: datetime) -> bool:
    return day_in(moment, valid_from.tzinfo) < valid_from.date()


def after_last_day(valid_until: datetime, moment: datetime) -> bool:
    return day_in(moment, valid_until.tzinfo) > valid_until.date()


def within(valid_from: datetime, valid_until: datetime, moment: datetime) -> bool:
    return not before_first_day(valid_from, moment) and not after_last_day(valid_until, moment)
