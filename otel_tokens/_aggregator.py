"""The tracker's one consumer: checks each queued `Usage` and folds it into the series totals.

Counters are summed here and handed to OpenTelemetry by observable counters at collection
time. Histogram points cannot be pre-aggregated through the public API, so they are recorded
here, off the request path, with the context captured when `record()` was called so that
exemplars still point at the right trace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, Observation

from otel_tokens import _instruments as spec
from otel_tokens._names import DROP_REASON
from otel_tokens._pricing import PICO_PER_USD, PriceTable
from otel_tokens._series import Series, SeriesTable
from otel_tokens._usage import Fault, Usage, find_fault
from otel_tokens._warn import WarnOnce

Queued = tuple[object, Context]


@dataclass(frozen=True)
class Histograms:
    """The three synchronous instruments points are recorded on."""

    token_usage: Histogram
    duration: Histogram
    time_to_first_chunk: Histogram


#: How each usage counter reads a series, and whether the series has a point on it at all.
#: Cost and unpriced tokens appear only where they happened: an unpriced model shows no $0.
_COUNTER_VALUES: dict[str, tuple[Callable[[Series], float], Callable[[Series], bool]]] = {
    spec.INPUT_TOKENS.name: (lambda s: s.input_tokens, lambda s: True),
    spec.OUTPUT_TOKENS.name: (lambda s: s.output_tokens, lambda s: True),
    spec.CACHE_READ_TOKENS.name: (lambda s: s.cache_read_tokens, lambda s: True),
    spec.CACHE_WRITE_TOKENS.name: (lambda s: s.cache_write_tokens, lambda s: True),
    spec.REASONING_TOKENS.name: (lambda s: s.reasoning_tokens, lambda s: True),
    spec.SYSTEM_TOKENS.name: (lambda s: s.system_tokens, lambda s: True),
    spec.COST.name: (lambda s: s.cost_pico / PICO_PER_USD, lambda s: s.priced),
    spec.UNPRICED_TOKENS.name: (lambda s: s.unpriced_tokens, lambda s: s.unpriced),
    spec.REQUESTS.name: (lambda s: s.requests, lambda s: True),
}


class Aggregator:
    """Fold queued records into series totals and histogram points; single-threaded by contract.

    Args:
        table: finds the bounded series of each record.
        histograms: where histogram points go.
        prices: prices by model, or None when the deployment gave none.
        warn: the tracker's once-per-kind warner.
    """

    def __init__(
        self,
        table: SeriesTable,
        histograms: Histograms,
        prices: PriceTable | None,
        warn: WarnOnce,
    ) -> None:
        self._table = table
        self._histograms = histograms
        self._prices = prices
        self._warn = warn
        self.dropped: Counter[str] = Counter()
        self.overflowed = 0

    def consume(self, batch: list[Queued]) -> None:
        """Fold `batch` in; a record that cannot be recorded is dropped, counted and warned."""
        for usage, context in batch:
            try:
                fault = find_fault(usage)
                if fault is None:
                    assert isinstance(usage, Usage)
                    self._fold(usage, context)
                else:
                    self.drop(fault)
            except Exception as exc:
                self.dropped["internal_error"] += 1
                self._warn(
                    ("internal_error", type(exc).__name__),
                    "otel_tokens: recording %r failed; the record was dropped and counted on "
                    "otel_tokens.records.dropped{reason='internal_error'}. Please report this bug",
                    usage,
                    exc_info=True,
                )

    def drop(self, fault: Fault) -> None:
        """Count a dropped record and say why, once per kind of fault."""
        self.dropped[fault.kind] += 1
        self._warn(
            ("drop", fault.kind),
            "otel_tokens dropped a usage record: %s. Drops are counted on "
            "otel_tokens.records.dropped{reason=%r}; this is logged once per reason",
            fault.message,
            fault.kind,
        )

    def _fold(self, usage: Usage, context: Context) -> None:
        table = self._table
        series = table.series_for(usage)
        if series is table.overflow:
            self.overflowed += 1
        series.requests += 1
        series.input_tokens += usage.input_tokens
        series.output_tokens += usage.output_tokens
        series.cache_read_tokens += usage.cache_read_tokens
        series.cache_write_tokens += usage.cache_write_tokens
        series.reasoning_tokens += usage.reasoning_tokens
        series.system_tokens += usage.system_tokens
        self._price(usage, series)

        histograms = self._histograms
        if usage.input_tokens:
            histograms.token_usage.record(usage.input_tokens, series.input_attributes, context)
        if usage.output_tokens:
            histograms.token_usage.record(usage.output_tokens, series.output_attributes, context)
        if usage.latency_s is not None:
            histograms.duration.record(usage.latency_s, series.attributes, context)
        if usage.streamed and usage.time_to_first_token_s is not None:
            histograms.time_to_first_chunk.record(
                usage.time_to_first_token_s, series.attributes, context
            )

    def _price(self, usage: Usage, series: Series) -> None:
        cost = None if self._prices is None else self._prices.cost_pico(usage)
        if cost is not None:
            series.priced = True
            series.cost_pico += cost
            return
        tokens = usage.input_tokens + usage.output_tokens
        if not tokens:
            return
        series.unpriced = True
        series.unpriced_tokens += tokens
        if self._prices is None:
            self._warn(
                "no_prices",
                "otel_tokens: no price table was given, so no cost is computed; tokens are "
                "counted on llm.usage.unpriced_tokens. Pass prices=PriceTable(...) to the tracker",
            )
        else:
            self._warn(
                ("unpriced", usage.model),
                "otel_tokens: model %r has no price, so its tokens are counted on "
                "llm.usage.unpriced_tokens and not as cost; add it to the price table",
                usage.model,
            )

    def counter_observations(self, name: str) -> list[Observation]:
        """The current total of counter `name` on every series that has one."""
        value, present = _COUNTER_VALUES[name]
        return [Observation(value(s), s.attributes) for s in self._table.all() if present(s)]

    def drop_observations(self, hot_path_drops: Iterable[tuple[str, int]]) -> list[Observation]:
        """Dropped records by reason, from this consumer and from the request path."""
        totals = Counter(self.dropped)
        for reason, count in hot_path_drops:
            totals[reason] += count
        return [Observation(count, {DROP_REASON: reason}) for reason, count in totals.items()]
