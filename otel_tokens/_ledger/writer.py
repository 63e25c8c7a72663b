"""The ledger's queue and the threads that write it to the database in batches."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from otel_tokens._base.meters import MeterEvent
from otel_tokens._base.text import said
from otel_tokens._base.warn import WarnOnce
from otel_tokens._ledger.budget_book import BudgetBook
from otel_tokens._ledger.entry_queue import EntryQueue, entries_of
from otel_tokens._ledger.hour_sums import hour_sums
from otel_tokens._ledger.in_flight import Batch, InFlight
from otel_tokens._ledger.rows import (
    UID,
    EventRow,
    QueuedCost,
    RequestRow,
    RowMaker,
    Slot,
    UsageCost,
)
from otel_tokens._ledger.schema import write_order
from otel_tokens._ledger.store import Store

#: How often the writer looks for rows within each flush interval (see `_write_loop`).
_TICKS_PER_INTERVAL = 4
_Row = TypeVar("_Row", RequestRow, EventRow)


class Writer:
    """A bounded queue of entries and the threads that write them, a batch per transaction:
    one makes the rows of the next batch while the others commit the last ones, so that
    the database's work (in SQLite's C code, or in the PostgreSQL server) overlaps the rows'
    Python work instead of following it. With one committer (SQLite has one writer at a
    time) a batch is made while the last one commits. With more, as many batches are
    written at once, each on a connection of its own, and still commit in the order they
    were taken (`in_flight.py`), so that a process killed outright loses only the last ones
    recorded; a batch holding a request id of one being written (a retry), or any event,
    waits for it to commit before it starts: the first recorded of an id is the one kept.

    Args:
        store: the database, as the ledger has it now (a forked child opens its own).
        rows: what turns entries into rows.
        target: the ledger, for messages.
        capacity: the most entries waiting.
        batch_size: the most rows written in one transaction.
        interval_s: the longest an entry waits while the writer keeps up.
        block: whether `put()` waits for room instead of dropping.
        book: the budgets, told of each batch of requests committed and brought up to date
            on every tick.
        sum_hours: whether to make each batch's hourly sums with its rows, for a store that
            `takes_hour_sums`: on this thread, while the last batch commits.
        committers: how many batches to commit at once (the store's `concurrent_writes`).
    """

    def __init__(
        self,
        store: Callable[[], Store],
        rows: RowMaker,
        *,
        target: str,
        capacity: int,
        batch_size: int,
        interval_s: float,
        block: bool,
        book: BudgetBook,
        sum_hours: bool = False,
        committers: int = 1,
    ) -> None:
        self._store = store
        self._book = book
        self._rows = rows
        self._target = target
        self._capacity = capacity
        self._batch_size = batch_size
        self._interval = interval_s
        self._block = block
        self._sum_hours = sum_hours
        self._committers = committers
        self.closed = False
        self._closing_by = math.inf  # when close(timeout_s=) gives up
        self.start_afresh()

    def start_afresh(self) -> None:
        """An empty queue, fresh locks and a writer thread: at start, and in a forked child,
        which writes only what it records itself (its parent writes what was queued)."""
        self._queue = EntryQueue()
        self._cond = threading.Condition()
        self._taken = 0  # entries the writer took from the queue
        self._done = 0  # of them, those written or dropped
        self._committing: Batch | None = None  # the batch handed over, for a committer
        self._in_flight = InFlight(self._cond)  # the batches being committed
        self._numbers = itertools.count()  # of the batches taken
        self._abandoned = False  # no batch more: the writer ended, or close() gave up
        self._drops: Counter[str] = Counter()
        self._warn = WarnOnce()
        self._thread = threading.Thread(target=self._write_loop, name="otel_tokens-ledger",
                                        daemon=True)  # fmt: skip
        self._threads = [self._thread] + [
            threading.Thread(target=self._commit_loop, daemon=True,
                             name=f"otel_tokens-ledger-commit-{number + 1}")
            for number in range(self._committers)
        ]  # fmt: skip
        for thread in reversed(self._threads):  # the committers first
            thread.start()

    def put(self, usage: object, at_us: int, cost_pico: UsageCost) -> None:
        """Queue a usage that happened at `at_us` (UTC microseconds), or count it dropped (a
        full queue, a closed ledger). `cost_pico` is its cost when a tracker checked and
        priced it (None: unpriced), else `Slot.UNCHECKED`: the writer checks anything."""
        self._put(usage, at_us, cost_pico)

    def put_event(self, event: MeterEvent) -> None:
        """Queue a checked custom meter event, or count it dropped."""
        self._put(event, 0, Slot.EVENT)  # an event carries its own time

    def _put(self, entry: object, at_us: int, cost_pico: QueuedCost) -> None:
        """Queue `entry` (`EntryQueue.add`), or count it dropped."""
        queue = self._queue
        if self.closed:
            self.drop("ledger_closed", "it was recorded after the ledger was closed")
            return
        # No lock: the writer counts what it takes, flush() adds the rest.
        while (queued := queue.add(entry, at_us, cost_pico, self._capacity)) is None:
            if not self._block:
                self.drop("ledger_queue_full", f"the ledger queue of {self._capacity} is full")
                return
            if not self._room_came():
                self.drop("ledger_closed", "the ledger was closed while it waited for room")
                return
        if queued == self._batch_size:  # a batch is ready: wake the writer
            with self._cond:
                self._cond.notify_all()

    def _room_came(self) -> bool:
        """Wait for room in the queue; False when the ledger closed first."""
        with self._cond:
            while len(self._queue) >= self._capacity and not self.closed:
                if time.monotonic() >= self._closing_by:  # closing, and the time is up
                    break
                self._cond.notify_all()
                self._cond.wait(0.1)
            return not self.closed and len(self._queue) < self._capacity

    def drop(self, reason: str, why: str, count: int = 1) -> None:
        """Count `count` entries not written, and warn once per reason."""
        with self._cond:
            self._drops[reason] += count
        self._warn(
            ("drop", reason),
            "otel_tokens: the usage ledger dropped %d record(s): %s. Counted in "
            "UsageLedger.drops(); this is logged once per reason",
            count,
            why,
        )

    def drops(self) -> dict[str, int]:
        """Entries not written, by reason."""
        with self._cond:
            return dict(self._drops)

    def _write_loop(self) -> None:
        # A row waits at most a tick for the writer to take it, behind at most the batch
        # being made and those being committed (written side by side, committed in order),
        # and is durable once its own batch commits: while the writer keeps up (a batch
        # takes less than a tick), under three ticks, within flush_interval_s.
        tick = self._interval / _TICKS_PER_INTERVAL
        try:
            while True:
                with self._cond:
                    if len(self._queue) < self._batch_size and not self.closed:
                        self._cond.wait(tick)
                    if self.closed and not self._queue:
                        return
                while self._queue:  # all that is queued now, a batch at a time
                    if (batch := self._take()) is not None:
                        self._hand_over(batch)
                    self._book.tick()
                self._book.tick()
        finally:
            with self._cond:  # the last batch committed (or given up on): the committers end
                self._wait_for_committers(None, 1)
                self._abandoned = True
                self._cond.notify_all()

    def _hand_over(self, batch: Batch) -> None:
        """Give `batch` to a committer once one is free and no batch it clashes with is
        being committed."""
        with self._cond:
            self._wait_for_committers(batch, self._committers)
            if self._abandoned:  # close() counted it dropped already
                return
            self._committing = batch
            self._cond.notify_all()

    def _wait_for_committers(self, batch: Batch | None, room: int) -> None:
        """Wait (holding `_cond`) until no batch waits for a committer and fewer than `room`
        are being committed, none of them clashing with `batch`; or there is no more."""
        while not self._abandoned and (
            self._committing is not None or self._in_flight.blocks(batch, room)
        ):
            self._cond.wait(0.1)

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while self._committing is None and not self._abandoned:
                    self._cond.wait()
                batch = self._committing
                if batch is None or self._abandoned:  # done, or close() counted it dropped
                    return
                self._committing = None
                self._in_flight.start(batch)
                self._cond.notify_all()  # room for the next batch, at another committer
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._in_flight.end(batch)
                    self._cond.notify_all()

    def _write_some(self) -> None:
        """Take a batch and commit it on this thread (when there is no writer)."""
        if (batch := self._take()) is not None:
            self._commit(batch)

    def _take(self) -> Batch | None:
        """Take up to a batch of entries from the queue and make their rows."""
        with self._cond:
            if self._queue.torn:
                self._drop_torn()
            entries = min(self._batch_size, len(self._queue))
            try:
                slots = self._queue.take(entries)
            except MemoryError:  # gone: counted; the next take drops (and counts) the rest
                self._lost(entries, "taking it from the queue ran out of memory")
                return None
            self._taken += entries
        if not entries:
            return None
        requests: list[RequestRow] = []
        events: list[EventRow] = []
        try:
            for entry, at_us, cost_pico in entries_of(slots):
                try:
                    if cost_pico is not Slot.EVENT:
                        if (row := self._rows.request_row(entry, at_us, cost_pico)) is not None:
                            requests.append(row)
                    elif isinstance(entry, MeterEvent):
                        events.append(self._rows.event_row(entry))
                    else:
                        self.drop("internal_error", f"an event must be a MeterEvent, got "
                                  f"{type(entry).__name__} (a bug: please report it)")  # fmt: skip
                except Exception:
                    self.drop("internal_error", "making its row failed (a bug: please report it)")
            ordered = write_order(requests)
            sums = hour_sums(ordered) if self._sum_hours and ordered else None
            uids = frozenset(row[UID] for row in ordered) if self._committers > 1 else None
        except BaseException:
            self._finished(entries)
            raise
        return Batch(entries, ordered, events, sums, uids, next(self._numbers))

    def _drop_torn(self) -> None:
        """Count dropped all that is queued, once memory ran out halfway through adding or
        taking slots (held under `_cond`): every entry after them would be misread."""
        why = "memory ran out halfway through queuing, which left the queue out of step"
        self._lost(self._queue.clear(), why)

    def _lost(self, entries: int, why: str) -> None:
        """Count `entries` out of the queue taken, done and dropped (under `_cond`)."""
        self._taken += entries
        self._done += entries
        self._cond.notify_all()
        self.drop("internal_error", why, entries)

    def _commit(self, batch: Batch) -> None:
        """Write a batch's rows (or count them dropped), and count its entries done."""
        try:
            try:
                store = self._store()
            except Exception as exc:  # a forked child's database, opened anew, is not there
                rows = len(batch.requests) + len(batch.events)
                self.drop("write_failed", f"opening {self._target!r} failed: {said(exc)}", rows)
                return
            with self._in_flight.entered(batch, self._book):
                if batch.requests:
                    self._write_batch(store, self._write_requests(store, batch), batch.requests)
                if batch.events:
                    self._write_batch(store, self._write_events(store), batch.events)
        finally:
            self._finished(batch.entries)

    def _finished(self, entries: int) -> None:
        with self._cond:
            self._done += entries
            self._cond.notify_all()

    def _write_requests(self, store: Store, batch: Batch) -> Callable[[Sequence[RequestRow]], int]:
        def write(rows: Sequence[RequestRow]) -> int:
            # The sums made ahead are the whole batch's, not those of a half of it.
            sums = batch.sums if rows is batch.requests else None
            added = store.write(rows, sums, turn=lambda: self._in_flight.wait_turn(batch))
            self._book.added(rows, added)
            return added

        return write

    def _write_events(self, store: Store) -> Callable[[Sequence[EventRow]], int]:
        def write(batch: Sequence[EventRow]) -> int:
            return store.write_events(batch)  # alone: no other batch is being written

        return write

    def _write_batch(
        self, store: Store, write: Callable[[Sequence[_Row]], int], batch: Sequence[_Row]
    ) -> None:
        """Write `batch`, or drop it (counted) when the database cannot be written. When the
        database refused a row of it instead, the halves are written on their own, so
        that a row it cannot take costs that row alone."""
        try:
            write(batch)
        except Exception as exc:
            refused = store.refused_a_row(exc)
            if refused and len(batch) > 1:
                half = len(batch) // 2
                self._write_batch(store, write, batch[:half])
                self._write_batch(store, write, batch[half:])
                return
            reason = "row_refused" if refused else "write_failed"
            self.drop(reason, f"writing to {self._target!r} failed: {said(exc)}", len(batch))

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued so far is written (or dropped).

        Args:
            timeout_s: the longest to wait; None waits until it is written.

        Returns:
            False when the time ran out first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            target = self._taken + len(self._queue)  # all queued so far
            self._cond.notify_all()
            while self._done < target:
                if not all(thread.is_alive() for thread in self._threads):
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.notify_all()
                self._cond.wait(0.05 if left is None else min(left, 0.05))
        if self._done < target:  # no writer (closed, or a forked child): write here
            while self._queue:
                self._write_some()
        return True

    def give_up_at(self, timeout_s: float) -> None:
        """Have a `put()` waiting for room, and `close()`, give up `timeout_s` from now."""
        self._closing_by = time.monotonic() + timeout_s

    def close(self, timeout_s: float | None = None) -> bool:
        """Write what is queued and stop; from now on `put()` counts a drop.

        Args:
            timeout_s: the longest to wait for the writer; None waits until all is written.

        Returns:
            False when the writer is still stuck on the database: what was left is then
            counted as `ledger_closed`, and the writer still holds the database.
        """
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        left_s = None if timeout_s is None else max(0.0, self._closing_by - time.monotonic())
        self._thread.join(left_s)  # it writes what is queued, then stops
        if self._thread.is_alive():  # stuck on a database that does not answer
            with self._cond:
                left = self._queue.clear() + self._taken - self._done
                self._abandoned = True  # the batch made, not yet handed over, is not
                self._cond.notify_all()
            why = (
                f"the ledger was closed after waiting {timeout_s:g} s for {self._target!r} to "
                "take them (the batch being written is counted too, though the database may "
                "yet take it)"
            )
            if left:  # else it was stuck reading (the budgets), with nothing left to write
                self.drop("ledger_closed", why, left)
            return False
        while self._queue:  # no writer (a forked child's): write here
            self._write_some()
        return True
