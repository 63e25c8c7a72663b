"""Budgets: how much a key, a team or everything may spend in a period, and where it stands.

A budget is named by its scope (`key`, `team` or `global`), its subject (the key id, the
team, "" for global), its period and its unit; setting it again changes its amount. A
period is a calendar one (`day`, `week` from Monday, `month`) in a time zone, or a rolling
one (`24h`, `7d`) that moves by the hour: `24h` is the 24 whole hours before the current
one and the current hour so far, so it never covers less than 24 hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from otel_tokens._base.text import safe_text, shown
from otel_tokens._ledger.periods import US_PER_HOUR, midnight, to_local, zone_named
from otel_tokens._pricing.prices import PICO_PER_USD

SCOPES = ("key", "team", "global")
UNITS = ("usd", "tokens")
CALENDAR = ("day", "week", "month")
_ROLLING = re.compile(r"^([1-9]\d{0,3})([hd])$")
#: The longest rolling window, in hours (a year).
MAX_ROLLING_HOURS = 366 * 24
#: The largest amount a budget may have (a trillion dollars or tokens).
MAX_AMOUNT = Decimal(10) ** 12
PERIOD_HELP = "day, week or month (in the budget's time zone), or a rolling Nh or Nd"


@dataclass(frozen=True)
class Budget:
    """A limit on spend: `amount` USD or tokens per `period`, for one key, team or all.

    Attributes:
        scope: `key`, `team` or `global`.
        subject: the key id for `key`, the team for `team`, "" for `global`.
        amount: US dollars (a Decimal, exact) or tokens (whole).
        unit: `usd` or `tokens` (input plus output tokens, cache reads included).
        period: `day`, `week`, `month`, or a rolling `Nh` / `Nd`.
        tz: the IANA time zone calendar periods begin in.
    """

    scope: str
    subject: str
    amount: Decimal
    unit: str = "usd"
    period: str = "month"
    tz: str = "UTC"

    @property
    def name(self) -> tuple[str, str, str, str]:
        """What names the budget: (scope, subject, period, unit)."""
        return (self.scope, self.subject, self.period, self.unit)

    def describe(self) -> str:
        """The budget in words: `key 3f9a... 100 usd per month (UTC)`."""
        who = "global" if self.scope == "global" else f"{self.scope} {self.subject!r}"
        zone = f" ({self.tz})" if self.period in CALENDAR else ""
        return f"{who}: {self.amount} {self.unit} per {self.period}{zone}"

    def window(self, now_us: int) -> tuple[int, int | None]:
        """The period holding `now_us`: its start, and its end (None for a rolling window,
        which never resets), in UTC microseconds."""
        rolling = _ROLLING.match(self.period)
        if rolling:
            hours = int(rolling.group(1)) * (24 if rolling.group(2) == "d" else 1)
            return (now_us // US_PER_HOUR - hours) * US_PER_HOUR, None
        zone = zone_named(self.tz)
        today = to_local(now_us, zone).date()
        if self.period == "day":
            first, after = today, today + timedelta(days=1)
        elif self.period == "week":
            first = today - timedelta(days=today.weekday())
            after = first + timedelta(weeks=1)
        else:
            first = today.replace(day=1)
            after = (first + timedelta(days=32)).replace(day=1)
        return midnight(first, zone), midnight(after, zone)


def make_budget(
    scope: object, subject: object, amount: object, *, unit: object = "usd",
    period: object = "month", tz: object = "UTC",
) -> Budget:  # fmt: skip
    """A budget checked: every error names the value and what to write instead.

    Raises:
        ValueError: an unknown scope, unit, period or time zone, a subject missing (or
            given for a global budget), or an amount that is not a positive number.
    """
    if scope not in SCOPES:
        msg = f"a budget's scope must be one of {', '.join(SCOPES)}, got {shown(scope)}"
        raise ValueError(msg)
    if scope == "global":
        if subject not in (None, ""):
            msg = f"a global budget has no subject, got {shown(subject)}: leave it out"
            raise ValueError(msg)
        subject = ""
    elif type(subject) is not str or not 0 < len(subject) <= 256 or safe_text(subject) != subject:
        what = "key id" if scope == "key" else "team"
        msg = (
            f"a {scope} budget needs its {what}: 1 to 256 characters, no control character or "
            f"lone surrogate (which no database stores as given), got {shown(subject)}"
        )
        raise ValueError(msg)
    if unit not in UNITS:
        msg = f"a budget's unit must be 'usd' or 'tokens', got {shown(unit)}"
        raise ValueError(msg)
    if not isinstance(period, str) or not (period in CALENDAR or _rolling_ok(period)):
        msg = f"a budget's period must be {PERIOD_HELP} (at most 366d), got {shown(period)}"
        raise ValueError(msg)
    if not isinstance(tz, str):
        msg = f"a budget's time zone must be an IANA name such as 'Europe/Paris', got {shown(tz)}"
        raise ValueError(msg)
    zone_named(tz)  # raises on an unknown zone
    return Budget(scope, subject, _amount(amount, unit), unit, period, tz)


def _rolling_ok(period: str) -> bool:
    found = _ROLLING.match(period)
    if not found:
        return False
    hours = int(found.group(1)) * (24 if found.group(2) == "d" else 1)
    return hours <= MAX_ROLLING_HOURS


def _amount(amount: object, unit: str) -> Decimal:
    if isinstance(amount, bool) or not isinstance(amount, (int, float, str, Decimal)):
        msg = f"a budget's amount must be a number, got {shown(amount)}"
        raise ValueError(msg)
    try:  # an int as it is: str() refuses one of over 4,300 digits
        value = Decimal(amount) if isinstance(amount, int) else Decimal(str(amount))
    except (InvalidOperation, ValueError):
        value = Decimal("NaN")
    if not value.is_finite() or not 0 < value <= MAX_AMOUNT:
        msg = f"a budget's amount must be a number above 0 and at most 1e12, got {shown(amount)}"
        raise ValueError(msg)
    if unit == "tokens" and value != value.to_integral_value():
        msg = f"a token budget's amount must be whole tokens, got {shown(amount)}"
        raise ValueError(msg)
    if unit == "usd" and (value * PICO_PER_USD) != (value * PICO_PER_USD).to_integral_value():
        msg = f"a budget in USD is kept to the pico-dollar, got {shown(amount)}: round it"
        raise ValueError(msg)
    plain = value.normalize()
    exponent = plain.as_tuple().exponent
    return plain.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else plain


@dataclass(frozen=True)
class BudgetStatus:
    """Where a budget stands.

    Attributes:
        budget: the budget.
        spent: USD or tokens spent in the current period (priced requests only, for USD).
        remaining: amount less spent; negative once the budget is overspent.
        window_start: when the current period began (UTC).
        resets_at: when it ends, None for a rolling window.
        burn_per_hour: what was spent in the last hour.
        exhaustion_s: seconds until the budget runs out at that rate: 0 once spent, None
            when nothing is being spent or when the period resets first.
        unpriced_tokens: tokens in the period of models with no price, which a USD budget
            cannot count (never a silent $0: shown here).
        as_of: when the database was last read for it (UTC).
    """

    budget: Budget
    spent: Decimal
    remaining: Decimal
    window_start: datetime
    resets_at: datetime | None
    burn_per_hour: Decimal
    exhaustion_s: float | None
    unpriced_tokens: int
    as_of: datetime

    @property
    def fraction_spent(self) -> float:
        """spent / amount."""
        return float(self.spent / self.budget.amount)


def status_table(statuses: list[BudgetStatus]) -> str:
    """Budgets and where they stand, as a text table (what `otel-tokens budget list` prints)."""
    rows = [("budget", "spent", "remaining", "used", "resets", "runs out in")]
    for status in statuses:
        rows.append((
            status.budget.describe(), f"{status.spent}", f"{status.remaining}",
            f"{status.fraction_spent:.0%}",
            "rolling" if status.resets_at is None else f"{status.resets_at:%Y-%m-%d %H:%M} UTC",
            _duration(status.exhaustion_s),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "spent"
    hours = seconds / 3600
    if hours < 1:
        return f"{seconds / 60:.0f} min"
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"
