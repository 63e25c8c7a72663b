"""Checks of a ledger's database made through connections of the tests' own, and the
filesystems the disk-fault tests mount: shared by the ledger reliability and fault tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: How long a test waits for a child's next line, or a forked child, before calling it hung.
HANG_S = 60.0
US_PER_HOUR = 3_600_000_000
_SUMS = (
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "system_tokens", "cost_pico",
)  # fmt: skip
#: The hourly rollup recomputed from the request rows, independently of the ledger's code.
_FROM_REQUESTS = f"""SELECT key_id, at_us / {US_PER_HOUR}, provider, model, scenario, status,
    COUNT(*), {", ".join(f"COALESCE(SUM({c}), 0)" for c in _SUMS)},
    SUM(CASE WHEN cost_pico IS NULL THEN input_tokens + output_tokens ELSE 0 END), MAX(at_us)
FROM otel_tokens_requests
GROUP BY key_id, at_us / {US_PER_HOUR}, provider, model, scenario, status"""
_FROM_HOURLY = f"""SELECT key_id, hour, provider, model, scenario, status, requests,
    {", ".join(_SUMS)}, unpriced_tokens, last_at_us FROM otel_tokens_hourly"""


def select_rows(target: str | Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` read through a connection of the test's own (not the ledger's)."""
    text = os.fspath(target)
    if text.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(text) as db:
            return [tuple(row) for row in db.execute(sql).fetchall()]
    db = sqlite3.connect(text, timeout=30)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def check_consistent(target: str | Path) -> int:
    """Assert the database is sound and its hourly rollup is exactly the sum of its request
    rows (every key, hour, provider, model, scenario and status); return the request count."""
    if not os.fspath(target).startswith("postgresql://"):
        assert select_rows(target, "PRAGMA integrity_check") == [("ok",)]
    from_requests = {row[:6]: tuple(int(v) for v in row[6:])
                     for row in select_rows(target, _FROM_REQUESTS)}  # fmt: skip
    from_hourly = {row[:6]: tuple(int(v) for v in row[6:])
                   for row in select_rows(target, _FROM_HOURLY)}  # fmt: skip
    assert from_hourly == from_requests
    return sum(sums[0] for sums in from_requests.values())


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=HANG_S)


def mount_source(mountpoint: Path) -> str:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, point, *_ = line.split()
        if point == str(mountpoint):
            return source
    return ""


@contextlib.contextmanager
def mounted(mountpoint: Path, *mount_args: str) -> Iterator[str]:
    """`mount *mount_args mountpoint`, unmounted after; skips where mounting is not allowed
    (not root, no CAP_SYS_ADMIN, no loop devices)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a filesystem needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mountpoint.mkdir()
    done = run_command("mount", *mount_args, str(mountpoint))
    if done.returncode:
        pytest.skip(f"mount {' '.join(mount_args)} is not permitted here: {done.stderr.strip()}")
    try:
        yield mount_source(mountpoint)
    finally:
        if run_command("umount", str(mountpoint)).returncode:
            run_command("umount", "-l", str(mountpoint))


def sqlite_ledger_at(path: str | Path, version: int) -> sqlite3.Connection:
    """A new SQLite ledger as schema `version` made it (its first `version` migrations),
    as an open connection, for tests of what the later ones do to it."""
    from otel_tokens._ledger.schema import SQLITE_MIGRATIONS

    db = sqlite3.connect(path)
    db.execute("CREATE TABLE otel_tokens_schema (version INTEGER NOT NULL)")
    for number, statements in enumerate(SQLITE_MIGRATIONS[:version], start=1):
        for statement in statements:
            db.execute(statement)
        db.execute("INSERT INTO otel_tokens_schema (version) VALUES (?)", (number,))
    return db
