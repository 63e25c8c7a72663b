"""The hourly sums made in Python (`hour_sums`) are the ones the SQL of `hourly_upsert`
makes from the same request rows, column for column, and `summed_upsert` adds them to
what an hour holds."""

from __future__ import annotations

import random
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
    US_PER_HOUR,
    hourly_upsert,
    migrate,
    team_hourly_upsert,
)

Row = tuple[Any, ...]


def _rows(count: int, seed: int) -> list[Row]:
    """Request rows over a few keys, models, statuses, teams and hours (one before 1970,
    where SQL's division and Python's floor differ), a third of them unpriced."""
    rng = random.Random(seed)
    base = 1_780_000_000 * 1_000_000
    rows = []
    for n in range(count):
        at_us = rng.choice([base, -3 * US_PER_HOUR // 2]) + rng.randrange(5 * US_PER_HOUR)
        values = {
            "uid": f"r{n}", "at_us": at_us, "key_id": rng.choice(["k1", "k2", ""]),
            "provider": "openai", "model": rng.choice(["gpt-4o", "o3", "\u00e9t\u00e9"]),
            "request_model": "m", "operation": "chat", "scenario": rng.choice(["", "rag"]),
            "user_tier": "", "status": rng.choice(["success", "error", "canceled"]),
            "error_type": None, "streamed": 0, "input_tokens": rng.randrange(10**6),
            "output_tokens": rng.randrange(10**4), "cache_read_tokens": rng.randrange(99),
            "cache_write_tokens": rng.randrange(99), "reasoning_tokens": rng.randrange(99),
            "system_tokens": rng.randrange(99),
            "cost_pico": None if rng.random() < 0.33 else rng.randrange(10**12),
            "latency_s": 0.5, "team": rng.choice(["", "", "blue", "red"]),
        }  # fmt: skip
        rows.append(tuple(values[name] for name in REQUEST_COLUMNS))
    return rows


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
    rows = _rows(3000, seed=1)
    db = _summed_in_sql(rows)
    sums = hour_sums(rows)
    assert sums.hourly == _table(db, *HOURLY)
    assert sums.team == _table(db, *TEAM_HOURLY)
    assert len(sums.hourly) > 100
    assert len(sums.team) > 10
    assert any(row[1] < 0 for row in sums.hourly)  # the hour before 1970 is there too


def test_summed_rows_add_to_what_an_hour_holds() -> None:
    """Two batches written apart end as their rows summed at once: counts and tokens add up,
    the last time is the later one, and hours only one batch has are kept as they are."""
    rows = _rows(2000, seed=2)
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
