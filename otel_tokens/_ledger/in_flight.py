"""The batches the ledger's writer is committing side by side, and the order they commit in.

A database that takes several writes at once (PostgreSQL, on a connection each) is given as
many batches, and they still commit in the order they were taken: a later batch copies its
requests in beside an earlier one, then waits for it before adding its hourly sums and
committing. So a process killed outright loses the last batches recorded only, and the
hourly rows two batches share are locked by one at a time, in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

from otel_tokens._ledger.budget_book import BudgetBook
from otel_tokens._ledger.hour_sums import HourSums
from otel_tokens._ledger.rows import EventRow, RequestRow

#: The longest a batch written beside an earlier one waits for that one to commit first
#: (see `InFlight.wait_turn`), in seconds.
TURN_WAIT_S = 10.0


class Batch(NamedTuple):
    """Entries taken from the queue, as the rows to write."""

    entries: int
    requests: Sequence[RequestRow]
    events: list[EventRow]
    #: The requests' hourly sums, for a store that `takes_hour_sums`.
    sums: HourSums | None
    #: The requests' ids, when batches are committed side by side (see `clash`).
    uids: frozenset[str] | None
    #: Its place in the order batches are taken and committed in.
    number: int


def clash(batch: Batch, other: Batch) -> bool:
    """Whether `batch` must wait for `other` to commit before it is written: one of them
    holds events, or both hold a record of one request id (the first recorded is the one
    kept, and two transactions inserting one id would wait for each other)."""
    if batch.events or other.events or batch.uids is None or other.uids is None:
        return True
    return not batch.uids.isdisjoint(other.uids)


class InFlight:
    """The batches being committed, guarded by the writer's condition.

    Args:
        cond: the writer's condition; `blocks`, `start` and `end` are called holding it.
    """

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._batches: list[Batch] = []
        self._entered: set[int] = set()  # the numbers of those that hold the budget book

    def __len__(self) -> int:
        return len(self._batches)

    def blocks(self, batch: Batch | None, room: int) -> bool:
        """Whether `room` batches or more are being committed, or one `batch` clashes with."""
        if len(self._batches) >= room:
            return True
        return batch is not None and any(clash(batch, other) for other in self._batches)

    def start(self, batch: Batch) -> None:
        """`batch` is being committed from now on."""
        self._batches.append(batch)

    def end(self, batch: Batch) -> None:
        """`batch` is committed (or dropped)."""
        self._batches = [other for other in self._batches if other is not batch]

    @contextmanager
    def entered(self, batch: Batch, book: BudgetBook) -> Iterator[None]:
        """Hold the budget book (`BudgetBook.committing`) while `batch` is written, taken
        after every earlier batch being written took it: a batch waiting for its turn
        holds it, and an earlier one must never be left waiting for it behind a read."""
        with self._cond:
            while any(other.number < batch.number and other.number not in self._entered
                      for other in self._batches):  # fmt: skip
                self._cond.wait(0.1)
        with book.committing():
            with self._cond:
                self._entered.add(batch.number)
                self._cond.notify_all()
            try:
                yield
            finally:
                with self._cond:
                    self._entered.discard(batch.number)

    def wait_turn(self, batch: Batch) -> None:
        """Wait until every batch taken before `batch` is written (or dropped), for at most
        TURN_WAIT_S: then commit anyway. The bound breaks a wait no database can see, which
        replicas writing retries of the same requests could make: this batch holding an id
        another replica's transaction waits for, that one holding an id the earlier batch
        waits for."""
        deadline = time.monotonic() + TURN_WAIT_S
        with self._cond:
            while any(other.number < batch.number for other in self._batches):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, 0.1))
