"""What the ledger asks of a database, and the SQL both SQLite and PostgreSQL run for it.

A store writes batches of request rows (and their hourly sums, in the same transaction),
sums hours or requests over a range, and resets, prunes and exports. Its SQL is written
once with `?` placeholders; the PostgreSQL store turns them into `%s`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from otel_tokens._base.meters import MeterSpec
from otel_tokens._ledger.budget_rows import BudgetRows
from otel_tokens._ledger.hour_sums import HourSums
from otel_tokens._ledger.schema import (
    DIMENSIONS,
    EVENT_COLUMNS,
    EVENT_DIMENSIONS,
    REQUEST_COLUMNS,
    SETTINGS,
    TEAM_DIMENSIONS,
    TOKEN_COLUMNS,
    US_PER_HOUR,
    team_hourly_upsert,
)

Row = tuple[Any, ...]
#: What a driver raises, before sending anything, for a value it cannot adapt.
_ROW_FAULTS: tuple[type[BaseException], ...] = (OverflowError, TypeError, UnicodeError, ValueError)
#: The sums every query returns after its group columns, in this order.
SUM_NAMES = (
    "requests", "succeeded", "failed", "canceled", *TOKEN_COLUMNS, "cost_pico",
    "unpriced_tokens", "last_at_us",
)  # fmt: skip


def _sums(requests: str, one: str, cost: str, unpriced: str, last: str) -> str:
    """The SELECT list of `SUM_NAMES`; `one` is what a row adds to its status's count."""
    by_status = [
        f"SUM(CASE WHEN status = '{status}' THEN {one} ELSE 0 END)"
        for status in ("success", "error", "canceled")
    ]
    tokens = [f"SUM({name})" for name in TOKEN_COLUMNS]
    return ", ".join([requests, *by_status, *tokens, cost, unpriced, last])


_HOURLY_SUMS = _sums(
    "SUM(requests)", "requests", "SUM(cost_pico)", "SUM(unpriced_tokens)", "MAX(last_at_us)"
)
_REQUEST_SUMS = _sums(
    "COUNT(*)", "1", "COALESCE(SUM(cost_pico), 0)",
    "SUM(CASE WHEN cost_pico IS NULL THEN input_tokens + output_tokens ELSE 0 END)",
    "MAX(at_us)",
)  # fmt: skip


#: What a time bucket expression may be (it goes into SQL): the hour, or a CASE that maps
#: hours to bucket numbers, made of integers only.
BUCKET_SQL = re.compile(r"hour|CASE( WHEN hour < \d+ THEN \d+)+ ELSE \d+ END")


def bucket_sql(edges: Sequence[int], first: int) -> str:
    """An SQL expression giving each hour's bucket number: `first` for hours before
    `edges[0]`, `first + 1` before `edges[1]`, and so on (`edges` ascending)."""
    whens = " ".join(f"WHEN hour < {int(edge)} THEN {first + i}" for i, edge in enumerate(edges))
    return f"CASE {whens} ELSE {first + len(edges)} END"


def _checked_bucket(bucket: str) -> str:
    if not BUCKET_SQL.fullmatch(bucket):
        msg = f"not a time bucket expression: {bucket!r}"
        raise ValueError(msg)
    return bucket


_TEAM_TABLE = "otel_tokens_team_hourly"


def _by_team(dims: Sequence[str], key_id: str | None, team: str | None) -> bool:
    """Whether a query is one of teams (then only by team and status, and not of one key).

    Raises:
        ValueError: a team query grouped by anything else, or of one key.
    """
    if team is None and "team" not in dims:
        return False
    others = [d for d in dims if d not in TEAM_DIMENSIONS]
    if others or key_id is not None:
        what = ", ".join(others) if others else "one key"
        msg = (
            f"usage by team is kept per team, status and hour only, so it cannot also be "
            f"grouped by or filtered to {what}: leave the team out or group by those alone"
        )
        raise ValueError(msg)
    return True


def _check_dimensions(dims: Sequence[str]) -> None:
    for dim in dims:
        if dim not in (*DIMENSIONS, "team"):  # names go into SQL: only known ones
            msg = f"cannot group by {dim!r}: choose from {', '.join(DIMENSIONS)}"
            raise ValueError(msg)


class Store(BudgetRows):
    """A ledger database; subclasses connect and write in their dialect.

    Subclasses open `_db` (the writing connection, guarded by `_lock`) and `_reader` (for
    queries, guarded by `_reading`), so that a long query never holds up the writer.
    """

    #: The dialect's placeholder, substituted for `?` in the shared SQL.
    placeholder = "?"
    #: The dialect's two-argument maximum.
    greatest = "MAX"
    description = ""
    #: Whether `write()` adds hourly sums made in Python (else it sums in SQL).
    takes_hour_sums = False
    #: How many `write()` calls, from as many threads, the database works on at once.
    concurrent_writes = 1
    _db: Any
    _reader: Any
    _lock: threading.Lock
    _reading: threading.Lock

    def write(
        self,
        rows: Sequence[Row],
        sums: HourSums | None = None,
        turn: Callable[[], None] | None = None,
    ) -> int:
        """Insert request rows (`REQUEST_COLUMNS` order), but those whose uid is stored in
        the idempotency window, and add them to the hourly sums in one transaction; how many
        were added. `sums`: their `hour_sums()` made ahead, if the store `takes_hour_sums`.
        `turn()` returns once the writes to commit first have (called before the hours)."""
        raise NotImplementedError

    def write_events(self, rows: Sequence[Row]) -> int:
        """Insert custom meter events (`EVENT_COLUMNS` order) and add them to the events'
        hourly sums in one transaction; events whose (meter, uid) is stored are skipped.
        Returns how many were added."""
        raise NotImplementedError

    def refused_a_row(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by a write, says the database refused a row of the batch
        (a value it cannot take), rather than that it cannot be written now (a disk, a
        connection, a lock, a read-only database, missing privileges)."""
        return isinstance(exc, _ROW_FAULTS)

    def close(self) -> None:
        """Close the connections."""
        with self._lock, self._reading:
            self._db.close()
            self._reader.close()

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self._reading:
            return list(self._reader.execute(sql, params).fetchall())

    def _execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run statements in one transaction; how many rows each changed."""
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def hourly_sums(
        self,
        first_hour: int,
        end_hour: int,
        *,
        key_id: str | None,
        dims: Sequence[str],
        bucket: str | None,
        team: str | None = None,
    ) -> list[Row]:
        """Sums of the hours [first_hour, end_hour), grouped by `dims` and, when given, the
        `bucket` expression (`bucket_sql()`) of each hour; only `team`'s when given (read
        from the team table, as is any grouping by team)."""
        groups = [*dims, _checked_bucket(bucket)] if bucket else list(dims)
        table = _TEAM_TABLE if _by_team(dims, key_id, team) else "otel_tokens_hourly"
        return self._sums((table, "hour", first_hour, end_hour), key_id, team, groups,
                          _HOURLY_SUMS)  # fmt: skip

    def request_sums(
        self, start_us: int, end_us: int, *, key_id: str | None, dims: Sequence[str],
        team: str | None = None,
    ) -> list[Row]:  # fmt: skip
        """Sums of the requests in [start_us, end_us), grouped by `dims`."""
        # The same groupings as the hours allow; grouped by team, only requests with one.
        anyone = _by_team(dims, key_id, team) and team is None
        span = ("otel_tokens_requests", "at_us", start_us, end_us)
        return self._sums(span, key_id, team, list(dims), _REQUEST_SUMS, with_team=anyone)

    def _sums(
        self, span: tuple[str, str, int, int], key_id: str | None, team: str | None,
        groups: list[str], sums: str, *, with_team: bool = False,
    ) -> list[Row]:  # fmt: skip
        """`sums` of `table` where `start <= column < end`, by `groups`; empty groups left
        out; only rows of `team`, or with a team at all (`with_team`)."""
        _check_dimensions([g for g in groups if not BUCKET_SQL.fullmatch(g)])
        where = [("team = ?", team)] if team is not None else []
        if with_team:
            where.append(("team > ?", ""))
        rows = self._select(span, where, key_id, groups, groups, sums)
        return [row for row in rows if row[len(groups)]]

    def _select(  # noqa: PLR0917 - private; the parts of one SELECT
        self, span: tuple[str, str, int, int], where: list[tuple[str, str]],
        key_id: str | None, select: list[str], groups: list[str], sums: str,
    ) -> list[Row]:  # fmt: skip
        """`select` and `sums` of `table` where `start <= column < end`, the `where`
        conditions (SQL, parameter) and the key hold, grouped by `groups`. Column names
        are checked by the callers: they go into SQL."""
        table, column, start, end = span
        conditions = [sql for sql, _ in where] + [f"{column} >= ?", f"{column} < ?"]
        params: list[int | str] = [param for _, param in where] + [start, end]
        if key_id is not None:
            conditions.append("key_id = ?")
            params.append(key_id)
        sql = f"SELECT {', '.join([*select, sums])} FROM {table} WHERE {' AND '.join(conditions)}"
        if groups:
            sql += f" GROUP BY {', '.join(groups)}"
        return self._fetch(self._sql(sql), params)

    def key_ids(self) -> list[str]:
        """Every key id with usage stored."""
        rows = self._fetch(
            "SELECT key_id FROM otel_tokens_hourly UNION "
            "SELECT key_id FROM otel_tokens_event_hourly ORDER BY 1",
            [],
        )
        return [row[0] for row in rows]

    def reset(self, key_id: str | None) -> int:
        """Delete the usage of one key (all keys for None); the requests deleted. The team
        table has no key: the hours the key's team requests were in are summed again from
        the other keys' requests, in the same transaction."""
        tables = ("hourly", "requests", "event_hourly", "events")
        where, params = ("", []) if key_id is None else (" WHERE key_id = ?", [key_id])
        statements = [
            (self._sql(f"DELETE FROM otel_tokens_{table}{where}"), params) for table in tables
        ]
        if key_id is None:
            statements.append((f"DELETE FROM {_TEAM_TABLE}", []))
        else:
            hours = (
                f"SELECT DISTINCT at_us / {US_PER_HOUR} FROM otel_tokens_requests "
                "WHERE key_id = ? AND team <> ''"
            )
            others = (
                f"otel_tokens_requests WHERE team <> '' AND key_id <> ? "
                f"AND at_us / {US_PER_HOUR} IN ({hours})"
            )
            statements[:0] = [  # before the key's requests go
                (self._sql(f"DELETE FROM {_TEAM_TABLE} WHERE hour IN ({hours})"), [key_id]),
                (self._sql(team_hourly_upsert(others, greatest=self.greatest)), [key_id, key_id]),
            ]
        counts = self._execute(statements)
        first = 0 if key_id is None else 2  # where the requests' and events' deletes begin
        return counts[first + 1] + counts[first + 3]

    def prune(self, before_us: int, before_hour: int) -> int:
        """Delete requests and events before `before_us` and the hours before `before_hour`
        (the caller makes the two agree); the requests and events deleted."""
        statements = [
            (self._sql("DELETE FROM otel_tokens_hourly WHERE hour < ?"), [before_hour]),
            (self._sql("DELETE FROM otel_tokens_requests WHERE at_us < ?"), [before_us]),
            (self._sql(f"DELETE FROM {_TEAM_TABLE} WHERE hour < ?"), [before_hour]),
            (self._sql("DELETE FROM otel_tokens_event_hourly WHERE hour < ?"), [before_hour]),
            (self._sql("DELETE FROM otel_tokens_events WHERE at_us < ?"), [before_us]),
        ]
        counts = self._execute(statements)
        return counts[1] + counts[4]

    def requests(self, start_us: int, end_us: int, batch: int = 5000) -> Iterator[Row]:
        """The request rows in [start_us, end_us), in the order stored (each batch sorted
        by id), `REQUEST_COLUMNS`."""
        return self._rows("otel_tokens_requests", REQUEST_COLUMNS, start_us, end_us, batch)

    def events(self, start_us: int, end_us: int, batch: int = 5000) -> Iterator[Row]:
        """The custom meter events in [start_us, end_us), in the order written,
        `EVENT_COLUMNS` order."""
        return self._rows("otel_tokens_events", EVENT_COLUMNS, start_us, end_us, batch)

    def _rows(
        self, table: str, names: Sequence[str], start_us: int, end_us: int, batch: int
    ) -> Iterator[Row]:
        sql = self._sql(
            f"SELECT id, {', '.join(names)} FROM {table} "
            "WHERE at_us >= ? AND at_us < ? AND id > ? ORDER BY id LIMIT ?"
        )
        after = 0
        while True:
            rows = self._fetch(sql, [start_us, end_us, after, batch])
            for row in rows:
                yield row[1:]
            if len(rows) < batch:
                return
            after = rows[-1][0]

    # Settings

    def setting(self, name: str) -> str | None:
        """The value of setting `name`, or None."""
        rows = self._fetch(self._sql(f"SELECT value FROM {SETTINGS} WHERE name = ?"), [name])
        return str(rows[0][0]) if rows else None

    def put_setting(self, name: str, value: str) -> str:
        """Store `value` as setting `name` unless it is set (by another process, say);
        the value stored."""
        insert = f"INSERT INTO {SETTINGS} (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
        self._execute([(self._sql(insert), [name, value])])
        stored = self.setting(name)
        assert stored is not None  # just inserted, or there already
        return stored

    # Custom meters

    def register_meter(self, spec: MeterSpec) -> MeterSpec:
        """Store `spec` unless a meter of its name is stored; the stored definition."""
        columns = "name, unit, aggregation, dimensions, currency, description"
        insert = (
            f"INSERT INTO otel_tokens_meters ({columns}) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING"
        )
        self._execute([(self._sql(insert), spec.row())])
        found = self._fetch(
            self._sql(f"SELECT {columns} FROM otel_tokens_meters WHERE name = ?"), [spec.name]
        )
        return MeterSpec.from_row(found[0])

    def meters(self) -> list[MeterSpec]:
        """Every custom meter defined in the ledger, by name."""
        rows = self._fetch(
            "SELECT name, unit, aggregation, dimensions, currency, description "
            "FROM otel_tokens_meters ORDER BY name",
            [],
        )
        return [MeterSpec.from_row(row) for row in rows]

    def meter_hourly_sums(
        self, spec: MeterSpec, first_hour: int, end_hour: int, *, key_id: str | None,
        dims: Sequence[str], bucket: str | None,
    ) -> list[Row]:  # fmt: skip
        """A meter's sums over the hours [first_hour, end_hour), by `dims` (and the `bucket`
        expression): events, value sum, last time, value at the last time. A last meter's
        rows are not summed here: the caller keeps the latest."""
        groups = [*dims, _checked_bucket(bucket)] if bucket else list(dims)
        if spec.aggregation == "last":
            sums = "events, value_micro, last_at_us, last_value_micro"
            select = groups
            groups = []  # one row per stored hour; the caller keeps the latest
        else:
            sums = "SUM(events), SUM(value_micro), MAX(last_at_us), 0"
            select = groups
        span = ("otel_tokens_event_hourly", "hour", first_hour, end_hour)
        return self._meter_sums(spec, span, key_id, select, groups, sums)

    def meter_event_sums(
        self, spec: MeterSpec, start_us: int, end_us: int, *, key_id: str | None,
        dims: Sequence[str],
    ) -> list[Row]:  # fmt: skip
        """A meter's sums over the events in [start_us, end_us), by `dims`."""
        if spec.aggregation == "last":
            sums, groups = "1, value_micro, at_us, value_micro", []
        else:
            sums, groups = "COUNT(*), SUM(value_micro), MAX(at_us), 0", list(dims)
        span = ("otel_tokens_events", "at_us", start_us, end_us)
        return self._meter_sums(spec, span, key_id, list(dims), groups, sums)

    def _meter_sums(  # noqa: PLR0917 - private, two callers
        self, spec: MeterSpec, span: tuple[str, str, int, int], key_id: str | None,
        select: list[str], groups: list[str], sums: str,
    ) -> list[Row]:  # fmt: skip
        for column in select:
            if column not in ("key_id", *EVENT_DIMENSIONS) and not BUCKET_SQL.fullmatch(column):
                msg = f"cannot group a meter by column {column!r}"
                raise ValueError(msg)
        return self._select(span, [("meter = ?", spec.name)], key_id, select, groups, sums)


def event_hours(added: Sequence[Row]) -> list[Row]:
    """The hourly sums of added event rows (`EVENT_COLUMNS` order), as rows for
    `event_hourly_upsert`: the later event's value is the last, at the same microsecond
    the larger one."""
    hours: dict[tuple[Any, ...], list[int]] = {}
    for meter, _uid, at_us, key_id, d1, d2, d3, d4, value in added:
        key = (meter, key_id, at_us // US_PER_HOUR, d1, d2, d3, d4)
        found = hours.get(key)
        if found is None:
            hours[key] = [1, value, at_us, value]
            continue
        found[0] += 1
        found[1] += value
        found[2], found[3] = max((found[2], found[3]), (at_us, value))
    return [(*key, *sums) for key, sums in sorted(hours.items())]
