"""The ledger in one SQLite file: WAL, readable only by its owner, shared by processes."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
#: The most request rows in one INSERT statement (43,008 parameters). The sqlite3 module
#: holds the GIL while it binds a statement's values and lets it go while SQLite inserts
#: them; once let go, it gets it back only when the writer's other thread gives it up,
#: after up to 5 ms (`sys.getswitchinterval()`). With 47 rows to a statement (the 999
#: parameters of SQLite before 3.32) SQLite worked on its own for a fraction of a
#: millisecond each time and the writer's two threads ran one after the other (0.98 cores
#: busy); with 2,048 rows its inserts overlap the rows being made (1.1-1.2 cores, a tenth
#: more records a second, benchmarks/bench_ledger.py). The prepared statements of every
#: size hold about 8 MiB of the writing connection.
MAX_ROWS_PER_INSERT = 2048
#: The parameters a statement may hold where `Connection.getlimit` cannot say (Python 3.10).
_VARIABLES_BEFORE_3_32, _VARIABLES_SINCE_3_32 = 999, 32_766


def rows_per_insert(db: sqlite3.Connection) -> int:
    """The most request rows this connection's SQLite takes in one INSERT: a power of two,
    at most MAX_ROWS_PER_INSERT, its values within the limit of parameters."""
    getlimit = getattr(db, "getlimit", None)  # Python 3.11+, as is the constant
    limit = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
    if getlimit is not None and limit is not None:
        variables = int(getlimit(limit))
    elif sqlite3.sqlite_version_info >= (3, 32, 0):
        variables = _VARIABLES_SINCE_3_32
    else:
        variables = _VARIABLES_BEFORE_3_32
    rows = min(MAX_ROWS_PER_INSERT, max(1, variables // len(REQUEST_COLUMNS)))
    return 1 << (rows.bit_length() - 1)


def insert_sizes(count: int, largest: int) -> list[int]:
    """How many rows each INSERT of a batch of `count` takes: `largest` (a power of two) as
    often as it fits, then the rest in falling powers of two, one statement each, so that
    a batch of any size needs few statements, of few distinct texts to prepare."""
    sizes = [largest] * (count // largest)
    rest = count % largest
    while rest:
        size = 1 << (rest.bit_length() - 1)
        sizes.append(size)
        rest -= size
    return sizes


def _insert(rows: int) -> str:
    """INSERT OR IGNORE of `rows` request rows: an id already stored within the idempotency
    window, or earlier in the same statement, is skipped, so the first recorded is kept."""
    one = f"({', '.join('?' for _ in REQUEST_COLUMNS)})"
    return (
        f"INSERT OR IGNORE INTO otel_tokens_requests ({', '.join(REQUEST_COLUMNS)}) "
        f"VALUES {', '.join([one] * rows)}"
    )


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
        self._rows_per_insert = rows_per_insert(self._db)
        self._inserts: dict[int, str] = {}  # INSERT statements by their rows
        self._reading = threading.Lock()

    def refused_a_row(self, exc: BaseException) -> bool:
        # Not: locked, read-only, full, an I/O error, a damaged file, a closed connection.
        row_faults = (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError)
        return isinstance(exc, row_faults) or super().refused_a_row(exc)

    def _migrate(self) -> None:
        with _immediate(self._db) as db:
            migrate(db.execute, SQLITE_MIGRATIONS, description=self.description, placeholder="?")

    def write(
        self,
        rows: Sequence[Row],
        sums: HourSums | None = None,
        turn: Callable[[], None] | None = None,
    ) -> int:
        if turn is not None:  # one writer at a time: its turn comes before it begins
            turn()
        with self._lock, _immediate(self._db) as db:
            before = db.execute("SELECT COALESCE(MAX(id), 0) FROM otel_tokens_requests")
            last_id = before.fetchone()[0]
            added = self._insert_requests(db, rows)
            if added:
                db.execute(_ADD_TO_HOURS, (last_id,))
                if names_a_team(rows):  # a second pass only for teams
                    db.execute(_ADD_TO_TEAM_HOURS, (last_id,))
        return int(added)

    def _insert_requests(self, db: sqlite3.Connection, rows: Sequence[Row]) -> int:
        """Insert `rows` in their order, in statements of `insert_sizes`; how many were
        added (a retry within the same batch is skipped too: the first of an id is kept)."""
        added, start = 0, 0
        for size in insert_sizes(len(rows), self._rows_per_insert):
            sql = self._inserts.get(size)
            if sql is None:
                sql = self._inserts[size] = _insert(size)
            values = list(itertools.chain.from_iterable(rows[start : start + size]))
            added += db.execute(sql, values).rowcount
            start += size
        return added

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
