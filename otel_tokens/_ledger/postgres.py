"""The ledger in PostgreSQL, shared by the replicas of a gateway (psycopg 3, an extra)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from otel_tokens._ledger.hour_sums import (
    HOURLY,
    SUM_COLUMNS,
    TEAM_HOURLY,
    HourSums,
    hour_sums,
    summed_upsert,
)
from otel_tokens._ledger.schema import (
    EVENT_COLUMNS,
    POSTGRES_MIGRATIONS,
    REQUEST_COLUMNS,
    TOKEN_COLUMNS,
    event_hourly_upsert,
    migrate,
    names_a_team,
    team_hourly_upsert,
)
from otel_tokens._ledger.schema import hourly_upsert as _hourly_upsert
from otel_tokens._ledger.store import Row, Store, event_hours

_COLUMNS = ", ".join(REQUEST_COLUMNS)
#: A lock id of the ledger's own, so that replicas starting together migrate once.
_MIGRATION_LOCK = 0x6F74_6C65_6467_6572
_STAGING = (
    f"""CREATE TEMP TABLE IF NOT EXISTS otel_tokens_staging ON COMMIT DELETE ROWS AS
    SELECT {_COLUMNS} FROM otel_tokens_requests WITH NO DATA""",
    "otel_tokens_staging",
    _COLUMNS,
)


#: The PostgreSQL types of the columns the straight copy writes that are not text, as
#: the migrations declare them: a binary copy names each column's type.
_NOT_TEXT = {
    "at_us": "int8", "streamed": "int2", "latency_s": "float8", "hour": "int8",
    **{name: "int8" for name in (*TOKEN_COLUMNS, *SUM_COLUMNS, "cost_pico")},
}  # fmt: skip


def _types(columns: Sequence[str]) -> list[str]:
    return [_NOT_TEXT.get(name, "text") for name in columns]


#: A binary copy: half the client's time per row of a text one, and less of the server's.
_COPY_REQUESTS = f"COPY otel_tokens_requests ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_REQUEST_TYPES = _types(REQUEST_COLUMNS)


class _HourStaging(NamedTuple):
    """The staging table of summed rows for an hourly table (key, `SUM_COLUMNS`)."""

    create: str
    copy: str
    types: list[str]


def _hour_staging(table: str, key: Sequence[str]) -> _HourStaging:
    columns = [*key, *SUM_COLUMNS]
    staging = f"{table}_staging"
    create = f"""CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS
    SELECT {", ".join(columns)} FROM {table} WITH NO DATA"""
    copy = f"COPY {staging} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    return _HourStaging(create, copy, _types(columns))


#: (staging, upsert from it) for the hourly table and the team table, `HourSums` order.
_HOUR_TABLES = [
    (_hour_staging(table, key), summed_upsert(f"{table}_staging", table=table, key=key,
                                              greatest="GREATEST"))
    for table, key in (HOURLY, TEAM_HOURLY)
]  # fmt: skip


def _insert_skipping(*, teams: bool) -> str:
    """Insert the staged requests, skipping those already stored (the same id within the
    idempotency window, added by another replica, a restart or a retry), and add those
    inserted to the hourly sums (and the team table's, when `teams`), not summing any
    twice."""
    team_sums = (
        f"""
), team_summed AS (
{team_hourly_upsert("added WHERE team <> ''", greatest="GREATEST")}"""
        if teams
        else ""
    )
    return f"""WITH added AS (
    INSERT INTO otel_tokens_requests ({_COLUMNS})
    SELECT {_COLUMNS} FROM otel_tokens_staging
    ON CONFLICT DO NOTHING
    RETURNING {_COLUMNS}
), summed AS (
{_hourly_upsert("added", greatest="GREATEST")}{team_sums}
)
SELECT COUNT(*) FROM added"""


#: By whether the batch names a team.
_INSERTS_SKIPPING = {teams: _insert_skipping(teams=teams) for teams in (False, True)}
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
#: Connection settings the URL may leave out, so that a database that stops answering
#: fails a write within seconds instead of holding the writer for ever: connecting, a
#: send no one acknowledges, and an idle connection to a host that went away.
_DEFAULTS = {
    "connect_timeout": "5",
    "tcp_user_timeout": "30000",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


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
    greatest = "GREATEST"
    takes_hour_sums = True
    #: Two batches of requests at once, on two connections: the server works on one
    #: batch in a single process, which kept a core of two idle while the ledger's Python
    #: waited for it (a sixth more records a second replaying, benchmarks/bench_ledger.py).
    concurrent_writes = 2

    def __init__(self, url: str) -> None:
        psycopg = _psycopg()
        self._psycopg = psycopg
        self.description = _without_password(url)
        self._conninfo = _with_defaults(psycopg, url)
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        # The second writing connection, for a batch of requests written while the first
        # connection writes another; opened when first needed.
        self._spare: Any = None
        self._spare_lock = threading.Lock()
        self._skipping = False  # whether writes skip stored requests (see `_write`)
        try:
            self._db = self._connect()
            self._reader = self._connect()
            self._migrate()
        except psycopg.Error as exc:
            msg = f"cannot open the usage ledger {self.description!r}: {exc}"
            raise ValueError(msg) from exc

    def _connect(self) -> Any:
        return self._psycopg.connect(self._conninfo, autocommit=True)

    def _migrate(self) -> None:
        def work(db: Any) -> None:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                migrate(db.execute, POSTGRES_MIGRATIONS, description=self.description,
                        placeholder="%s")  # fmt: skip

        with self._lock:
            self._on_writer(work)

    def refused_a_row(self, exc: BaseException) -> bool:
        # Classes 22 and 23 (a value out of range, NUL in text, a violated constraint); not a
        # read-only standby, missing privileges or a dropped connection.
        psycopg = self._psycopg
        row_faults = (psycopg.DataError, psycopg.IntegrityError)
        return isinstance(exc, row_faults) or super().refused_a_row(exc)

    def write(
        self,
        rows: Sequence[Row],
        sums: HourSums | None = None,
        turn: Callable[[], None] | None = None,
    ) -> int:
        def work(db: Any) -> int:
            return self._write(db, rows, sums, turn or _now)

        # The first connection when it is free (one writer alone never opens the spare),
        # else the spare when it is, else the first once it is free.
        if self._lock.acquire(blocking=False):
            try:
                return int(self._on_writer(work))
            finally:
                self._lock.release()
        if self._spare_lock.acquire(blocking=False):
            try:
                return int(self._on_writer(work, spare=True))
            finally:
                self._spare_lock.release()
        with self._lock:
            return int(self._on_writer(work))

    def close(self) -> None:
        with self._spare_lock:
            if self._spare is not None:
                self._spare.close()
        super().close()

    def write_events(self, rows: Sequence[Row]) -> int:
        with self._lock:
            return int(self._on_writer(lambda db: self._write_events(db, rows)))

    def _on_writer(self, work: Callable[[Any], Any], *, spare: bool = False) -> Any:
        """`work(connection)` on the writing connection, or the spare one (the caller holds
        its lock), retried on a deadlock or serialization failure, and once on a new
        connection when the server dropped this one (restarted, or its backend
        terminated): the transaction it was in rolled back, so doing it again counts
        nothing twice."""
        errors = self._psycopg.errors
        for attempt in range(_RETRIES):
            db = self._writing(spare)
            try:
                return work(db)
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
            except (self._psycopg.OperationalError, self._psycopg.InterfaceError):
                if attempt > 0 or not db.closed:
                    raise
        return None  # not reached

    def _writing(self, spare: bool) -> Any:
        """The writing connection (or the spare), connected anew when it is closed."""
        if spare:
            if self._spare is None or self._spare.closed:
                self._spare = self._connect()
            return self._spare
        if self._db.closed:
            self._db = self._connect()
        return self._db

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self._reading:
            for attempt in range(2):
                if self._reader.closed:
                    self._reader = self._connect()
                try:
                    return list(self._reader.execute(sql, params).fetchall())
                except (self._psycopg.OperationalError, self._psycopg.InterfaceError):
                    if attempt > 0 or not self._reader.closed:
                        raise
        return []  # not reached

    def _write_events(self, db: Any, rows: Sequence[Row]) -> int:
        with db.transaction(), _staged(db, _EVENT_STAGING, rows) as cursor:
            cursor.execute(_INSERT_EVENTS)
            added = cursor.fetchall()
            if added:
                # Sorted hour keys: replicas adding to the same hours lock them in order.
                cursor.executemany(_ADD_EVENT_HOURS, event_hours(added))
        return len(added)

    def _write(
        self, db: Any, rows: Sequence[Row], sums: HourSums | None, turn: Callable[[], None]
    ) -> int:
        """While batches hold no stored request, copy `rows` straight into the requests
        table and add their hourly sums, made in Python (`sums`, by the writer while the
        last batch committed, else here): half the server's time per row of staging them,
        inserting from there and summing what was inserted. A batch that
        does hold one fails its copy (undone to a savepoint), and is written again through
        the staging table, skipping the stored ones; the batches after it skip them too,
        until one has none to skip. The requests are copied in before `turn()` (beside
        another write's), the hours added after it (in the order of the writes)."""
        with db.transaction():
            if not self._skipping:
                try:
                    with db.transaction():  # a savepoint
                        return _copy_and_add(db, rows, sums or hour_sums(rows), turn)
                except self._psycopg.errors.UniqueViolation:
                    self._skipping = True
            with _staged(db, _STAGING, rows) as cursor:
                turn()
                cursor.execute(_INSERTS_SKIPPING[names_a_team(rows)])
                added = _count(cursor)
            self._skipping = added < len(rows)
            return added

    def _execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        def work(db: Any) -> list[int]:
            with db.transaction():
                return [int(db.execute(sql, params).rowcount) for sql, params in statements]

        with self._lock:
            result: list[int] = self._on_writer(work)
            return result


def _now() -> None:
    """A write's turn when it has no other to wait for."""


def _copy_and_add(db: Any, rows: Sequence[Row], sums: HourSums, turn: Callable[[], None]) -> int:
    """Copy `rows` into the requests table and, once it is `turn()`, add their `sums` to the
    hourly tables; fails on a request stored already, within the idempotency window."""
    with db.cursor() as cursor:
        with cursor.copy(_COPY_REQUESTS) as copy:
            copy.set_types(_REQUEST_TYPES)
            for row in rows:
                copy.write_row(row)
        turn()
        for (staging, upsert), summed in zip(_HOUR_TABLES, sums, strict=True):
            if not summed:
                continue
            db.execute(staging.create)
            with cursor.copy(staging.copy) as copy:
                copy.set_types(staging.types)
                for row in summed:
                    copy.write_row(row)
            cursor.execute(upsert)
    return len(rows)


def _count(cursor: Any) -> int:
    found = cursor.fetchone()
    return int(found[0]) if found else 0


@contextlib.contextmanager
def _staged(db: Any, staging: tuple[str, str, str], rows: Sequence[Row]) -> Iterator[Any]:
    """A cursor, inside the caller's transaction, after `rows` are copied into the staging
    table that `staging` (CREATE statement, table, columns) makes."""
    create, table, columns = staging
    db.execute(create)
    with db.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        yield cursor


def _with_defaults(psycopg: Any, url: str) -> str:
    """`url` as connection settings, with `_DEFAULTS` for what it leaves out."""
    given = psycopg.conninfo.conninfo_to_dict(url)
    missing = {name: value for name, value in _DEFAULTS.items() if name not in given}
    return str(psycopg.conninfo.make_conninfo(url, **missing))


def _without_password(url: str) -> str:
    """`url` fit for a message: its password replaced."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
