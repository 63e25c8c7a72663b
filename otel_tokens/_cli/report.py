"""Usage as people read it: tables with short numbers (1.2M tokens, $3.41), or JSON and CSV
with every digit for programs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from otel_tokens._base.meters import MeterTotals
from otel_tokens._ledger.periods import Period, to_local
from otel_tokens._ledger.query import GROUPS, UsageTotals

#: The group names as column headings.
#: Every group a usage query may have is a column of its own (GROUPS, so none is missed).
_HEADINGS = {group: group for group in GROUPS}
#: A table's number columns: heading, attribute, and whether it is shown when all zero.
_COLUMNS = (
    ("requests", "requests", True),
    ("failed", "failed", True),
    ("canceled", "canceled", False),
    ("input", "input_tokens", True),
    ("output", "output_tokens", True),
    ("cached", "cache_read_tokens", True),
    ("cache wr", "cache_write_tokens", False),
    ("reasoning", "reasoning_tokens", False),
)
_FIELDS = (
    "requests", "succeeded", "failed", "canceled", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "system_tokens",
    "cost_pico", "unpriced_tokens",
)  # fmt: skip


def short(number: float | Decimal) -> str:
    """`number` in at most four significant characters: 950, 12.3k, 1.2M, 3.4B."""
    value = float(number)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 100 else f"{scaled:.0f}{suffix}"
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.3g}"


def dollars(amount: Decimal) -> str:
    """`amount` as $3.41, $0.0042 below a cent, $1.2M above a million."""
    if amount >= 1_000_000:
        return "$" + short(amount)
    if 0 < amount < Decimal("0.01"):
        return f"${amount:.2g}" if amount >= Decimal("0.0001") else "<$0.0001"
    return f"${amount:,.2f}"


def table(headings: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> str:
    """A plain-text table: text columns left-aligned, numeric ones (from `numeric_from`)
    right-aligned, under a rule."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headings)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i >= numeric_from else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headings), rule, *(line(row) for row in rows)])


def _when(totals: UsageTotals | MeterTotals, period: Period) -> str:
    if totals.last_at_us is None:
        return "-"
    return f"{to_local(totals.last_at_us, period.zone):%m-%d %H:%M}"


def usage_table(rows: Sequence[UsageTotals], groups: Sequence[str], period: Period) -> str:
    """The rows as a table, with a total line when there are several. Canceled requests,
    cache writes, reasoning and unpriced tokens get a column only where there are some;
    `last` is the month, day and time of the latest request, in the period's zone."""
    if not rows:
        return "no usage in this period"
    shown = list(rows)
    if len(rows) > 1:
        total = UsageTotals(group={g: "" for g in groups})
        for row in rows:
            total.add([getattr(row, name) for name in _FIELDS] + [row.last_at_us])
        if groups:
            total.group[groups[0]] = "total"
        shown.append(total)
    unpriced = any(row.unpriced_tokens for row in rows)
    columns = [c for c in _COLUMNS if c[2] or any(getattr(row, c[1]) for row in rows)]
    headings = [_HEADINGS[g] for g in groups] + [heading for heading, _, _ in columns]
    headings += ["cost", *(["unpriced"] if unpriced else []), "last"]
    cells = []
    for row in shown:
        line = [row.group.get(g) or "-" for g in groups]
        line += [short(getattr(row, name)) for _, name, _ in columns]
        priced_nothing = row.cost_pico == 0 and row.unpriced_tokens
        line.append("-" if priced_nothing else dollars(row.cost_usd))
        if unpriced:
            line.append(short(row.unpriced_tokens) if row.unpriced_tokens else "-")
        line.append(_when(row, period))
        cells.append(line)
    text = table(headings, cells, len(groups))
    if len(rows) > 1:
        lines = text.splitlines()
        width = len(lines[1])
        text = "\n".join([*lines[:-1], "-" * width, lines[-1]])
    if unpriced:
        text += (
            "\nunpriced: input and output tokens of models without a price, left out of cost "
            "(add them to a price file)"
        )
    return text


def meter_table(rows: Sequence[MeterTotals], groups: Sequence[str], period: Period) -> str:
    """A custom meter's rows as a table."""
    if not rows:
        return "no events in this period"
    counts = rows[0].aggregation == "count"  # its value is the number of events
    headings = [*groups, "events", *([] if counts else [rows[0].aggregation]), "last"]
    cells = []
    for row in rows:
        value = dollars(row.value) if row.currency == "USD" else short(row.value)
        if row.currency and row.currency != "USD":
            value = f"{value} {row.currency}"
        cells.append([row.group.get(g) or "-" for g in groups] + [short(row.events)] +
                     ([] if counts else [value]) + [_when(row, period)])  # fmt: skip
    return table(headings, cells, len(groups))


def usage_records(rows: Sequence[UsageTotals]) -> list[dict[str, Any]]:
    """The rows as flat records with exact numbers, for JSON and CSV."""
    records = []
    for row in rows:
        record: dict[str, Any] = dict(row.group)
        record.update({name: getattr(row, name) for name in _FIELDS})
        record["cost_usd"] = str(row.cost_usd.normalize())
        record["last_at"] = None if row.last_at is None else row.last_at.isoformat()
        records.append(record)
    return records


def meter_records(rows: Sequence[MeterTotals]) -> list[dict[str, Any]]:
    """A meter's rows as flat records with exact numbers."""
    records = []
    for row in rows:
        record: dict[str, Any] = dict(row.group)
        record.update(meter=row.meter, unit=row.unit, aggregation=row.aggregation,
                      events=row.events, value=str(row.value))  # fmt: skip
        record["last_at"] = None if row.last_at is None else row.last_at.isoformat()
        records.append(record)
    return records


def as_json(records: list[dict[str, Any]], period: Period) -> str:
    """The records with the period they cover, as JSON."""
    return json.dumps({"period": period.describe(), "rows": records}, indent=2)


def as_csv(records: list[dict[str, Any]], groups: Sequence[str]) -> str:
    """The records as CSV with a heading line."""
    out = io.StringIO()
    names = list(records[0]) if records else [*groups, *_FIELDS, "cost_usd", "last_at"]
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().rstrip("\n")
