"""Histogram points and counter totals merged into the SDK at collection export exactly what
recording every point through the SDK's API exports: with delta and cumulative readers, views,
exemplar filters, readers added later, a meter switched off, a global proxy meter, and an SDK
whose internals are not the known ones (then the tracker records through the API)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.context import Context, get_current
from opentelemetry.metrics._internal import _ProxyMeter
from opentelemetry.sdk.metrics import (
    AlwaysOnExemplarFilter,
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
)
from opentelemetry.sdk.metrics._internal import (
    _default_meter_configurator,
    _disable_meter_configurator,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
)
from opentelemetry.sdk.metrics.view import (
    Aggregation,
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import set_span_in_context

from otel_tokens import TokenTracker, Usage
from otel_tokens._core import sdk_merge
from tests.helpers.naive import NaiveRecorder
from tests.helpers.workload import PRICES, mixed_usages

DELTA = {kind: AggregationTemporality.DELTA for kind in (Counter, Histogram, ObservableCounter)}
#: Counters whose naive sums drift in float: ours sum exact pico-dollars.
_FLOAT_COUNTERS = ("llm.usage.cost", "llm.usage.cache_savings", "llm.usage.cache_write_premium")


def _points(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[Any], Any]]:
    """Every point but the tracker's own health metrics, by metric and attributes."""
    data = reader.get_metrics_data()
    found: dict[str, dict[frozenset[Any], Any]] = {}
    if data is None:
        return found
    metrics: Iterator[Metric] = (
        m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    )
    for metric in metrics:
        if metric.name.startswith("otel_tokens."):
            continue
        series = found.setdefault(metric.name, {})
        for p in metric.data.data_points:
            key = frozenset((p.attributes or {}).items())
            if isinstance(p, HistogramDataPoint):
                exemplars = sorted(
                    (e.value, e.trace_id or 0, e.span_id or 0, sorted(e.filtered_attributes or {}))
                    for e in p.exemplars
                )
                series[key] = (p.count, p.sum, tuple(p.bucket_counts), p.min, p.max, exemplars)
            elif hasattr(p, "value"):
                series[key] = p.value
            else:  # an exponential histogram
                series[key] = (p.count, p.sum, p.min, p.max, p.positive.offset,
                               tuple(p.positive.bucket_counts))  # fmt: skip
    return found


def _assert_same(
    ours: dict[str, Any], theirs: dict[str, Any], *, exact_sums: bool = True,
    observed_zeros: bool = False,
) -> None:  # fmt: skip
    """`ours` exports what `theirs` does. Sums of floats may differ in the last bits where
    points were merged in several parts between two collections (not `exact_sums`); with a
    delta reader an observable counter reports 0 on series without news, where a counter of
    the naive recorder reports nothing (`observed_zeros`)."""
    if observed_zeros:
        for name in set(ours) - set(theirs):
            assert not name.startswith("gen_ai.") and not any(ours[name].values()), name
        ours = {name: series for name, series in ours.items() if name in theirs}
    assert set(ours) == set(theirs)
    for name, expected in theirs.items():
        got = ours[name]
        if observed_zeros and not name.startswith("gen_ai."):
            assert all(got[key] == 0 for key in set(got) - set(expected)), name
            got = {key: value for key, value in got.items() if key in expected}
        assert set(got) == set(expected), name
        for key, value in expected.items():
            if name in _FLOAT_COUNTERS:
                assert got[key] == pytest.approx(value, rel=1e-12), name
            elif isinstance(value, tuple) and not exact_sums:
                assert got[key][0] == value[0] and got[key][2:] == value[2:], (name, dict(key))
                assert got[key][1] == pytest.approx(value[1], rel=1e-12), (name, dict(key))
            else:
                assert got[key] == value, (name, dict(key))


def _histograms(points: dict[str, Any]) -> dict[str, Any]:
    """Only the histograms: the counters are observed totals, also of records made before a
    reader was added or while the meter was off."""
    return {name: series for name, series in points.items() if name.startswith("gen_ai.")}


def _one_reader() -> tuple[MeterProvider, list[InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), [reader]


class _Pair:
    """A tracker and a naive recorder on twin providers built by `make`."""

    def __init__(self, make: Callable[[], tuple[MeterProvider, list[InMemoryMetricReader]]]):
        self.provider, self.readers = make()
        self.naive_provider, self.naive_readers = make()
        self.tracker = TokenTracker(self.provider.get_meter("g"), prices=PRICES)
        self.naive = NaiveRecorder(self.naive_provider.get_meter("g"), PRICES)

    def record(self, usage: Usage, context: Context | None = None) -> None:
        from opentelemetry.context import attach, detach

        token = attach(context) if context is not None else None
        try:
            self.tracker.record(usage)
            self.naive.record(usage)
        finally:
            if token is not None:
                detach(token)

    def assert_same(self, reader: int = 0, **options: bool) -> dict[str, Any]:
        """Collect both, check they are the same (`_assert_same`), and return ours."""
        ours = _points(self.readers[reader])
        _assert_same(ours, _points(self.naive_readers[reader]), **options)
        return ours


def _merging(tracker: TokenTracker) -> list[bool]:
    return list(tracker._aggregator._histograms._summed)


def _counts_sdk_records(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    record = Histogram.record

    def counting(self: Histogram, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        record(self, *args, **kwargs)

    monkeypatch.setattr(Histogram, "record", counting)
    return calls


def test_a_plain_sdk_provider_gets_merged_points_never_one_record_call_per_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = InMemoryMetricReader()
    tracker = TokenTracker(MeterProvider(metric_readers=[reader]).get_meter("g"), prices=PRICES)
    calls = _counts_sdk_records(monkeypatch)  # after the self-test, which records 7 points
    for usage in mixed_usages(300):
        tracker.record(usage)
    data = reader.get_metrics_data()
    assert data is not None
    assert calls == [0]
    assert _merging(tracker) == [True] * 5


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_collections_between_records_export_what_recording_each_point_does(
    temporality: str,
) -> None:
    def make() -> tuple[MeterProvider, list[InMemoryMetricReader]]:
        reader = InMemoryMetricReader(
            preferred_temporality=DELTA if temporality == "delta" else None
        )
        return MeterProvider(metric_readers=[reader]), [reader]

    pair = _Pair(make)
    usages = mixed_usages(2_400, seed=11)
    for start in range(0, len(usages), 600):
        for usage in usages[start : start + 600]:
            pair.record(usage)
        # Each collection: cumulative totals, or the last 600's deltas.
        pair.assert_same(observed_zeros=temporality == "delta")
    pair.assert_same(observed_zeros=temporality == "delta")  # nothing new


def test_two_readers_each_see_every_point_once() -> None:
    def make() -> tuple[MeterProvider, list[InMemoryMetricReader]]:
        readers = [InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality=DELTA)]
        return MeterProvider(metric_readers=readers), readers

    pair = _Pair(make)
    usages = mixed_usages(1_500, seed=3)
    for n, usage in enumerate(usages):
        pair.record(usage)
        if n % 500 == 499:
            for reader in (0, 1, 0):  # the cumulative reader twice: a merge at each
                ours = _points(pair.readers[reader])
                theirs = _points(pair.naive_readers[reader])
                for name, series in theirs.items():
                    for key, value in series.items():
                        if isinstance(value, tuple):  # float sums may differ in the last bits
                            count, total, buckets, low, high, _ = value
                            got = ours[name][key]
                            assert (got[0], got[2], got[3], got[4]) == (count, buckets, low, high)
                            assert got[1] == pytest.approx(total, rel=1e-12)
                        else:
                            assert ours[name][key] == pytest.approx(value, rel=1e-12)
                assert set(ours) == set(theirs)


def test_views_that_keep_some_attributes_or_rebucket_are_honoured() -> None:
    views = [
        # Merged: the same buckets, fewer attributes (several series fold into one point).
        View(instrument_name="gen_ai.client.token.usage",
             attribute_keys={"gen_ai.provider.name", "gen_ai.token.type"}),
        # Recorded through the API: other buckets, or another aggregation.
        View(instrument_name="gen_ai.client.operation.duration",
             aggregation=ExplicitBucketHistogramAggregation((1.0, 5.0))),
        View(instrument_name="gen_ai.client.operation.time_to_first_chunk",
             aggregation=ExponentialBucketHistogramAggregation()),
        View(instrument_name="llm.requests", attribute_keys={"gen_ai.provider.name"}),
    ]  # fmt: skip

    def make() -> tuple[MeterProvider, list[InMemoryMetricReader]]:
        reader = InMemoryMetricReader()
        return MeterProvider(metric_readers=[reader], views=views), [reader]

    pair = _Pair(make)
    for usage in mixed_usages(1_000, seed=5):
        pair.record(usage)
    pair.assert_same()
    assert _merging(pair.tracker) == [True, True, False, False, True]


def test_a_reader_added_later_is_planned_for_and_one_that_cannot_merge_switches_to_record() -> None:
    pair = _Pair(_one_reader)
    usages = mixed_usages(900, seed=9)
    for usage in usages[:300]:
        pair.record(usage)
    pair.tracker.flush()  # folded, not yet merged: handed to the first reader before the switch
    exponential: dict[type, Aggregation] = {Histogram: ExponentialBucketHistogramAggregation()}
    for provider, readers in (
        (pair.provider, pair.readers),
        (pair.naive_provider, pair.naive_readers),
    ):
        late = InMemoryMetricReader(preferred_aggregation=exponential)
        provider.add_metric_reader(late)
        readers.append(late)
    for usage in usages[300:]:
        pair.record(usage)
    pair.assert_same(0, exact_sums=False)  # merged in two parts: before the reader, and after
    late_points = _histograms(_points(pair.readers[1]))
    _assert_same(late_points, _histograms(_points(pair.naive_readers[1])))
    assert late_points  # the late reader has points, exponential ones
    assert _merging(pair.tracker) == [False] * 5


def test_a_meter_switched_off_drops_points_as_the_sdk_does() -> None:
    pair = _Pair(_one_reader)
    usages = mixed_usages(900, seed=13)
    for n, configurator in enumerate((_disable_meter_configurator, _default_meter_configurator)):
        for usage in usages[n * 300 : (n + 1) * 300]:
            pair.record(usage)
        pair.tracker.flush()  # folded under the meter's state of the moment, as record() is
        for provider in (pair.provider, pair.naive_provider):
            provider._set_meter_configurator(meter_configurator=configurator)
    for usage in usages[600:]:
        pair.record(usage)
    ours, theirs = _points(pair.readers[0]), _points(pair.naive_readers[0])
    # Merged in two parts: before the meter was switched off, and after it was switched on.
    _assert_same(_histograms(ours), _histograms(theirs), exact_sums=False)
    assert sum(p[0] for p in ours["gen_ai.client.operation.duration"].values()) == 600


def test_a_global_proxy_meter_merges_once_it_has_a_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracker_meter, naive_meter = _ProxyMeter("g"), _ProxyMeter("g")
    tracker = TokenTracker(tracker_meter, prices=PRICES)
    naive = NaiveRecorder(naive_meter, PRICES)
    usages = mixed_usages(600, seed=17)
    for usage in usages[:200]:  # no provider yet: dropped by both
        tracker.record(usage)
        naive.record(usage)
    tracker.flush()
    readers = (InMemoryMetricReader(), InMemoryMetricReader())
    tracker_meter.on_set_meter_provider(MeterProvider(metric_readers=[readers[0]]))
    naive_meter.on_set_meter_provider(MeterProvider(metric_readers=[readers[1]]))
    calls = _counts_sdk_records(monkeypatch)
    for usage in usages[200:]:
        tracker.record(usage)
    tracker.flush()
    assert calls == [0]  # merged, not recorded point by point
    for usage in usages[200:]:
        naive.record(usage)
    _assert_same(_histograms(_points(readers[0])), _histograms(_points(readers[1])))


def _traced_contexts() -> list[Context | None]:
    """Contexts with a sampled span, with an unsampled one, and with none, in turn."""
    sampled = TracerProvider().get_tracer("t")
    unsampled = TracerProvider(sampler=ParentBased(ALWAYS_OFF)).get_tracer("t")
    half = TracerProvider(sampler=TraceIdRatioBased(0.5)).get_tracer("t")
    contexts: list[Context | None] = []
    for n in range(60):
        tracer = (sampled, unsampled, half)[n % 3]
        contexts.append(set_span_in_context(tracer.start_span(f"call-{n}")))
        contexts.append(None if n % 2 else get_current())
    return contexts


@pytest.mark.parametrize("exemplar_filter", ["trace_based", "always_on", "custom"])
def test_exemplars_are_the_ones_the_sdk_keeps(exemplar_filter: str) -> None:
    class LargeValues(AlwaysOnExemplarFilter):
        def should_sample(self, value: float, *args: Any) -> bool:
            return value > 1_000

    chosen = {"trace_based": None, "always_on": AlwaysOnExemplarFilter(),
              "custom": LargeValues()}[exemplar_filter]  # fmt: skip

    def make() -> tuple[MeterProvider, list[InMemoryMetricReader]]:
        reader = InMemoryMetricReader()
        if chosen is None:  # the SDK's default: trace-based
            return MeterProvider(metric_readers=[reader]), [reader]
        return MeterProvider(metric_readers=[reader], exemplar_filter=chosen), [reader]

    pair = _Pair(make)
    contexts = _traced_contexts()
    usages = [u for u in mixed_usages(240, seed=19) if u.provider == "openai"]
    # Few series, so buckets are offered often.
    for usage, context in zip(usages, contexts * 2, strict=False):
        pair.record(usage, context)
    ours = pair.assert_same()["gen_ai.client.token.usage"]
    assert any(point[5] for point in ours.values())  # exemplars were compared, not just absent


def test_points_start_when_their_first_record_was_folded() -> None:
    reader = InMemoryMetricReader()
    tracker = TokenTracker(MeterProvider(metric_readers=[reader]).get_meter("g"))
    import time

    before = time.time_ns()
    tracker.record(Usage(provider="openai", model="gpt-4o", input_tokens=5, latency_s=0.1))
    tracker.flush()
    time.sleep(0.01)  # the collection comes later: the points must not start at it
    after = time.time_ns()
    data = reader.get_metrics_data()
    assert data is not None
    for metric in data.resource_metrics[0].scope_metrics[0].metrics:
        if metric.name.startswith("gen_ai."):
            for point in metric.data.data_points:
                assert before <= point.start_time_unix_nano <= after


def test_an_sdk_whose_internals_differ_is_recorded_through_its_api(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sdk_merge, "_self_tests", {})

    def broken() -> bool:
        raise AttributeError("_ExplicitBucketHistogramAggregation has no attribute '_value'")

    from otel_tokens._core import sdk_counters, sdk_histograms

    monkeypatch.setattr(sdk_histograms, "_SELF_TEST", ("histograms", broken))
    monkeypatch.setattr(sdk_counters, "_SELF_TEST", ("counters", lambda: False))

    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        pair = _Pair(_one_reader)
        for usage in mixed_usages(500, seed=23):
            pair.record(usage)
        pair.assert_same()
    assert _merging(pair.tracker) == [False] * 5
    warned = [r.getMessage() for r in caplog.records]
    assert any("histograms are not the ones" in m for m in warned), warned
    assert any("counters are not the ones" in m for m in warned), warned


def test_a_merge_that_fails_is_counted_and_later_points_are_recorded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from otel_tokens._core import sdk_histograms
    from otel_tokens.testing import InMemoryMetrics

    metrics = InMemoryMetrics()
    usage = Usage(provider="openai", model="gpt-4o", input_tokens=5, latency_s=0.1)
    metrics.tracker.record(usage)
    real = sdk_histograms._merge_into

    def failing(*args: Any) -> None:
        raise RuntimeError("the SDK changed under us")

    monkeypatch.setattr(sdk_histograms, "_merge_into", failing)
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        metrics.metrics()
    monkeypatch.setattr(sdk_histograms, "_merge_into", real)
    assert metrics.value("otel_tokens.records.dropped", reason="internal_error") == 2
    assert any("merging histogram points" in r.getMessage() for r in caplog.records)
    metrics.tracker.record(usage)
    assert metrics.histogram("gen_ai.client.operation.duration").count == 1  # recorded, now
    assert _merging(metrics.tracker) == [False] * 5
