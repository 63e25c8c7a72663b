"""The hourly sums made in Python (`hour_sums`) are the ones the SQL of `hourly_upsert`
makes from the same request rows, column for column, and `summed_upsert` adds them to
what an hour holds."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from otel_tokens._ledger.hour_sums import (
    HOURLY,
    SUM_COLUMNS,
    TEAM_HOURLY,
    hour_sums,
    summed_upsert,
)
from otel_tokens._ledger.schema import (
    REQUEST_COLUMNS,
    SQLITE_MIGRATIONS,
    hourly_upsert,
    migrate,
    team_hourly_upsert,
)
from tests.helpers.request_rows import request_rows

Row = tuple[Any, ...]


def _ledger_tables() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    migrate(db.execute, SQLITE_MIGRATIONS, description=":memory:", placeholder="?")
    return db


def _table(db: sqlite3.Connection, table: str, key: Sequence[str]) -> list[Row]:
    columns = ", ".join([*key, *SUM_COLUMNS])
    return db.execute(f"SELECT {columns} FROM {table} ORDER BY {', '.join(key)}").fetchall()


def _summed_in_sql(rows: list[Row]) -> sqlite3.Connection:
    db = _ledger_tables()
    marks = ", ".join("?" for _ in REQUEST_COLUMNS)
    db.executemany(
        f"INSERT INTO otel_tokens_requests ({', '.join(REQUEST_COLUMNS)}) VALUES ({marks})", rows
    )
    db.execute(hourly_upsert("otel_tokens_requests", greatest="MAX"))
    db.execute(team_hourly_upsert("otel_tokens_requests WHERE team <> ''", greatest="MAX"))
    return db


def test_the_sums_made_in_python_are_those_sql_makes_of_the_same_rows() -> None:
    rows = request_rows(3000, seed=1)
    db = _summed_in_sql(rows)
    sums = hour_sums(rows)
    # In no order: `summed_upsert` orders them as it adds them.
    assert sorted(sums.hourly) == _table(db, *HOURLY)
    assert sorted(sums.team) == _table(db, *TEAM_HOURLY)
    assert len(sums.hourly) > 100
    assert len(sums.team) > 10
    assert any(row[1] < 0 for row in sums.hourly)  # the hour before 1970 is there too


def test_summed_rows_add_to_what_an_hour_holds() -> None:
    """Two batches written apart end as their rows summed at once: counts and tokens add up,
    the last time is the later one, and hours only one batch has are kept as they are."""
    rows = request_rows(2000, seed=2)
    first, second = rows[:1200], rows[1200:]
    db = _ledger_tables()
    for batch in (first, second):
        for rows_of, (table, key) in zip(hour_sums(batch), (HOURLY, TEAM_HOURLY), strict=True):
            columns = ", ".join([*key, *SUM_COLUMNS])
            marks = ", ".join("?" for _ in [*key, *SUM_COLUMNS])
            db.execute(f"CREATE TEMP TABLE IF NOT EXISTS staged AS SELECT {columns} FROM {table}")
            db.execute("DELETE FROM staged")
            db.executemany(f"INSERT INTO staged ({columns}) VALUES ({marks})", rows_of)
            db.execute(summed_upsert("staged", table=table, key=key, greatest="MAX"))
            db.execute("DROP TABLE staged")
    whole = _summed_in_sql(rows)
    assert _table(db, *HOURLY) == _table(whole, *HOURLY)
    assert _table(db, *TEAM_HOURLY) == _table(whole, *TEAM_HOURLY)


def test_no_rows_make_no_sums() -> None:
    assert hour_sums([]) == ([], [])
