"""How long the summed endpoint takes to read and add up the worker files, per scrape.

Writes `--workers` files as `WorkerFileExporter` would (each with `--series` attribute sets
and 10 metrics: 6 integer counters, 2 float counters, 2 histograms of 16 buckets), each
held by a lock as a living worker holds it, then times `WorkerDirectory.merged()`:
the first read, a read after every worker rewrote its file (what a scrape sees when the
workers write more often than Prometheus scrapes), a read that folds 5 exited workers, and
a read of unchanged files. Run from the repository root:

    python benchmarks/bench_worker_metrics.py [--workers 16] [--series 500]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_tokens._workers.directory import WorkerDirectory
from otel_tokens._workers.files import RETIRED
from otel_tokens._workers.format import FORMAT

METRICS = 10
BOUNDS = [
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
    163.84,
]


def _attributes(series: int) -> list[dict[str, str]]:
    return [
        {"gen_ai.provider.name": f"provider-{i % 5}", "gen_ai.request.model": f"model-{i % 400}",
         "gen_ai.response.model": f"model-{i % 400}", "gen_ai.operation.name": "chat",
         "llm.status": ("success", "error")[i % 2], "llm.scenario": f"scenario-{i % 7}",
         "llm.streaming": "true"}
        for i in range(series)
    ]  # fmt: skip


def _state(worker: int, series: int, rng: random.Random) -> dict[str, Any]:
    metrics = []
    for number in range(METRICS):
        if number < 6:
            kind, rows = "sum", [[i, 1, 2, rng.randrange(10**6)] for i in range(series)]
        elif number < 8:
            kind, rows = "sum", [[i, 1, 2, rng.random() * 100] for i in range(series)]
        else:
            kind, rows = "histogram", []
            for i in range(series):
                buckets = [rng.randrange(100) for _ in range(len(BOUNDS) + 1)]
                rows.append([i, 1, 2, rng.random() * 1000, sum(buckets), 0, buckets, 0.01, 90.0])
        metrics.append({"scope": "otel_tokens", "scope_version": "1", "name": f"metric.{number}",
                        "description": "", "unit": "", "kind": kind, "monotonic": True,
                        "points": rows})  # fmt: skip
    return {"format": FORMAT, "pid": worker, "resource": {"service.name": "bench"},
            "attributes": _attributes(series), "bounds": [BOUNDS], "metrics": metrics}  # fmt: skip


def _write_all(directory: Path, workers: int, series: int, rng: random.Random) -> None:
    for worker in range(workers):
        path = directory / f"otel_tokens-{worker}-bench.json"
        if worker == 0 or path.exists():
            path.write_text(json.dumps(_state(worker, series, rng), separators=(",", ":")))


def _timed(what: str, directory: WorkerDirectory) -> None:
    started = time.perf_counter()
    directory.merged()
    print(f"  merged(), {what}: {time.perf_counter() - started:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--series", type=int, default=500)
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        locks = []
        for worker in range(args.workers):
            path = root / f"otel_tokens-{worker}-bench.json"
            path.write_text(json.dumps(_state(worker, args.series, rng), separators=(",", ":")))
            lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(lock, fcntl.LOCK_EX)
            locks.append(lock)
        size = (root / "otel_tokens-0-bench.json").stat().st_size
        print(f"{args.workers} workers x {args.series} series x {METRICS} metrics "
              f"({size / 1e6:.2f} MB a file)")  # fmt: skip
        directory = WorkerDirectory(root)
        _timed("first read", directory)
        _write_all(root, args.workers, args.series, rng)
        _timed("every file rewritten", directory)
        for lock in locks[:5]:
            os.close(lock)  # five workers exit
        _timed("folding 5 exited workers", directory)
        print(f"  retired.json: {(root / RETIRED).stat().st_size / 1e6:.2f} MB")
        _timed("nothing changed", directory)
        for lock in locks[5:]:
            os.close(lock)


if __name__ == "__main__":
    main()
