"""`UsageLedger`: per-key usage that survives restarts, written off the request path."""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timezone
from typing import IO, Any

from otel_tokens._base.fingerprint import SECRET_ENV, KeyFingerprinter
from otel_tokens._base.meters import MeterSpec, MeterTotals, meter_spec
from otel_tokens._base.shutdown import LEDGERS, at_exit, exit_budget, shutdown_timeout
from otel_tokens._base.text import is_safe, safe_label, said
from otel_tokens._base.usage import Usage, find_fault
from otel_tokens._base.warn import WarnOnce, logger
from otel_tokens._core.custom_meter import CustomMeter
from otel_tokens._ledger.keys import LedgerKeys
from otel_tokens._ledger.periods import (
    US_PER_HOUR,
    Period,
    parse_before,
    parse_period,
    zone_named,
)
from otel_tokens._ledger.query import UsageTotals, check_groups, query, sum_period
from otel_tokens._ledger.schema import EVENT_DIMENSIONS
from otel_tokens._ledger.snapshot import MERGE_BATCH, read_snapshot, write_snapshot
from otel_tokens._ledger.store import Row, Store
from otel_tokens._pricing.table import PriceTable

#: How often the writer looks for rows within each flush interval (see `_write_loop`).
_TICKS_PER_INTERVAL = 4
#: The environment variable naming the ledger the CLI reads when --ledger is not given.
LEDGER_ENV = "OTEL_TOKENS_LEDGER"
_WHEN_FULL = ("drop", "block")
US_PER_DAY = 86_400_000_000
#: A queued usage, its cost in pico-dollars, when (UTC microseconds), and whether it is
#: already checked and priced (by a tracker) or is to be on the writer thread; or a custom
#: meter's event: its MeterSpec, value in millionths, dimension values, key id, API key,
#: idempotency key and when.
_Entry = tuple[Any, ...]


class MissingSecretError(ValueError):
    """An API key given to look up, in a ledger whose secret this process does not have."""


def open_store(target: str | os.PathLike[str]) -> Store:
    """The store `target` names: a `postgresql://` URL or a SQLite file path.

    Raises:
        ValueError: the ledger cannot be opened.
        ImportError: a PostgreSQL URL without psycopg installed.
    """
    text = os.fspath(target)
    if text.startswith(("postgresql://", "postgres://")):
        from otel_tokens._ledger.postgres import PostgresStore

        return PostgresStore(text)
    from otel_tokens._ledger.sqlite import SQLiteStore

    return SQLiteStore(text)


class UsageLedger:
    """A durable record of every request's usage per API key, queryable by period.

    `record()` only queues a row; one background thread writes the queue in batches (when
    `batch_size` rows are queued, else every quarter of `flush_interval_s`), each batch
    with its hourly sums in one transaction. `flush()`, `close()` and interpreter exit write
    all that is queued. A process killed outright loses at most what was queued in the last
    `flush_interval_s` while the writer keeps up (else its backlog, at most `queue_size`
    rows); the database stays consistent. API keys are stored as their keyed
    fingerprint only.

    Args:
        target: a SQLite file path (created with 0600 permissions) or a `postgresql://` URL
            (needs `otel_tokens[postgres]`) shared by several replicas.
        prices: prices for `record()` calls made on the ledger itself; a tracker's records
            carry the tracker's cost. None: the bundled table.
        api_key_secret: the fingerprint secret for `Usage.api_key`; defaults to the
            OTEL_TOKENS_API_KEY_SECRET environment variable. Without one the ledger makes
            a secret and keeps it in its database, so per-key usage works with no setting
            and stays the same across restarts and replicas sharing the database; a ledger
            whose key ids were made with another secret than the one given is refused.
        queue_size: the most rows waiting to be written.
        batch_size: the most rows written in one transaction. Batches are only this
            large when the writer falls behind; larger ones amortize the commit and
            the index pages each transaction writes.
        flush_interval_s: the longest a row waits before it is written, while the writer
            keeps up.
        when_full: what `record()` does with a full queue: "drop" (counted and warned
            once) or "block" (waits for room).

    Raises:
        ValueError: a setting out of range, a ledger that cannot be opened, or a secret
            other than the one its key ids were made with.
        ImportError: a PostgreSQL URL without psycopg installed.

    Example:
        >>> import tempfile, os
        >>> ledger = UsageLedger(os.path.join(tempfile.mkdtemp(), "usage.db"))
        >>> ledger.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1200,
        ...                     output_tokens=300, api_key_id="3f9a1c0b2d4e5f60"))
        >>> ledger.flush()
        True
        >>> ledger.usage("today", by=["key"])[0].input_tokens
        1200
        >>> ledger.close()
        True
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        prices: PriceTable | None = None,
        api_key_secret: bytes | str | None = None,
        queue_size: int = 100_000,
        batch_size: int = 20_000,
        flush_interval_s: float = 1.0,
        when_full: str = "drop",
    ) -> None:
        if not isinstance(queue_size, int) or queue_size < 1:
            msg = f"queue_size must be a positive int, got {queue_size!r}"
            raise ValueError(msg)
        if not isinstance(batch_size, int) or not 1 <= batch_size <= queue_size:
            msg = f"batch_size must be an int from 1 to queue_size, got {batch_size!r}"
            raise ValueError(msg)
        if not isinstance(flush_interval_s, (int, float)) or not 0 < flush_interval_s <= 3600:
            msg = f"flush_interval_s must be seconds in (0, 3600], got {flush_interval_s!r}"
            raise ValueError(msg)
        if when_full not in _WHEN_FULL:
            msg = f"when_full must be 'drop' or 'block', got {when_full!r}"
            raise ValueError(msg)
        secret = api_key_secret if api_key_secret is not None else os.environ.get(SECRET_ENV)
        configured = KeyFingerprinter(secret) if secret else None
        self._prices = prices if prices is not None else PriceTable.bundled()
        self._target = os.fspath(target)
        self._opened = open_store(self._target)
        self._pid = os.getpid()
        self.target = self._opened.description
        try:
            self._keys = LedgerKeys(lambda: self._store, configured, self.target)
        except BaseException:
            self._opened.close()
            raise
        self._capacity = queue_size
        self._batch_size = batch_size
        self._interval = float(flush_interval_s)
        self._block = when_full == "block"
        self._exit_timeout_s = shutdown_timeout(None)
        self._closing_by = math.inf  # when close(timeout_s=) gives up
        self._closed = False
        self._feeders: weakref.WeakSet[Any] = weakref.WeakSet()
        self._inherited: list[Store] = []  # a forked child's copy of its parent's connections
        self._start_afresh()
        me = weakref.ref(self)
        at_exit(functools.partial(_close_at_exit, me), LEDGERS)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _start_afresh_in_child(me))

    def _start_afresh(self) -> None:
        """An empty queue, fresh locks and a writer thread: at start, and in a forked child,
        which writes only what it records itself (its parent writes what was queued)."""
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._reopening = threading.Lock()
        self._taken = 0  # entries the writer took from the queue
        self._in_flight = 0  # of them, those it is writing now
        self._done = 0  # entries written or dropped
        self._drops: Counter[str] = Counter()
        self._warn = WarnOnce()
        # Rows without an id of their own get this writer's prefix and a running number:
        # unique, and added at one end of the uid index, which is twice as fast as random ids.
        self._uid_prefix = f"{uuid.uuid4().hex[:16]}-"
        self._uid_numbers = itertools.count(1)
        self._writer = threading.Thread(target=self._write_loop, name="otel_tokens-ledger",
                                        daemon=True)  # fmt: skip
        self._writer.start()

    @property
    def _store(self) -> Store:
        """The database, opened anew in a forked child: a connection must not cross a fork
        (the parent's are kept, never used nor closed, so the parent's session lives on)."""
        if self._pid != os.getpid():
            with self._reopening:
                if self._pid != os.getpid():
                    self._inherited.append(self._opened)
                    self._opened = open_store(self._target)
                    self._pid = os.getpid()
        return self._opened

    # Writing

    def record(self, usage: Usage, *, at: datetime | None = None) -> None:
        """Queue one request's usage for the ledger; never raises.

        Args:
            usage: what the request used; `usage.request_id`, when set, makes recording it
                again (here or by another replica) count once.
            at: when it happened (aware); default now. For replaying stored usage.
        """
        try:
            at_us = int((at.timestamp() if at is not None else time.time()) * 1_000_000)
            self._put((usage, None, at_us, False))  # checked and priced by the writer
        except Exception:
            self._drop("internal_error", "queuing it failed (a bug: please report it)")

    def add(self, usage: Usage, cost_pico: int | None, at_us: int) -> None:
        """Queue a checked `usage` whose cost is known (how a tracker feeds the ledger)."""
        self._put((usage, cost_pico, at_us, True))

    def _put_event(self, entry: _Entry) -> None:
        """Queue a checked custom meter event (how `CustomMeter.record` feeds the ledger)."""
        self._put(entry)

    def _event_row(self, entry: _Entry) -> Row:
        """The database row of a queued custom meter event, made on the writer thread."""
        spec, value_micro, values, key_id, api_key, uid, at_us = entry
        if key_id is None and api_key:
            key_id = self._key_of(api_key)
        padding = ("",) * (len(EVENT_DIMENSIONS) - len(values))
        uid, key = _storable(uid or self._new_uid(), key_id or "")
        return (spec.name, uid, at_us, key, *values, *padding, value_micro)

    def _new_uid(self) -> str:
        return f"{self._uid_prefix}{next(self._uid_numbers):012x}"

    def _key_of(self, api_key: str) -> str | None:
        fingerprint = self._keys.get()
        if fingerprint is None:
            self._warn(
                "no-secret",
                "otel_tokens: usage with an API key reached the ledger %r, whose key ids were "
                "made with a secret this process was not given, so it is stored without a "
                "key: set %s",
                self.target,
                SECRET_ENV,
            )
            return None
        return fingerprint(api_key)

    def _row(self, entry: _Entry) -> Row | None:
        """The database row of a queued entry, made on the writer thread; None if dropped."""
        usage, cost_pico, at_us, checked = entry
        if not checked:
            fault = find_fault(usage)
            if fault is not None:
                self._drop(fault.kind, fault.message)
                return None
            cost_pico = self._prices.cost_pico(usage, on=_utc_day(at_us // US_PER_DAY))
        key_id = usage.api_key_id
        if key_id is None and usage.api_key:
            key_id = self._key_of(usage.api_key)
        texts = _storable(
            usage.request_id or self._new_uid(), key_id or "", usage.provider, usage.model,
            usage.request_model or usage.model, usage.operation, usage.scenario or "",
            usage.user_tier or "", usage.status, usage.error_type or "",
        )  # fmt: skip
        uid, key, provider, model, request_model, operation, scenario, tier, status, error = texts
        row = (
            uid, at_us, key, provider, model, request_model, operation, scenario, tier, status,
            error or None, int(usage.streamed), usage.input_tokens, usage.output_tokens,
            usage.cache_read_tokens, usage.cache_write_tokens, usage.reasoning_tokens,
            usage.system_tokens, cost_pico, usage.latency_s,
        )  # fmt: skip
        return row

    def _put(self, entry: _Entry) -> None:
        queue = self._queue
        if self._closed:
            self._drop("ledger_closed", "it was recorded after the ledger was closed")
            return
        if len(queue) >= self._capacity:
            if not self._block:
                self._drop("ledger_queue_full", f"the ledger queue of {self._capacity} is full")
                return
            with self._cond:
                while len(queue) >= self._capacity and not self._closed:
                    if time.monotonic() >= self._closing_by:  # closing, and the time is up
                        break
                    self._cond.notify_all()
                    self._cond.wait(0.1)
            if self._closed or len(queue) >= self._capacity:  # closed while it waited
                self._drop("ledger_closed", "the ledger was closed while it waited for room")
                return
        queue.append(entry)  # no lock: the writer counts what it takes, flush() adds the rest
        if len(queue) == self._batch_size:  # a batch is ready: wake the writer
            with self._cond:
                self._cond.notify_all()

    def _drop(self, reason: str, why: str, count: int = 1) -> None:
        with self._cond:
            self._drops[reason] += count
        self._warn(
            ("drop", reason),
            "otel_tokens: the usage ledger dropped %d record(s): %s. Counted in "
            "UsageLedger.drops(); this is logged once per reason",
            count,
            why,
        )

    def drops(self) -> dict[str, int]:
        """Rows not written, by reason (`ledger_queue_full`, `write_failed`, ...)."""
        with self._cond:
            return dict(self._drops)

    def _write_loop(self) -> None:
        # A row waits at most a tick for the writer to take it, behind at most one batch
        # being written, and is durable once its own batch commits: while the writer keeps
        # up (a batch takes less than a tick), under three ticks, within flush_interval_s.
        tick = self._interval / _TICKS_PER_INTERVAL
        while True:
            with self._cond:
                if len(self._queue) < self._batch_size and not self._closed:
                    self._cond.wait(tick)
                if self._closed and not self._queue:
                    return
            while self._queue:  # all that is queued now, a batch at a time
                self._write_some()

    def _write_some(self) -> None:
        queue = self._queue
        with self._cond:
            entries = [queue.popleft() for _ in range(min(self._batch_size, len(queue)))]
            self._taken += len(entries)
            self._in_flight = len(entries)
        if not entries:
            return
        rows: list[Row] = []
        events: list[Row] = []
        try:
            for entry in entries:
                try:
                    if isinstance(entry[0], MeterSpec):
                        events.append(self._event_row(entry))
                    elif (row := self._row(entry)) is not None:
                        rows.append(row)
                except Exception:
                    self._drop("internal_error", "making its row failed (a bug: please report it)")
            for write, batch in ((self._store.write, rows), (self._store.write_events, events)):
                if batch:
                    self._write_batch(write, batch)
        finally:
            with self._cond:
                self._done += len(entries)
                self._in_flight = 0
                self._cond.notify_all()

    def _write_batch(self, write: Callable[[Sequence[Row]], int], batch: Sequence[Row]) -> None:
        """Write `batch`, or drop it (counted) when the database cannot be written. When the
        database refused a row of it instead, the halves are written on their own, so
        that a row it cannot take costs that row alone."""
        try:
            write(batch)
        except Exception as exc:
            refused = self._store.refused_a_row(exc)
            if refused and len(batch) > 1:
                half = len(batch) // 2
                self._write_batch(write, batch[:half])
                self._write_batch(write, batch[half:])
                return
            reason = "row_refused" if refused else "write_failed"
            self._drop(reason, f"writing to {self.target!r} failed: {said(exc)}", len(batch))

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write everything queued so far (also what trackers feeding this ledger hold).

        Args:
            timeout_s: the longest to wait; None waits until it is written.

        Returns:
            True when everything queued before the call is written (or dropped).
        """
        for feeder in list(self._feeders):
            feeder.flush_into_ledger()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            target = self._taken + len(self._queue)  # all queued so far
            self._cond.notify_all()
            while self._done < target:
                if not self._writer.is_alive():
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.notify_all()
                self._cond.wait(0.05 if left is None else min(left, 0.05))
        if self._done < target:  # no writer (closed, or a forked child): write here
            while self._queue:
                self._write_some()
        return True

    def close(self, timeout_s: float | None = None) -> bool:
        """Write everything queued (what the trackers feeding it hold too), stop the writer
        and close the database. A `record()` after this is counted as dropped
        (`ledger_closed`). At interpreter exit this runs with the shutdown timeout
        (`OTEL_TOKENS_SHUTDOWN_TIMEOUT`, 5 s), so a database that stopped answering cannot
        hold the process.

        Args:
            timeout_s: the longest to wait for the writer; None waits until all is written.

        Returns:
            True when everything queued was written (or dropped, counted); False when the
            database did not take it in time: what was still queued is counted as
            `ledger_closed` and warned about.
        """
        if self._closed:
            return True
        if timeout_s is not None:  # also what a record() waiting for room waits at most
            self._closing_by = time.monotonic() + timeout_s
        for feeder in list(self._feeders):
            feeder.flush_into_ledger()
        with self._cond:  # from here on, record() counts a drop (ledger_closed)
            self._closed = True
            self._cond.notify_all()
        left_s = None if timeout_s is None else max(0.0, self._closing_by - time.monotonic())
        self._writer.join(left_s)  # it writes what is queued, then stops
        if self._writer.is_alive():  # stuck on a database that does not answer
            with self._cond:
                left = len(self._queue) + self._in_flight
                self._queue.clear()
            why = (
                f"the ledger was closed after waiting {timeout_s:g} s for {self.target!r} to "
                "take them (the batch being written is counted too, though the database may "
                "yet take it)"
            )
            self._drop("ledger_closed", why, left)
            # Its connections are in the writer's hands: closed once the writer lets go.
            threading.Thread(target=self._opened.close, daemon=True).start()
            return False
        while self._queue:  # no writer (a forked child's): write here
            self._write_some()
        if self._pid == os.getpid():  # a forked child that never wrote has nothing to close
            self._opened.close()
        return True

    def __enter__(self) -> UsageLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _share_keys(self, theirs: KeyFingerprinter | None) -> KeyFingerprinter | None:
        """The one fingerprinter a tracker feeding this ledger and the ledger both use.

        Raises:
            ValueError: the tracker's secret (`theirs`) is not the ledger's.
        """
        return self._keys.share(theirs)

    def _attach(self, feeder: Any) -> None:
        """Have `flush()` first call `feeder.flush_into_ledger()` (a tracker's queue)."""
        self._feeders.add(feeder)

    # Reading

    def usage(
        self,
        period: str = "today",
        *,
        by: Sequence[str] = (),
        key_id: str | None = None,
        api_key: str | None = None,
        tz: str | None = None,
    ) -> list[UsageTotals]:
        """Usage over `period`, grouped by any of key, provider, model, scenario, status
        and day or hour.

        Args:
            period: `today`, `yesterday`, `24h`, `7d`, `30d`, `this-month`, `last-month`,
                `all`, or `FROM..TO` dates.
            by: what to group by; nothing gives one total.
            key_id: only this key's usage (its fingerprint).
            api_key: only this key's usage, given as the key itself.
            tz: the IANA time zone days and months begin in; UTC by default.

        Raises:
            ValueError: an unknown period, group or time zone, or an api_key without a
                fingerprint secret.
        """
        check_groups(by)
        found = self._key_id(key_id, api_key)
        return query(self._store, parse_period(period, zone_named(tz)), by, key_id=found)

    def period(self, period: str, *, tz: str | None = None) -> Period:
        """The period `period` names, for showing what a query covered."""
        return parse_period(period, zone_named(tz))

    def key_ids(self) -> list[str]:
        """Every key id with usage stored ("" for requests without a key)."""
        return self._store.key_ids()

    def reset(self, *, key_id: str | None = None, api_key: str | None = None,
              all_keys: bool = False) -> int:  # fmt: skip
        """Delete the usage of one key, or of all keys; how many requests were deleted.

        Raises:
            ValueError: neither a key nor all_keys given, or both.
        """
        found = self._key_id(key_id, api_key)
        if (found is None) == (not all_keys):
            msg = "reset needs a key (key_id= or api_key=) or all_keys=True, not both or neither"
            raise ValueError(msg)
        self.flush()
        return self._store.reset(found)

    def prune(self, before: str, *, tz: str | None = None) -> int:
        """Delete usage older than `before` (`90d`, or a date `YYYY-MM-DD`); how many
        requests were deleted. Hours are kept whole: the cut is rounded down to the hour.

        Raises:
            ValueError: `before` names no moment.
        """
        cut = parse_before(before, zone_named(tz))
        hour = cut // US_PER_HOUR
        self.flush()
        return self._store.prune(hour * US_PER_HOUR, hour)

    # Custom meters

    def custom_meter(
        self,
        name: str,
        *,
        unit: str,
        aggregation: str = "sum",
        dimensions: Sequence[str] = (),
        currency: str | None = None,
        description: str = "",
    ) -> CustomMeter:
        """Define a meter of usage other than tokens in this ledger, or open the one defined.

        The definition is stored in the ledger, so every process and replica that defines
        the meter must define it the same way. `TokenTracker.custom_meter()` does this too
        and also reports the meter as an OpenTelemetry instrument.

        Args:
            name: such as `web_search.calls`: lower case, digits, `_` and `.`.
            unit: a UCUM-style unit: `{call}`, `{image}`, `s`; for money, the currency.
            aggregation: `sum` adds values, `count` counts events, `last` keeps the latest
                value (a level, such as seats or stored bytes).
            dimensions: at most 4 names the events are labelled and grouped by.
            currency: an ISO 4217 code when the values are money (then unit is the same).
            description: what the meter measures.

        Raises:
            ValueError: a definition that is not allowed, or one that differs from the
                meter of the same name already in the ledger.

        Example:
            >>> import tempfile, os
            >>> ledger = UsageLedger(os.path.join(tempfile.mkdtemp(), "usage.db"))
            >>> searches = ledger.custom_meter("web_search.calls", unit="{call}",
            ...                                aggregation="count", dimensions=["engine"])
            >>> searches.record(dimensions={"engine": "bing"}, key_id="3f9a1c0b2d4e5f60")
            >>> ledger.flush()
            True
            >>> ledger.meter_usage("web_search.calls", "today", by=["engine"])[0].value
            Decimal('1')
            >>> ledger.close()
            True
        """
        spec = meter_spec(name, unit=unit, aggregation=aggregation, dimensions=dimensions,
                          currency=currency, description=description)  # fmt: skip
        return CustomMeter(self._define(spec), ledger=self, drop=self._drop)

    def _define(self, spec: MeterSpec) -> MeterSpec:
        """Store a meter's definition; the stored one.

        Raises:
            ValueError: the ledger holds another definition under the same name.
        """
        stored = self._store.register_meter(spec)
        if not stored.same_as(spec):
            msg = (
                f"the ledger {self.target!r} already defines meter {spec.name!r} as "
                f"{stored.describe()}, not {spec.describe()}: use the same definition or "
                "another name"
            )
            raise ValueError(msg)
        return stored

    def meters(self) -> list[CustomMeter]:
        """The custom meters defined in the ledger, by name."""
        return [CustomMeter(spec, ledger=self, drop=self._drop) for spec in self._store.meters()]

    def meter_usage(
        self,
        name: str,
        period: str = "today",
        *,
        by: Sequence[str] = (),
        key_id: str | None = None,
        api_key: str | None = None,
        tz: str | None = None,
    ) -> list[MeterTotals]:
        """A custom meter's events over `period`, grouped by any of key, the meter's
        dimensions, and day or hour.

        Args:
            name: the meter.
            period: as for `usage()`.
            by: what to group by; nothing gives one total.
            key_id: only this key's events (its fingerprint).
            api_key: only this key's events, given as the key itself.
            tz: the IANA time zone days and months begin in; UTC by default.

        Raises:
            ValueError: no meter of that name, an unknown period, group or time zone.
        """
        specs = {spec.name: spec for spec in self._store.meters()}
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(specs) or "none yet"
            msg = f"the ledger {self.target!r} has no meter {name!r}: it has {known}"
            raise ValueError(msg)
        columns: dict[str, str | None] = {"key": "key_id", "day": None, "hour": None}
        columns.update(zip(spec.dimensions, EVENT_DIMENSIONS, strict=False))
        groups = tuple(by)
        for group in groups:
            if group not in columns:
                msg = f"cannot group meter {name!r} by {group!r}: choose from {', '.join(columns)}"
                raise ValueError(msg)
        check_groups([g for g in groups if g in ("key", "day", "hour")])
        found = self._key_id(key_id, api_key)
        store = self._store

        def hours(first: int, end: int, dims: list[str], bucket: str | None) -> list[Row]:
            return store.meter_hourly_sums(spec, first, end, key_id=found, dims=dims,
                                           bucket=bucket)  # fmt: skip

        def events(start: int, end: int, dims: list[str]) -> list[Row]:
            return store.meter_event_sums(spec, start, end, key_id=found, dims=dims)

        def new(group: dict[str, str]) -> MeterTotals:
            return MeterTotals(spec.name, spec.unit, spec.aggregation, group,
                               currency=spec.currency)  # fmt: skip

        window = parse_period(period, zone_named(tz))
        return sum_period(window, groups, columns, hours, events, new)

    # Snapshots

    def export(
        self, file: str | os.PathLike[str] | IO[str], period: str = "all", *,
        tz: str | None = None,
    ) -> dict[str, int]:  # fmt: skip
        """Write a snapshot of the ledger (its meters, and its requests and events in
        `period`) as JSON Lines that `merge()` reads; what is queued is written first.

        Args:
            file: a path (created with 0600 permissions) or an open text file.
            period: as for `usage()`; `all` by default.
            tz: the IANA time zone the period's days begin in; UTC by default.

        Returns:
            How many meters, requests and events were written.

        Raises:
            ValueError: an unknown period or time zone.
            OSError: the file cannot be written.
        """
        window = None if period == "all" else parse_period(period, zone_named(tz))
        self.flush()
        if not isinstance(file, (str, os.PathLike)):
            return write_snapshot(self._store, file, window, self._keys.check)
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w", encoding="utf-8") as out:
            return write_snapshot(self._store, out, window, self._keys.check)

    def merge(self, file: str | os.PathLike[str] | IO[str]) -> dict[str, int]:
        """Add a snapshot that `export()` wrote, skipping the requests and events this
        ledger already holds (by their ids), so merging twice adds nothing the second time.

        Args:
            file: a path or an open text file.

        Returns:
            requests_added, requests_skipped, events_added, events_skipped and meters.

        Raises:
            ValueError: the file is not a snapshot or a line of it is damaged (what came
                before that line is merged; merging again after a fix is safe), it
                defines a meter differently from this ledger, or its key ids were made
                with another secret than this ledger's.
            OSError: the file cannot be read.
        """
        if isinstance(file, (str, os.PathLike)):
            with open(file, encoding="utf-8") as lines:
                return self._merge(lines, os.fspath(file))
        return self._merge(file, getattr(file, "name", "the snapshot"))

    def _merge(self, lines: Iterable[str], source: str) -> dict[str, int]:
        counts = dict.fromkeys(
            ("requests_added", "requests_skipped", "events_added", "events_skipped", "meters"), 0
        )
        meters = {spec.name for spec in self._store.meters()}
        batches: dict[str, list[Row]] = {"request": [], "event": []}
        writers = {"request": self._store.write, "event": self._store.write_events}

        def write(kind: str) -> None:
            rows = batches[kind]
            if rows:
                added = writers[kind](rows)
                counts[f"{kind}s_added"] += added
                counts[f"{kind}s_skipped"] += len(rows) - added
                rows.clear()

        try:
            for kind, item in read_snapshot(lines, source):
                if kind == "snapshot":
                    self._keys.accept(item, source)
                    continue
                if kind == "meter":
                    meters.add(self._define(item).name)
                    counts["meters"] += 1
                    continue
                if kind == "event" and item[0] not in meters:
                    msg = f"{source}: an event of meter {item[0]!r}, which it does not define"
                    raise ValueError(msg)
                batches[kind].append(item)
                if len(batches[kind]) >= MERGE_BATCH:
                    write(kind)
        finally:
            write("request")
            write("event")
        return counts

    def _key_id(self, key_id: str | None, api_key: str | None) -> str | None:
        if api_key is None:
            return key_id
        fingerprint = self._keys.get()
        if fingerprint is None:
            msg = (
                f"the ledger {self.target!r} made its key ids with a secret this process was "
                f"not given, so an API key cannot be looked up: set {SECRET_ENV}, or look it "
                "up by its key id (key_id=, or --key-id on the command line)"
            )
            raise MissingSecretError(msg)
        return fingerprint(api_key)


#: The most characters of a text column a row keeps (ids, models, labels).
MAX_TEXT = 256


def _storable(*texts: str) -> tuple[str, ...]:
    """`texts` as every database stores them: exact str, no lone surrogate or NUL, at most
    MAX_TEXT characters. They come from callers and request bodies; one that could not be
    stored would fail the whole batch it is written in."""
    if is_safe("".join(texts)) and max(map(len, texts)) <= MAX_TEXT:
        return texts  # the common case, checked at once
    return tuple(safe_label(text, MAX_TEXT) for text in texts)


@functools.lru_cache(maxsize=64)
def _utc_day(number: int) -> date:
    """The UTC date of day `number` since the epoch (requests come in days, few at once)."""
    return datetime.fromtimestamp(number * 86_400, timezone.utc).date()


def _start_afresh_in_child(ref: weakref.ref[UsageLedger]) -> None:
    ledger = ref()
    if ledger is not None and not ledger._closed:
        ledger._keys.after_fork()
        ledger._start_afresh()


def _close_at_exit(ref: weakref.ref[UsageLedger]) -> None:
    ledger = ref()
    if ledger is not None:
        try:
            ledger.close(timeout_s=exit_budget(ledger._exit_timeout_s))
        except Exception:
            logger.exception("otel_tokens: closing the usage ledger at exit failed")
