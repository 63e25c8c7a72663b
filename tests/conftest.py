"""Shared fixtures: a real SDK MeterProvider with an in-memory reader per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the benchmarks package holds the naive baseline and workload

from benchmarks.workload import PRICES  # noqa: E402
from otel_tokens.testing import InMemoryMetrics  # noqa: E402


@pytest.fixture
def metrics() -> Iterator[InMemoryMetrics]:
    """A tracker with the workload's price table on its own in-memory provider."""
    harness = InMemoryMetrics(prices=PRICES)
    yield harness
    harness.shutdown()
