"""The ledger in PostgreSQL, shared by the replicas of a gateway (psycopg 3, an extra)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from otel_tokens._ledger_schema import (
    EVENT_COLUMNS,
    POSTGRES_MIGRATIONS,
    REQUEST_COLUMNS,
    event_hourly_upsert,
    migrate,
)
from otel_tokens._ledger_schema import hourly_upsert as _hourly_upsert
from otel_tokens._ledger_store import Row, Store, event_hours

_COLUMNS = ", ".join(REQUEST_COLUMNS)
#: A lock id of the ledger's own, so that replicas starting together migrate once.
_MIGRATION_LOCK = 0x6F74_6C65_6467_6572
_STAGING = (
    f"""CREATE TEMP TABLE IF NOT EXISTS otel_tokens_staging ON COMMIT DELETE ROWS AS
    SELECT {_COLUMNS} FROM otel_tokens_requests WITH NO DATA""",
    "otel_tokens_staging",
    _COLUMNS,
)
# Requests another replica already added (same uid) are not returned, so not summed twice.
_INSERT_AND_ADD = f"""WITH added AS (
    INSERT INTO otel_tokens_requests ({_COLUMNS})
    SELECT {_COLUMNS} FROM otel_tokens_staging
    ON CONFLICT (uid) DO NOTHING
    RETURNING {_COLUMNS}
), summed AS (
{_hourly_upsert("added", greatest="GREATEST")}
)
SELECT COUNT(*) FROM added"""
_EVENTS = ", ".join(EVENT_COLUMNS)
_EVENT_STAGING = (
    f"""CREATE TEMP TABLE IF NOT EXISTS otel_tokens_event_staging
    ON COMMIT DELETE ROWS AS SELECT {_EVENTS} FROM otel_tokens_events WITH NO DATA""",
    "otel_tokens_event_staging",
    _EVENTS,
)
_INSERT_EVENTS = f"""INSERT INTO otel_tokens_events ({_EVENTS})
    SELECT {_EVENTS} FROM otel_tokens_event_staging
    ON CONFLICT (meter, uid) DO NOTHING
    RETURNING {_EVENTS}"""
_ADD_EVENT_HOURS = event_hourly_upsert(greatest="GREATEST").replace("?", "%s")
_RETRIES = 5


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        msg = "a postgresql:// ledger needs psycopg 3: pip install 'otel_tokens[postgres]'"
        raise ImportError(msg) from exc
    return psycopg


class PostgresStore(Store):
    """A ledger in a PostgreSQL database (its tables are prefixed `otel_tokens_`).

    Args:
        url: a `postgresql://` connection URL.

    Raises:
        ImportError: psycopg is not installed.
        ValueError: the database cannot be reached, or holds a newer schema.
    """

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        psycopg = _psycopg()
        self._psycopg = psycopg
        self.description = _without_password(url)
        try:
            self._db = psycopg.connect(url, autocommit=True)
            self._reader = psycopg.connect(url, autocommit=True)
            self._migrate()
        except psycopg.Error as exc:
            msg = f"cannot open the usage ledger {self.description!r}: {exc}"
            raise ValueError(msg) from exc
        self._lock = threading.Lock()
        self._reading = threading.Lock()

    def _migrate(self) -> None:
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            migrate(self._db.execute, POSTGRES_MIGRATIONS, description=self.description,
                    placeholder="%s")  # fmt: skip

    def write(self, rows: Sequence[Row]) -> int:
        return self._retrying(self._write, rows)

    def write_events(self, rows: Sequence[Row]) -> int:
        return self._retrying(self._write_events, rows)

    def _retrying(self, write: Any, rows: Sequence[Row]) -> int:
        errors = self._psycopg.errors
        with self._lock:
            for attempt in range(_RETRIES):
                try:
                    return int(write(rows))
                except (errors.DeadlockDetected, errors.SerializationFailure):
                    if attempt == _RETRIES - 1:
                        raise
        return 0  # not reached

    def _write_events(self, rows: Sequence[Row]) -> int:
        with self._db.transaction(), self._staged(_EVENT_STAGING, rows) as cursor:
            cursor.execute(_INSERT_EVENTS)
            added = cursor.fetchall()
            if added:
                # Sorted hour keys: replicas adding to the same hours lock them in order.
                cursor.executemany(_ADD_EVENT_HOURS, event_hours(added))
        return len(added)

    def _write(self, rows: Sequence[Row]) -> int:
        with self._db.transaction(), self._staged(_STAGING, rows) as cursor:
            cursor.execute(_INSERT_AND_ADD)
            added = cursor.fetchone()
        return int(added[0]) if added else 0

    @contextlib.contextmanager
    def _staged(self, staging: tuple[str, str, str], rows: Sequence[Row]) -> Iterator[Any]:
        """A cursor, inside the caller's transaction, after `rows` are copied into the
        staging table that `staging` (CREATE statement, table, columns) makes."""
        create, table, columns = staging
        self._db.execute(create)
        with self._db.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            yield cursor

    def _execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        with self._lock, self._db.transaction():
            return [int(self._db.execute(sql, params).rowcount) for sql, params in statements]


def _without_password(url: str) -> str:
    """`url` fit for a message: its password replaced."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
