"""Time `TokenTracker.record()` against one SDK call per instrument, in one run, on one machine.

Prints, for the same mix of realistic requests recorded into two identical providers:

- the median cost of one `record()` on the caller's thread against the naive recording
  (what a request pays: the last line, `record/naive = ...`);
- the whole cost, `record()` plus folding the queue plus one collection (where the tracker
  hands its histogram points to the SDK), against naive plus one collection (the CPU a
  process spends on metering);
- both again with 4 threads recording the same series at once;
- and, last, the whole cost against plain prometheus_client recording the same data (one
  labelled Counter or Histogram call per instrument, `tests/helpers/plain_prometheus.py`),
  the baseline a gateway without OpenTelemetry would have.

Run: python benchmarks/bench_record.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_tokens import TokenTracker, Usage
from tests.helpers.naive import NaiveRecorder
from tests.helpers.plain_prometheus import PrometheusClientRecorder
from tests.helpers.workload import PRICES, mixed_usages

BATCH = 400  # below the tracker's wake-up batch, so the consumer thread stays out of the timing


class _Recorder:
    """A tracker or a naive recorder with its own provider and reader, having seen every series."""

    def __init__(self, make: Callable[[MeterProvider], Callable[[Usage], None]]) -> None:
        self.reader = InMemoryMetricReader()
        self.record = make(MeterProvider(metric_readers=[self.reader]))

    def collect(self) -> None:
        """Fold what is queued and collect once, as an export would."""
        self.reader.get_metrics_data()


def _fresh(warm_up: list[Usage]) -> tuple[_Recorder, _Recorder]:
    """A tracker and a naive recorder on identical providers, both having seen every series."""
    tracker = _Recorder(lambda p: TokenTracker(p.get_meter("b"), prices=PRICES).record)
    naive = _Recorder(lambda p: NaiveRecorder(p.get_meter("b"), PRICES).record)
    for usage in warm_up:
        tracker.record(usage)
        naive.record(usage)
    tracker.collect()
    naive.collect()
    return tracker, naive


def _per_call_ns(
    record: Callable[[Usage], None], usages: list[Usage], after: Callable[[], None]
) -> float:
    start = time.perf_counter_ns()
    for usage in usages:
        record(usage)
    elapsed = time.perf_counter_ns() - start
    after()  # untimed: fold the queue so the next batch starts from an empty one
    return elapsed / len(usages)


def hot_path(rounds: int, usages: list[Usage]) -> tuple[float, float]:
    """Median ns per call of record() (queue folded between batches, untimed) and of naive."""
    tracker, naive = _fresh(usages)
    ours, theirs = [], []
    for i in range(rounds):
        batch = usages[(i * BATCH) % len(usages) :][:BATCH]
        ours.append(_per_call_ns(tracker.record, batch, tracker.collect))
        theirs.append(_per_call_ns(naive.record, batch, lambda: None))
    return statistics.median(ours), statistics.median(theirs)


def whole_cost(rounds: int, usages: list[Usage], threads: int) -> tuple[float, float]:
    """Median ns per record including the fold and one collection, with `threads` recording
    at once (the naive recorder's collection is timed too)."""
    ours, theirs = [], []
    for _ in range(max(3, rounds // 10)):
        tracker, naive = _fresh(usages)
        ours.append(_threaded_ns(tracker.record, usages, threads, tracker.collect))
        theirs.append(_threaded_ns(naive.record, usages, threads, naive.collect))
    return statistics.median(ours), statistics.median(theirs)


def prometheus_cost(rounds: int, usages: list[Usage]) -> float:
    """Median ns per record of prometheus_client recording the same data, every series seen."""
    costs = []
    for _ in range(max(3, rounds // 10)):
        plain = PrometheusClientRecorder(PRICES)
        for usage in usages:  # every series made, as _fresh does for the others
            plain.record(usage)
        costs.append(_threaded_ns(plain.record, usages, 1, lambda: None))
    return statistics.median(costs)


def _threaded_ns(
    record: Callable[[Usage], None], usages: list[Usage], threads: int, finish: Callable[[], None]
) -> float:
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for usage in usages:
            record(usage)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter_ns()
    for worker in workers:
        worker.join()
    finish()
    return (time.perf_counter_ns() - start) / (threads * len(usages))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="timed batches (default 60)")
    args = parser.parse_args()

    mixed = mixed_usages(4000)
    one_series = [mixed[0]] * 2000

    whole_ours, whole_naive = whole_cost(args.rounds, mixed, threads=1)
    print(
        f"1 thread, whole cost:   record+fold {whole_ours:9.0f} ns  naive {whole_naive:9.0f} ns"
        f"  ratio {whole_ours / whole_naive:.2f}"
    )
    t4_ours, t4_naive = whole_cost(args.rounds, one_series, threads=4)
    t1_ours, t1_naive = whole_cost(args.rounds, one_series, threads=1)
    print(
        f"4 threads, one series:  record+fold {t4_ours:9.0f} ns  naive {t4_naive:9.0f} ns"
        f"  ratio {t4_ours / t4_naive:.2f}"
    )
    print(
        f"  naive: 4 threads take {t4_naive / t1_naive:.2f}x the time per record of 1 thread; "
        f"record+fold {t4_ours / t1_ours:.2f}x"
    )
    ours, naive = hot_path(args.rounds, mixed)
    print(f"record() on the caller's thread: {ours:7.0f} ns median   naive: {naive:7.0f} ns median")
    print(f"record/naive = {ours / naive:.3f}")
    plain = prometheus_cost(args.rounds, mixed)
    print(f"prometheus_client, same data, 1 thread: {plain:9.0f} ns")
    print(f"whole cost / naive SDK recording = {whole_ours / whole_naive:.2f}")
    print(f"whole cost / prometheus_client = {whole_ours / plain:.2f}")


if __name__ == "__main__":
    main()
