"""Feed the tracker's histograms: points summed in-process, merged into the SDK at collection.

`Histogram.record()` costs most of what folding a record costs (it cleans, copies and hashes
the attributes every call). Each series' points are summed here instead (`PendingPoints`) and,
when a collection runs the tracker's callbacks, added to the SDK's own explicit-bucket
aggregations under the SDK's locks, before it reads them: the exported points are the ones
`record()` would have made, with the SDK's views, cardinality limit, temporality and exemplar
filter. This reads the SDK's internals, so it is used only where it is known to work:

- the meter is the OpenTelemetry SDK's (a global proxy meter counts once it has one);
- every reader aggregates the instrument as an explicit-bucket histogram with the tracker's
  boundaries and the default aligned-bucket exemplar reservoir (views may drop attributes);
- a self-test, once per process, finds the merge identical to `record()` on this SDK.

Anywhere else, or once a reader is added that does not qualify, that instrument's points
are recorded with `record()` as before, which is always exact. Where the float sum of a point
is concerned: one reader sees the same additions in the same order as `record()` makes; with
several readers the sums may differ from it in the last bits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import Histogram
from opentelemetry.trace import INVALID_SPAN, get_current_span

from otel_tokens._core.histogram_points import PendingPoints
from otel_tokens._core.sdk_merge import Keys, SdkAggregations

_logger = logging.getLogger("otel_tokens")

#: Histogram slots of a series: its input and output token points, its duration, its time to
#: first chunk and its time per output chunk.
INPUT, OUTPUT, DURATION, FIRST_CHUNK, PER_CHUNK = range(5)
SLOTS = 5

Attributes = dict[str, Any]

#: How points are sampled for exemplars: by a filter the SDK ships, decided once per record
#: (it looks at the context only), or by another filter, asked of each point.
_OFF, _TRACED, _ALL, _ASK = range(4)


@dataclass(frozen=True)
class Histograms:
    """The tracker's histograms, by slot (input and output may be one instrument), and each
    slot's bucket boundaries."""

    instruments: tuple[Histogram, ...]
    boundaries: tuple[tuple[float, ...], ...]


class HistogramFeed:
    """Where each histogram slot's points go: summed in-process and merged into the SDK at
    collection where `_Target` allows it, else recorded with `record()` at once.

    Args:
        histograms: the instruments.
    """

    def __init__(self, histograms: Histograms) -> None:
        self._instruments = histograms.instruments
        self._boundaries = histograms.boundaries
        self._targets = [
            _target(i, b) for i, b in zip(self._instruments, self._boundaries, strict=True)
        ]
        #: Per slot: whether its points are summed here (else recorded directly).
        self._summed = [False] * SLOTS
        self._broken = False
        self._waiting: list[tuple[int, Attributes, PendingPoints]] = []
        self._sampling = _OFF
        self._filter: Any = None
        self.check()

    def check(self) -> None:
        """Follow the SDK's readers and the meter's state: called once per batch folded. A
        slot that changes hands its waiting points over first, to the readers that had them."""
        if not any(t.stale() for t in self._targets):
            return
        self.merge()
        for slot, target in enumerate(self._targets):
            self._summed[slot] = target.plan() and not self._broken
        self._sampling, self._filter = _sampling(self._targets)

    def exemplar(self, context: Context) -> tuple[Context | None, bool]:
        """Whether a record in `context` is sampled for exemplars (its context, else None) by a
        filter that decides per record, and whether the context holds a span."""
        sampling = self._sampling
        if sampling == _OFF:
            return None, False
        if sampling == _TRACED:
            if self._filter.should_sample(0, 0, None, context):
                return context, True  # a sampled span: never INVALID_SPAN
            return None, False
        return context, get_current_span(context) != INVALID_SPAN

    def add(  # noqa: PLR0917 - the hot path: no tuple packing
        self,
        slot: int,
        points: list[PendingPoints | None],
        value: float,
        attributes: Attributes,
        context: Context,
        now_ns: int,
        sampled: tuple[Context | None, bool],
    ) -> None:
        """Add one point of a series to `slot` (`points` are the series' pending points)."""
        if not self._summed[slot]:
            self._instruments[slot].record(value, attributes, context)
            return
        pending = points[slot]
        if pending is None:
            pending = points[slot] = PendingPoints(self._boundaries[slot])
        if not pending.first_ns:
            self._waiting.append((slot, attributes, pending))
        sampling = self._sampling
        if sampling <= _TRACED:
            pending.add(value, now_ns, sampled[0])
            return
        exemplar = sampled[0]
        if sampling == _ASK and not self._filter.should_sample(value, now_ns, attributes, context):
            exemplar = None
        pending.add_mixed(value, now_ns, exemplar, sampled[1])

    def merge(self) -> int:
        """Hand every waiting point to the SDK (on the consumer's lock, as a collection begins).

        Returns:
            how many points could not be merged (the SDK refused them: a bug); their slots
            record directly from now on.
        """
        waiting, self._waiting = self._waiting, []
        lost = 0
        for slot, attributes, pending in waiting:
            try:
                _merge(self._targets[slot], attributes, pending)
            except Exception:
                lost += sum(pending.counts)
                if not self._broken:
                    _logger.warning(
                        "otel_tokens: merging histogram points into the SDK failed, so they "
                        "are recorded with record() from now on (a bug: please report it)",
                        exc_info=True,
                    )
                self._broken = True
            finally:
                pending.clear()
        if self._broken:
            self._summed = [False] * SLOTS
        return lost


def _histogram_merges(boundaries: tuple[float, ...]) -> Callable[[Any, Any], bool]:
    def qualifies(instrument: Any, match: Any) -> bool:
        from opentelemetry.sdk.metrics import AlignedHistogramBucketExemplarReservoir
        from opentelemetry.sdk.metrics import Histogram as SdkHistogram
        from opentelemetry.sdk.metrics._internal.aggregation import (
            _ExplicitBucketHistogramAggregation,
        )

        template = match._aggregation
        return (
            isinstance(instrument, SdkHistogram)
            and type(template) is _ExplicitBucketHistogramAggregation
            and template._boundaries == boundaries
            and type(template._reservoir) is AlignedHistogramBucketExemplarReservoir
        )

    return qualifies


def _target(instrument: Histogram, boundaries: tuple[float, ...]) -> SdkAggregations:
    return SdkAggregations(instrument, _histogram_merges(boundaries), _SELF_TEST)


def _merge(target: SdkAggregations, attributes: Attributes, pending: PendingPoints) -> None:
    """Add `pending` to the aggregation of `attributes` in every reader, as `record()` of
    each point would have (with the reader's view, cardinality limit and temporality)."""
    keys = pending.merge_keys
    if not isinstance(keys, Keys) or not keys.current(target):
        keys = pending.merge_keys = target.keys(attributes)
    for aggregation, created in target.each(keys):
        if created and pending.first_ns < aggregation._start_time_unix_nano:
            aggregation._start_time_unix_nano = pending.first_ns  # as of the first point
            aggregation._previous_collection_start_nano = pending.first_ns
        _merge_into(aggregation, pending, attributes)


def _merge_into(aggregation: Any, pending: PendingPoints, attributes: Attributes) -> None:
    with aggregation._lock:
        counts = aggregation._value
        if counts is None:
            counts = aggregation._value = aggregation._get_empty_bucket_counts()
        for index, count in enumerate(pending.counts):
            if count:
                counts[index] += count
        aggregation._sum += pending.total
        if aggregation._record_min_max:
            aggregation._min = min(aggregation._min, pending.minimum)
            aggregation._max = max(aggregation._max, pending.maximum)
    reservoir = aggregation._reservoir
    for index, (value, time_ns, context) in pending.last.items():
        earlier = pending.traced.get(index)
        if earlier is not None:
            reservoir.offer(earlier[0], earlier[1], attributes, earlier[2])
        reservoir.offer(value, time_ns, attributes, context)


def _sampling(targets: Sequence[SdkAggregations]) -> tuple[int, Any]:
    """How the meter provider's exemplar filter is applied, and the filter."""
    merged = [t for t in targets if t.sdk_instrument is not None]
    if not merged:
        return _OFF, None
    from opentelemetry.sdk.metrics import (
        AlwaysOffExemplarFilter,
        AlwaysOnExemplarFilter,
        TraceBasedExemplarFilter,
    )

    chosen = merged[0].exemplar_filter()
    kinds = {AlwaysOffExemplarFilter: _OFF, TraceBasedExemplarFilter: _TRACED,
             AlwaysOnExemplarFilter: _ALL}  # fmt: skip
    return kinds.get(type(chosen), _ASK), chosen


def _self_test() -> bool:
    """Whether `_merge` gives what `record()` gives, exemplars included, on this SDK."""
    from opentelemetry.context import get_current
    from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    values = (0.5, 3, 3, 20.25, 10, 1, 0)
    boundaries = (1.0, 10.0)
    attributes: Attributes = {"otel_tokens.self_test": "a", "n": 1}

    def collect(feed: Callable[[Histogram], None]) -> list[object]:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOnExemplarFilter())
        histogram = provider.get_meter("otel_tokens.self_test").create_histogram(
            "h", explicit_bucket_boundaries_advisory=list(boundaries)
        )
        feed(histogram)
        data = reader.get_metrics_data()
        provider.shutdown()
        assert data is not None
        point: Any
        (point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
        exemplars = [(e.value, e.filtered_attributes) for e in point.exemplars]
        return [point.count, point.sum, point.bucket_counts, point.min, point.max, exemplars]

    def record(histogram: Histogram) -> None:
        for value in values:
            histogram.record(value, attributes)

    def merge(histogram: Histogram) -> None:
        target = _target(histogram, boundaries)
        target.plan()
        assert target.sdk_instrument is not None
        pending = PendingPoints(boundaries)
        for value in values:
            pending.add(value, 1, get_current())
        _merge(target, attributes, pending)

    expected = collect(record)
    return expected == collect(merge)


_SELF_TEST = ("histograms", _self_test)
