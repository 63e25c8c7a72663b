"""Budgets on real SQLite files and a real PostgreSQL server: what a budget has spent is what
was written in its period, the in-memory answer agrees with the database, two ledgers on one
database agree within one refresh, and the budget gauges report it."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from otel_tokens import PriceTable, Usage, UsageLedger
from otel_tokens._ledger import schema
from otel_tokens.testing import InMemoryMetrics
from tests.conftest import SECRET
from tests.helpers.ledger_checks import sqlite_ledger_at

PRICES = PriceTable.bundled()
#: gpt-4o-mini: 1M input tokens and 100k output tokens cost $0.21.
BIG = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1_000_000,
       "output_tokens": 100_000}  # fmt: skip


def usage(**fields: object) -> Usage:
    return Usage(**{**BIG, **fields})  # type: ignore[arg-type]


def open_ledger(target: str, **options: object) -> UsageLedger:
    settings: dict[str, object] = {"api_key_secret": SECRET, "flush_interval_s": 0.05}
    return UsageLedger(target, **{**settings, **options})  # type: ignore[arg-type]


def test_spend_counts_per_key_team_and_everything(ledger: UsageLedger) -> None:
    assert PRICES.cost_usd(usage()) == Decimal("0.21")
    ledger.set_budget(10, api_key="sk-alice")
    ledger.set_budget(1, team="search", period="day")
    ledger.set_budget(100)
    ledger.set_budget(3_000_000, team="search", unit="tokens", period="24h")
    for key, team in [("sk-alice", "search"), ("sk-alice", None), ("sk-bob", "search")]:
        ledger.record(usage(api_key=key, team=team))
    ledger.record(usage(api_key="sk-bob", model="Qwen/Qwen3-32B", provider="vllm"))  # unpriced
    assert ledger.flush()
    assert ledger.remaining(api_key="sk-alice") == Decimal("9.58")
    # A request of alice for search is under her 10, search's 1 a day, and the global 100.
    assert ledger.remaining(api_key="sk-alice", team="search") == Decimal("0.58")
    assert ledger.remaining(api_key="sk-carol") == Decimal("99.37")  # only the global one
    assert ledger.remaining(team="search", unit="tokens") == 3_000_000 - 2 * 1_100_000
    assert ledger.remaining(api_key="sk-alice", unit="tokens") is None  # no token budget of hers
    statuses = {s.budget.describe(): s for s in ledger.budget_statuses()}
    total = statuses["global: 100 usd per month (UTC)"]
    assert (total.spent, total.unpriced_tokens) == (Decimal("0.63"), 1_100_000)
    # What the memory says is what the database sums.
    database = ledger.usage("today", team="search")[0]
    assert statuses["team 'search': 1 usd per day (UTC)"].spent * 10**12 == database.cost_pico


def test_setting_again_changes_the_amount_and_remove_takes_what_it_names(
    ledger: UsageLedger,
) -> None:
    ledger.set_budget(10, team="search")
    ledger.set_budget(20, team="search")
    ledger.set_budget(5, team="search", period="day")
    ledger.set_budget(7, key_id="3f9a1c0b2d4e5f60", period="week", tz="Europe/Paris")
    described = sorted(b.describe() for b in ledger.budgets())
    assert described == [
        "key '3f9a1c0b2d4e5f60': 7 usd per week (Europe/Paris)",
        "team 'search': 20 usd per month (UTC)",
        "team 'search': 5 usd per day (UTC)",
    ]
    assert ledger.remove_budget(team="search", period="day") == 1
    assert ledger.remove_budget(team="nobody") == 0
    assert ledger.remove_budget(key_id="3f9a1c0b2d4e5f60") == 1
    assert [b.describe() for b in ledger.budgets()] == ["team 'search': 20 usd per month (UTC)"]
    assert ledger.remaining(team="search") == 20
    with pytest.raises(ValueError, match="a key or for a team, not both"):
        ledger.set_budget(1, key_id="k", team="t")
    # What a gateway passes from a request is checked, not looked up as it is.
    for hostile in ({"team": ["x"]}, {"key_id": {}}, {"api_key": 5}):
        with pytest.raises(ValueError, match="takes a str or None"):
            ledger.remaining(**hostile)  # type: ignore[arg-type]
    assert ledger.remaining(team="\ud800" * 10_000) is None  # no such team: no budget


def test_requests_before_the_period_do_not_count(ledger: UsageLedger) -> None:
    now = datetime.now(timezone.utc)
    ledger.set_budget(10, team="t", period="day")
    ledger.set_budget(10, team="t", period="7d")
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    ledger.record(usage(team="t"), at=midnight - timedelta(seconds=1))  # yesterday
    ledger.record(usage(team="t"), at=now - timedelta(days=3))
    ledger.record(usage(team="t"), at=now - timedelta(days=9))  # before the 7 days
    ledger.record(usage(team="t"))
    assert ledger.flush()
    spent = {s.budget.period: s.spent for s in ledger.budget_statuses()}
    assert spent == {"day": Decimal("0.21"), "7d": Decimal("0.63")}


def test_a_retried_request_id_counts_once(ledger: UsageLedger) -> None:
    ledger.set_budget(10, team="t")
    for _ in range(3):
        ledger.record(usage(team="t", request_id="req-1"))
        assert ledger.flush()
    assert ledger.remaining(team="t") == Decimal("9.79")


def next_refresh(ledger: UsageLedger) -> None:
    """Wait (bounded) for a refresh of `ledger`'s budgets that began after this call: its
    writer thread's own, every tick, never one the test asks for."""
    seen = ledger._book.refreshes
    deadline = time.monotonic() + 30
    while ledger._book.refreshes < seen + 2:
        assert time.monotonic() < deadline, "the ledger's writer thread stopped refreshing"
        time.sleep(0.01)


def test_two_ledgers_on_one_database_agree_within_one_refresh(target: str) -> None:
    writer, reader = open_ledger(target), open_ledger(target, flush_interval_s=0.2)
    try:
        writer.set_budget(10, team="t")
        deadline = time.monotonic() + 30
        while not reader.budgets() or reader.remaining(team="t") is None:  # set by the other
            assert time.monotonic() < deadline, "the reader never saw the budget"
            time.sleep(0.01)
        writer.record(usage(team="t"))
        assert writer.flush()  # committed: the reader's next refresh must see it
        next_refresh(reader)
        assert reader.remaining(team="t") == Decimal("9.79")
        # The reader's own requests count at once when written, on top of the other's.
        reader.record(usage(team="t"))
        assert reader.flush()
        assert reader.remaining(team="t") == Decimal("9.58")
        next_refresh(writer)
        assert writer.remaining(team="t") == Decimal("9.58")
    finally:
        writer.close()
        reader.close()


def test_the_forecast_is_the_last_hours_burn_and_none_when_the_period_resets_first(
    ledger: UsageLedger,
) -> None:
    now = datetime.now(timezone.utc)
    ledger.set_budget(2, team="t", period="30d")  # a rolling window never resets
    ledger.set_budget(100, team="t", period="day")  # resets long before $100 at $0.42/h
    ledger.set_budget("0.2", team="u")
    # Both in the current UTC hour: the hour before is counted pro rata, so a record in its
    # last minutes (a run just after the hour) would count for less than its cost.
    into_hour = now - now.replace(minute=0, second=0, microsecond=0)
    ledger.record(usage(team="t"), at=now - min(timedelta(minutes=1), into_hour / 3))
    ledger.record(usage(team="t"), at=now - min(timedelta(minutes=2), into_hour * 2 / 3))
    ledger.record(usage(team="u"))
    assert ledger.flush()
    statuses = {(s.budget.subject, s.budget.period): s for s in ledger.budget_statuses()}
    rolling = statuses["t", "30d"]
    assert rolling.burn_per_hour == Decimal("0.42")
    assert rolling.exhaustion_s == pytest.approx(float(Decimal("1.58") / Decimal("0.42")) * 3600)
    assert rolling.resets_at is None
    if now.hour < 20:  # late in the UTC day the $100 could not be spent before midnight anyway
        assert statuses["t", "day"].exhaustion_s is None
    spent = statuses["u", "month"]
    assert (spent.remaining, spent.exhaustion_s) == (Decimal("-0.01"), 0.0)


def test_the_budget_gauges_report_every_budget(target: str) -> None:
    ledger = open_ledger(target)
    metrics = InMemoryMetrics(ledger=ledger, api_key_secret=SECRET)
    try:
        ledger.set_budget(1, team="search", period="24h")
        ledger.set_budget(5_000_000, unit="tokens")
        metrics.tracker.record(usage(team="search"))
        metrics.tracker.flush()
        spent = {
            (p.attributes["llm.budget.scope"], p.attributes["llm.budget.unit"]): p.value
            for p in metrics.points("llm.budget.spent")
        }
        assert spent == {("team", "USD"): pytest.approx(0.21), ("global", "{token}"): 1_100_000}
        remaining = metrics.points("llm.budget.remaining", {"llm.budget.subject": "search"})
        assert [p.value for p in remaining] == [pytest.approx(0.79)]
        exhaustion = metrics.points("llm.budget.exhaustion", {"llm.budget.period": "24h"})
        assert [p.value for p in exhaustion] == [pytest.approx(0.79 / 0.21 * 3600, rel=0.01)]
    finally:
        ledger.close()
        metrics.shutdown()


def _schema_3_ledger(path: str) -> None:
    """A SQLite ledger as the version before teams made it, with one hour of sums."""
    db = sqlite_ledger_at(path, 3)
    hour = int(time.time()) // 3600 - 2  # a whole hour, read from the sums
    db.execute(
        "INSERT INTO otel_tokens_hourly VALUES ('k', ?, 'openai', 'gpt-4o-mini', '', 'success', "
        "3, 30, 6, 0, 0, 0, 0, 1000, 0, ?)",
        (hour, hour * 3_600_000_000),
    )
    db.commit()
    db.close()


def test_a_ledger_of_the_previous_schema_gains_teams_and_keeps_its_sums(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    _schema_3_ledger(path)
    ledger = open_ledger(path)
    try:
        ledger.record(usage(api_key_id="k", team="search"))
        assert ledger.flush()
        assert ledger.usage("all")[0].requests == 4
        assert {t.group["team"]: t.requests for t in ledger.usage("all", by=["team"])} == {
            "search": 1
        }
    finally:
        ledger.close()


def test_a_replica_still_on_the_previous_version_keeps_writing_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """A rolling upgrade: one replica migrates the ledger, another one not yet upgraded goes on
    writing as it did (its INSERT names no team, its hourly sums have no team)."""
    path = str(tmp_path / "old.db")
    _schema_3_ledger(path)
    open_ledger(path).close()  # the upgraded replica migrates
    columns = [c for c in schema.REQUEST_COLUMNS if c != "team"]
    db = sqlite3.connect(path)
    now_us = int(time.time() * 1e6)
    row = {"uid": "old-1", "at_us": now_us, "key_id": "k", "provider": "openai",
           "model": "gpt-4o-mini", "request_model": "gpt-4o-mini", "operation": "chat",
           "scenario": "", "user_tier": "", "status": "success", "error_type": None,
           "streamed": 0, "input_tokens": 10, "output_tokens": 1, "cache_read_tokens": 0,
           "cache_write_tokens": 0, "reasoning_tokens": 0, "system_tokens": 0,
           "cost_pico": 7, "latency_s": None}  # fmt: skip
    with db:
        before = db.execute("SELECT COALESCE(MAX(id), 0) FROM otel_tokens_requests").fetchone()[0]
        db.execute(
            f"INSERT INTO otel_tokens_requests ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})",
            [row[c] for c in columns],
        )
        db.execute(schema.hourly_upsert("otel_tokens_requests WHERE id > ?", greatest="MAX"),
                   (before,))  # fmt: skip
    db.close()
    ledger = open_ledger(path)
    try:
        assert ledger.usage("all")[0].requests == 4
        assert ledger.usage("1h")[0].cost_pico == 7  # the old replica's row
    finally:
        ledger.close()


def test_usage_by_team_is_by_team_status_and_time_only(ledger: UsageLedger) -> None:
    ledger.record(usage(team="a", api_key_id="k1"))
    ledger.record(usage(team="a", api_key_id="k2", status="error", error_type="timeout"))
    ledger.record(usage(team="b", api_key_id="k1"))
    ledger.record(usage(api_key_id="k1"))  # no team: in no team's usage
    assert ledger.flush()
    rows = {(t.group["team"], t.group["status"]): t.requests
            for t in ledger.usage("today", by=["team", "status"])}  # fmt: skip
    assert rows == {("a", "success"): 1, ("a", "error"): 1, ("b", "success"): 1}
    assert ledger.usage("today", team="a", by=["hour"])[0].requests == 2
    with pytest.raises(ValueError, match="cannot also be grouped by or filtered to model"):
        ledger.usage("today", by=["team", "model"])
    with pytest.raises(ValueError, match="filtered to one key"):
        ledger.usage("today", team="a", key_id="k1")
    # Resetting a key takes its requests out of its teams' sums too.
    ledger.reset(key_id="k1")
    rows = {t.group["team"]: t.requests for t in ledger.usage("today", by=["team"])}
    assert rows == {"a": 1}


class _Clock:
    """The budget book's clock, moved by the test (the wall clock and the monotonic one)."""

    def __init__(self, now: datetime) -> None:
        self.now, self._moved = now, 0.0

    def time_ns(self) -> int:
        return int(self.now.timestamp() * 1e9)

    def monotonic(self) -> float:
        return time.monotonic() + self._moved

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
        self._moved += timedelta(**delta).total_seconds()


def _unreadable(calls: list[int]) -> object:
    def budgets() -> list[object]:
        calls.append(1)
        msg = "the database does not answer"
        raise OSError(msg)

    return budgets


def test_a_day_budget_starts_afresh_at_midnight_while_the_database_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_tokens._ledger import budget_book

    clock = _Clock(datetime(2026, 12, 3, 23, 50, tzinfo=timezone.utc))
    monkeypatch.setattr(budget_book, "time", clock)
    ledger = open_ledger(str(tmp_path / "usage.db"))
    try:
        ledger.set_budget(1000, team="t", unit="tokens", period="day")
        ledger.record(usage(team="t", input_tokens=1000, output_tokens=0), at=clock.now)
        assert ledger.flush()
        assert ledger.remaining(team="t", unit="tokens") == 0
        calls: list[int] = []
        monkeypatch.setattr(ledger._store, "budgets", _unreadable(calls))
        clock.advance(minutes=20)  # 00:10 the next day
        assert ledger.remaining(team="t", unit="tokens") == 1000
        (status,) = ledger.budget_statuses()
        assert status.resets_at == datetime(2026, 12, 5, tzinfo=timezone.utc)
        ledger.record(usage(team="t", input_tokens=1, output_tokens=0), at=clock.now)
        assert ledger.flush()
        assert calls  # the reads were tried, and failed
        assert ledger.remaining(team="t", unit="tokens") == 999  # this process's own write
    finally:
        ledger.close()


def test_a_database_that_cannot_be_read_is_tried_again_after_a_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(str(tmp_path / "usage.db"), flush_interval_s=0.2)
    try:
        ledger.set_budget(10, team="t")
        calls: list[int] = []
        monkeypatch.setattr(ledger._store, "budgets", _unreadable(calls))
        for _ in range(20):  # flushes ask for a read each time; a failed one pauses them
            ledger.record(usage(team="t"))
            assert ledger.flush()
        assert 1 <= len(calls) <= 3
        assert ledger.remaining(team="t") == Decimal(10) - 20 * Decimal("0.21")
    finally:
        ledger.close()


def test_a_ledger_reads_its_budgets_when_it_opens(tmp_path: Path) -> None:
    """So that the first request's remaining() neither waits on the database nor answers
    None ("no budget") for a budget that is there."""
    path = str(tmp_path / "usage.db")
    with open_ledger(path) as setter:
        setter.set_budget(10, team="t")
    ledger = open_ledger(path, flush_interval_s=60)  # its writer's first tick is 15 s away
    try:
        assert ledger._book.refreshes >= 1
        assert ledger.remaining(team="t") == 10
    finally:
        ledger.close()


def test_closing_while_a_budget_read_hangs_drops_nothing_and_says_no_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that stopped answering a read, with nothing queued: close() gives up on the
    writer in time, but there is no record to call dropped (it said "dropped 0 record(s)")."""
    ledger = open_ledger(str(tmp_path / "usage.db"), flush_interval_s=0.2)
    ledger.set_budget(10, team="t")
    inside = threading.Event()

    def hanging() -> list[object]:
        inside.set()
        time.sleep(2)
        return []

    monkeypatch.setattr(ledger._store, "budgets", hanging)
    assert inside.wait(10)  # the writer thread is in its read
    assert ledger.close(timeout_s=0.2) is False  # the writer still holds the database
    assert ledger.drops() == {}
    assert "dropped" not in caplog.text
