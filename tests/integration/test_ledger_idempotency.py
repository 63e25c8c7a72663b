"""The ledger's idempotency window: a request id recorded again less than a window from its
first record counts once (on SQLite and PostgreSQL, by one ledger or by replicas racing),
and two windows apart or more it counts again. The window is enforced by two unique
indexes over time cells (`schema.uid_window_indexes`); these tests put records on both
sides of every kind of cell edge."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from otel_tokens import Usage, UsageLedger
from otel_tokens._ledger import schema
from otel_tokens._ledger.schema import IDEMPOTENCY_WINDOW_US
from tests.conftest import SECRET, postgres_schema
from tests.helpers.ledger_checks import sqlite_ledger_at

WINDOW = timedelta(microseconds=IDEMPOTENCY_WINDOW_US)
US = timedelta(microseconds=1)


def _usage(request_id: str, input_tokens: int = 100) -> Usage:
    return Usage(provider="openai", model="gpt-4o-mini", input_tokens=input_tokens,
                 output_tokens=1, api_key_id="k", request_id=request_id)  # fmt: skip


def _edge() -> datetime:
    """An edge of both cell grids (a multiple of two windows), some days ago."""
    span_s = 2 * IDEMPOTENCY_WINDOW_US // 1_000_000
    edge_s = (int(time.time()) // span_s - 40 * 24 * 3600 // span_s) * span_s
    return datetime.fromtimestamp(edge_s, timezone.utc)


#: Where a first record falls, relative to an edge of the first grid: on it, just before
#: and after, halfway to the second grid's edge, on that one, and around it.
_FIRSTS = [-WINDOW / 2, -US, 0 * US, US, WINDOW / 2 - US, WINDOW / 2, WINDOW - US, WINDOW,
           WINDOW + US, WINDOW * 3 / 2]  # fmt: skip
#: How much later (or earlier) the same request id is recorded again: all less than a window.
_AGAINS = [0 * US, US, WINDOW / 3, WINDOW / 2, WINDOW - US, -US, -WINDOW / 2, -(WINDOW - US)]


def test_a_request_id_recorded_again_within_the_window_counts_once(ledger: UsageLedger) -> None:
    edge = _edge()
    pairs = [(edge + first, edge + first + again) for first in _FIRSTS for again in _AGAINS]
    for number, (at, _) in enumerate(pairs):
        ledger.record(_usage(f"req-{number}", input_tokens=number + 1), at=at)
    assert ledger.flush()
    for number, (_, again_at) in enumerate(pairs):  # a retry, in later batches
        ledger.record(_usage(f"req-{number}", input_tokens=10_000), at=again_at)
    assert ledger.flush()
    total = ledger.usage("all")[0]
    assert (total.requests, total.input_tokens) == (len(pairs), sum(range(1, len(pairs) + 1)))
    assert ledger.drops() == {}


def test_a_retry_in_the_same_batch_counts_once_and_the_first_recorded_is_kept(
    ledger: UsageLedger,
) -> None:
    """Within a batch too, the record that came first is the one stored, also when the
    retry's time is earlier (the writer sorts a batch by time cell and id)."""
    edge = _edge()
    for number, first in enumerate(_FIRSTS):
        for again in (WINDOW - US, US, -US, -(WINDOW - US)):
            name = f"req-{number}-{again}"
            ledger.record(_usage(name, input_tokens=number + 1), at=edge + first)
            ledger.record(_usage(name, input_tokens=10_000), at=edge + first + again)
    assert ledger.flush()
    total = ledger.usage("all")[0]
    assert total.requests == 4 * len(_FIRSTS)
    assert total.input_tokens == 4 * sum(range(1, len(_FIRSTS) + 1))


def test_a_request_id_recorded_two_windows_apart_or_more_counts_again(
    ledger: UsageLedger,
) -> None:
    """The window is bounded, as the README says: an id reused days later is a new request
    to the ledger."""
    edge = _edge()
    apart = [2 * WINDOW, 2 * WINDOW + US, 5 * WINDOW, timedelta(days=10)]
    for number, gap in enumerate(apart):
        for first in (-US, 0 * US, WINDOW / 2, WINDOW):
            ledger.record(_usage(f"req-{number}-{first}"), at=edge + first)
            ledger.record(_usage(f"req-{number}-{first}"), at=edge + first + gap)
    assert ledger.flush()
    assert ledger.usage("all")[0].requests == 2 * 4 * len(apart)


def test_replicas_racing_one_request_id_at_different_times_count_it_once(target: str) -> None:
    """Two ledgers on one database record the same 2000 ids at the same moment, each at a
    time less than a window from the other's, many of them across a cell edge: the
    database's unique indexes, not a check before the insert, keep each once."""
    replicas = [UsageLedger(target, batch_size=40, flush_interval_s=0.01) for _ in range(2)]
    edge = _edge()
    count = 2000

    def times(replica: int, i: int) -> datetime:
        # On either side of an edge of one grid or the other, less than a window apart.
        around = edge + (WINDOW if i % 2 else 0 * US) + 2 * WINDOW * (i % 5)
        step = IDEMPOTENCY_WINDOW_US // 2 // 1000
        offset = timedelta(microseconds=step * ((i * (7919 if replica else 104729)) % 999 + 1))
        return around - offset if replica == 0 else around + offset

    def record(replica: int) -> None:
        order = range(count) if replica == 0 else reversed(range(count))
        for i in order:
            replicas[replica].record(_usage(f"race-{i}", input_tokens=i + 1), at=times(replica, i))
            if i % 10 == 0:  # and requests of its own, in the same batches
                replicas[replica].record(_usage(f"own-{replica}-{i}", input_tokens=0),
                                         at=times(replica, i))  # fmt: skip

    try:
        threads = [threading.Thread(target=record, args=(r,)) for r in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive()
        for replica in replicas:
            assert replica.flush()
            assert replica.drops() == {}
        total = replicas[0].usage("all")[0]
        assert total.requests == count + 2 * count // 10
        assert total.input_tokens == sum(range(1, count + 1))
    finally:
        for replica in replicas:
            replica.close()


def _stored_row(uid: str, at_us: int) -> tuple[object, ...]:
    """A request row (`REQUEST_COLUMNS` order) of key "k": 100 input tokens, cost 7."""
    return (uid, at_us, "k", "openai", "gpt-4o-mini", "gpt-4o-mini", "chat", "", "", "success",
            None, 0, 100, 1, 0, 0, 0, 0, 7, None, "")  # fmt: skip


def _version_4_sqlite_ledger(path: Path, rows: list[tuple[str, int]]) -> None:
    """A SQLite ledger as version 4 made it (request ids unique for ever), holding `rows`
    (request id, time in µs), written with the hourly sums as that version wrote them."""
    db = sqlite_ledger_at(path, 4)
    columns = ", ".join(schema.REQUEST_COLUMNS)
    for uid, at_us in rows:
        db.execute(
            f"INSERT INTO otel_tokens_requests ({columns}) VALUES "
            f"({', '.join('?' for _ in schema.REQUEST_COLUMNS)})",
            _stored_row(uid, at_us),
        )
    db.execute(schema.hourly_upsert("otel_tokens_requests", greatest="MAX"))
    db.commit()
    db.close()


def test_a_version_4_ledger_keeps_its_requests_and_their_ids(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    edge = _edge()
    old = [
        (f"old-{i}", int((edge + timedelta(minutes=7 * i)).timestamp() * 1e6)) for i in range(50)
    ]
    _version_4_sqlite_ledger(path, old)
    with UsageLedger(path, api_key_secret=SECRET) as ledger:
        before = ledger.usage("all")[0]
        assert (before.requests, before.cost_pico) == (50, 350)
        for uid, at_us in old[:10]:  # retries of stored requests, at their own times
            at = datetime.fromtimestamp(at_us / 1e6, timezone.utc)
            ledger.record(_usage(uid), at=at + WINDOW / 2)
        ledger.record(_usage("new-1"))
        assert ledger.flush()
        after = ledger.usage("all")[0]
        assert after.requests == 51
        assert [row[0] for row in ledger._store.requests(0, 2**62)][:50] == [u for u, _ in old]
    db = sqlite3.connect(path)
    indexes = {row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'otel_tokens_requests'"
    )}  # fmt: skip
    db.close()
    assert indexes == {"otel_tokens_requests_key_at", "otel_tokens_requests_at",
                       "otel_tokens_requests_uid_even", "otel_tokens_requests_uid_odd"}  # fmt: skip


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_schema()


def test_a_version_4_postgres_ledger_loses_its_unique_id_constraint_only(
    postgres_url: str,
) -> None:
    psycopg = pytest.importorskip("psycopg")
    url = postgres_url
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE otel_tokens_schema (version INTEGER NOT NULL)")
        for number, statements in enumerate(schema.POSTGRES_MIGRATIONS[:4], start=1):
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO otel_tokens_schema (version) VALUES (%s)", (number,))
        edge = _edge()
        columns = ", ".join(schema.REQUEST_COLUMNS)
        db.execute(
            f"INSERT INTO otel_tokens_requests ({columns}) VALUES "
            f"({', '.join('%s' for _ in schema.REQUEST_COLUMNS)})",
            _stored_row("stored", int(edge.timestamp() * 1e6)),
        )
        db.execute(schema.hourly_upsert("otel_tokens_requests", greatest="GREATEST"))
    with UsageLedger(url, api_key_secret=SECRET) as ledger:  # migrates to version 5
        ledger.record(_usage("stored"), at=edge + WINDOW / 2)  # a retry of a stored one
        ledger.record(_usage("a"), at=edge)
        ledger.record(_usage("a"), at=edge + WINDOW - US)  # within the window: once
        ledger.record(_usage("a"), at=edge + 3 * WINDOW)  # beyond it: again
        assert ledger.flush()
        assert ledger.usage("all")[0].requests == 3
        assert ledger.drops() == {}
    with psycopg.connect(url, autocommit=True) as db:
        found = db.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = "
            "'otel_tokens_requests'::regclass AND contype = 'u'"
        ).fetchall()
        indexes = {row[0] for row in db.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'otel_tokens_requests' "
            "AND schemaname = current_schema()"
        )}  # fmt: skip
    assert found == []
    assert {"otel_tokens_requests_uid_even", "otel_tokens_requests_uid_odd"} <= indexes
