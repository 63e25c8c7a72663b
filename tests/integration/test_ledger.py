"""The usage ledger on real SQLite files and a real PostgreSQL server: what is recorded is
what the queries sum, whatever the period, grouping or time zone."""

from __future__ import annotations

import os
import random
import stat
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_tokens import PriceTable, TokenTracker, Usage, UsageLedger
from otel_tokens.testing import InMemoryMetrics
from tests.conftest import SECRET


def usage(key: str = "sk-alice", **fields: object) -> Usage:
    values: dict[str, object] = {
        "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1000,
        "output_tokens": 200, "cache_read_tokens": 400, "api_key": key,
    }  # fmt: skip
    values.update(fields)
    return Usage(**values)  # type: ignore[arg-type]


def test_a_tracker_writes_every_usage_with_its_cost(ledger: UsageLedger) -> None:
    tracker = TokenTracker(
        MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("ledger-test"),
        ledger=ledger,
        api_key_secret=SECRET,
    )
    sent = [
        usage("sk-alice"),
        usage("sk-alice", model="gpt-4.1", reasoning_tokens=0, status="error",
              error_type="timeout"),
        usage("sk-bob", status="canceled"),
        usage("sk-bob", model="Qwen/Qwen3-32B", provider="vllm"),  # no price
    ]  # fmt: skip
    for one in sent:
        tracker.record(one)
    tracker.flush()  # the tracker's queue, then the ledger's
    prices = PriceTable.bundled()
    rows = {
        (t.group["key"], t.group["model"]): t for t in ledger.usage("today", by=["key", "model"])
    }
    alice = ledger.usage("today", api_key="sk-alice")[0]
    assert (alice.requests, alice.succeeded, alice.failed, alice.canceled) == (2, 1, 1, 0)
    assert alice.cost_pico == sum(prices.cost_pico(u) or 0 for u in sent[:2])
    assert alice.input_tokens == 2000 and alice.cache_read_tokens == 800
    bob_unpriced = next(t for (_, model), t in rows.items() if model == "Qwen/Qwen3-32B")
    assert (bob_unpriced.cost_pico, bob_unpriced.unpriced_tokens) == (0, 1200)
    assert len(rows) == 4 and len(ledger.key_ids()) == 2
    assert all(len(key) == 16 and "sk-" not in key for key in ledger.key_ids())  # fingerprints


def test_a_request_id_counts_once_across_ledgers_on_one_database(target: str) -> None:
    """Two ledgers on one database stand for a restart, or two replicas."""
    first = UsageLedger(target, api_key_secret=SECRET)
    second = UsageLedger(target, api_key_secret=SECRET)
    try:
        for one in (first, second, first):
            one.record(usage(request_id="req-1"))
            one.record(usage(request_id="req-2", input_tokens=10, cache_read_tokens=0))
            one.flush()
        first.record(usage())  # no id: always counted
        first.record(usage())
        first.flush()
        total = second.usage("today")[0]
        assert total.requests == 4
        assert total.input_tokens == 1000 + 10 + 2 * 1000
    finally:
        first.close()
        second.close()


def test_replicas_writing_the_same_requests_at_once_count_each_once(target: str) -> None:
    """Two ledgers on one database write the same 3000 request ids, in different orders and
    small batches, at the same time: each request counts once, in the hours too."""
    replicas = [UsageLedger(target, batch_size=50, flush_interval_s=0.01) for _ in range(2)]
    ids = [f"req-{i}" for i in range(3000)]
    start = datetime(2026, 11, 10, tzinfo=timezone.utc)
    orders = [ids, list(reversed(ids))]
    try:
        threads = [
            threading.Thread(target=lambda r=r, o=o: [
                r.record(usage(request_id=i, input_tokens=int(i[4:]) + 1, cache_read_tokens=0),
                         at=start + timedelta(seconds=int(i[4:]) * 7))
                for i in o
            ])
            for r, o in zip(replicas, orders, strict=True)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for replica in replicas:
            replica.flush()
            assert replica.drops() == {}
        total = replicas[0].usage("all")[0]
        assert (total.requests, total.input_tokens) == (3000, sum(range(1, 3001)))
        by_hour = replicas[1].usage("2026-11-10..2026-11-10", by=["hour"])
        want: Counter[str] = Counter(
            f"{start + timedelta(seconds=i * 7):%Y-%m-%d %H:00}" for i in range(3000)
        )
        assert {t.group["hour"]: t.requests for t in by_hour} == want
    finally:
        for replica in replicas:
            replica.close()


def test_hourly_sums_give_what_summing_every_request_gives(ledger: UsageLedger) -> None:
    """Random requests over four days, queried by day in zones on the hour and off it, and
    over ragged periods: every answer must equal the sum over the requests themselves."""
    rng = random.Random(11)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    sent: list[tuple[datetime, Usage]] = []
    for _ in range(600):
        at = start + timedelta(seconds=rng.randrange(4 * 86_400))
        one = usage(
            rng.choice(["sk-a", "sk-b", "sk-c"]),
            model=rng.choice(["gpt-4o-mini", "gpt-4.1"]),
            input_tokens=rng.randrange(1, 5000),
            cache_read_tokens=0,
            status=rng.choice(["success", "success", "error", "canceled"]),
        )
        sent.append((at, one))
        ledger.record(one, at=at)
    ledger.flush()
    for zone in ("UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Paris"):
        tz = ZoneInfo(zone)
        got = {
            (t.group["day"], t.group["model"]): (t.requests, t.input_tokens, t.failed)
            for t in ledger.usage("2026-11-01..2026-11-03", by=["day", "model"], tz=zone)
        }
        want: Counter[tuple[str, str, str]] = Counter()
        for at, one in sent:
            local = at.astimezone(tz)
            if datetime(2026, 11, 1).date() <= local.date() <= datetime(2026, 11, 3).date():
                day = f"{local:%Y-%m-%d}"
                want[(day, one.model, "requests")] += 1
                want[(day, one.model, "input")] += one.input_tokens
                want[(day, one.model, "failed")] += one.status == "error"
        expected = {
            (day, model): (want[(day, model, "requests")], want[(day, model, "input")],
                           want[(day, model, "failed")])
            for day, model, kind in want if kind == "requests"
        }  # fmt: skip
        assert got == expected, zone


def test_a_period_that_starts_and_ends_inside_hours(ledger: UsageLedger) -> None:
    base = datetime(2026, 11, 10, 9, 0, tzinfo=timezone.utc)
    for minute in range(0, 180, 10):  # 09:00 .. 11:50, one request every 10 minutes
        ledger.record(usage(input_tokens=minute + 1, cache_read_tokens=0),
                      at=base + timedelta(minutes=minute))  # fmt: skip
    ledger.flush()
    kolkata = ledger.usage("2026-11-10..2026-11-10", tz="Asia/Kolkata")[0]  # ends 18:30 UTC
    assert kolkata.requests == 18
    by_hour = ledger.usage("2026-11-10..2026-11-10", by=["hour"], tz="Asia/Kolkata")
    assert [t.group["hour"] for t in by_hour] == [
        "2026-11-10 14:00",
        "2026-11-10 15:00",
        "2026-11-10 16:00",
        "2026-11-10 17:00",
    ]  # fmt: skip  (09:00 UTC is 14:30 in Kolkata)
    assert [t.requests for t in by_hour] == [3, 6, 6, 3]


def test_reset_one_key_then_all(ledger: UsageLedger) -> None:
    for key in ("sk-a", "sk-a", "sk-b"):
        ledger.record(usage(key))
    ledger.flush()
    assert ledger.reset(api_key="sk-a") == 2
    assert [t.requests for t in ledger.usage("today", by=["key"])] == [1]
    assert ledger.reset(all_keys=True) == 1
    assert ledger.usage("today") == []
    with pytest.raises(ValueError, match=r"a key \(key_id= or api_key=\) or all_keys=True"):
        ledger.reset()


def test_prune_deletes_what_is_older(ledger: UsageLedger) -> None:
    now = datetime.now(timezone.utc)
    ledger.record(usage(), at=now - timedelta(days=100))
    ledger.record(usage(), at=now - timedelta(days=10))
    ledger.flush()
    assert ledger.prune("90d") == 1
    assert ledger.usage("all")[0].requests == 1


def test_a_full_queue_drops_and_counts(target: str) -> None:
    ledger = UsageLedger(target, queue_size=10, batch_size=5, api_key_secret=SECRET)
    try:
        with ledger._store._lock:  # type: ignore[attr-defined]  # the writer stalls
            for _ in range(40):
                ledger.record(usage())
        ledger.flush()
        dropped = ledger.drops()["ledger_queue_full"]
        assert dropped >= 20
        assert ledger.usage("today")[0].requests == 40 - dropped
    finally:
        ledger.close()


def test_a_full_disk_makes_records_dropped_not_raised(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.db", api_key_secret=SECRET)
    try:
        ledger.record(usage())
        ledger.flush()
        store = ledger._store  # type: ignore[attr-defined]
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full"
        for _ in range(3000):
            ledger.record(usage(model="a-model-name-" + "x" * 200))
        ledger.flush()
        assert ledger.drops().get("write_failed", 0) > 0
        assert ledger.usage("today")[0].requests >= 1
    finally:
        ledger.close()


def test_a_trackers_metrics_count_what_its_ledger_dropped(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.db", queue_size=10, batch_size=5)
    metrics = InMemoryMetrics(ledger=ledger, api_key_secret=SECRET)
    try:
        with ledger._store._lock:  # type: ignore[attr-defined]  # the writer stalls
            for _ in range(40):
                metrics.tracker.record(usage())
            metrics.tracker._handoff.drain()
            dropped = metrics.value("otel_tokens.records.dropped", reason="ledger_queue_full")
        assert dropped == ledger.drops()["ledger_queue_full"] >= 20
        assert metrics.value("llm.requests") == 40  # the metrics lost nothing
    finally:
        metrics.shutdown()
        ledger.close()


def test_a_sqlite_ledger_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with UsageLedger(path) as ledger:
        ledger.record(usage(api_key=None))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_close_writes_what_is_queued(target: str) -> None:
    ledger = UsageLedger(target, flush_interval_s=3600, batch_size=1000)
    for _ in range(10):
        ledger.record(usage(api_key=None))
    ledger.close()
    with UsageLedger(target) as reopened:
        assert reopened.usage("today")[0].requests == 10


def test_a_ledger_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    UsageLedger(path).close()
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO otel_tokens_schema (version) VALUES (99)")
    with pytest.raises(ValueError, match="schema version 99, newer than"):
        UsageLedger(path)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"queue_size": 0}, "queue_size must be a positive int, got 0"),
        ({"batch_size": 0}, "batch_size must be an int from 1"),
        ({"flush_interval_s": 0}, "flush_interval_s must be seconds"),
        ({"when_full": "wait"}, "when_full must be 'drop' or 'block', got 'wait'"),
    ],
)
def test_bad_settings_are_refused_at_setup(
    tmp_path: Path, setting: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        UsageLedger(tmp_path / "usage.db", **setting)  # type: ignore[arg-type]


def test_bad_queries_say_what_to_write(ledger: UsageLedger) -> None:
    with pytest.raises(ValueError, match="unknown period 'fortnight'"):
        ledger.usage("fortnight")
    with pytest.raises(ValueError, match="cannot group usage by 'colour'"):
        ledger.usage("today", by=["colour"])
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        ledger.usage("today", tz="Mars/Olympus")
