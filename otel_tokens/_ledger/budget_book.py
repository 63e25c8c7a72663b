"""The budgets' standing, kept in memory so that a gateway can ask before every request.

The book is brought up to date two ways. The ledger's writer adds each batch it commits
(this replica's requests count as soon as they are written), and, every tick of the writer
(a quarter of the flush interval), the book re-reads from the database the last two hours
of every budgeted key, team and the whole (the requests other replicas wrote). The rest of
each period, the hours before those two, is read once a minute and when an hour ends, so a
request another replica writes counts here within one flush interval (it is written within
three ticks, and read within one more), and one written with an older time (a replay, a
merged snapshot) within a minute. A ledger with no budget looks for one set elsewhere (by
another replica, by the CLI) every IDLE_LOOK_S.

Two locks: `_serial` keeps a database read and the writer's commits apart, so that a
batch is never counted both in what was read and on top of it (commits hold it shared, as
a database that takes several at once commits them side by side; a read and a fork hold it
alone); `_lock` guards the numbers only, so that the request path never waits for the
database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timezone
from decimal import Decimal

from otel_tokens._base.shared_lock import SharedLock
from otel_tokens._base.warn import WarnOnce
from otel_tokens._ledger.budgets import Budget, BudgetStatus
from otel_tokens._ledger.periods import US_PER_HOUR, Period, to_local
from otel_tokens._ledger.query import GROUPS, query
from otel_tokens._ledger.rows import (
    AT_US,
    COST_PICO,
    INPUT_TOKENS,
    KEY_ID,
    OUTPUT_TOKENS,
    TEAM,
    RequestRow,
)
from otel_tokens._ledger.store import SUM_NAMES, Row, Store
from otel_tokens._pricing.prices import PICO_PER_USD

#: How often the whole of each period is read again, in seconds.
FULL_READ_S = 60.0
#: How often a ledger without budgets looks for one set elsewhere, in seconds.
IDLE_LOOK_S = 5.0
#: The longest pause before reading a database that failed again, in seconds.
BACKOFF_S = 30.0
_COST = SUM_NAMES.index("cost_pico")
_INPUT = SUM_NAMES.index("input_tokens")
_OUTPUT = SUM_NAMES.index("output_tokens")
_UNPRICED = SUM_NAMES.index("unpriced_tokens")
_BURN_DIGITS = {"usd": Decimal("1e-6"), "tokens": Decimal(1)}


@dataclass
class _Sums:
    cost_pico: int = 0
    tokens: int = 0
    unpriced: int = 0

    def add(self, cost_pico: int, tokens: int, unpriced: int) -> None:
        self.cost_pico += cost_pico
        self.tokens += tokens
        self.unpriced += unpriced

    def spent(self, unit: str) -> int:
        return self.cost_pico if unit == "usd" else self.tokens


@dataclass
class _State:
    """One budget's numbers: the period before the last two hours, and those hours."""

    budget: Budget
    start_us: int
    end_us: int | None
    before: _Sums = field(default_factory=_Sums)
    #: The first of the hours read on every tick; `hours` holds their sums.
    open_from: int = 0
    hours: dict[int, _Sums] = field(default_factory=dict)
    #: The period began inside the last two hours, off the hour: `before` holds it all.
    ragged: bool = False

    def spent(self) -> _Sums:
        total = _Sums(self.before.cost_pico, self.before.tokens, self.before.unpriced)
        if not self.ragged:
            for hour, sums in self.hours.items():
                if hour * US_PER_HOUR >= self.start_us:
                    total.add(sums.cost_pico, sums.tokens, sums.unpriced)
        return total

    def add(self, at_us: int, cost_pico: int, tokens: int, unpriced: int) -> None:
        hour = at_us // US_PER_HOUR
        if hour >= self.open_from:
            self.hours.setdefault(hour, _Sums()).add(cost_pico, tokens, unpriced)
            if self.ragged and at_us >= self.start_us:
                self.before.add(cost_pico, tokens, unpriced)
        elif at_us >= self.start_us:
            self.before.add(cost_pico, tokens, unpriced)


def _subject(row: RequestRow, scope: str) -> str:
    return row[KEY_ID] if scope == "key" else row[TEAM] if scope == "team" else ""


class BudgetBook:
    """Every budget of a ledger and what it has spent, in memory.

    Args:
        store: the database, as the ledger has it now.
        interval_s: how often `tick()` reads the last two hours again.
        warn: warns once per kind.
        target: the ledger, for messages.
    """

    def __init__(
        self, store: Callable[[], Store], *, interval_s: float, warn: WarnOnce, target: str
    ) -> None:
        self._store = store
        self._interval = interval_s
        self._warn = warn
        self._target = target
        self._serial = SharedLock()
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str, str, str], _State] = {}
        self._by_scope: dict[str, dict[str, list[_State]]] = {"key": {}, "team": {}, "global": {}}
        self._budgets: tuple[Budget, ...] = ()
        self._full_at = -FULL_READ_S  # monotonic time of the last full read
        self._full_hour = -1
        self._next_tick = 0.0
        self._as_of_us = 0
        self._failures = 0
        self._next_end_us: int | None = None  # the first calendar period to end
        self._forking = threading.local()
        #: How many times the book was brought up to date from the database.
        self.refreshes = 0

    def before_fork(self) -> None:
        """Wait (at most 2 s) for a read or commit to end, so that no thread of this
        ledger is inside the database library when the process forks."""
        self._forking.held = self._serial.acquire(timeout=2)

    def after_fork_in_parent(self) -> None:
        """Let reads and commits go on after the fork (of this thread)."""
        if getattr(self._forking, "held", False):
            self._forking.held = False
            self._serial.release()

    def start_afresh(self) -> None:
        """New locks, in a forked child (the parent's were held at the fork)."""
        self._serial = SharedLock()
        self._lock = threading.Lock()
        self._forking = threading.local()

    def warn_once(self, kind: str, message: str) -> None:
        """Warn `message` once per `kind`."""
        self._warn(("book", kind), "%s", message)

    @property
    def has_budgets(self) -> bool:
        """Whether the last read found any budget."""
        return bool(self._budgets)

    # The writer's side

    @contextmanager
    def committing(self) -> Iterator[None]:
        """Held while the writer commits a batch and adds it (so no read falls between);
        shared by commits made at once."""
        with self._serial.shared():
            yield

    def added(self, rows: Sequence[RequestRow], added: int) -> None:
        """Count a committed batch, whose `added` rows were new (the rest were stored
        already: then the next tick reads everything again instead)."""
        if not self._budgets:
            return
        if added != len(rows):  # some were retries: which ones is the database's to say
            self._full_at = -FULL_READ_S
            return
        with self._lock:
            for row in rows:
                cost = row[COST_PICO] or 0
                tokens = row[INPUT_TOKENS] + row[OUTPUT_TOKENS]
                unpriced = tokens if row[COST_PICO] is None else 0
                for scope, states in self._by_scope.items():
                    for state in states.get(_subject(row, scope), ()):
                        state.add(row[AT_US], cost, tokens, unpriced)

    def tick(self, *, force: bool = False) -> None:
        """Read the budgets and their spend again when a tick has passed (or `force`). A
        database that cannot be read leaves the numbers as they were (warned once) and is
        tried again after a pause that doubles up to BACKOFF_S, forced or not, so that a
        database that does not answer holds the writer up once in a while only."""
        now = time.monotonic()
        if now < self._next_tick and (not force or self._failures):
            return
        # Without budgets, look for new ones (set by another replica or the CLI) every few
        # seconds only: a writer thread inside SQLite when the process forks can leave
        # SQLite's own mutexes held in the child, so it stays out of it while idle.
        self._next_tick = now + (self._interval if self._budgets else IDLE_LOOK_S)
        try:
            with self._serial:
                self._refresh(now)
            self._failures = 0
        except Exception as exc:
            self._failures += 1
            self._next_tick = now + min(BACKOFF_S, self._interval * 2**self._failures)
            self._warn(
                ("budgets", type(exc).__name__),
                "otel_tokens: reading the budgets of %r failed (%s: %s); their standing is "
                "kept as last read and updated by this process's own requests until it works",
                self._target,
                type(exc).__name__,
                exc,
            )

    def changed(self) -> None:
        """Budgets were set or removed: read them all at the next tick."""
        self._full_at = -FULL_READ_S
        self._next_tick = 0.0

    def _refresh(self, now: float) -> None:
        store = self._store()
        budgets = tuple(store.budgets())
        now_us = time.time_ns() // 1000
        hour = now_us // US_PER_HOUR
        full = (
            budgets != self._budgets
            or hour != self._full_hour
            or now - self._full_at >= FULL_READ_S
        )
        if not budgets:
            with self._lock:
                self._budgets, self._states = (), {}
                self._by_scope = {"key": {}, "team": {}, "global": {}}
            return
        old = self._states
        windows: dict[tuple[str, str], tuple[int, int | None]] = {}
        for b in budgets:  # one window per period and zone, however many budgets share it
            if (b.period, b.tz) not in windows:
                windows[b.period, b.tz] = b.window(now_us)
        states = {b.name: _State(b, *windows[b.period, b.tz]) for b in budgets}
        if not full:  # keep what was read of the periods before the last two hours
            for name, state in states.items():
                kept = old.get(name)
                if kept is not None and kept.start_us == state.start_us:
                    state.before, state.ragged = kept.before, kept.ragged
                else:
                    full = True
        first_open = (hour - 1) * US_PER_HOUR
        recent = {scope: self._recent(store, scope, hour) for scope in {b.scope for b in budgets}}
        reads: dict[tuple[str, int, int], list[_State]] = {}
        for state in states.values():
            budget, start = state.budget, state.start_us
            found = recent[budget.scope].get(budget.subject, {})
            state.open_from, state.hours = hour - 1, {h: _Sums(*s) for h, s in found.items()}
            state.ragged = start > first_open and start % US_PER_HOUR != 0
            if state.ragged:  # read exactly from the requests of the cut hour
                reads.setdefault((budget.scope, start, (hour + 1) * US_PER_HOUR), []).append(state)
            elif full:
                reads.setdefault((budget.scope, start, max(start, first_open)), []).append(state)
        for (scope, start, end), waiting in reads.items():  # one query per scope and span
            spent = self._spend(store, scope, start, end)
            for state in waiting:
                state.before = spent.get(state.budget.subject, _Sums())
        next_end = min((s.end_us for s in states.values() if s.end_us is not None), default=None)
        by_scope: dict[str, dict[str, list[_State]]] = {"key": {}, "team": {}, "global": {}}
        for state in states.values():
            by_scope[state.budget.scope].setdefault(state.budget.subject, []).append(state)
        with self._lock:
            self._budgets, self._states, self._by_scope = budgets, states, by_scope
            self._as_of_us, self._next_end_us = now_us, next_end
        if full:
            self._full_at, self._full_hour = now, hour
        self.refreshes += 1

    @staticmethod
    def _recent(store: Store, scope: str, hour: int) -> dict[str, dict[int, tuple[int, int, int]]]:
        """The sums of hours hour-1 and hour (and any later one) by subject and hour."""
        column = GROUPS.get(scope)  # none for global
        dims = [column] if column else []
        found: dict[str, dict[int, tuple[int, int, int]]] = {}
        for row in store.hourly_sums(hour - 1, hour + 2, key_id=None, dims=dims, bucket="hour"):
            subject = str(row[0]) if column else ""
            sums = row[len(dims) + 1 :]
            found.setdefault(subject, {})[int(row[len(dims)])] = _triple(sums)
        return found

    @staticmethod
    def _spend(store: Store, scope: str, start_us: int, end_us: int) -> dict[str, _Sums]:
        """What each subject of `scope` spent in [start_us, end_us)."""
        if end_us <= start_us:
            return {}
        by = [] if scope == "global" else [scope]
        totals = query(store, Period(start_us, end_us, timezone.utc), by, key_id=None)
        spent: dict[str, _Sums] = {}
        for total in totals:
            sums = spent.setdefault(total.group.get(scope, ""), _Sums())
            tokens = total.input_tokens + total.output_tokens
            sums.add(total.cost_pico, tokens, total.unpriced_tokens)
        return spent

    # The readers' side

    def _roll(self, now_us: int) -> None:
        """Start the calendar periods that ended since the last read afresh (the caller
        holds `_lock`): a database that cannot be read must not keep yesterday's spend on a
        day budget. What this process wrote in the new period is kept."""
        if self._next_end_us is None or now_us < self._next_end_us:
            return
        for state in self._states.values():
            if state.end_us is not None and now_us >= state.end_us:
                state.start_us, state.end_us = state.budget.window(now_us)
                state.before, state.ragged = _Sums(), False
                first = state.start_us // US_PER_HOUR
                state.hours = {h: sums for h, sums in state.hours.items() if h >= first}
        ends = [s.end_us for s in self._states.values() if s.end_us is not None]
        self._next_end_us = min(ends, default=None)

    def statuses(self) -> list[BudgetStatus]:
        """Where every budget stands, as of the last read and this process's writes since."""
        now_us = time.time_ns() // 1000
        with self._lock:
            self._roll(now_us)
            states = list(self._states.values())
            as_of = self._as_of_us
            return [_status(state, now_us, as_of) for state in states]

    def remaining(self, key_id: str | None, team: str | None, unit: str) -> Decimal | None:
        """The least left of the `unit` budgets a request of `key_id` and `team` is under
        (its key's, its team's and the global ones); None when none is."""
        least: int | None = None
        with self._lock:
            self._roll(time.time_ns() // 1000)
            for scope, subject in (("key", key_id), ("team", team), ("global", "")):
                if subject is None:
                    continue
                for state in self._by_scope[scope].get(subject, ()):
                    budget = state.budget
                    if budget.unit != unit:
                        continue
                    amount = _scaled(budget)
                    left = amount - state.spent().spent(unit)
                    least = left if least is None else min(least, left)
        if least is None:
            return None
        return Decimal(least) / PICO_PER_USD if unit == "usd" else Decimal(least)


def _triple(sums: Row) -> tuple[int, int, int]:
    return (
        int(sums[_COST] or 0),
        int(sums[_INPUT] or 0) + int(sums[_OUTPUT] or 0),
        int(sums[_UNPRICED] or 0),
    )


def _scaled(budget: Budget) -> int:
    """The amount in the unit the book counts in: pico-dollars, or tokens."""
    return int(budget.amount * PICO_PER_USD) if budget.unit == "usd" else int(budget.amount)


def _status(state: _State, now_us: int, as_of_us: int) -> BudgetStatus:
    budget = state.budget
    spent = state.spent()
    used = spent.spent(budget.unit)
    left = _scaled(budget) - used
    hour = now_us // US_PER_HOUR
    share_of_last = 1 - (now_us - hour * US_PER_HOUR) / US_PER_HOUR
    this_hour = state.hours.get(hour, _Sums()).spent(budget.unit)
    last_hour = state.hours.get(hour - 1, _Sums()).spent(budget.unit)
    burn = this_hour + last_hour * share_of_last  # the last 60 minutes, the older pro rata
    exhaustion: float | None = None
    if left <= 0:
        exhaustion = 0.0
    elif burn > 0:
        exhaustion = left / burn * 3600
        if state.end_us is not None and now_us + exhaustion * 1e6 >= state.end_us:
            exhaustion = None  # the period resets before it runs out
    scale = PICO_PER_USD if budget.unit == "usd" else 1
    return BudgetStatus(
        budget=budget,
        spent=Decimal(used) / scale,
        remaining=Decimal(left) / scale,
        window_start=to_local(state.start_us, timezone.utc),
        resets_at=None if state.end_us is None else to_local(state.end_us, timezone.utc),
        burn_per_hour=(Decimal(burn) / scale).quantize(
            Decimal(1) if scale == 1 else Decimal("1e-6")
        ),
        exhaustion_s=exhaustion,
        unpriced_tokens=spent.unpriced,
        as_of=to_local(as_of_us, timezone.utc),
    )
