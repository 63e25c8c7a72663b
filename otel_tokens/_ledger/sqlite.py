"""The ledger in one SQLite file: WAL, readable only by its owner, shared by processes."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from otel_tokens._ledger.hour_sums import HourSums
from otel_tokens._ledger.schema import (
    EVENT_COLUMNS,
    REQUEST_COLUMNS,
    SQLITE_MIGRATIONS,
    event_hourly_upsert,
    migrate,
    names_a_team,
    team_hourly_upsert,
)
from otel_tokens._ledger.schema import hourly_upsert as _hourly_upsert
from otel_tokens._ledger.store import Row, Store, event_hours

#: How long a writer waits for another process's transaction before it fails.
BUSY_TIMEOUT_MS = 30_000
CACHE_KIB = 65_536
#: The writer checkpoints the WAL into the file once it holds this many pages (40 MiB at
#: 4 KiB), not SQLite's 1,000: a batch of random request ids dirties an index page per
#: row, so with the default every commit also checkpointed, and fsynced twice.
WAL_CHECKPOINT_PAGES = 10_000
#: Request rows per INSERT statement: 47 x 21 columns stays within 999 parameters, the
#: limit of SQLite before 3.32. One statement per row released and took back the GIL around
#: every row (the sqlite3 module does so per step): a third more time per row when the
#: writer's other thread runs Python meanwhile.
ROWS_PER_INSERT = 999 // len(REQUEST_COLUMNS)


def _insert(rows: int) -> str:
    """INSERT OR IGNORE of `rows` request rows: an id already stored within the idempotency
    window, or earlier in the same statement, is skipped, so the first recorded is kept."""
    one = f"({', '.join('?' for _ in REQUEST_COLUMNS)})"
    return (
        f"INSERT OR IGNORE INTO otel_tokens_requests ({', '.join(REQUEST_COLUMNS)}) "
        f"VALUES {', '.join([one] * rows)}"
    )


_INSERT_ONE = _insert(1)
_INSERT_MANY = _insert(ROWS_PER_INSERT)
_ADD_TO_HOURS = _hourly_upsert("otel_tokens_requests WHERE id > ?", greatest="MAX")
_ADD_TO_TEAM_HOURS = team_hourly_upsert(
    "otel_tokens_requests WHERE id > ? AND team <> ''", greatest="MAX"
)
_INSERT_EVENT = (
    f"INSERT OR IGNORE INTO otel_tokens_events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
_ADDED_EVENTS = f"SELECT {', '.join(EVENT_COLUMNS)} FROM otel_tokens_events WHERE id > ?"
_ADD_EVENT_HOURS = event_hourly_upsert(greatest="MAX")


class SQLiteStore(Store):
    """A ledger file. Created with 0600 permissions; WAL, so readers never block the writer
    and several processes can write it in turn.

    Args:
        path: the file; its directory must exist.

    Raises:
        ValueError: a path that cannot be opened as a ledger, or a ledger written by a
            newer otel_tokens.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = str(self.path)
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(descriptor)
            self._db = _connect(self.path)
            _use_wal(self._db)
            self._db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self._migrate()
            self._reader = _connect(self.path)  # WAL: reads never wait for the writer
        except (OSError, sqlite3.Error) as exc:
            msg = (
                f"cannot open the usage ledger {str(self.path)!r}: {exc}; it needs a file it "
                "can write in a directory it can write (for its write-ahead log)"
            )
            raise ValueError(msg) from exc
        self._lock = threading.Lock()  # the writing connection's
        self._reading = threading.Lock()

    def refused_a_row(self, exc: BaseException) -> bool:
        # Not: locked, read-only, full, an I/O error, a damaged file, a closed connection.
        row_faults = (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError)
        return isinstance(exc, row_faults) or super().refused_a_row(exc)

    def _migrate(self) -> None:
        with _immediate(self._db) as db:
            migrate(db.execute, SQLITE_MIGRATIONS, description=self.description, placeholder="?")

    def write(self, rows: Sequence[Row], sums: HourSums | None = None) -> int:
        with self._lock, _immediate(self._db) as db:
            before = db.execute("SELECT COALESCE(MAX(id), 0) FROM otel_tokens_requests")
            last_id = before.fetchone()[0]
            added = _insert_requests(db, rows)
            if added:
                db.execute(_ADD_TO_HOURS, (last_id,))
                if names_a_team(rows):  # a second pass only for teams
                    db.execute(_ADD_TO_TEAM_HOURS, (last_id,))
        return int(added)

    def write_events(self, rows: Sequence[Row]) -> int:
        with self._lock, _immediate(self._db) as db:
            before = db.execute("SELECT COALESCE(MAX(id), 0) FROM otel_tokens_events")
            last_id = before.fetchone()[0]
            added = db.executemany(_INSERT_EVENT, rows).rowcount
            if added:
                new_rows = db.execute(_ADDED_EVENTS, (last_id,)).fetchall()
                db.executemany(_ADD_EVENT_HOURS, event_hours(new_rows))
        return int(added)

    def _execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        with self._lock, _immediate(self._db) as db:
            return [int(db.execute(sql, params).rowcount) for sql, params in statements]


def _insert_requests(db: sqlite3.Connection, rows: Sequence[Row]) -> int:
    """Insert `rows` in their order, `ROWS_PER_INSERT` to a statement; how many were added."""
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    chunks = (
        list(itertools.chain.from_iterable(rows[start : start + ROWS_PER_INSERT]))
        for start in range(0, whole, ROWS_PER_INSERT)
    )
    added = db.executemany(_INSERT_MANY, chunks).rowcount if whole else 0
    if whole < len(rows):
        added += db.executemany(_INSERT_ONE, rows[whole:]).rowcount
    return int(added)


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A transaction that is the file's one writer from its start (BEGIN IMMEDIATE, waiting
    up to the busy timeout for other processes), committed at the end, rolled back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch a new file to WAL. The switch needs the file to itself and SQLite does not
    wait for it (busy_timeout does not apply), so when another process opens the same new
    file at the same moment, try again for up to BUSY_TIMEOUT_MS."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # A commit survives the process being killed; only a power cut can undo the last ones.
    db.execute("PRAGMA synchronous = NORMAL")
    # The indexes of a large ledger stay in memory: inserts and period queries touch pages
    # all over them. 64 MiB per connection at most, taken only as pages are read.
    db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    return db
