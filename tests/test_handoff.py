"""The queue between record() and the consumer: bounded, drained in the background, fork-safe."""

from __future__ import annotations

import os
import time

import pytest

from otel_tokens import Usage, _handoff, _tracker
from otel_tokens.testing import InMemoryMetrics

USAGE = Usage(provider="openai", model="gpt-4o", input_tokens=3)


def _wait_until(condition: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def _folded(metrics: InMemoryMetrics) -> int:
    return sum(s.requests for s in metrics.tracker._aggregator._table.all())


def test_full_queue_drops_and_counts_instead_of_growing_or_blocking(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_tracker, "QUEUE_CAPACITY", 10)  # below the batch that wakes the consumer
    metrics = InMemoryMetrics()
    for _ in range(25):
        metrics.tracker.record(USAGE)
    assert metrics.value("otel_tokens.records.dropped", reason="queue_full") == 15
    assert metrics.value("llm.requests") == 10
    assert sum("queue of 10 records" in r.getMessage() for r in caplog.records) == 1


def test_a_full_batch_is_folded_by_the_background_consumer_without_a_collection() -> None:
    metrics = InMemoryMetrics()
    for _ in range(_tracker.BATCH_SIZE + 10):
        metrics.tracker.record(USAGE)
    assert _wait_until(lambda: _folded(metrics) >= _tracker.BATCH_SIZE)


def test_consumer_thread_exits_when_idle_and_starts_again_when_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_handoff, "_IDLE_EXIT_S", 0.05)
    metrics = InMemoryMetrics()
    handoff = metrics.tracker._handoff
    for _ in range(_tracker.BATCH_SIZE):
        metrics.tracker.record(USAGE)
    assert handoff._thread is not None
    assert _wait_until(lambda: handoff._thread is None)
    for _ in range(_tracker.BATCH_SIZE):
        metrics.tracker.record(USAGE)
    assert _wait_until(lambda: _folded(metrics) == 2 * _tracker.BATCH_SIZE)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_record_what_the_parent_queued() -> None:
    metrics = InMemoryMetrics()
    for _ in range(7):
        metrics.tracker.record(USAGE)  # queued, not yet folded
    pid = os.fork()
    if pid == 0:  # the child: fold, count, and report through the exit code
        try:
            metrics.tracker.record(USAGE)
            metrics.tracker.flush()
            os._exit(_folded(metrics))
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 1  # only its own record
    assert metrics.value("llm.requests") == 7  # the parent keeps its own
