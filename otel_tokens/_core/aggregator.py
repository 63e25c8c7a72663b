"""The tracker's one consumer: checks each queued `Usage` and folds it into the series totals.

Counters are summed here and handed to OpenTelemetry by observable counters at collection
time. Histogram points are summed per series too, with the context captured when `record()`
was called so that exemplars still point at the right trace, and merged into the SDK's
histograms at collection (`sdk_histograms`; where that cannot be done, each point is
recorded with the SDK's `record()` here, off the request path).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from opentelemetry.context import Context
from opentelemetry.metrics import Observation

from otel_tokens._base import names as n
from otel_tokens._base.text import safe_label, shown
from otel_tokens._base.usage import Usage, find_fault, plain_text
from otel_tokens._base.warn import WarnOnce
from otel_tokens._core import instruments as spec
from otel_tokens._core.drops import Drops
from otel_tokens._core.sdk_counters import CounterFeed
from otel_tokens._core.sdk_histograms import (
    DURATION,
    FIRST_CHUNK,
    INPUT,
    OUTPUT,
    PER_CHUNK,
    HistogramFeed,
    Histograms,
)
from otel_tokens._core.series import Series, SeriesTable
from otel_tokens._pricing.prices import PICO_PER_USD
from otel_tokens._pricing.table import PriceTable

if TYPE_CHECKING:
    from otel_tokens._core.sink import UsageSink

#: A queued record: a `Usage` (or whatever a caller passed as one, checked when folded)
#: or a `Later`, and the context it was recorded in.
Queued = tuple[object, Context]


class Later:
    """A `Usage` to be made on the consumer thread: how the HTTP transports keep reading a
    response's closing events off the request path."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Usage]) -> None:
        self.make = make


#: Models named in "has no price" warnings; more would let client-chosen names flood the log.
_MAX_UNPRICED_WARNINGS = 64
#: How much of a model's name such a warning shows.
_SHOWN_MODEL = 200


#: What a request without cache tokens saved and paid extra: nothing.
_NO_CACHE = (0, 0)

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
    spec.CACHE_SAVINGS.name: (lambda s: s.cache_saved_pico / PICO_PER_USD, lambda s: s.priced),
    spec.CACHE_WRITE_PREMIUM.name: (
        lambda s: s.cache_premium_pico / PICO_PER_USD,
        lambda s: s.priced,
    ),
    spec.UNPRICED_TOKENS.name: (lambda s: s.unpriced_tokens, lambda s: s.unpriced_tokens > 0),
    spec.REQUESTS.name: (lambda s: s.requests, lambda s: True),
}


class Aggregator:
    """Fold queued records into series totals and histogram points; single-threaded by contract.

    Args:
        table: finds the bounded series of each record.
        histograms: the instruments histogram points go to.
        prices: prices by model (maybe empty).
        drops: where records that cannot be recorded are counted.
        warn: the tracker's once-per-kind warner.
        ledger: where each recorded usage is also queued, with its cost.
    """

    def __init__(  # noqa: PLR0917 - built in one place, by the tracker
        self,
        table: SeriesTable,
        histograms: Histograms,
        prices: PriceTable,
        drops: Drops,
        warn: WarnOnce,
        ledger: UsageSink | None = None,
    ) -> None:
        self._ledger = ledger
        self._table = table
        self._histograms = HistogramFeed(histograms)
        self._prices = prices
        self._drops = drops
        self._warn = warn
        self._warn_unpriced = WarnOnce(limit=_MAX_UNPRICED_WARNINGS)

    def consume(self, batch: list[Queued]) -> None:
        """Fold `batch` in; a record that cannot be recorded is dropped, counted and warned."""
        self._drops.say_pending()
        self._histograms.check()
        done = 0
        try:
            for item, context in batch:
                usage = item
                try:
                    if type(item) is Later:
                        usage = item.make()
                    if isinstance(usage, Usage):  # before any label is hashed or compared
                        usage = plain_text(usage)
                    fault = find_fault(usage)
                    if fault is None:
                        self._fold(cast(Usage, usage), context)
                    else:
                        self._drops.add(fault.kind, fault.message, usage=usage)
                except Exception:
                    self._drop_failed(usage)
                done += 1
        finally:
            if done < len(batch):  # KeyboardInterrupt and the like: never lose records silently
                self._drops.add(
                    "interrupted", "folding was interrupted (KeyboardInterrupt or the like)",
                    count=len(batch) - done,
                )  # fmt: skip

    def _drop_failed(self, usage: object) -> None:
        """Count a record whose folding raised. Nothing here may raise in turn: the record
        is the caller's, so its repr may raise too, and the rest of the batch must go on."""
        try:
            self._drops.add(
                "internal_error", f"recording {shown(usage)} failed (a bug: please report it)",
                usage=usage, exc_info=True,
            )  # fmt: skip
        except Exception:
            with contextlib.suppress(Exception):
                self._drops.add("internal_error", "recording a usage failed (a bug)")

    def _fold(self, usage: Usage, context: Context) -> None:
        # Everything that can fail comes before the totals change, so a record that fails is
        # either wholly in the counters or counted as dropped, never both.
        table = self._table
        series = table.series_for(usage)
        rates = self._prices.rates(usage)
        cost: int | None = None
        cache = _NO_CACHE
        if rates is not None:
            cost = rates.cost(usage)
            if usage.cache_read_tokens or usage.cache_write_tokens:
                cache = rates.cache_economics(usage)
        feed = self._histograms
        points = series.points
        sampled = feed.exemplar(context)
        now = time.time_ns()
        if usage.input_tokens:
            feed.add(INPUT, points, usage.input_tokens, series.input_attributes, context, now,
                     sampled)  # fmt: skip
        if usage.output_tokens:
            feed.add(OUTPUT, points, usage.output_tokens, series.output_attributes, context, now,
                     sampled)  # fmt: skip
        if usage.latency_s is not None:
            feed.add(DURATION, points, usage.latency_s, series.attributes, context, now, sampled)
        if usage.streamed:
            if usage.time_to_first_token_s is not None:
                feed.add(FIRST_CHUNK, points, usage.time_to_first_token_s, series.attributes,
                         context, now, sampled)  # fmt: skip
            if usage.time_per_output_chunk_s is not None:
                feed.add(PER_CHUNK, points, usage.time_per_output_chunk_s, series.attributes,
                         context, now, sampled)  # fmt: skip

        series.requests += 1
        series.input_tokens += usage.input_tokens
        series.output_tokens += usage.output_tokens
        series.cache_read_tokens += usage.cache_read_tokens
        series.cache_write_tokens += usage.cache_write_tokens
        series.reasoning_tokens += usage.reasoning_tokens
        series.system_tokens += usage.system_tokens
        if cost is not None:
            series.priced = True
            series.cost_pico += cost
            series.cache_saved_pico += cache[0]
            series.cache_premium_pico += cache[1]
        elif usage.input_tokens or usage.output_tokens:
            series.unpriced_tokens += usage.input_tokens + usage.output_tokens
            self._warn_no_price(usage.model)
        if self._ledger is not None:
            self._ledger.add(usage, cost, int(time.time() * 1_000_000))

    def merge_histograms(self) -> None:
        """Hand the histogram points summed since the last collection to the SDK (consumer
        lock held: the first callback of a collection calls this)."""
        lost = self._histograms.merge()
        if lost:
            self._drops.add(
                "internal_error", "merging histogram points into the SDK failed (a bug)",
                count=lost,
            )  # fmt: skip

    def _warn_no_price(self, model: str) -> None:
        if not len(self._prices):
            self._warn(
                "no_prices",
                "otel_tokens: the price table is empty, so no cost is computed; tokens are "
                "counted on llm.usage.unpriced_tokens. Leave prices= unset for the bundled table",
            )
            return
        # The model the caller sent, not its label ("other" outside an allow-list): that is
        # the name to add to the price table. Cut and made printable like a label.
        model = safe_label(model, _SHOWN_MODEL)
        self._warn_unpriced(
            model,
            "otel_tokens: model %r has no price, so its tokens are counted on "
            "llm.usage.unpriced_tokens and not as cost; add it to the price table",
            model,
        )

    def overflow_observations(self) -> list[Observation]:
        """Records on the overflow series, by the provider and operation they kept; the
        series without them is always there, at 0 until a record needs it."""
        observations = [Observation(0, {})]
        for series in self._table.overflow():
            labels = {k: v for k, v in series.attributes.items() if k != n.OVERFLOW}
            if labels:
                observations.append(Observation(series.requests, labels))
            else:
                observations[0] = Observation(series.requests, {})
        return observations

    def counter_observations(
        self, name: str, feed: CounterFeed, *, tokens: bool = False
    ) -> list[Observation]:
        """Hand `feed` the current total of counter `name` on every series that has one, with
        the series' attributes of token counts when `tokens` (the modality, where it has
        one), and return the observations it leaves to the callback."""
        value, present = _COUNTER_VALUES[name]
        series = (s for s in self._table.all() if present(s))
        if tokens:
            return feed.observe(name, ((s.token_attributes, value(s), s.counter_keys)
                                       for s in series))  # fmt: skip
        return feed.observe(name, ((s.attributes, value(s), s.counter_keys) for s in series))
