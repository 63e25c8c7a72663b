"""benchmarks/bench_ledger.py runs at tiny sizes and prints every number it promises.

Timings are not checked (they depend on the machine); only that each line is there,
parses, and holds positive numbers.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import POSTGRES, ROOT
from tests.helpers.postgres import postgres_problem

SIZES = ["--requests", "20000", "--ingest", "5000", "--queries", "10"]

_NUMBER = r"[\d,]+(?:\.\d+)?"
_INGEST = re.compile(
    rf"^(?P<backend>\w+) ingest, (?P<what>.+): (?P<count>{_NUMBER}) records in "
    rf"(?P<seconds>{_NUMBER}) s = (?P<rate>{_NUMBER}) records/s "
    r"\(target(?: \(SQLite's\))? >= 50,000/s: (?:met|NOT met)\)$"
)
_SEED = re.compile(
    rf"^(?P<backend>\w+) seed: (?P<requests>{_NUMBER}) requests, (?P<hourly>{_NUMBER}) hourly "
    rf"rows, (?P<mb>{_NUMBER}) MB in (?P<seconds>{_NUMBER}) s \(.+\)$"
)
_QUERY = re.compile(
    rf"^(?P<backend>\w+) query (?P<name>usage\(.+\)): median (?P<median>{_NUMBER}) ms, "
    rf"p95 (?P<p95>{_NUMBER}) ms, first (?P<first>{_NUMBER}) ms, (?P<count>\d+) queries over "
    r"100 keys \(target < 50 ms: (?:met|NOT met)\)$"
)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_benchmark_prints_every_number(backend: str) -> None:
    if backend == "postgres":
        problem = postgres_problem(POSTGRES)
        if problem:
            pytest.skip(problem)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_ledger.py"), "--backend", backend,
         *SIZES, "--postgres", POSTGRES],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ingests = [m for line in lines if (m := _INGEST.match(line))]
    seeds = [m for line in lines if (m := _SEED.match(line))]
    queries = [m for line in lines if (m := _QUERY.match(line))]
    assert len(ingests) + len(seeds) + len(queries) == len(lines), done.stdout
    assert [m["what"].split(",")[0] for m in ingests] == [
        "live (at=now)",
        "replay (at= over 30 days)",
        "live (at=now)",
        "live (at=now)",
    ]
    assert [m["name"] for m in queries] == [
        'usage("30d", key_id=K)',
        'usage("30d", key_id=K, by=["model", "day"])',
    ]
    assert len(seeds) == 1 and _number(seeds[0]["requests"]) == 20_000
    assert {m["backend"] for m in [*ingests, *seeds, *queries]} == {backend}
    for match in ingests:
        assert _number(match["count"]) == 5000
        assert _number(match["seconds"]) > 0 and _number(match["rate"]) > 0
    for match in queries:
        assert int(match["count"]) == 10
        assert all(_number(match[k]) > 0 for k in ("median", "p95", "first"))
    for key in ("hourly", "mb", "seconds"):
        assert _number(seeds[0][key]) > 0


def test_an_unreachable_postgres_is_skipped_with_a_message() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_ledger.py"), "--backend", "postgres",
         *SIZES, "--postgres", "postgresql://nobody@127.0.0.1:1/none"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("postgres: skipped: "), done.stdout
