"""What a `UsageLedger` says of budgets: set, list and remove them, where each stands, and
the fast answer a gateway asks before each request. The numbers are kept by `BudgetBook`."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from otel_tokens._base import names as n
from otel_tokens._base.text import shown
from otel_tokens._base.warn import logger
from otel_tokens._core.sink import BudgetPoint
from otel_tokens._ledger.budget_book import BudgetBook
from otel_tokens._ledger.budgets import Budget, BudgetStatus, make_budget
from otel_tokens._ledger.store import Store

#: The most budgets the budget gauges report (the most spent first), so that a gateway
#: with a budget per key does not report a series per key without bound.
MAX_BUDGET_SERIES = 1000
_UNIT_LABEL = {"usd": "USD", "tokens": "{token}"}
T = TypeVar("T")


class LedgerBudgets:
    """The budgets of a `UsageLedger` (see there)."""

    _book: BudgetBook

    @property
    def _store(self) -> Store:
        raise NotImplementedError

    def _key_id(self, key_id: str | None, api_key: str | None) -> str | None:
        raise NotImplementedError

    def _scope(
        self, key_id: str | None, api_key: str | None, team: str | None
    ) -> tuple[str, str | None]:
        found = self._key_id(key_id, api_key)
        if found is not None and team is not None:
            msg = (
                f"a budget is for a key or for a team, not both: got key {found!r} and team "
                f"{team!r}"
            )
            raise ValueError(msg)
        if found is not None:
            return "key", found
        if team is not None:
            return "team", team
        return "global", None

    def _edit(self, change: Callable[[], T]) -> T:
        """Make `change` to the budgets table (as every write, never across a fork), then
        read the budgets again at once, so that this ledger answers with them."""
        with self._book.committing():
            done = change()
        self._book.changed()
        self._book.tick(force=True)
        return done

    def set_budget(
        self,
        amount: Decimal | int | float | str,
        *,
        key_id: str | None = None,
        api_key: str | None = None,
        team: str | None = None,
        unit: str = "usd",
        period: str = "month",
        tz: str = "UTC",
    ) -> Budget:
        """Set the budget of a key, of a team (`Usage.team`), or, with neither, of all
        usage; setting it again (same subject, period and unit) changes its amount.

        Args:
            amount: US dollars (exact to the pico-dollar) or whole tokens.
            key_id: the key's fingerprint (its `Usage.api_key_id`).
            api_key: the key itself, fingerprinted here.
            team: the team.
            unit: `usd`, or `tokens` (input plus output tokens).
            period: `day`, `week` (from Monday), `month`, or a rolling `Nh` / `Nd`.
            tz: the IANA time zone calendar periods begin in.

        Returns:
            The budget stored.

        Raises:
            ValueError: a key and a team both given, or an amount, unit, period or time
                zone that is not allowed (the message names it).

        Example:
            >>> import tempfile, os
            >>> from otel_tokens import Usage, UsageLedger
            >>> ledger = UsageLedger(os.path.join(tempfile.mkdtemp(), "usage.db"))
            >>> ledger.set_budget("50", team="search", period="day").describe()
            "team 'search': 50 usd per day (UTC)"
            >>> ledger.record(Usage(provider="openai", model="gpt-4o-mini", team="search",
            ...                     input_tokens=1_000_000, output_tokens=100_000))
            >>> ledger.flush()
            True
            >>> ledger.remaining(team="search")
            Decimal('49.79')
            >>> ledger.close()
            True
        """
        scope, subject = self._scope(key_id, api_key, team)
        budget = make_budget(scope, subject, amount, unit=unit, period=period, tz=tz)
        self._edit(lambda: self._store.put_budget(budget, time.time_ns() // 1000))
        return budget

    def budgets(self) -> list[Budget]:
        """Every budget the ledger holds (set here, by another replica or the CLI)."""
        return self._store.budgets()

    def remove_budget(
        self,
        *,
        key_id: str | None = None,
        api_key: str | None = None,
        team: str | None = None,
        period: str | None = None,
        unit: str | None = None,
    ) -> int:
        """Remove the budgets of a key, of a team, or, with neither, the global ones; only
        those of `period` and `unit` when given. Returns how many were removed.

        Raises:
            ValueError: a key and a team both given.
        """
        scope, subject = self._scope(key_id, api_key, team)
        return self._edit(lambda: self._store.remove_budgets((scope, subject or "", period, unit)))

    def budget_statuses(self) -> list[BudgetStatus]:
        """Where every budget stands now: spent, remaining, the last hour's burn and when
        it runs out at that rate. Served from memory (see `remaining`)."""
        return self._book.statuses()

    def remaining(
        self,
        *,
        key_id: str | None = None,
        api_key: str | None = None,
        team: str | None = None,
        unit: str = "usd",
    ) -> Decimal | None:
        """What is left for a request of this key and team: the least of the `unit`
        budgets it is under (its key's, its team's and the global ones), negative once one
        is overspent; None when no budget applies. Served from memory in microseconds, so
        a gateway can ask before every request.

        This ledger's requests count once written (within `flush_interval_s`); those of
        other replicas sharing the database within one flush interval more (see
        `BudgetBook`). Rolling periods move by the hour.

        Raises:
            ValueError: an unknown unit, a key or team that is not a str, or an api_key
                without a fingerprint secret.
        """
        if unit not in ("usd", "tokens"):
            msg = f"unit must be 'usd' or 'tokens', got {shown(unit)}"
            raise ValueError(msg)
        for name, value in (("key_id", key_id), ("api_key", api_key), ("team", team)):
            if value is not None and type(value) is not str:
                msg = f"remaining({name}=) takes a str or None, got {shown(value)}"
                raise ValueError(msg)
        return self._book.remaining(self._key_id(key_id, api_key), team, unit)

    def budget_points(self) -> list[BudgetPoint]:
        """Where each budget stands, as the budget gauges report it: at most
        MAX_BUDGET_SERIES, the most spent first; never raises."""
        try:
            statuses = sorted(self._book.statuses(), key=lambda s: -s.fraction_spent)
        except Exception:
            logger.exception("otel_tokens: reading the budgets for their gauges failed")
            return []
        if len(statuses) > MAX_BUDGET_SERIES:
            self._book.warn_once(
                "budget-series",
                f"otel_tokens: {len(statuses)} budgets, more than the {MAX_BUDGET_SERIES} the "
                "budget gauges report: the most spent are reported, all are in "
                "UsageLedger.budget_statuses()",
            )
            statuses = statuses[:MAX_BUDGET_SERIES]
        return [
            BudgetPoint(
                {
                    n.BUDGET_SCOPE: s.budget.scope,
                    n.BUDGET_SUBJECT: s.budget.subject,
                    n.BUDGET_PERIOD: s.budget.period,
                    n.BUDGET_UNIT: _UNIT_LABEL[s.budget.unit],
                },
                float(s.spent),
                float(s.remaining),
                s.exhaustion_s,
            )
            for s in statuses
        ]
