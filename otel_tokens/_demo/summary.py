"""What `otel-tokens demo` prints: its progress line, and the summary table of what it sent
beside what the tracker counted."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

from otel_tokens._base import names as n
from otel_tokens._core import instruments as spec


def human(number: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.1f}{suffix}"
    return f"{number:.0f}"


class Totals:
    """What the exported metrics say so far, per (provider, model)."""

    COLUMNS = ("requests", "success", "error", "canceled", "input", "cache_read", "cache_write",
               "output", "reasoning", "cost", "unpriced")  # fmt: skip
    _COUNTERS: ClassVar[dict[str, str]] = {
        spec.INPUT_TOKENS.name: "input",
        spec.CACHE_READ_TOKENS.name: "cache_read",
        spec.CACHE_WRITE_TOKENS.name: "cache_write",
        spec.OUTPUT_TOKENS.name: "output",
        spec.REASONING_TOKENS.name: "reasoning",
        spec.COST.name: "cost",
        spec.UNPRICED_TOKENS.name: "unpriced",
    }

    def __init__(self, reader: Any) -> None:
        self.rows: dict[tuple[str, str], dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(self.COLUMNS, 0.0)
        )
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self._add(metric)

    def _add(self, metric: Any) -> None:
        column = self._COUNTERS.get(metric.name)
        if metric.name != spec.REQUESTS.name and column is None:
            return
        for point in metric.data.data_points:
            attrs = point.attributes
            row = self.rows[
                (
                    str(attrs.get(n.PROVIDER, "(overflow)")),
                    str(attrs.get(n.REQUEST_MODEL, "")),
                )
            ]
            if column is not None:
                row[column] += point.value
            else:
                row["requests"] += point.value
                row[str(attrs.get(n.STATUS, "success"))] += point.value

    def total(self, column: str) -> float:
        return sum(row[column] for row in self.rows.values())


def progress(totals: Totals, elapsed: float, duration: float | None, url: str) -> str:
    clock = f"{elapsed:5.1f}s" + (f"/{duration:.0f}s" if duration else "")
    return (
        f"{clock}  requests {totals.total('requests'):.0f}  ok {totals.total('success'):.0f}  "
        f"error {totals.total('error'):.0f}  canceled {totals.total('canceled'):.0f}  "
        f"tokens in {human(totals.total('input'))} out {human(totals.total('output'))}  "
        f"cost ${totals.total('cost'):.2f}  scrape {url}"
    )


def summary_table(totals: Totals) -> str:
    """The closing table: requests by status and tokens by class, per provider and model."""
    header = ("provider", "model", "requests", "ok", "error", "canceled", "input", "cache rd",
              "cache wr", "output", "reasoning", "cost USD")  # fmt: skip
    lines = []
    for (provider, model), row in sorted(totals.rows.items()):
        lines.append(_row(provider, model, row))
    lines.append(_row("total", "", {c: totals.total(c) for c in Totals.COLUMNS}))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    rendered = [_render(header, widths), _render(tuple("-" * w for w in widths), widths)]
    rendered += [_render(line, widths) for line in lines[:-1]]
    rendered += [_render(tuple("-" * w for w in widths), widths), _render(lines[-1], widths)]
    unpriced = totals.total("unpriced")
    if unpriced:
        rendered.append(
            f"'unpriced': {human(unpriced)} tokens of models with no price were counted on "
            f"{spec.UNPRICED_TOKENS.name}, not as $0."
        )
    return "\n".join(rendered)


def _row(provider: str, model: str, row: dict[str, float]) -> tuple[str, ...]:
    has_cost = row["cost"] > 0 or not row["unpriced"]
    cost = f"{row['cost']:.4f}" if has_cost else "unpriced"
    if has_cost and row["unpriced"]:
        cost += " +unpriced"
    return (provider, model, f"{row['requests']:.0f}", f"{row['success']:.0f}",
            f"{row['error']:.0f}", f"{row['canceled']:.0f}", human(row["input"]),
            human(row["cache_read"]), human(row["cache_write"]), human(row["output"]),
            human(row["reasoning"]), cost)  # fmt: skip


def _render(cells: tuple[str, ...], widths: list[int]) -> str:
    left = 2  # provider and model read best left-aligned, numbers right-aligned
    return "  ".join(
        cell.ljust(width) if i < left else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()
