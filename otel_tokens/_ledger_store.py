"""What the ledger asks of a database, and the SQL both SQLite and PostgreSQL run for it.

A store writes batches of request rows (and their hourly sums, in the same transaction),
sums hours or requests over a range, and resets, prunes and exports. Its SQL is written
once with `?` placeholders; the PostgreSQL store turns them into `%s`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from otel_tokens._ledger_schema import DIMENSIONS, REQUEST_COLUMNS, TOKEN_COLUMNS

Row = tuple[Any, ...]
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


def _check_dimensions(dims: Sequence[str]) -> None:
    for dim in dims:
        if dim not in DIMENSIONS:  # names go into SQL: only known ones
            msg = f"cannot group by {dim!r}: choose from {', '.join(DIMENSIONS)}"
            raise ValueError(msg)


class Store:
    """A ledger database; subclasses connect and write in their dialect.

    Subclasses open `_db` (the writing connection, guarded by `_lock`) and `_reader` (for
    queries, guarded by `_reading`), so that a long query never holds up the writer.
    """

    #: The dialect's placeholder, substituted for `?` in the shared SQL.
    placeholder = "?"
    description = ""
    _db: Any
    _reader: Any
    _lock: threading.Lock
    _reading: threading.Lock

    def write(self, rows: Sequence[Row]) -> int:
        """Insert request rows (`REQUEST_COLUMNS` order) and add them to the hourly sums in
        one transaction; rows whose uid is already stored are skipped. Returns how many
        were added."""
        raise NotImplementedError

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
        by_hour: bool,
    ) -> list[Row]:
        """Sums of the hours [first_hour, end_hour), grouped by `dims` (and the hour)."""
        groups = [*dims, "hour"] if by_hour else list(dims)
        span = ("otel_tokens_hourly", "hour", first_hour, end_hour)
        return self._sums(span, key_id, groups, _HOURLY_SUMS)

    def request_sums(
        self, start_us: int, end_us: int, *, key_id: str | None, dims: Sequence[str]
    ) -> list[Row]:
        """Sums of the requests in [start_us, end_us), grouped by `dims`."""
        span = ("otel_tokens_requests", "at_us", start_us, end_us)
        return self._sums(span, key_id, list(dims), _REQUEST_SUMS)

    def _sums(
        self, span: tuple[str, str, int, int], key_id: str | None, groups: list[str], sums: str
    ) -> list[Row]:
        """`sums` of `table` where `start <= column < end`, by `groups`; empty groups left out."""
        _check_dimensions([g for g in groups if g != "hour"])
        table, column, start, end = span
        where = [f"{column} >= ?", f"{column} < ?"]
        params: list[int | str] = [start, end]
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        sql = f"SELECT {', '.join([*groups, sums])} FROM {table} WHERE {' AND '.join(where)}"
        if groups:
            sql += f" GROUP BY {', '.join(groups)}"
        return [row for row in self._fetch(self._sql(sql), params) if row[len(groups)]]

    def key_ids(self) -> list[str]:
        """Every key id with usage stored."""
        rows = self._fetch("SELECT DISTINCT key_id FROM otel_tokens_hourly ORDER BY 1", [])
        return [row[0] for row in rows]

    def reset(self, key_id: str | None) -> int:
        """Delete the usage of one key (all keys for None); the requests deleted."""
        statements: list[tuple[str, list[str]]]
        if key_id is None:
            statements = [
                ("DELETE FROM otel_tokens_hourly", []),
                ("DELETE FROM otel_tokens_requests", []),
            ]
        else:
            statements = [
                (self._sql("DELETE FROM otel_tokens_hourly WHERE key_id = ?"), [key_id]),
                (self._sql("DELETE FROM otel_tokens_requests WHERE key_id = ?"), [key_id]),
            ]
        return self._execute(statements)[1]

    def prune(self, before_us: int, before_hour: int) -> int:
        """Delete requests before `before_us` and the hours before `before_hour` (the
        caller makes the two agree); the requests deleted."""
        statements = [
            (self._sql("DELETE FROM otel_tokens_hourly WHERE hour < ?"), [before_hour]),
            (self._sql("DELETE FROM otel_tokens_requests WHERE at_us < ?"), [before_us]),
        ]
        return self._execute(statements)[1]

    def requests(self, start_us: int, end_us: int, batch: int = 5000) -> Iterator[Row]:
        """The request rows in [start_us, end_us), oldest first, `REQUEST_COLUMNS` order."""
        columns = ", ".join(REQUEST_COLUMNS)
        sql = self._sql(
            f"SELECT id, {columns} FROM otel_tokens_requests "
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
