"""The fault benchmark runs at a small size and reports every figure (timings not checked)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_fault_benchmark_reports_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_faults.py", "--quick"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "valid records lost beside bad ones: 0 of 400" in out
    assert "failed scrapes after hostile labels: 0 of 20" in out
    assert "20/20 served with exact totals" in out
    assert re.search(r"a 10 MB JSON body: peak allocated \d+ KiB .* usage found True", out)
    assert re.search(r"never finish: HTTP 200, exact True, \d+ ms; endpoint threads: 2", out)
    for kind in ("down", "stall", "refuse"):
        assert re.search(rf"collector {kind}: [\d.]+ us, ratio to healthy [\d.]+", out)
    assert re.search(r"SIGKILL, sqlite at 2,000/s: worst lag [\d.]+ s", out)
