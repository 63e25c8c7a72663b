"""SIGKILL during steady recording loses no more than the README's bound: the requests of
the last `flush_interval_s` (1 s), whether they reached the ledger directly or through a
tracker, on SQLite and PostgreSQL; and the database is consistent when it is opened again.

The child records request n at `start + n / RATE` exactly (it paces itself to that
schedule), so the parent knows when each request was recorded. While it runs, the parent
counts the rows written every few milliseconds: a kill at that moment would lose what was
recorded after the first row not yet written, so the largest such lag over the run is the
worst the kill could have lost, at whatever moment it came; then it kills the child and
checks what the kill really lost. `python benchmarks/bench_faults.py` measures the same at
higher rates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.helpers.ledger_checks import check_consistent, select_rows

RATE = 2_000  # requests a second, steady
RUN_S = 3.0  # recorded before the kill: three flush intervals, every phase of the writer
FLUSH_INTERVAL_S = 1.0  # the ledger's default, which the README's promise is about

CHILD = """
import sys, time
from otel_tokens import Usage, UsageLedger
target, rate, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ledger = UsageLedger(target, api_key_secret="a-test-secret-of-enough-bytes")
record = ledger.record
if path == "tracker":
    from opentelemetry.metrics import NoOpMeter
    from otel_tokens import TokenTracker
    record = TokenTracker(NoOpMeter("sigkill"), ledger=ledger).record
usages = [Usage(provider="openai", model="gpt-4o-mini", input_tokens=5, output_tokens=1,
                request_id=f"r{n:08d}") for n in range(rate * 30)]
start = time.time() + 0.2
print(f"start {start!r}", flush=True)
n = 0
while True:
    due = min(int((time.time() - start) * rate), len(usages))
    while n < due:
        record(usages[n])
        n += 1
    time.sleep(0.0005)
"""


@pytest.mark.parametrize("path", ["ledger", "tracker"])
def test_sigkill_loses_at_most_the_flush_interval(target: str, path: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, target, str(RATE), path],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("start "), line
        start = float(line.split()[1])
        worst_lag_s = 0.0
        while time.time() < start + RUN_S:
            now = time.time()
            written = select_rows(target, "SELECT COUNT(*) FROM otel_tokens_requests")[0][0]
            if now > start + 0.5:  # once the first interval has passed
                worst_lag_s = max(worst_lag_s, now - (start + written / RATE))
            time.sleep(0.01)
        killed_at = time.time()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    uids = [uid for (uid,) in select_rows(target, "SELECT uid FROM otel_tokens_requests")]
    assert uids, "nothing was written in the run"
    numbers = sorted(int(uid[1:]) for uid in uids)
    assert numbers == list(range(len(numbers)))  # a prefix of what was recorded: no holes
    first_lost_at = start + len(numbers) / RATE
    lost_s = killed_at - first_lost_at
    where = "postgresql" if target.startswith("postgresql") else "sqlite"
    print(f"{path} on {where}: {len(numbers)} written, lost {lost_s:.3f} s, "
          f"worst lag {worst_lag_s:.3f} s")  # fmt: skip
    assert worst_lag_s <= FLUSH_INTERVAL_S
    assert lost_s <= FLUSH_INTERVAL_S
    assert check_consistent(target) == len(numbers)
