"""The hourly sums of a batch of request rows, made in Python, and the SQL that adds them.

PostgreSQL copies a batch it knows holds no stored request straight into the requests
table, then adds these sums, made on the client: its server then neither stages the rows
nor reads them back to sum them, half of its time per row (`postgres.py`). The sums are
those `schema.hourly_upsert` makes in SQL, column for column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from otel_tokens._ledger.schema import (
    HOURLY_KEY,
    REQUEST_COLUMNS,
    TEAM_HOURLY_KEY,
    TOKEN_COLUMNS,
    US_PER_HOUR,
)

Row = tuple[Any, ...]
#: The sums after the key of an hourly row, as both hourly tables name them.
SUM_COLUMNS = ("requests", *TOKEN_COLUMNS, "cost_pico", "unpriced_tokens", "last_at_us")
_AT, _COST, _TEAM = (REQUEST_COLUMNS.index(name) for name in ("at_us", "cost_pico", "team"))
_INPUT, _OUTPUT = REQUEST_COLUMNS.index("input_tokens"), REQUEST_COLUMNS.index("output_tokens")
_TOKENS = tuple(REQUEST_COLUMNS.index(name) for name in TOKEN_COLUMNS)


def _sums(rows: Sequence[Row], key_of: Callable[[Row], tuple[Any, ...]]) -> list[Row]:
    """The rows of `rows`' sums by `key_of(row)`: the key, then `SUM_COLUMNS` (unpriced
    tokens: the input and output of rows without a cost), in no order (`summed_upsert`
    orders them; sorting here took half the time of summing, replaying 30 days).

    A key seen once (nearly every one, replaying 30 days) keeps its finished row, a plain
    tuple of texts and numbers, which the garbage collector stops tracking at its first
    pass; only a key seen again gets a list to add to. A list for every key outlived the
    young generations and brought on full collections, a sixth of the writer's time."""
    found: dict[tuple[Any, ...], Row | list[Any]] = {}
    first, second, third, fourth, fifth, sixth = _TOKENS
    width = len(SUM_COLUMNS)
    for row in rows:
        key = key_of(row)
        cost = row[_COST]
        seen = found.get(key)
        if seen is None:
            found[key] = (
                *key, 1, row[first], row[second], row[third], row[fourth], row[fifth],
                row[sixth], cost or 0, row[_INPUT] + row[_OUTPUT] if cost is None else 0,
                row[_AT],
            )  # fmt: skip
            continue
        if isinstance(seen, list):
            sums = seen
        else:  # seen once before: from now on, a list to add to
            found[key] = sums = list(seen[-width:])
        sums[0] += 1
        sums[1] += row[first]
        sums[2] += row[second]
        sums[3] += row[third]
        sums[4] += row[fourth]
        sums[5] += row[fifth]
        sums[6] += row[sixth]
        if cost is None:
            sums[8] += row[_INPUT] + row[_OUTPUT]
        else:
            sums[7] += cost
        sums[9] = max(sums[9], row[_AT])
    return [(*key, *seen) if isinstance(seen, list) else seen for key, seen in found.items()]


_KEY_INDEXES = tuple(REQUEST_COLUMNS.index(name) for name in HOURLY_KEY if name != "hour")


def hourly_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows to add to `otel_tokens_hourly` for request rows (`REQUEST_COLUMNS` order):
    `HOURLY_KEY`, then `SUM_COLUMNS`."""
    key, provider, model, scenario, status = _KEY_INDEXES
    return _sums(
        rows,
        lambda row: (row[key], _hour(row[_AT]), row[provider], row[model], row[scenario],
                     row[status]),
    )  # fmt: skip


_STATUS = REQUEST_COLUMNS.index("status")


def team_hourly_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows to add to `otel_tokens_team_hourly` for the request rows that name a team:
    `TEAM_HOURLY_KEY`, then `SUM_COLUMNS`."""
    named = [row for row in rows if row[_TEAM]]
    return _sums(named, lambda row: (row[_TEAM], _hour(row[_AT]), row[_STATUS]))


def _hour(at_us: int) -> int:
    """The hour of a time as SQL's integer division has it (toward zero)."""
    return at_us // US_PER_HOUR if at_us >= 0 else -(-at_us // US_PER_HOUR)


def summed_upsert(source: str, *, table: str, key: Sequence[str], greatest: str) -> str:
    """SQL that adds the summed rows of `source` (key columns, then `SUM_COLUMNS`) to
    `table`, in the order of their keys, so that writers adding to the same hours lock
    them in one order."""
    columns = ", ".join([*key, *SUM_COLUMNS])
    updates = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in SUM_COLUMNS[:-1])
    return f"""INSERT INTO {table} ({columns})
SELECT {columns} FROM {source}
ORDER BY {", ".join(key)}
ON CONFLICT ({", ".join(key)}) DO UPDATE SET {updates},
    last_at_us = {greatest}({table}.last_at_us, excluded.last_at_us)"""


#: (table, key) of the two hourly tables.
HOURLY = ("otel_tokens_hourly", HOURLY_KEY)
TEAM_HOURLY = ("otel_tokens_team_hourly", TEAM_HOURLY_KEY)


class HourSums(NamedTuple):
    """The rows a batch of requests adds to the two hourly tables."""

    hourly: list[Row]
    team: list[Row]


def hour_sums(rows: Sequence[Row]) -> HourSums:
    """What request rows (`REQUEST_COLUMNS` order) add to the hourly and team tables."""
    return HourSums(hourly_rows(rows), team_hourly_rows(rows))
