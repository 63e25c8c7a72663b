"""The ledger's queue holds what is recorded and nothing more: an entry waiting in it adds
no object the garbage collector tracks (a wrapper per entry did: a queue of 100,000 such
objects, promoted to the oldest generation, brought on full collections that took a sixth
of the writer's time), and every entry of every kind comes out as it went in."""

from __future__ import annotations

import gc
from collections import deque
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

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


class _TornQueue(deque):  # type: ignore[type-arg]
    """A queue whose next `extend` adds one slot and then runs out of memory, as a deque
    does when it cannot allocate its next block (which cannot be brought on here)."""

    tear = False

    def extend(self, slots: Any) -> None:
        if not self.tear:
            super().extend(slots)
            return
        self.tear = False
        self.append(next(iter(slots)))
        raise MemoryError


def test_a_put_that_ran_out_of_memory_halfway_costs_what_was_queued_not_the_ledger(
    target: str,
) -> None:
    ledger = UsageLedger(target, batch_size=1000, flush_interval_s=3600, api_key_secret=SECRET)
    writer = ledger._writer  # type: ignore[attr-defined]
    writer._queue._slots = queue = _TornQueue()
    try:
        for number in range(3):
            ledger.record(_usage(number))
        queue.tear = True
        ledger.record(_usage(3))  # counted, never raised: one slot of it is in
        for number in range(4, 9):
            ledger.record(_usage(number))
        assert ledger.flush(timeout_s=10)
        stored = ledger.usage("today")[0].requests if ledger.usage("today") else 0
        dropped = ledger.drops()["internal_error"]
        assert stored + dropped == 9 and dropped == 9  # the torn queue's 8 and the torn put
        ledger.record(_usage(9, input_tokens=1000))  # and the ledger goes on
        assert ledger.flush(timeout_s=10)
        assert [(t.requests, t.input_tokens) for t in ledger.usage("today")] == [(1, 1000)]
    finally:
        assert ledger.close(timeout_s=10)  # the writer ended: no loop on a stray slot


class _TakenAtOnce(deque):  # type: ignore[type-arg]
    """A queue the writer empties right after an entry is added, before its adder reads
    how many are queued (a race the adder cannot tell from a full queue by the count)."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[Any] = []

    def extend(self, slots: Any) -> None:
        super().extend(slots)
        self.taken.extend(self)
        self.clear()


def test_an_entry_taken_at_once_is_not_counted_as_a_full_queue(target: str) -> None:
    ledger = UsageLedger(target, when_full="drop", api_key_secret=SECRET)
    writer = ledger._writer  # type: ignore[attr-defined]
    writer._queue._slots = queue = _TakenAtOnce()
    try:
        ledger.record(_usage(1))
        assert len(queue.taken) == 3  # it went in, once
        assert not ledger.drops()  # and was not counted as dropped too
    finally:
        ledger.close()


class _OutOfMemoryTaking(deque):  # type: ignore[type-arg]
    """A queue whose 8th `popleft` (of the batch's 12) runs out of memory, as making the
    list of a batch taken can (which cannot be brought on here)."""

    calls = 0

    def popleft(self) -> Any:
        self.calls += 1
        if self.calls == 8:
            raise MemoryError
        return super().popleft()


def test_a_take_that_ran_out_of_memory_is_counted_and_the_ledger_goes_on(target: str) -> None:
    # One batch of all four: the writer takes nothing until four are queued.
    ledger = UsageLedger(target, batch_size=4, flush_interval_s=3600, api_key_secret=SECRET)
    writer = ledger._writer  # type: ignore[attr-defined]
    writer._queue._slots = _OutOfMemoryTaking()
    try:
        for number in range(4):
            ledger.record(_usage(number))
        assert ledger.flush(timeout_s=10)  # no wait for entries that are gone
        assert not ledger.usage("today")
        # The batch's 4, and the 5 slots left of it out of step (one entry more): counted.
        assert ledger.drops() == {"internal_error": 5}
        ledger.record(_usage(9, input_tokens=1000))  # in step again
        assert ledger.flush(timeout_s=10)
        assert [(t.requests, t.input_tokens) for t in ledger.usage("today")] == [(1, 1000)]
    finally:
        assert ledger.close(timeout_s=10)


def test_an_event_that_is_not_one_is_counted_not_lost(target: str) -> None:
    ledger = UsageLedger(target, api_key_secret=SECRET)
    try:
        ledger.put_event("not an event")  # type: ignore[arg-type]
        assert ledger.flush(timeout_s=10)
        assert ledger.drops() == {"internal_error": 1}
    finally:
        ledger.close()
