"""How fast a gateway can ask a ledger for a budget before each request, and what keeping
the budgets up to date costs the ledger's writer thread.

    python benchmarks/bench_budgets.py [--budgets 1000]

A SQLite ledger gets one budget per key for N keys, 10 team budgets and a global one, and
2,000 requests spread over them; then it times `remaining()` (the request path), the gauges'
reading of every budget, and one refresh (a tick of the writer, and a full re-read).
Absolute times depend on the machine; the point is the order of magnitude.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import timeit

from otel_tokens import Usage, UsageLedger
from otel_tokens._ledger.budgets import make_budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, default=1000, help="key budgets (default 1000)")
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="bench-budgets-"), "usage.db")
    ledger = UsageLedger(path, api_key_secret="bench-budgets-secret-0123456789")
    try:
        for i in range(args.budgets):  # straight to the store: set_budget re-reads each time
            ledger._store.put_budget(make_budget("key", f"k{i:05d}", 10), 0)
        for team in range(10):
            ledger.set_budget(100, team=f"team{team}")
        ledger.set_budget(1000)
        for i in range(2000):
            ledger.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1000,
                                output_tokens=100, api_key_id=f"k{i % args.budgets:05d}",
                                team=f"team{i % 10}"))  # fmt: skip
        ledger.flush()
        count = len(ledger.budgets())
        calls = 200_000
        took = timeit.timeit(lambda: ledger.remaining(key_id="k00042", team="team3"), number=calls)
        print(f"remaining(): {took / calls * 1e6:.2f} us a call, {count} budgets")
        took = timeit.timeit(ledger.budget_points, number=100)
        print(f"budget_points() (one collection of the gauges): {took / 100 * 1e3:.1f} ms")
        ledger._book.tick(force=True)
        started = time.perf_counter()
        ledger._book.tick(force=True)
        print(f"refresh (each tick): {(time.perf_counter() - started) * 1e3:.1f} ms")
        ledger._book.changed()
        started = time.perf_counter()
        ledger._book.tick(force=True)
        print(f"full refresh (each minute): {(time.perf_counter() - started) * 1e3:.1f} ms")
    finally:
        ledger.close()


if __name__ == "__main__":
    main()
