"""The prometheus_client baseline of benchmarks/bench_record.py records the same data as the
tracker: its totals, series and histogram counts match, so the benchmark's ratio compares
like with like."""

from __future__ import annotations

import pytest

from otel_tokens._core import instruments as spec
from otel_tokens.testing import InMemoryMetrics
from tests.helpers.plain_prometheus import PrometheusClientRecorder
from tests.helpers.workload import PRICES, mixed_usages


def _sample(recorder: PrometheusClientRecorder, name: str, suffix: str = "") -> float:
    total = 0.0
    for metric in recorder.registry.collect():
        for sample in metric.samples:
            if sample.name == name + suffix:
                total += sample.value
    return total


def test_the_baseline_records_what_the_tracker_records() -> None:
    usages = mixed_usages(300)
    plain = PrometheusClientRecorder(PRICES)
    metrics = InMemoryMetrics(prices=PRICES)
    for usage in usages:
        plain.record(usage)
        metrics.tracker.record(usage)
    metrics.tracker.flush()
    for counter in spec.USAGE_COUNTERS:
        ours = metrics.value(counter.name)
        theirs = _sample(plain, counter.prometheus)
        assert theirs == pytest.approx(ours, rel=1e-9, abs=1e-12), counter.name
    for histogram in spec.HISTOGRAMS:
        ours_count = metrics.histogram(histogram.name).count
        assert _sample(plain, histogram.prometheus, "_count") == ours_count, histogram.name
    assert _sample(plain, spec.REQUESTS.prometheus) == len(usages)
    metrics.shutdown()
