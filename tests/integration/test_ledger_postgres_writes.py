"""PostgreSQL's two ways of writing a batch agree: copied straight into the requests table
with hourly sums made in Python (while batches hold no stored request), and staged, the
stored requests skipped and the rest summed in SQL. A batch holding a stored request
falls back to the second, counting each request once, and the batches after it go back
to the first once one holds none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from otel_tokens._ledger.hour_sums import HOURLY, SUM_COLUMNS, TEAM_HOURLY
from otel_tokens._ledger.postgres import PostgresStore
from tests.conftest import postgres_schema
from tests.helpers.request_rows import request_rows

Row = tuple[Any, ...]


def _store() -> Iterator[PostgresStore]:
    for url in postgres_schema():
        store = PostgresStore(url)
        yield store
        store.close()


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    yield from _store()


@pytest.fixture
def other() -> Iterator[PostgresStore]:
    yield from _store()


def _tables(store: PostgresStore) -> list[list[Row]]:
    tables = []
    for table, key in (HOURLY, TEAM_HOURLY):
        columns = ", ".join([*key, *SUM_COLUMNS])
        tables.append(store._fetch(f"SELECT {columns} FROM {table} ORDER BY {columns}", []))
    tables.append(store._fetch("SELECT uid, at_us FROM otel_tokens_requests ORDER BY uid", []))
    return tables


def _staged_on(store: PostgresStore) -> bool:
    """Whether the store's writing session has staged a batch (made the staging table)."""
    found = store._db.execute("SELECT to_regclass('pg_temp.otel_tokens_staging')").fetchone()
    return found[0] is not None


def _positive(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row[1] >= 0]  # at_us: the ledger takes no earlier times


def test_a_batch_copied_in_sums_as_a_staged_batch_does(
    store: PostgresStore, other: PostgresStore
) -> None:
    rows = _positive(request_rows(3000, seed=3))
    assert store.write(rows) == len(rows)
    assert not store._skipping and not _staged_on(store)  # copied straight in
    other._skipping = True  # as after a batch that held a stored request
    assert other.write(rows) == len(rows)
    assert _staged_on(other)
    assert not other._skipping  # none skipped: the next batch is copied
    copied, staged = _tables(store), _tables(other)
    assert copied == staged
    assert len(copied[0]) > 100 and len(copied[1]) > 10  # hours and team hours both


def test_a_batch_holding_stored_requests_adds_the_rest_once_then_copying_resumes(
    store: PostgresStore, other: PostgresStore
) -> None:
    rows = _positive(request_rows(2000, seed=4))
    first, rest = rows[:800], rows[800:]
    assert store.write(first) == len(first)
    assert store.write(rows) == len(rest)  # the copy failed on a stored id: skipped them
    assert store._skipping
    retried = [(f"again-{row[0]}", *row[1:]) for row in rest[:10]]
    assert store.write(retried) == len(retried)  # none stored: the next batch is copied
    assert not store._skipping
    assert other.write([*rows, *retried]) == len(rows) + len(retried)
    assert _tables(store) == _tables(other)
