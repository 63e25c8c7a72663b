"""The worker metrics benchmark runs and reports each case (its timings are not checked)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_the_benchmark_reports_every_case() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_worker_metrics.py", "--workers", "6", "--series", "5"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cases = re.findall(r"merged\(\), (.+): \d+\.\d\d s", done.stdout)
    assert cases == [
        "first read",
        "every file rewritten",
        "folding 5 exited workers",
        "nothing changed",
    ]
