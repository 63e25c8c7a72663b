"""PostgreSQL takes two batches of requests at once, on two connections: a write while the
first connection is busy goes on the spare one; writes made side by side count every
request once and sum the hours as writes one after the other do. The ledger writes a batch
while another is being written, and commits it after that one (a process killed loses the
last ones recorded only); a batch holding a retry of a request id being written waits for
it, so the first record of an id is still the one kept; and a loop of waits through
another replica, which no database sees, is broken by the bound on waiting for a turn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from otel_tokens import Usage, UsageLedger
from otel_tokens._ledger import in_flight
from otel_tokens._ledger.hour_sums import HOURLY, SUM_COLUMNS, HourSums
from otel_tokens._ledger.postgres import PostgresStore
from otel_tokens._ledger.rows import Slot
from otel_tokens._ledger.schema import REQUEST_COLUMNS
from tests.conftest import SECRET, postgres_schema
from tests.helpers.request_rows import request_rows

Row = tuple[Any, ...]


def _stores() -> Iterator[PostgresStore]:
    for url in postgres_schema():
        store = PostgresStore(url)
        yield store
        store.close()


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    yield from _stores()


@pytest.fixture
def other() -> Iterator[PostgresStore]:
    yield from _stores()


def _rows(count: int, seed: int) -> list[Row]:
    return [row for row in request_rows(count, seed=seed) if row[1] >= 0]


def _hourly(store: PostgresStore) -> list[Row]:
    columns = ", ".join([*HOURLY[1], *SUM_COLUMNS])
    return store._fetch(f"SELECT {columns} FROM {HOURLY[0]} ORDER BY {columns}", [])


def test_a_write_while_the_first_connection_writes_goes_on_the_spare(
    store: PostgresStore,
) -> None:
    rows = _rows(500, seed=11)
    wrote: list[int] = []
    with store._lock:  # the first connection is busy with another batch
        writing = threading.Thread(target=lambda: wrote.append(store.write(rows)), daemon=True)
        writing.start()
        writing.join(30)
        assert wrote == [len(rows)]  # written meanwhile, not waiting for the first
    assert store._spare is not None and store._spare.info.backend_pid != store._db.info.backend_pid
    assert store._fetch("SELECT COUNT(*) FROM otel_tokens_requests", []) == [(len(rows),)]


def test_writes_side_by_side_count_each_request_once_and_sum_as_one_after_another(
    store: PostgresStore, other: PostgresStore
) -> None:
    """Two threads write batches of the same hours and keys at once (their upserts meet on
    the same hourly rows), a retried half among them; `other` takes the same batches one
    after the other."""
    rows = _rows(6000, seed=12)
    batches = [rows[i : i + 500] for i in range(0, len(rows), 500)]
    batches += [rows[i : i + 250] for i in range(0, 3000, 250)]  # retries of stored ids
    errors: list[BaseException] = []
    added: list[int] = []

    def write(mine: Sequence[list[Row]]) -> None:
        try:
            added.extend(store.write(batch) for batch in mine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(batches[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert sum(added) == len(rows)  # each request once, whichever thread had it first
    for batch in batches:
        other.write(batch)
    assert _hourly(store) == _hourly(other)
    assert store._spare is not None  # the two did write at once


def _usage(request_id: str, input_tokens: int) -> Usage:
    return Usage(provider="openai", model="gpt-4o-mini", input_tokens=input_tokens,
                 output_tokens=1, api_key_id="k", request_id=request_id)  # fmt: skip


def _stored(ledger: UsageLedger) -> dict[str, int]:
    store = ledger._opened
    return dict(store._fetch("SELECT uid, input_tokens FROM otel_tokens_requests", []))


def _wait_for(done: Any, what: str) -> None:
    for _ in range(1000):  # 10 s at most
        if done():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def url() -> Iterator[str]:
    yield from postgres_schema()


class _Gated:
    """A ledger whose store holds the write of the batch with `held_id` (its first record)
    until `gate` is set, and tells which batches' writes began (by their first id)."""

    def __init__(self, url: str, held_id: str) -> None:
        self.ledger = UsageLedger(url, api_key_secret=SECRET, batch_size=5, flush_interval_s=0.2)
        self.gate, self.held = threading.Event(), threading.Event()
        self.began: list[str] = []
        store = self.ledger._opened
        real_write = store.write

        def write(rows: Sequence[Row], sums: HourSums | None = None, turn: Any = None) -> int:
            self.began.append(rows[0][0])
            if any(row[0] == held_id and row[12] < 999 for row in rows):  # not a retry
                self.held.set()
                assert self.gate.wait(30)
            return real_write(rows, sums, turn)

        store.write = write  # type: ignore[method-assign]

    def record(self, prefix: str, count: int, tokens: int) -> None:
        for n in range(count):
            self.ledger.record(_usage(f"{prefix}-{n}", tokens + n))


def test_a_batch_is_written_beside_another_and_commits_after_it(url: str) -> None:
    gated = _Gated(url, held_id="first-0")
    try:
        gated.record("first", 5, 100)
        assert gated.held.wait(10)  # the first batch is being written, and held there
        gated.record("second", 5, 200)
        _wait_for(lambda: any(uid.startswith("second") for uid in gated.began), "the second")
        threading.Event().wait(0.5)  # two flush intervals: time to commit, were it let
        assert _stored(gated.ledger) == {}  # it waits for the first to commit
        gated.gate.set()
        assert gated.ledger.flush(timeout_s=30)
        assert len(_stored(gated.ledger)) == 10 and not gated.ledger.drops()
    finally:
        gated.gate.set()
        gated.ledger.close()


def test_a_batch_retrying_an_id_being_written_waits_for_it_and_the_first_is_kept(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(in_flight, "TURN_WAIT_S", 1.0)  # were it written beside: a short stall
    gated = _Gated(url, held_id="first-0")
    try:
        gated.record("first", 5, 100)
        assert gated.held.wait(10)
        gated.ledger.record(_usage("first-0", 999))  # a retry of a request being written
        gated.record("third", 4, 300)
        threading.Event().wait(0.5)
        assert gated.began == ["first-0"]  # the batch with the retry waits to begin
        gated.gate.set()
        assert gated.ledger.flush(timeout_s=30)
        stored = _stored(gated.ledger)
        assert stored["first-0"] == 100  # the first recorded is kept, not the retry
        assert len(stored) == 9 and not gated.ledger.drops()
    finally:
        gated.gate.set()
        gated.ledger.close()


def test_a_wait_another_replica_closes_in_a_loop_is_broken_by_the_turn_bound(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica's transaction holds request "y" and then waits for "x"; this
    ledger's first batch waits for "y" in the database, its second holds "x" and waits for
    the first to commit: no database sees that loop. The second commits after TURN_WAIT_S;
    the other replica's insert of "x" then fails, and the first batch goes on."""
    psycopg = pytest.importorskip("psycopg")
    monkeypatch.setattr(in_flight, "TURN_WAIT_S", 1.0)
    ledger = UsageLedger(url, api_key_secret=SECRET, batch_size=3, flush_interval_s=0.2)
    turns = threading.Event()
    real_turn = ledger._writer._in_flight.wait_turn

    def wait_turn(batch: Any) -> None:
        turns.set()
        real_turn(batch)

    ledger._writer._in_flight.wait_turn = wait_turn  # type: ignore[method-assign]
    replica = psycopg.connect(url)  # a transaction of its own (not autocommit)
    failed: list[BaseException] = []
    try:
        row = list(_row_of(ledger, "y"))
        insert = (
            f"INSERT INTO otel_tokens_requests ({', '.join(REQUEST_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(REQUEST_COLUMNS))})"
        )
        replica.execute(insert, row)  # holds "y", uncommitted
        for uid in ("y", "a1", "a2"):
            ledger.record(_usage(uid, 100))
        _wait_for(lambda: _waiting_locks(ledger) > 0, "the first batch to wait for y")
        for uid in ("x", "b1", "b2"):
            ledger.record(_usage(uid, 200))
        _wait_for(turns.is_set, "the second batch to wait for its turn")

        def take_x() -> None:
            try:
                replica.execute(insert, ["x", *row[1:]])
            except psycopg.Error as exc:
                failed.append(exc)
            replica.rollback()

        taking = threading.Thread(target=take_x, daemon=True)
        taking.start()
        assert ledger.flush(timeout_s=10)  # no hang: the bound broke the loop
        taking.join(30)
        assert failed and isinstance(failed[0], psycopg.errors.UniqueViolation)
        assert sorted(_stored(ledger)) == ["a1", "a2", "b1", "b2", "x", "y"]
        assert not ledger.drops()
    finally:
        replica.close()
        ledger.close()


def _row_of(ledger: UsageLedger, uid: str) -> tuple[Any, ...]:
    """A request row as the ledger makes it, timed now."""
    row = ledger._rows.request_row(_usage(uid, 1), time.time_ns() // 1000, Slot.UNCHECKED)
    assert row is not None
    return tuple(row)


def _waiting_locks(ledger: UsageLedger) -> int:
    found = ledger._opened._fetch("SELECT COUNT(*) FROM pg_locks WHERE NOT granted", [])
    return int(found[0][0])


def test_a_terminated_spare_session_is_reopened_without_losing_the_batch(
    store: PostgresStore,
) -> None:
    first, second = _rows(300, seed=13), _rows(300, seed=14)
    second = [row for row in second if row[0] not in {other[0] for other in first}]

    def on_the_spare(rows: list[Row]) -> list[int]:
        wrote: list[int] = []
        with store._lock:  # the first connection is busy: the write takes the spare
            writing = threading.Thread(target=lambda: wrote.append(store.write(rows)))
            writing.start()
            writing.join(30)
        return wrote

    assert on_the_spare(first) == [len(first)]
    pid = store._spare.info.backend_pid
    store._db.execute("SELECT pg_terminate_backend(%s)", (pid,))  # the server drops it
    assert on_the_spare(second) == [len(second)]  # on a new session, counted once
    assert store._spare.info.backend_pid != pid
    assert store._fetch("SELECT COUNT(*) FROM otel_tokens_requests", []) == [
        (len(first) + len(second),)
    ]
