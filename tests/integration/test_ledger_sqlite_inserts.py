"""How the SQLite ledger inserts a batch: `MAX_ROWS_PER_INSERT` request rows to a statement
(fewer where SQLite takes fewer parameters), the rest in falling powers of two, so that SQLite
works long on its own between the times the sqlite3 module takes the GIL back. Every size of
batch around the statements' edges adds each request id once, keeps the first record of an
id wherever its retry falls (the same statement, the next one, or the rows after the last
whole statement), and sums the hourly table to match."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from otel_tokens import PriceTable, Usage
from otel_tokens._ledger.rows import RequestRow, RowMaker, Slot
from otel_tokens._ledger.sqlite import (
    MAX_ROWS_PER_INSERT,
    SQLiteStore,
    insert_sizes,
    rows_per_insert,
)

R = MAX_ROWS_PER_INSERT
_NOW_US = int(time.time() * 1_000_000)


def _row(request_id: str, input_tokens: int) -> RequestRow:
    usage = Usage(provider="openai", model="gpt-4o-mini", input_tokens=input_tokens,
                  output_tokens=1, api_key_id="k", request_id=request_id)  # fmt: skip
    maker = RowMaker(PriceTable.bundled(), lambda: None, _no_drop, "test")
    row = maker.request_row(usage, _NOW_US, Slot.UNCHECKED)
    assert row is not None
    return row


def _no_drop(reason: str, why: str) -> None:
    raise AssertionError(f"a test row was dropped: {reason}: {why}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    yield SQLiteStore(tmp_path / "ledger.db")


def _statements(store: SQLiteStore) -> list[str]:
    """The request INSERT statements the store's writing connection runs from now on."""
    ran: list[str] = []

    def trace(sql: str) -> None:
        if sql.startswith("INSERT OR IGNORE INTO otel_tokens_requests"):
            ran.append(sql)

    store._db.set_trace_callback(trace)
    return ran


def _stored(store: SQLiteStore) -> tuple[dict[str, int], tuple[int, int]]:
    """Input tokens by request id, and the hourly table's (requests, input tokens)."""
    with closing(sqlite3.connect(store.path)) as db:
        rows = dict(db.execute("SELECT uid, input_tokens FROM otel_tokens_requests"))
        hourly = db.execute(
            "SELECT SUM(requests), SUM(input_tokens) FROM otel_tokens_hourly"
        ).fetchone()
    return rows, hourly


def test_this_sqlite_takes_the_largest_statement() -> None:
    with closing(sqlite3.connect(":memory:")) as db:
        assert rows_per_insert(db) == R  # 43,008 parameters: SQLite 3.32+ takes 32,766 or more


@pytest.mark.skipif(not hasattr(sqlite3.Connection, "setlimit"), reason="Python 3.11+")
@pytest.mark.parametrize(("variables", "rows"), [(999, 32), (32_766, 1024), (21, 1), (20, 1)])
def test_a_statement_holds_the_rows_whose_values_sqlite_takes(variables: int, rows: int) -> None:
    with closing(sqlite3.connect(":memory:")) as db:
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
        assert rows_per_insert(db) == rows


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 31, 32, 33, 100, 20_000])
def test_a_batch_is_cut_into_few_statements_of_few_sizes(count: int) -> None:
    sizes = insert_sizes(count, 32)
    assert sum(sizes) == count
    assert sizes == sorted(sizes, reverse=True)
    assert all(size & (size - 1) == 0 and size <= 32 for size in sizes)  # powers of two
    assert len(sizes) <= count // 32 + 5  # the rest in at most log2(32) statements
    assert len(set(sizes)) == len(sizes) - (count // 32) + (1 if count >= 32 else 0)


@pytest.mark.parametrize("count", [1, R - 1, R, R + 1, 2 * R, 3 * R + 5])
def test_a_batch_is_inserted_in_few_statements_and_each_id_once(
    store: SQLiteStore, count: int
) -> None:
    statements = _statements(store)
    rows = [_row(f"req-{i}", i + 1) for i in range(count)]
    assert store.write(rows) == count
    # Whole statements, then the rest in falling powers of two (not one row at a time).
    assert len(statements) == count // R + bin(count % R).count("1")
    # The same ids again, and one new: only the new one is added, wherever the retries fall.
    assert store.write([_row(f"req-{i}", 10_000) for i in range(count)] + [_row("new", 7)]) == 1
    stored, hourly = _stored(store)
    expected = {f"req-{i}": i + 1 for i in range(count)} | {"new": 7}
    assert stored == expected
    assert hourly == (len(expected), sum(expected.values()))


@pytest.mark.parametrize(
    ("first", "again"),
    [(0, 1), (R - 2, R - 1), (R - 1, R), (0, R), (R - 1, 2 * R + 2), (2 * R, 2 * R + 2)],
    ids=[
        "same-statement",
        "statement-end",
        "across-an-edge",
        "next-statement",
        "into-the-rest",
        "within-the-rest",
    ],
)
def test_a_retry_in_the_same_batch_keeps_the_first_record_wherever_it_falls(
    store: SQLiteStore, first: int, again: int
) -> None:
    """2R + 3 rows: two whole statements and three rows after them."""
    rows = [_row(f"req-{i}", i + 1) for i in range(2 * R + 3)]
    rows[again] = _row(f"req-{first}", 10_000)  # the retry of rows[first], later in the batch
    assert store.write(rows) == len(rows) - 1
    stored, hourly = _stored(store)
    assert stored[f"req-{first}"] == first + 1
    assert f"req-{again}" not in stored
    assert hourly == (len(rows) - 1, sum(stored.values()))
