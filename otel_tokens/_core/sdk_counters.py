"""Hand the tracker's counter totals to the SDK's observable counters at collection.

An observable counter's callback returns one `Observation` per series, and the SDK turns each
into a measurement whose attributes it cleans, copies and hashes again, every collection: with
a thousand series that is most of a collection. Where `sdk_merge` allows, the totals are set
on the SDK's own aggregations instead, exactly as those observations would set them (summed
where a view or the cardinality limit folds series together), and the callbacks return
nothing. Elsewhere, and whenever the exemplar filter would sample the observations (the SDK
attaches exemplars to them), the observations are returned as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.metrics import Observation

from otel_tokens._core.sdk_merge import Attributes, Keys, SdkAggregations

#: (series attributes, total, where its keys are kept: a dict by counter name).
Total = tuple[Attributes, float, dict[str, Keys]]


class CounterFeed:
    """Set each observable counter's totals on the SDK's aggregations where that is exact.

    Args:
        instruments: the observable counters, by name.
    """

    def __init__(self, instruments: dict[str, object]) -> None:
        self._targets = {
            name: SdkAggregations(instrument, _counter_merges, _SELF_TEST)
            for name, instrument in instruments.items()
        }
        self._merging: dict[str, bool] = {}

    def observe(self, name: str, totals: Iterable[Total]) -> list[Observation]:
        """Set counter `name`'s totals on the SDK where it can; else (or for a counter this
        feed does not know) the observations its callback must return."""
        target = self._targets.get(name)
        if target is None or not self._merges(name, target):
            return [Observation(value, attributes) for attributes, value, _ in totals]
        _set_totals(target, name, totals)
        return []

    def _merges(self, name: str, target: SdkAggregations) -> bool:
        if target.stale():
            self._merging[name] = target.plan()
        if not self._merging.get(name):
            return False
        # Observations would carry exemplars when the filter samples them: only the SDK's
        # trace-based filter (with no span sampled on this thread) and its off filter do not.
        from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, TraceBasedExemplarFilter

        chosen = target.exemplar_filter()
        if type(chosen) is AlwaysOffExemplarFilter:
            return True
        return type(chosen) is TraceBasedExemplarFilter and not chosen.should_sample(
            0, 0, None, get_current()
        )


def _set_totals(target: SdkAggregations, name: str, totals: Iterable[Total]) -> None:
    found: dict[int, list[Any]] = {}  # aggregation id -> [aggregation, sum of its totals]
    for attributes, value, kept in totals:
        keys = kept.get(name)
        if keys is None or not keys.current(target):
            keys = kept[name] = target.keys(attributes)
        for aggregation, _ in target.each(keys):
            entry = found.get(id(aggregation))
            if entry is None:
                found[id(aggregation)] = [aggregation, value]
            else:
                entry[1] += value
    for aggregation, value in found.values():
        with aggregation._lock:
            aggregation._value = value  # what this collection's observations would add up to


def _counter_merges(instrument: Any, match: Any) -> bool:
    from opentelemetry.sdk.metrics import ObservableCounter
    from opentelemetry.sdk.metrics._internal.aggregation import _SumAggregation

    template = match._aggregation
    return (
        isinstance(instrument, ObservableCounter)
        and type(template) is _SumAggregation
        and template._instrument_is_monotonic
    )


def _self_test() -> bool:
    """Whether `_set_totals` gives what observations give, over two collections."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    rounds = ((3, 2.5), (7, 2.5))

    def collect(merge: bool) -> list[object]:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        feed: list[CounterFeed] = []
        step = iter(rounds)

        def callback(options: object) -> list[Observation]:
            a, b = next(step)
            totals: list[Total] = [({"s": "a"}, a, {}), ({"s": "b", "n": 1}, b, {})]
            if merge:
                return feed[0].observe("c", totals)
            return [Observation(value, attributes) for attributes, value, _ in totals]

        counter = provider.get_meter("otel_tokens.self_test").create_observable_counter(
            "c", callbacks=[callback]
        )
        feed.append(CounterFeed({"c": counter}))
        points: list[object] = []
        for _ in rounds:
            data = reader.get_metrics_data()
            assert data is not None
            metric: Any = data.resource_metrics[0].scope_metrics[0].metrics[0]
            points.append(sorted((sorted(p.attributes.items()), p.value)
                                 for p in metric.data.data_points))  # fmt: skip
        provider.shutdown()
        return points

    return collect(merge=False) == collect(merge=True)


_SELF_TEST = ("counters", _self_test)
