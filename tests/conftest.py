"""Shared fixtures: a real SDK MeterProvider with an in-memory reader per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_tokens import UsageLedger
from otel_tokens.testing import InMemoryMetrics
from tests.helpers.paths import ROOT  # noqa: F401  # tests import ROOT from here
from tests.helpers.workload import PRICES


@pytest.fixture
def metrics() -> Iterator[InMemoryMetrics]:
    """A tracker with the workload's price table on its own in-memory provider."""
    harness = InMemoryMetrics(prices=PRICES)
    yield harness
    harness.shutdown()


POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "a-test-secret-of-enough-bytes"


def postgres_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, as a URL whose search_path is it."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES}: {exc}")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{name}"
    finally:
        admin.execute(f"DROP SCHEMA {name} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a ledger lives: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "usage.db")
    else:
        yield from postgres_schema()


@pytest.fixture
def ledger(target: str) -> Iterator[UsageLedger]:
    opened = UsageLedger(target, api_key_secret=SECRET, flush_interval_s=0.05)
    yield opened
    opened.close()
