"""The ledger's queue holds what is recorded and nothing more: an entry waiting in it adds
no object the garbage collector tracks (a wrapper per entry did: a queue of 100,000 such
objects, promoted to the oldest generation, brought on full collections that took a sixth
of the writer's time), and every entry of every kind comes out as it went in."""

from __future__ import annotations

import gc
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from otel_tokens import Usage, UsageLedger
from tests.conftest import SECRET

_QUEUED = 2_000


def _usage(number: int, **fields: object) -> Usage:
    values: dict[str, object] = {"provider": "openai", "model": "gpt-4o-mini",
                                 "input_tokens": 10 + number, "output_tokens": 1,
                                 "api_key": "sk-alice", "request_id": f"r-{number}"}  # fmt: skip
    values.update(fields)
    return Usage(**values)  # type: ignore[arg-type]


def test_a_queued_entry_adds_no_object_the_collector_tracks(target: str) -> None:
    # A batch larger than what is queued, and a long interval: the writer leaves it queued.
    ledger = UsageLedger(target, batch_size=_QUEUED + 1, flush_interval_s=3600,
                         api_key_secret=SECRET)  # fmt: skip
    usages = [_usage(number) for number in range(_QUEUED)]
    at = datetime.now(timezone.utc) - timedelta(hours=1)
    try:
        gc.collect()
        before = len(gc.get_objects())
        for usage in usages:
            ledger.record(usage, at=at)
        gc.collect()
        grown = len(gc.get_objects()) - before
        assert ledger.flush(timeout_s=30)
        assert grown < _QUEUED // 10, f"{grown} tracked objects for {_QUEUED} queued usages"
        assert ledger.usage("today")[0].requests == _QUEUED
    finally:
        ledger.close()


def test_usages_events_and_faults_come_out_as_they_went_in(target: str) -> None:
    ledger = UsageLedger(target, api_key_secret=SECRET)
    try:
        searches = ledger.custom_meter("searches", unit="1", dimensions=["engine"])
        at = datetime.now(timezone.utc) - timedelta(minutes=5)
        ledger.record(_usage(1, input_tokens=100), at=at)
        searches.record(3, dimensions={"engine": "web"}, api_key="sk-alice", at=at)
        ledger.record("not a usage")  # type: ignore[arg-type]  # counted, never raised
        ledger.record(_usage(2, input_tokens=-1))
        ledger.record(_usage(3, input_tokens=200))
        assert ledger.flush(timeout_s=30)
        (today,) = ledger.usage("today")
        assert (today.requests, today.input_tokens) == (2, 300)
        assert ledger.drops() == {"not_usage": 1, "negative_tokens": 1}
        assert [(t.events, t.value) for t in ledger.meter_usage("searches", "all")] == [
            (1, Decimal(3))
        ]
    finally:
        ledger.close()
