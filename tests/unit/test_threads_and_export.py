"""Exact totals from 8 threads at once, and the same export as recording naively."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric

from otel_tokens import TokenTracker, Usage
from otel_tokens.testing import InMemoryMetrics
from tests.helpers.naive import NaiveRecorder
from tests.helpers.workload import PRICES, mixed_usages


def test_eight_threads_recording_at_once_give_exact_totals() -> None:
    metrics = InMemoryMetrics()
    per_thread, threads = 2_000, 8  # 16 000: within the queue, so nothing may be dropped
    barrier = threading.Barrier(threads)
    collecting = threading.Event()

    def work(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            metrics.tracker.record(
                Usage(
                    provider="openai",
                    model="gpt-4o",
                    input_tokens=n + 1,
                    output_tokens=1,
                    cache_read_tokens=i % 2,
                    latency_s=0.5,
                )
            )

    def collect_meanwhile() -> None:
        while not collecting.is_set():
            metrics.metrics()  # collections interleave with recording

    collector = threading.Thread(target=collect_meanwhile)
    collector.start()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    collecting.set()
    collector.join()

    total = threads * per_thread
    assert metrics.value("llm.requests") == total
    assert metrics.value("llm.usage.input_tokens") == per_thread * sum(range(1, threads + 1))
    assert metrics.value("llm.usage.output_tokens") == total
    assert metrics.value("llm.usage.cache_read.input_tokens") == total // 2
    assert metrics.histogram("gen_ai.client.operation.duration").count == total
    assert metrics.histogram("gen_ai.client.token.usage", token_type="output").sum == total
    assert metrics.value("otel_tokens.records.dropped") == 0


def _points(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[object], object]]:
    data = reader.get_metrics_data()
    assert data is not None
    metrics: Iterator[Metric] = (
        m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    )
    found: dict[str, dict[frozenset[object], object]] = {}
    for metric in metrics:
        if metric.name.startswith("otel_tokens."):
            continue  # the tracker's own health metrics have no naive counterpart
        series: dict[frozenset[object], object] = {}
        for p in metric.data.data_points:
            key = frozenset(p.attributes.items())
            if isinstance(p, HistogramDataPoint):
                series[key] = (p.count, p.sum, tuple(p.bucket_counts), p.min, p.max)
            else:
                series[key] = p.value
        found[metric.name] = series
    return found


def test_export_is_identical_to_one_sdk_call_per_instrument() -> None:
    readers = (InMemoryMetricReader(), InMemoryMetricReader())
    tracker = TokenTracker(MeterProvider(metric_readers=[readers[0]]).get_meter("g"), prices=PRICES)
    naive = NaiveRecorder(MeterProvider(metric_readers=[readers[1]]).get_meter("g"), PRICES)
    for usage in mixed_usages(3_000):
        tracker.record(usage)
        naive.record(usage)

    ours, theirs = _points(readers[0]), _points(readers[1])
    assert set(ours) == set(theirs)
    for name in theirs:
        assert set(ours[name]) == set(theirs[name]), name
        for key, expected in theirs[name].items():
            if name in (
                "llm.usage.cost",
                "llm.usage.cache_savings",
                "llm.usage.cache_write_premium",
            ):
                # Naive adds floats request by request and drifts; ours sums exact pico-dollars.
                assert ours[name][key] == pytest.approx(expected, rel=1e-12), name
            else:
                assert ours[name][key] == expected, (name, dict(key))
    assert sum(len(s) for s in theirs.values()) > 500  # many series were really compared


def test_exported_cost_is_the_exact_decimal_sum() -> None:
    metrics = InMemoryMetrics(prices=PRICES)
    usages = mixed_usages(2_000)
    for usage in usages:
        metrics.tracker.record(usage)
    exact = sum(PRICES.cost_usd(u) or 0 for u in usages)
    assert metrics.value("llm.usage.cost") == pytest.approx(float(exact), rel=1e-15)


def test_histogram_exemplars_point_at_the_trace_that_recorded_them() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    metrics = InMemoryMetrics()
    tracer = TracerProvider().get_tracer("gateway")
    with tracer.start_as_current_span("llm-call") as span:
        metrics.tracker.record(Usage(provider="openai", model="gpt-4o", input_tokens=5))
        trace_id = span.get_span_context().trace_id
    metrics.tracker.flush()  # folded on this thread, after the span ended: the context travels
    (point,) = metrics.points("gen_ai.client.token.usage")
    assert [e.trace_id for e in point.exemplars] == [trace_id]
