"""Budgets as values: what may be set (every error names the value), and the period a budget
covers at a given moment, in time zones with and without whole-hour offsets and across DST."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from otel_tokens._ledger.budgets import make_budget
from otel_tokens._ledger.periods import US_PER_HOUR, to_us


def at(text: str, zone: str = "UTC") -> int:
    return to_us(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)))


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        (("user", "k", 10), {}, "scope must be one of key, team, global, got 'user'"),
        (("global", "x", 10), {}, "a global budget has no subject, got 'x'"),
        (("key", "", 10), {}, "a key budget needs its key id"),
        (("team", None, 10), {}, "a team budget needs its team"),
        (("team", "t", 0), {}, "above 0 and at most 1e12, got 0"),
        (("team", "t", "nan"), {}, "got 'nan'"),
        (("team", "t", "1e13"), {}, "got '1e13'"),
        (("team", "t", True), {}, "must be a number, got True"),
        (("team", "t", "1.5"), {"unit": "tokens"}, "whole tokens, got '1.5'"),
        (("team", "t", "1e-13"), {}, "kept to the pico-dollar, got '1e-13'"),
        (("team", "t", 5), {"unit": "eur"}, "unit must be 'usd' or 'tokens', got 'eur'"),
        (("team", "t", 5), {"period": "year"}, "got 'year'"),
        (("team", "t", 5), {"period": "367d"}, "at most 366d), got '367d'"),
        (("team", "t", 5), {"period": "0h"}, "got '0h'"),
        (("team", "t", 5), {"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        # Hostile values: a subject no database stores as given, an int too long to print.
        (("team", "\ud800", 5), {}, "no control character or lone surrogate"),
        (("team", "a\x00b", 5), {}, "got 'a\\x00b'"),
        (("key", "k" * 257, 5), {}, "1 to 256 characters"),
        (("team", "t", 10**5000), {}, "got an int of 16610 bits"),
        (("team", "t", 5), {"period": 10**5000}, "got an int of 16610 bits"),
    ],
)
def test_a_budget_that_cannot_be_is_refused_naming_the_value(
    args: tuple[object, ...], kwargs: dict[str, object], says: str
) -> None:
    with pytest.raises(ValueError) as raised:
        make_budget(*args, **kwargs)  # type: ignore[arg-type]
    assert says in str(raised.value)


def test_amounts_are_kept_exact_and_written_plainly() -> None:
    assert make_budget("key", "k", "50").amount == Decimal(50)
    assert str(make_budget("key", "k", "50").amount) == "50"
    assert str(make_budget("key", "k", 0.1).amount) == "0.1"  # the float's shortest text
    assert make_budget("team", "t", "1000000", unit="tokens").amount == 1_000_000
    assert make_budget("team", "t", 5).describe() == "team 't': 5 usd per month (UTC)"
    assert make_budget("global", None, 5, period="24h").describe() == "global: 5 usd per 24h"


def test_calendar_periods_begin_at_local_midnight() -> None:
    now = at("2026-12-03 10:30", "America/New_York")  # a Thursday
    day = make_budget("global", "", 1, period="day", tz="America/New_York").window(now)
    assert day == (
        at("2026-12-03 00:00", "America/New_York"),
        at("2026-12-04 00:00", "America/New_York"),
    )
    week = make_budget("global", "", 1, period="week", tz="America/New_York").window(now)
    assert week == (
        at("2026-11-30 00:00", "America/New_York"),
        at("2026-12-07 00:00", "America/New_York"),
    )
    month = make_budget("global", "", 1, period="month").window(at("2026-12-31 23:59"))
    assert month == (at("2026-12-01 00:00"), at("2027-01-01 00:00"))
    february = make_budget("global", "", 1, period="month").window(at("2028-02-29 12:00"))
    assert february == (at("2028-02-01 00:00"), at("2028-03-01 00:00"))


def test_a_day_across_a_dst_change_is_23_hours_long() -> None:
    now = at("2026-03-29 12:00", "Europe/Paris")  # clocks go forward at 02:00
    start, end = make_budget("global", "", 1, period="day", tz="Europe/Paris").window(now)
    assert end is not None and (end - start) == 23 * US_PER_HOUR


def test_a_day_in_kolkata_begins_off_the_utc_hour() -> None:
    now = at("2026-12-03 09:00", "Asia/Kolkata")
    start, _ = make_budget("global", "", 1, period="day", tz="Asia/Kolkata").window(now)
    assert start == to_us(datetime(2026, 12, 2, 18, 30, tzinfo=timezone.utc))
    assert start % US_PER_HOUR != 0


def test_a_rolling_window_covers_the_whole_hours_before_and_the_current_one() -> None:
    now = at("2026-12-03 10:20")
    start, end = make_budget("global", "", 1, period="24h").window(now)
    assert (start, end) == (at("2026-12-02 10:00"), None)
    start, _ = make_budget("global", "", 1, period="7d").window(now)
    assert start == at("2026-11-26 10:00")
