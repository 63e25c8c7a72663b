"""The budgets table, as every store reads and writes it."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from otel_tokens._ledger.budgets import Budget
from otel_tokens._ledger.schema import BUDGET_COLUMNS


class BudgetRows:
    """What a `Store` does with budgets, in the SQL both dialects run."""

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        raise NotImplementedError

    def budgets(self) -> list[Budget]:
        """Every budget, in name order."""
        columns = ", ".join(BUDGET_COLUMNS[:-1])
        rows = self._fetch(
            f"SELECT {columns} FROM otel_tokens_budgets ORDER BY scope, subject, period, unit", []
        )
        return [
            Budget(scope, subject, Decimal(amount), unit, period, tz)
            for scope, subject, period, unit, amount, tz in rows
        ]

    def put_budget(self, budget: Budget, set_at_us: int) -> None:
        """Store `budget`, replacing the one of the same name."""
        insert = (
            f"INSERT INTO otel_tokens_budgets ({', '.join(BUDGET_COLUMNS)}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, subject, period, unit) DO UPDATE SET "
            "amount = excluded.amount, tz = excluded.tz, set_at_us = excluded.set_at_us"
        )
        row = (*budget.name, str(budget.amount), budget.tz, set_at_us)
        self._execute([(self._sql(insert), row)])

    def remove_budgets(self, name: Sequence[str | None]) -> int:
        """Delete the budgets whose (scope, subject, period, unit) match `name`, None
        matching any; how many were deleted."""
        conditions, params = [], []
        for column, value in zip(("scope", "subject", "period", "unit"), name, strict=True):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return self._execute([(self._sql(f"DELETE FROM otel_tokens_budgets{where}"), params)])[0]
