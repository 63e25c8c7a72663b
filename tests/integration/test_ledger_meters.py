"""Custom meters on real SQLite files and a real PostgreSQL server: events sum, count and keep
their latest value exactly as the events themselves do, per key, dimension and day; each one
is an OpenTelemetry instrument too."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from otel_tokens import UsageLedger
from otel_tokens.testing import InMemoryMetrics
from tests.conftest import SECRET

DAY = datetime(2026, 11, 10, tzinfo=timezone.utc)


def test_a_sum_meter_adds_values_exactly_by_key_and_dimension(ledger: UsageLedger) -> None:
    audio = ledger.custom_meter("audio.seconds", unit="s", dimensions=["model", "region"])
    for value, model, key in [(0.1, "whisper-1", "sk-a"), (0.2, "whisper-1", "sk-a"),
                              (2.5, "gpt-4o-transcribe", "sk-b")]:  # fmt: skip
        audio.record(value, dimensions={"model": model}, api_key=key, at=DAY)
    ledger.flush()
    total = ledger.meter_usage("audio.seconds", "all")
    assert [(t.events, t.value, t.unit) for t in total] == [(3, Decimal("2.8"), "s")]
    by_model = ledger.meter_usage("audio.seconds", "all", by=["model", "region"])
    assert [(t.group, t.value) for t in by_model] == [
        ({"model": "gpt-4o-transcribe", "region": ""}, Decimal("2.5")),
        ({"model": "whisper-1", "region": ""}, Decimal("0.3")),  # not 0.30000000000000004
    ]
    mine = ledger.meter_usage("audio.seconds", "all", api_key="sk-a")
    assert [(t.events, t.value) for t in mine] == [(2, Decimal("0.3"))]
    assert mine[0].last_at == DAY


def test_a_count_meter_counts_events_and_refuses_quantities(ledger: UsageLedger) -> None:
    searches = ledger.custom_meter("web_search.calls", unit="{call}", aggregation="count",
                                   dimensions=["engine"])  # fmt: skip
    for _ in range(3):
        searches.record(dimensions={"engine": "bing"}, key_id="k1", at=DAY)
    searches.record(4, key_id="k1", at=DAY)  # a quantity: dropped, counted
    searches.record(dimensions={"colour": "red"}, at=DAY)  # no such dimension
    searches.record("1", at=DAY)  # type: ignore[arg-type]
    ledger.flush()
    assert ledger.drops() == {"invalid_event": 3}
    [total] = ledger.meter_usage("web_search.calls", "all", by=["key", "engine"])
    assert (total.group, total.events, total.value) == ({"key": "k1", "engine": "bing"}, 3, 3)


def test_a_last_meter_keeps_the_latest_value_whatever_order_it_arrives_in(
    ledger: UsageLedger,
) -> None:
    seats = ledger.custom_meter("seats", unit="{seat}", aggregation="last")
    moments = [DAY + timedelta(hours=h, minutes=m) for h in range(5) for m in (5, 35)]
    values = list(range(len(moments)))
    order = list(range(len(moments)))
    random.Random(3).shuffle(order)
    for i in order:  # out of order, across several batches
        seats.record(values[i] * 10, key_id="k", at=moments[i])
        if i % 3 == 0:
            ledger.flush()
    seats.record(7, key_id="k", at=moments[-1])  # same microsecond: the larger value wins
    ledger.flush()
    [whole] = ledger.meter_usage("seats", "2026-11-10..2026-11-10")
    assert (whole.events, whole.value) == (11, 90)
    by_hour = ledger.meter_usage("seats", "2026-11-10..2026-11-10", by=["hour"])
    assert [t.value for t in by_hour] == [10, 30, 50, 70, 90]
    # Kolkata's day ends at 18:30 UTC: its ragged start is read from the events themselves.
    cut = ledger.meter_usage("seats", "2026-11-10..2026-11-10", tz="Asia/Kolkata")
    assert [(t.events, t.value) for t in cut] == [(11, 90)]
    early = ledger.meter_usage("seats", "2026-11-09..2026-11-09", tz="Asia/Kolkata")
    assert [(t.events, t.value) for t in early] == []  # 00:00-05:30 UTC on the 10th
    ragged = ledger.meter_usage("seats", "2026-11-10..2026-11-10", by=["hour"], tz="Asia/Kolkata")
    assert [t.value for t in ragged] == [0, 20, 40, 60, 80, 90]


def test_meter_sums_by_day_equal_the_events_in_zones_off_the_hour(ledger: UsageLedger) -> None:
    """Random events over four days, summed by day in zones on and off the hour: the answer
    must equal the sum over the events, and a last meter the latest event of each day."""
    rng = random.Random(5)
    tokens = ledger.custom_meter("tool.calls", unit="{call}", dimensions=["tool"])
    level = ledger.custom_meter("queue.depth", unit="{request}", aggregation="last")
    sent = []
    for _ in range(500):
        at = DAY + timedelta(seconds=rng.randrange(4 * 86_400))
        value = rng.randrange(1, 50)
        tool = rng.choice(["search", "code"])
        tokens.record(value, dimensions={"tool": tool}, at=at)
        level.record(value, at=at)
        sent.append((at, value, tool))
    ledger.flush()
    for zone in ("UTC", "Asia/Kolkata", "America/St_Johns"):
        want_sum: dict[tuple[str, str], int] = defaultdict(int)
        want_last: dict[str, tuple[datetime, int]] = {}
        for at, value, tool in sent:
            local = at.astimezone(ZoneInfo(zone))
            if not DAY.date() < local.date() < (DAY + timedelta(days=3)).date():
                continue
            day = f"{local:%Y-%m-%d}"
            want_sum[(day, tool)] += value
            want_last[day] = max(want_last.get(day, (at, value)), (at, value))
        got_sum = {(t.group["day"], t.group["tool"]): t.value
                   for t in ledger.meter_usage("tool.calls", "2026-11-11..2026-11-12",
                                               by=["day", "tool"], tz=zone)}  # fmt: skip
        assert got_sum == want_sum, zone
        got_last = {t.group["day"]: t.value
                    for t in ledger.meter_usage("queue.depth", "2026-11-11..2026-11-12",
                                                by=["day"], tz=zone)}  # fmt: skip
        assert got_last == {day: value for day, (_, value) in want_last.items()}, zone


def test_an_idempotency_key_counts_once_per_meter_across_ledgers(target: str) -> None:
    first = UsageLedger(target, api_key_secret=SECRET)
    second = UsageLedger(target, api_key_secret=SECRET)
    try:
        images = first.custom_meter("images.generated", unit="{image}")
        again = second.custom_meter("images.generated", unit="{image}")
        calls = second.custom_meter("web_search.calls", unit="{call}", aggregation="count")
        for meter in (images, again, images):
            meter.record(4, idempotency_key="req-1", at=DAY)
            first.flush()
            second.flush()
        calls.record(idempotency_key="req-1", at=DAY)  # the same id on another meter counts
        second.flush()
        assert [(t.events, t.value) for t in second.meter_usage("images.generated", "all")] == [
            (1, 4)
        ]
        assert [t.events for t in first.meter_usage("web_search.calls", "all")] == [1]
    finally:
        first.close()
        second.close()


def test_a_meter_keeps_its_definition_in_the_ledger(target: str) -> None:
    with UsageLedger(target) as first:
        first.custom_meter("spend.tools", unit="USD", currency="USD", description="tool fees")
    with UsageLedger(target) as reopened:
        [meter] = reopened.meters()
        assert (meter.name, meter.spec.currency, meter.spec.unit) == ("spend.tools", "USD", "USD")
        reopened.custom_meter("spend.tools", unit="USD", currency="USD")  # the same: fine
        with pytest.raises(ValueError, match=r"already defines meter 'spend.tools' as .*'sum'"):
            reopened.custom_meter("spend.tools", unit="USD", currency="USD", aggregation="last")
        with pytest.raises(ValueError, match=r"has no meter 'nope': it has spend.tools"):
            reopened.meter_usage("nope")
        with pytest.raises(ValueError, match=r"cannot group meter 'spend.tools' by 'model'"):
            reopened.meter_usage("spend.tools", by=["model"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "Web Search", "unit": "{call}"}, r"meter name must be lower case.*'Web Search'"),
        ({"name": "llm.usage.x", "unit": "1"}, r"'llm.usage.x' takes a prefix"),
        ({"name": "x", "unit": "1", "aggregation": "avg"}, r"aggregation must be one of.*'avg'"),
        ({"name": "x", "unit": "1", "dimensions": ["day"]}, r"none of .*got \['day'\]"),
        ({"name": "x", "unit": "1", "dimensions": list("abcde")}, r"at most 4"),
        ({"name": "x", "unit": "1", "dimensions": "tool"}, r"a list of names, got 'tool'"),
        ({"name": "x", "unit": "1", "currency": "usd"}, r"ISO 4217.*got 'usd'"),
        ({"name": "x", "unit": "s", "currency": "EUR"}, r"unit is its currency 'EUR'"),
        ({"name": "x", "unit": "a b"}, r"UCUM-style unit.*got 'a b'"),
    ],
)
def test_bad_meter_definitions_are_refused_at_setup(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with UsageLedger(tmp_path / "usage.db") as ledger, pytest.raises(ValueError, match=message):
        ledger.custom_meter(**options)  # type: ignore[arg-type]


def test_reset_and_prune_delete_events_too(ledger: UsageLedger) -> None:
    meter = ledger.custom_meter("images.generated", unit="{image}")
    now = datetime.now(timezone.utc)
    meter.record(1, key_id="a", at=now - timedelta(days=100))
    meter.record(2, key_id="a", at=now)
    meter.record(3, key_id="b", at=now)
    ledger.flush()
    assert ledger.key_ids() == ["a", "b"]
    assert ledger.prune("90d") == 1
    assert ledger.reset(key_id="a") == 1
    assert [t.value for t in ledger.meter_usage("images.generated", "all")] == [3]


def test_a_tracker_meter_is_an_instrument_and_a_ledger_meter(ledger: UsageLedger) -> None:
    metrics = InMemoryMetrics(ledger=ledger, api_key_secret=SECRET)
    try:
        tracker = metrics.tracker
        searches = tracker.custom_meter("web_search.calls", unit="{call}", aggregation="count",
                                        dimensions=["engine"])  # fmt: skip
        seats = tracker.custom_meter("seats", unit="{seat}", aggregation="last")
        assert tracker.custom_meter("seats", unit="{seat}", aggregation="last") is seats
        with pytest.raises(ValueError, match=r"this tracker already has meter 'seats'"):
            tracker.custom_meter("seats", unit="{seat}")
        for engine in ("bing", "bing", "brave"):
            searches.record(dimensions={"engine": engine}, api_key="sk-a")
        seats.record(12)
        seats.record(9)
        searches.record(-1)
        metrics.tracker.flush()
        assert metrics.value("web_search.calls", {"engine": "bing"}) == 2
        assert metrics.value("web_search.calls", {"engine": "brave"}) == 1
        assert metrics.value("seats") == 9
        assert metrics.metrics()["web_search.calls"].unit == "{call}"
        assert metrics.value("otel_tokens.records.dropped", reason="invalid_event") == 1
        [row] = ledger.meter_usage("web_search.calls", "today", by=["key"], api_key="sk-a")
        assert row.events == 3
        assert [t.value for t in ledger.meter_usage("seats")] == [9]
    finally:
        metrics.shutdown()
