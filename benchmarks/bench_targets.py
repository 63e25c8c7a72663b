"""The speed targets, each measured in this run and printed as one PASS or FAIL line.

Runs `bench_record.py`, `bench_scrape.py` and `bench_ledger.py` (each as its own process,
so one's threads and caches do not slow the next), reads the ratios they print, and
prints, last, one line per target:

1. record: the whole cost per request <= 0.1 of naive SDK recording and <= 0.5 of
   prometheus_client, and 4 threads on one series keeping >= 90% of one thread's
   throughput;
2. scrape: 990 label sets on every instrument rendered in <= 1/3 of the time the
   exporter's families and prometheus_client's encoder take, byte-identical, and 20
   scrapes at once sharing renderings;
3. ledger: >= 50,000 records/s in every ingest mode of `bench_ledger.py`, on SQLite and
   PostgreSQL, the seeded ledger holding `--requests` requests (10 million, as the target
   says, by default) with a random request id each.

The whole run's time is printed last, with the 10 minutes it should stay under.

Run from the repository root: python benchmarks/bench_targets.py [--requests N]
Exits 1 when a target fails.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
INGEST_TARGET = 50_000


def _run(script: str, *args: str) -> str:
    """The standard output of `script`, echoed as it was printed."""
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=HERE.parent,
    )
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{script} failed with exit status {done.returncode}")
    return done.stdout


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    if found is None:
        raise SystemExit(f"no line matching {pattern!r} in the benchmark's output")
    return float(found.group(1))


def record_target() -> tuple[bool, str]:
    out = _run("bench_record.py", "--rounds", "30")
    naive = _number(r"whole cost / naive SDK recording = ([\d.]+)", out)
    plain = _number(r"whole cost / prometheus_client = ([\d.]+)", out)
    slower = _number(r"record\+fold ([\d.]+)x", out)  # 4 threads' time per record
    throughput = 1 / slower
    ok = naive <= 0.1 and plain <= 0.5 and throughput >= 0.9
    return ok, (
        f"record: whole/naive {naive:.2f} (<= 0.1), whole/prometheus_client {plain:.2f} "
        f"(<= 0.5), 4 threads keep {throughput:.0%} of 1 thread's throughput (>= 90%)"
    )


def scrape_target() -> tuple[bool, str]:
    out = _run("bench_scrape.py", "--rounds", "3")
    ratio = _number(r"scrape / today = ([\d.]+)", out)
    renders = int(_number(r"renderings for 20 scrapes = (\d+)", out))
    same = "identical = True" in out
    ok = ratio <= 1 / 3 and same and renders < 20
    return ok, (
        f"scrape: {ratio:.2f} of today's rendering (<= 0.33), byte-identical: {same}, "
        f"20 scrapes at once: {renders} rendering(s)"
    )


def ledger_target(requests: int) -> tuple[bool, str]:
    out = _run(
        "bench_ledger.py", "--requests", str(requests), "--ingest", "100000", "--queries", "20"
    )
    rates = re.findall(r"^(\w+) ingest, (.+?): .* = ([\d,]+) records/s", out, re.MULTILINE)
    if not rates:
        raise SystemExit("bench_ledger.py printed no ingest rate")
    slowest = min(rates, key=lambda found: float(found[2].replace(",", "")))
    low = float(slowest[2].replace(",", ""))
    skipped = "postgres: skipped" in out
    ok = low >= INGEST_TARGET and not skipped
    return ok, (
        f"ledger: slowest ingest {low:,.0f} records/s ({slowest[0]}, {slowest[1]}; "
        f">= {INGEST_TARGET:,}) over {len(rates)} modes, seeded with {requests:,} requests"
        + (", PostgreSQL skipped" if skipped else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000_000, help="seeded ledger size")
    args = parser.parse_args()
    started = time.perf_counter()
    results = [record_target(), scrape_target(), ledger_target(args.requests)]
    print()
    for n, (ok, line) in enumerate(results, 1):
        print(f"target {n} {'PASS' if ok else 'FAIL'}  {line}")
    minutes = (time.perf_counter() - started) / 60
    print(f"all targets measured in {minutes:.1f} minutes (to stay under 10)")
    raise SystemExit(0 if all(ok for ok, _ in results) else 1)


if __name__ == "__main__":
    main()
