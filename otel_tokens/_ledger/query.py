"""Answer a period query from hourly sums, reading requests only where an hour is cut.

A UTC hour that lies wholly inside the period and inside one group's day (or hour) is read
from `otel_tokens_hourly`. Only the hours cut by the period's ends, or by a local midnight
that is not on the hour (time zones such as Asia/Kolkata), are summed from the requests
themselves, piece by piece. So a 30-day query reads about 720 hourly rows per group, however
many requests there were.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from otel_tokens._base.meters import MeterSpec, MeterTotals
from otel_tokens._ledger.periods import Period, bucket_starts, to_local
from otel_tokens._ledger.schema import EVENT_DIMENSIONS, TOKEN_COLUMNS, US_PER_HOUR
from otel_tokens._ledger.store import SUM_NAMES, Row, Store, bucket_sql
from otel_tokens._pricing.prices import PICO_PER_USD

#: What `by=` may name, and the column each reads.
GROUPS = {
    "key": "key_id",
    "team": "team",
    "provider": "provider",
    "model": "model",
    "scenario": "scenario",
    "status": "status",
    "day": None,
    "hour": None,
}


@dataclass
class UsageTotals:
    """The usage of one group over a period: request counts, tokens, cost.

    `group` holds the values of what the query grouped by (`key`, `model`, `day`, ...);
    `cost_usd` covers priced requests only, and `unpriced_tokens` counts the tokens of the
    others, never a silent $0.
    """

    group: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    system_tokens: int = 0
    cost_pico: int = 0
    unpriced_tokens: int = 0
    last_at_us: int | None = None

    @property
    def cost_usd(self) -> Decimal:
        """The cost in US dollars, exact."""
        return Decimal(self.cost_pico) / PICO_PER_USD

    @property
    def last_at(self) -> datetime | None:
        """When the group's last request was recorded (UTC)."""
        if self.last_at_us is None:
            return None
        return to_local(self.last_at_us, timezone.utc)

    def add(self, sums: Sequence[Any]) -> None:
        """Add one row of sums (`SUM_NAMES` order)."""
        values = dict(zip(SUM_NAMES, sums, strict=True))
        for name in ("requests", "succeeded", "failed", "canceled", *TOKEN_COLUMNS):
            setattr(self, name, getattr(self, name) + int(values[name] or 0))
        self.cost_pico += int(values["cost_pico"] or 0)
        self.unpriced_tokens += int(values["unpriced_tokens"] or 0)
        last = values["last_at_us"]
        if last is not None and (self.last_at_us is None or last > self.last_at_us):
            self.last_at_us = int(last)


def check_groups(by: Sequence[str]) -> tuple[str, ...]:
    """`by` checked: known names, at most one of day and hour.

    Raises:
        ValueError: an unknown name, or both day and hour.
    """
    groups = tuple(by)
    for name in groups:
        if name not in GROUPS:
            msg = f"cannot group usage by {name!r}: choose from {', '.join(GROUPS)}"
            raise ValueError(msg)
    if "day" in groups and "hour" in groups:
        msg = f"group by day or by hour, not both: got {list(groups)}"
        raise ValueError(msg)
    return groups


def query(
    store: Store, period: Period, by: Sequence[str], *, key_id: str | None,
    team: str | None = None,
) -> list[UsageTotals]:  # fmt: skip
    """The usage in `period` (only `key_id`'s and `team`'s, when given), one `UsageTotals`
    per group, in group order."""
    groups = check_groups(by)

    def hours(first: int, end: int, dims: list[str], bucket: str | None) -> list[Row]:
        return store.hourly_sums(first, end, key_id=key_id, dims=dims, bucket=bucket, team=team)

    def requests(start: int, end: int, dims: list[str]) -> list[Row]:
        return store.request_sums(start, end, key_id=key_id, dims=dims, team=team)

    def new(group: dict[str, str]) -> UsageTotals:
        return UsageTotals(group=group)

    return sum_period(period, groups, GROUPS, hours, requests, new)


def meter_query(
    store: Store, spec: MeterSpec, period: Period, by: Sequence[str], *, key_id: str | None
) -> list[MeterTotals]:
    """A custom meter's events in `period`, one `MeterTotals` per group, in group order.

    Raises:
        ValueError: a group that is neither key, day, hour nor one of the meter's dimensions.
    """
    columns: dict[str, str | None] = {"key": "key_id", "day": None, "hour": None}
    columns.update(zip(spec.dimensions, EVENT_DIMENSIONS, strict=False))
    groups = tuple(by)
    for group in groups:
        if group not in columns:
            msg = f"cannot group meter {spec.name!r} by {group!r}: choose from {', '.join(columns)}"
            raise ValueError(msg)
    check_groups([g for g in groups if g in ("key", "day", "hour")])

    def hours(first: int, end: int, dims: list[str], bucket: str | None) -> list[Row]:
        return store.meter_hourly_sums(spec, first, end, key_id=key_id, dims=dims,
                                       bucket=bucket)  # fmt: skip

    def events(start: int, end: int, dims: list[str]) -> list[Row]:
        return store.meter_event_sums(spec, start, end, key_id=key_id, dims=dims)

    def new(group: dict[str, str]) -> MeterTotals:
        return MeterTotals(spec.name, spec.unit, spec.aggregation, group,
                           currency=spec.currency)  # fmt: skip

    return sum_period(period, groups, columns, hours, events, new)


class _Totals(Protocol):
    def add(self, sums: Sequence[Any]) -> None: ...


T = TypeVar("T", bound=_Totals)


def sum_period(  # noqa: PLR0917 - a query's parts, each needed
    period: Period,
    groups: Sequence[str],
    columns: Mapping[str, str | None],
    hours: Callable[[int, int, list[str], str | None], list[Row]],
    raw: Callable[[int, int, list[str]], list[Row]],
    new: Callable[[dict[str, str]], T],
) -> list[T]:
    """Sum `period` by `groups`, reading whole hours with `hours(first, end, columns,
    bucket)` and the rest with `raw(start_us, end_us, columns)`; each row is the group
    columns, then (from `hours`, when a bucket expression is given) the hour or the bucket
    number, then sums that `new(group).add` takes. `columns` maps each group name to its
    column, None for day and hour. Days are bucketed in SQL, so a 30-day query by day
    returns one row per group and day, not one per hour."""
    size = "day" if "day" in groups else "hour" if "hour" in groups else None
    dims = [column for g in groups if (column := columns[g]) is not None]
    starts = bucket_starts(period, size) if size else [period.start_us]
    labels = [_label(start, period, size) for start in starts]
    totals: dict[tuple[str, ...], T] = {}

    def add(bucket: int, row: Row) -> None:
        values = tuple("" if v is None else str(v) for v in row[: len(dims)])
        key = (labels[bucket], *values)
        found = totals.get(key)
        if found is None:
            group = dict(zip([g for g in groups if columns[g]], values, strict=True))
            if size:
                group[size] = labels[bucket]
            found = totals[key] = new({g: group[g] for g in groups})
        found.add(row[len(dims) :])

    def bucket_of(us: int) -> int:
        return bisect.bisect_right(starts, us) - 1

    cut_inside = {s // US_PER_HOUR for s in starts[1:] if s % US_PER_HOUR}
    # The first whole hour of each bucket after the first: an hour belongs to the last
    # bucket whose edge is at or before it (cut hours are read from the rows instead).
    edges = [-(-s // US_PER_HOUR) for s in starts[1:]]
    first_whole = -(-period.start_us // US_PER_HOUR)
    end_whole = period.end_us // US_PER_HOUR
    # Hours read whole from the hourly sums, in runs between the cut ones.
    run_start = first_whole
    for hour in [*sorted(h for h in cut_inside if first_whole <= h < end_whole), end_whole]:
        if hour > run_start:
            first_bucket = bucket_of(run_start * US_PER_HOUR)
            inner = [e for e in edges if run_start < e < hour]
            bucket = (
                "hour" if size == "hour" else bucket_sql(inner, first_bucket) if inner else None
            )
            for row in hours(run_start, hour, dims, bucket):
                if bucket is None:
                    add(first_bucket, row)
                    continue
                when = int(row[len(dims)])  # the hour or the bucket; the sums follow it
                number = bucket_of(when * US_PER_HOUR) if size == "hour" else when
                add(number, (*row[: len(dims)], *row[len(dims) + 1 :]))
        run_start = hour + 1
    # The rest, summed from the rows themselves: the period's ragged ends and the cut hours.
    pieces = _pieces(period, starts, cut_inside, first_whole, end_whole)
    for start, end in pieces:
        for row in raw(start, end, dims):
            add(bucket_of(start), row)
    return [totals[key] for key in sorted(totals)]


def _pieces(
    period: Period, starts: list[int], cut_inside: set[int], first_whole: int, end_whole: int
) -> list[tuple[int, int]]:
    """Ranges of the period not covered by whole hourly rows, each inside one bucket."""
    spans: list[tuple[int, int]] = []
    if end_whole <= first_whole:  # no whole hour at all
        spans.append((period.start_us, period.end_us))
    else:
        if period.start_us < first_whole * US_PER_HOUR:
            spans.append((period.start_us, first_whole * US_PER_HOUR))
        if end_whole * US_PER_HOUR < period.end_us:
            spans.append((end_whole * US_PER_HOUR, period.end_us))
        spans += [
            (h * US_PER_HOUR, (h + 1) * US_PER_HOUR)
            for h in sorted(cut_inside)
            if first_whole <= h < end_whole
        ]
    pieces = []
    for start, end in spans:
        marks = [s for s in starts if start < s < end]
        edges = [start, *marks, end]
        pieces += list(itertools.pairwise(edges))
    return pieces


def _label(start_us: int, period: Period, size: str | None) -> str:
    if size is None:
        return ""
    local = to_local(start_us, period.zone)
    return f"{local:%Y-%m-%d}" if size == "day" else f"{local:%Y-%m-%d %H:00}"
