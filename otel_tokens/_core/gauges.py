"""The tracker's observable gauges: rate-limit headroom and the budgets of its ledger.

The three budget gauges of one collection report one reading of the ledger's budgets (the
first gauge reads, the others reuse it), so that spent and remaining always add up to the
budget's amount.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_tokens._core import instruments as spec
from otel_tokens._core.sink import BudgetPoint, UsageSink

Callback = Callable[[CallbackOptions], list[Observation]]
#: How long the first budget gauge's reading serves the other two.
_SHARED_S = 1.0


def create_gauges(
    meter: Meter, limits_callback: Callable[[int], Callback], sink: UsageSink | None
) -> None:
    """Create the rate-limit gauges (`limits_callback(i)` observes the i-th) and the budget
    gauges, which report `sink`'s budgets (none without a sink)."""
    for index, gauge in enumerate(spec.RATELIMIT_GAUGES):
        meter.create_observable_gauge(gauge.name, callbacks=[limits_callback(index)],
                                      unit=gauge.unit, description=gauge.description)  # fmt: skip
    reading = _BudgetReading(sink)
    for index, gauge in enumerate(spec.BUDGET_GAUGES):
        meter.create_observable_gauge(gauge.name, callbacks=[reading.callback(index)],
                                      unit=gauge.unit, description=gauge.description)  # fmt: skip


class _BudgetReading:
    def __init__(self, sink: UsageSink | None) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._points: list[BudgetPoint] = []
        self._read_at = -_SHARED_S

    def callback(self, index: int) -> Callback:
        def observe(options: CallbackOptions) -> list[Observation]:
            return self._observe(index)

        return observe

    def _observe(self, index: int) -> list[Observation]:
        if self._sink is None:
            return []
        with self._lock:
            now = time.monotonic()
            if index == 0 or now - self._read_at > _SHARED_S:
                self._points, self._read_at = self._sink.budget_points(), now
            points = self._points
        if index == 0:
            return [Observation(p.spent, p.attributes) for p in points]
        if index == 1:
            return [Observation(p.remaining, p.attributes) for p in points]
        return [
            Observation(p.exhaustion_s, p.attributes) for p in points if p.exhaustion_s is not None
        ]
