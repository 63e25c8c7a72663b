"""The queue between record() and the consumer: bounded, drained in the background, fork-safe."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

from otel_tokens import Usage
from otel_tokens._core import handoff as _handoff
from otel_tokens._core import tracker as _tracker
from otel_tokens.testing import InMemoryMetrics

USAGE = Usage(provider="openai", model="gpt-4o", input_tokens=3)
#: Three histogram points to fold: the consumer's slowest common case.
HEAVY = Usage(provider="openai", model="gpt-4o", input_tokens=10, output_tokens=5, latency_s=0.3)


def _wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _folded(metrics: InMemoryMetrics) -> int:
    return sum(s.requests for s in metrics.tracker._aggregator._table.all())


def test_full_queue_drops_and_counts_instead_of_growing_or_blocking(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_tracker, "QUEUE_CAPACITY", 10)  # below the batch that wakes the consumer
    monkeypatch.setattr(_handoff, "_WAKE_EVERY_S", 3600)  # and no timed wake-up either
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


def test_record_never_starts_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = InMemoryMetrics()  # setup may start the process's consumer thread
    started: list[threading.Thread] = []
    monkeypatch.setattr(threading.Thread, "start", started.append)
    for _ in range(3 * _tracker.BATCH_SIZE):
        metrics.tracker.record(USAGE)
    assert started == []
    assert _wait_until(lambda: _folded(metrics) >= 2 * _tracker.BATCH_SIZE)


@pytest.mark.parametrize("yield_every", [0, 100], ids=["tight-loop", "yielding"])
@pytest.mark.slow
def test_collections_finish_while_producers_outpace_the_consumer(
    yield_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = InMemoryMetrics()
    # A consumer slower than the producers, as on a busy machine: unaided, yielding
    # producers left it keeping up in some runs here (a backlog of 2,100 at most in 10 s).
    handoff = metrics.tracker._handoff
    consume = handoff._consume

    def slow_consume(batch: list[object]) -> None:
        time.sleep(0.01)  # 512 records per 10 ms: about a third of what two producers make
        consume(batch)

    monkeypatch.setattr(handoff, "_consume", slow_consume)
    stop = threading.Event()
    produced = [0, 0]
    collections: list[int] = []

    def produce(slot: int) -> None:
        while not stop.is_set() and produced[slot] < 5_000_000:  # bounded either way
            metrics.tracker.record(HEAVY)
            produced[slot] += 1
            if yield_every and produced[slot] % yield_every == 0:
                time.sleep(0)

    def collect() -> None:
        for _ in range(2):
            metrics.metrics()  # each must return while the producers still run
            collections.append(1)

    producers = [threading.Thread(target=produce, args=(i,)) for i in range(2)]
    for producer in producers:
        producer.start()
    # Collect only once the consumer is saturated: a standing backlog of several batches.
    assert _wait_until(lambda: len(metrics.tracker._handoff) >= 8 * _tracker.BATCH_SIZE, 60)
    collector = threading.Thread(target=collect)
    collector.start()
    collector.join(timeout=120)  # a bound for the test, not a timing assertion
    still_producing = not stop.is_set() and all(p.is_alive() for p in producers)
    stop.set()
    for producer in producers:
        producer.join()
    collector.join()
    assert len(collections) == 2 and still_producing
    accepted = metrics.value("llm.requests")
    dropped = metrics.value("otel_tokens.records.dropped", reason="queue_full")
    assert accepted + dropped == sum(produced)  # every record is either counted or a drop


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_reports_only_its_own_records() -> None:
    metrics = InMemoryMetrics()
    for _ in range(5):
        metrics.tracker.record(USAGE)
    metrics.metrics()  # folded into the totals before the fork
    for _ in range(7):
        metrics.tracker.record(USAGE)  # still queued at the fork
    pid = os.fork()
    if pid == 0:  # the child: record one, fold, report the count through the exit code
        try:
            metrics.tracker.record(USAGE)
            metrics.tracker.flush()
            os._exit(_folded(metrics))
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 1
    assert metrics.value("llm.requests") == 12  # the parent keeps all of its own


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_has_a_consumer_thread_of_its_own() -> None:
    metrics = InMemoryMetrics()
    metrics.tracker.record(USAGE)
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(_tracker.BATCH_SIZE):
                metrics.tracker.record(USAGE)
            folded = _wait_until(lambda: _folded(metrics) >= _tracker.BATCH_SIZE)
            os._exit(0 if folded else 1)
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.slow
def test_forking_while_the_consumer_folds_never_leaves_the_child_stuck() -> None:
    # A fork in the middle of a fold would copy the SDK's aggregation lock, held by the
    # consumer thread, into a child where nothing releases it. About 3 forks in 100 hit that
    # moment under this load when the fork does not wait for the batch to finish.
    metrics = InMemoryMetrics()
    stop = threading.Event()

    def keep_the_consumer_busy() -> None:
        while not stop.is_set():
            for _ in range(600):
                metrics.tracker.record(HEAVY)
            time.sleep(0.001)

    producer = threading.Thread(target=keep_the_consumer_busy)
    producer.start()
    assert _wait_until(lambda: len(metrics.tracker._handoff) > 0)
    stuck = 0
    try:
        for _ in range(60):
            pid = os.fork()
            if pid == 0:
                try:
                    metrics.tracker.record(HEAVY)  # folding it takes the series' SDK lock
                    flusher = threading.Thread(target=metrics.tracker.flush, daemon=True)
                    flusher.start()
                    flusher.join(5)  # bounded: a stuck child reports itself instead of hanging
                    os._exit(1 if flusher.is_alive() else 0)
                finally:
                    os._exit(99)
            _, status = os.waitpid(pid, 0)
            stuck += os.WEXITSTATUS(status) != 0
            time.sleep(0.01)
    finally:
        stop.set()
        producer.join()
    assert stuck == 0


def test_the_consumer_thread_outlives_a_failing_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    broken, healthy = InMemoryMetrics(), InMemoryMetrics()

    def fail() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(broken.tracker._handoff, "drain_in_batches", fail)
    for _ in range(3):
        for _ in range(_tracker.BATCH_SIZE):
            broken.tracker.record(USAGE)
            healthy.tracker.record(USAGE)
        assert _wait_until(lambda: len(healthy.tracker._handoff) == 0)
    assert _handoff._consumer._thread is not None and _handoff._consumer._thread.is_alive()


def test_records_in_a_batch_cut_short_by_keyboard_interrupt_are_counted_as_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from otel_tokens._core import aggregator as _aggregator

    metrics = InMemoryMetrics()
    real, calls = _aggregator.find_fault, [0]

    def interrupt_on_the_fourth(usage: object) -> object:
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return real(usage)

    monkeypatch.setattr(_aggregator, "find_fault", interrupt_on_the_fourth)
    with metrics.tracker._handoff._drain_lock:  # keep the consumer thread out of it
        for _ in range(10):
            metrics.tracker.record(USAGE)
    with pytest.raises(KeyboardInterrupt):
        metrics.tracker.flush()
    monkeypatch.setattr(_aggregator, "find_fault", real)
    recorded = metrics.value("llm.requests")
    interrupted = metrics.value("otel_tokens.records.dropped", reason="interrupted")
    assert (recorded, interrupted) == (3, 7)  # three folded, the rest of the batch counted


def test_record_itself_never_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_tracker, "QUEUE_CAPACITY", 4)
    metrics = InMemoryMetrics()
    with metrics.tracker._handoff._drain_lock:  # nothing folds, so the queue stays full
        for _ in range(10):
            metrics.tracker.record(USAGE)
        assert caplog.records == []  # logging may block; record() must not
    assert metrics.value("otel_tokens.records.dropped", reason="queue_full") == 6
    assert sum("is full" in r.getMessage() for r in caplog.records) == 1
