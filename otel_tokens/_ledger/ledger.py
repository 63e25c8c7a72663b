"""`UsageLedger`: per-key usage that survives restarts, written off the request path."""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime

from otel_tokens._base.fingerprint import SECRET_ENV, KeyFingerprinter
from otel_tokens._base.meters import MeterEvent, MeterSpec, meter_spec
from otel_tokens._base.shutdown import LEDGERS, at_exit, exit_budget, shutdown_timeout
from otel_tokens._base.usage import Usage
from otel_tokens._base.warn import WarnOnce, logger
from otel_tokens._core.custom_meter import CustomMeter
from otel_tokens._ledger.budget_book import BudgetBook
from otel_tokens._ledger.budgeting import LedgerBudgets
from otel_tokens._ledger.keys import LedgerKeys
from otel_tokens._ledger.reading import LedgerReading
from otel_tokens._ledger.rows import RowMaker, Slot
from otel_tokens._ledger.store import Store
from otel_tokens._ledger.writer import Writer
from otel_tokens._pricing.table import PriceTable

#: The environment variable naming the ledger the CLI reads when --ledger is not given.
LEDGER_ENV = "OTEL_TOKENS_LEDGER"
_WHEN_FULL = ("drop", "block")


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


class UsageLedger(LedgerReading, LedgerBudgets):
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
        prices = prices if prices is not None else PriceTable.bundled()
        self._target = os.fspath(target)
        self._opened = open_store(self._target)
        self._pid = os.getpid()
        self.target = self._opened.description
        try:
            self._keys = LedgerKeys(lambda: self._store, configured, self.target)
        except BaseException:
            self._opened.close()
            raise
        self._exit_timeout_s = shutdown_timeout(None)
        self._closed = False
        self._reopening = threading.Lock()
        self._sources_lock = threading.Lock()
        self._sources: list[Callable[[], Callable[[], object] | None]] = []
        self._inherited: list[Store] = []  # a forked child's copy of its parent's connections
        self._rows = RowMaker(prices, self._keys.get, self._drop, self.target)
        self._book = BudgetBook(lambda: self._store, interval_s=flush_interval_s / 4,
                                warn=WarnOnce(), target=self.target)  # fmt: skip
        self._writer = Writer(
            lambda: self._store,
            self._rows,
            target=self.target,
            capacity=queue_size,
            batch_size=batch_size,
            interval_s=float(flush_interval_s),
            block=when_full == "block",
            book=self._book,
            sum_hours=self._opened.takes_hour_sums,
            committers=self._opened.concurrent_writes,
        )
        self._book.tick(force=True)  # the budgets, before any request asks for one
        me = weakref.ref(self)
        at_exit(functools.partial(_close_at_exit, me), LEDGERS)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(
                before=lambda: _call(me, "before_fork"),
                after_in_parent=lambda: _call(me, "after_fork_in_parent"),
                after_in_child=lambda: _start_afresh_in_child(me),
            )

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
            self._writer.put(usage, at_us, Slot.UNCHECKED)  # checked by the writer
        except Exception:
            self._drop("internal_error", "queuing it failed (a bug: please report it)")

    # The sink a tracker feeds (otel_tokens._core.sink.UsageSink)

    def add(self, usage: Usage, cost_pico: int | None, at_us: int) -> None:
        """Queue a checked `usage` whose cost is known (how a tracker feeds the ledger)."""
        self._writer.put(usage, at_us, cost_pico)

    def put_event(self, event: MeterEvent) -> None:
        """Queue a checked custom meter event (how `CustomMeter.record` feeds the ledger)."""
        self._writer.put_event(event)

    def share_keys(self, theirs: KeyFingerprinter | None) -> KeyFingerprinter | None:
        """The one fingerprinter a tracker feeding this ledger and the ledger both use.

        Raises:
            ValueError: the tracker's secret (`theirs`) is not the ledger's.
        """
        return self._keys.share(theirs)

    def add_source(self, drain: Callable[[], object]) -> None:
        """Have `flush()` and `close()` first call `drain()`, which hands this ledger the
        rows held on their way here (a tracker's queue); held weakly, so that it does not
        keep its owner alive."""
        held = weakref.WeakMethod(drain) if hasattr(drain, "__self__") else (lambda: drain)
        with self._sources_lock:
            self._sources.append(held)

    def _drain_sources(self) -> None:
        with self._sources_lock:
            sources = [drain for held in self._sources if (drain := held()) is not None]
        for drain in sources:
            drain()

    def _drop(self, reason: str, why: str, count: int = 1) -> None:
        self._writer.drop(reason, why, count)

    def drops(self) -> dict[str, int]:
        """Rows not written, by reason (`ledger_queue_full`, `write_failed`, ...)."""
        return self._writer.drops()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write everything queued so far (also what trackers feeding this ledger hold).

        Args:
            timeout_s: the longest to wait; None waits until it is written.

        Returns:
            True when everything queued before the call is written (or dropped).
        """
        self._drain_sources()
        written = self._writer.flush(timeout_s)
        if written and self._book.has_budgets:  # and what other replicas wrote, for budgets
            self._book.tick(force=True)
        return written

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
        self._closed = True
        if timeout_s is not None:  # also what a record() waiting for room waits at most
            self._writer.give_up_at(timeout_s)
        self._drain_sources()
        if not self._writer.close(timeout_s):
            # Its connections are in the writer's hands: closed once the writer lets go.
            threading.Thread(target=self._opened.close, daemon=True).start()
            return False
        if self._pid == os.getpid():  # a forked child that never wrote has nothing to close
            self._opened.close()
        return True

    def __enter__(self) -> UsageLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        return CustomMeter(self.define(spec), sink=self, drop=self._drop)

    def define(self, spec: MeterSpec) -> MeterSpec:
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
        return [CustomMeter(spec, sink=self, drop=self._drop) for spec in self._store.meters()]


def _call(ref: weakref.ref[UsageLedger], name: str) -> None:
    ledger = ref()
    if ledger is not None:
        getattr(ledger._book, name)()


def _start_afresh_in_child(ref: weakref.ref[UsageLedger]) -> None:
    ledger = ref()
    if ledger is not None and not ledger._closed:
        ledger._keys.after_fork()
        ledger._sources_lock = threading.Lock()
        ledger._reopening = threading.Lock()
        ledger._rows.start_afresh()
        ledger._book.start_afresh()
        ledger._writer.start_afresh()


def _close_at_exit(ref: weakref.ref[UsageLedger]) -> None:
    ledger = ref()
    if ledger is not None:
        try:
            ledger.close(timeout_s=exit_budget(ledger._exit_timeout_s))
        except Exception:
            logger.exception("otel_tokens: closing the usage ledger at exit failed")
