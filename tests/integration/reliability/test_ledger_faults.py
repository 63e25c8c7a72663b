"""The usage ledger when its database fails, when its input is hostile, and when keys must
stay one id each: nothing reaches the caller, drops are counted and warned, and writing
resumes when the fault clears.

The disk faults of tests/integration/test_ledger_reliability.py (a filesystem turning
read-only, a full disk, SIGKILL, fork) are not repeated here.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_tokens import PriceTable, Usage, UsageLedger
from otel_tokens._ledger import sqlite as ledger_sqlite
from otel_tokens._ledger.reading import MissingSecretError
from otel_tokens._pricing.prices import ModelPrice
from otel_tokens.testing import InMemoryMetrics
from tests.conftest import POSTGRES, ROOT, SECRET, postgres_schema
from tests.helpers.ledger_checks import check_consistent, mounted
from tests.helpers.tcp_proxy import TcpProxy

KEY = "sk-live-a-distinctive-key-0123456789"
OTHER_SECRET = "another-secret-of-enough-bytes!!"


def _usage(n: int = 0, **fields: object) -> Usage:
    values: dict[str, object] = {"provider": "openai", "model": "gpt-4o-mini",
                                 "input_tokens": 10 + n % 7, "output_tokens": 3}  # fmt: skip
    values.update(fields)
    return Usage(**values)  # type: ignore[arg-type]


def _requests(ledger: UsageLedger, **query: object) -> int:
    return sum(t.requests for t in ledger.usage("all", **query))  # type: ignore[arg-type]


def _drop_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "ledger dropped" in r.getMessage()]


# One API key, one key id


def test_with_no_secret_anywhere_per_key_usage_works_and_survives_a_restart(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TOKENS_API_KEY_SECRET", raising=False)
    ledger = UsageLedger(target, flush_interval_s=0.05)
    metrics = InMemoryMetrics(ledger=ledger)
    with metrics.tracker.track(provider="openai", model="gpt-4o-mini", api_key=KEY) as req:
        req.input_tokens = 5
    ledger.record(_usage(api_key=KEY))
    metrics.tracker.flush()
    assert _requests(ledger, api_key=KEY) == 2
    [key_id] = [k for k in ledger.key_ids() if k]
    metrics.shutdown()
    ledger.close()

    again = UsageLedger(target)  # a restart, or another replica on the same database
    try:
        assert again.key_ids() == [key_id]
        again.record(_usage(api_key=KEY))
        again.flush()
        assert _requests(again, api_key=KEY) == 3
    finally:
        again.close()


def test_the_transport_and_track_store_one_key_under_one_id(tmp_path: Path) -> None:
    import httpx2

    from otel_tokens.httpx import MeteredTransport
    from tests.helpers.fake_providers import FakeProviders

    ledger = UsageLedger(tmp_path / "usage.db", api_key_secret=SECRET, flush_interval_s=0.05)
    metrics = InMemoryMetrics(ledger=ledger)  # the tracker itself given no secret
    with (
        FakeProviders() as server,
        httpx2.Client(transport=MeteredTransport(metrics.tracker)) as client,
    ):
        client.post(server.base_url + "/v1/chat/completions", json={"model": "gpt-4.1"},
                    headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
    with metrics.tracker.track(provider="openai", model="gpt-4.1", api_key=KEY):
        pass
    metrics.tracker.flush()
    assert len([k for k in ledger.key_ids() if k]) == 1
    assert _requests(ledger, api_key=KEY) == 2
    metrics.shutdown()
    ledger.close()


def test_a_tracker_with_another_secret_than_its_ledger_is_refused(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.db", api_key_secret=SECRET)
    try:
        with pytest.raises(ValueError, match=r"another API key fingerprint secret .* give the"):
            InMemoryMetrics(ledger=ledger, api_key_secret=OTHER_SECRET)
        InMemoryMetrics(ledger=ledger, api_key_secret=SECRET).shutdown()  # the same: fine
    finally:
        ledger.close()


def test_a_ledger_opened_with_another_secret_than_it_was_written_with_is_refused(
    target: str,
) -> None:
    UsageLedger(target, api_key_secret=SECRET).close()
    with pytest.raises(ValueError, match=r"holds key ids made with another .* secret"):
        UsageLedger(target, api_key_secret=OTHER_SECRET)
    UsageLedger(target, api_key_secret=SECRET).close()


def test_a_ledger_that_made_its_own_secret_refuses_a_tracker_with_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TOKENS_API_KEY_SECRET", raising=False)
    ledger = UsageLedger(tmp_path / "usage.db")
    ledger.record(_usage(api_key=KEY))  # makes and keeps its secret
    ledger.flush()
    try:
        with pytest.raises(ValueError, match="give the tracker the ledger's secret, or none"):
            InMemoryMetrics(ledger=ledger, api_key_secret=SECRET)
    finally:
        ledger.close()


def test_a_secret_given_only_to_the_tracker_is_the_ledgers_and_is_needed_to_look_keys_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("OTEL_TOKENS_API_KEY_SECRET", raising=False)
    path = tmp_path / "usage.db"
    ledger = UsageLedger(path)
    metrics = InMemoryMetrics(ledger=ledger, api_key_secret=SECRET)
    metrics.tracker.record(_usage(api_key=KEY))
    metrics.tracker.flush()
    metrics.shutdown()
    ledger.close()

    reader = UsageLedger(path)  # the secret is not stored: only which one it was
    try:
        with pytest.raises(MissingSecretError, match="set OTEL_TOKENS_API_KEY_SECRET"):
            reader.usage("all", api_key=KEY)
        caplog.clear()
        reader.record(_usage(api_key=KEY))  # cannot be keyed: stored without, and said
        reader.flush()
        assert any("stored without a key" in r.getMessage() for r in caplog.records)
        assert SECRET.encode() not in path.read_bytes()
    finally:
        reader.close()
    monkeypatch.setenv("OTEL_TOKENS_API_KEY_SECRET", SECRET)
    with UsageLedger(path) as keyed:
        assert _requests(keyed, api_key=KEY) == 1


def test_the_secret_a_ledger_keeps_is_readable_by_its_owner_only(target: str) -> None:
    ledger = UsageLedger(target)
    ledger.record(_usage(api_key=KEY))
    ledger.flush()
    ledger.close()
    if not target.startswith("postgresql://"):
        assert os.stat(target).st_mode & 0o777 == 0o600
        for suffix in ("-wal", "-shm"):
            if os.path.exists(target + suffix):
                assert os.stat(target + suffix).st_mode & 0o077 == 0
        return
    import psycopg

    with psycopg.connect(target) as db:
        [(acl,)] = db.execute(
            "SELECT relacl::text FROM pg_class WHERE relname = 'otel_tokens_settings' "
            "AND relnamespace = current_schema()::regnamespace"
        ).fetchall()
    assert acl is not None
    assert not any(entry.startswith("=") for entry in acl.strip("{}").split(","))  # PUBLIC


def test_a_snapshot_keyed_with_another_secret_is_not_merged(tmp_path: Path) -> None:
    with UsageLedger(tmp_path / "a.db", api_key_secret=SECRET) as first:
        first.record(_usage(api_key=KEY))
        first.export(tmp_path / "a.jsonl")
    with UsageLedger(tmp_path / "b.db", api_key_secret=OTHER_SECRET) as second:
        second.record(_usage(api_key=KEY))
        second.flush()
        with pytest.raises(ValueError, match="another API key fingerprint secret"):
            second.merge(tmp_path / "a.jsonl")
        assert _requests(second) == 1
    with UsageLedger(tmp_path / "c.db", api_key_secret=SECRET) as third:
        assert third.merge(tmp_path / "a.jsonl")["requests_added"] == 1


# Hostile input


HOSTILE = "\ud800 nul\x00 ctl\x1b\x9b " + "long" * 100


def test_hostile_strings_are_stored_made_safe_and_the_rest_of_the_batch_with_them(
    target: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = UsageLedger(target, api_key_secret=SECRET, flush_interval_s=10)
    meter = ledger.custom_meter("tool.calls", unit="{call}", dimensions=["tool"])
    try:
        for n in range(50):
            ledger.record(_usage(n, request_id=f"ok-{n}"))
        ledger.record(_usage(model=HOSTILE, request_model=HOSTILE, scenario=HOSTILE,
                             user_tier=HOSTILE, operation=HOSTILE, request_id=HOSTILE,
                             api_key_id=HOSTILE, status="error", error_type=HOSTILE))  # fmt: skip
        meter.record(dimensions={"tool": HOSTILE}, key_id=HOSTILE, idempotency_key=HOSTILE)
        for n in range(50, 100):
            ledger.record(_usage(n, request_id=f"ok-{n}"))
        ledger.flush()
        assert ledger.drops() == {}, _drop_messages(caplog)
        assert _requests(ledger) == 101
        by_model = ledger.usage("all", by=["model"])
        [hostile] = [t for t in by_model if t.group["model"] != "gpt-4o-mini"]
        assert hostile.group["model"].startswith("\ufffd nul\ufffd ctl\ufffd\ufffd long")
        assert len(hostile.group["model"]) == 256
        [event] = ledger.meter_usage("tool.calls", "all", by=["tool"])
        assert event.group["tool"].startswith("\ufffd nul")
        ledger.export(Path(ledger.target + ".jsonl") if "://" not in target else Path(os.devnull))
    finally:
        ledger.close()


def test_a_row_the_database_refuses_costs_that_row_alone(
    target: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The highest price a table takes, for the most tokens a Usage may have: $1e9, 1e21
    # pico-dollars, more than the 64-bit cost column holds (a mistyped price file).
    prices = PriceTable({"absurd": ModelPrice(input="1000000", output="1")})
    ledger = UsageLedger(target, api_key_secret=SECRET, prices=prices, flush_interval_s=10)
    try:
        for n in range(100):
            ledger.record(_usage(n, request_id=f"fine-{n}"))
        ledger.record(_usage(model="absurd", input_tokens=10**9, request_id="refused"))
        for n in range(100, 200):
            ledger.record(_usage(n, request_id=f"fine-{n}"))
        ledger.flush()
        assert _requests(ledger) == 200
        assert ledger.drops() == {"row_refused": 1}
        assert any("failed" in m for m in _drop_messages(caplog))
    finally:
        ledger.close()
    check_consistent(target)


# The database fails


@pytest.fixture
def proxied() -> Iterator[tuple[str, TcpProxy]]:
    """A PostgreSQL schema reached through a proxy the test can cut, stall and restore."""
    for url in postgres_schema():
        proxy = TcpProxy(("127.0.0.1", 5432))
        # The ledger's connections give up on a silent server after 1 s, not 30.
        yield (
            url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            + ("&tcp_user_timeout=1000&connect_timeout=2"),
            proxy,
        )
        proxy.close()


def test_postgresql_going_away_mid_run_drops_counted_and_writing_resumes(
    proxied: tuple[str, TcpProxy], caplog: pytest.LogCaptureFixture
) -> None:
    url, proxy = proxied
    ledger = UsageLedger(url, api_key_secret=SECRET, flush_interval_s=0.2)
    try:
        for n in range(100):
            ledger.record(_usage(n, request_id=f"before-{n}"))
        assert ledger.flush(timeout_s=30)
        proxy.cut()  # as a restart does: every connection closed, new ones refused
        for n in range(100):
            ledger.record(_usage(n, request_id=f"during-{n}"))  # never raises
        assert ledger.flush(timeout_s=30)
        lost = ledger.drops().get("write_failed", 0)
        assert 0 < lost <= 100
        assert any("failed" in m for m in _drop_messages(caplog))
        proxy.restore()
        for n in range(100):
            ledger.record(_usage(n, request_id=f"after-{n}"))
        assert ledger.flush(timeout_s=30)
        assert ledger.drops().get("write_failed", 0) == lost  # written, on a new connection
        assert _requests(ledger) == 300 - lost  # and the reader reconnected too
    finally:
        ledger.close()
    check_consistent(url.replace(f"127.0.0.1:{proxy.port}", "127.0.0.1:5432"))


def test_a_terminated_postgresql_session_is_reopened_without_losing_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import psycopg

    for url in postgres_schema():
        name = f"otel_tokens_test_{uuid.uuid4().hex[:8]}"
        ledger = UsageLedger(f"{url}&application_name={name}", api_key_secret=SECRET,
                             flush_interval_s=0.2)  # fmt: skip
        try:
            ledger.record(_usage(0))
            assert ledger.flush(timeout_s=30)
            with psycopg.connect(POSTGRES, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = %s", (name,))  # fmt: skip
            for n in range(50):
                ledger.record(_usage(n, request_id=f"r-{n}"))
            assert ledger.flush(timeout_s=30)
            assert ledger.drops() == {}, _drop_messages(caplog)
            assert _requests(ledger) == 51
        finally:
            ledger.close()


def test_closing_against_a_stalled_database_gives_up_within_its_timeout(
    proxied: tuple[str, TcpProxy],
) -> None:
    url, proxy = proxied
    ledger = UsageLedger(url, api_key_secret=SECRET, flush_interval_s=0.1)
    ledger.record(_usage(0))
    assert ledger.flush(timeout_s=30)
    proxy.stall()
    for n in range(500):
        ledger.record(_usage(n))
    time.sleep(0.3)  # the writer is now waiting on the silent server
    started = time.monotonic()
    ledger.close(timeout_s=0.5)  # may or may not finish, depending on the write in flight
    assert time.monotonic() - started < 5.0  # a hang bound, ten times the timeout
    proxy.restore()


def test_a_forked_child_that_cannot_reach_its_database_counts_its_rows_and_closes(
    proxied: tuple[str, TcpProxy],
) -> None:
    """A child opens its own connection when it first writes; with the server gone, its
    writer counts the batch dropped and goes on, and close() returns (its committer
    thread once died there, and close() waited for it for ever)."""
    url, proxy = proxied
    ledger = UsageLedger(url, api_key_secret=SECRET, flush_interval_s=0.1)
    ledger.record(_usage(0))
    assert ledger.flush(timeout_s=30)
    proxy.cut()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            for n in range(20):
                ledger.record(_usage(n))
            flushed = ledger.flush(timeout_s=20)
            closed = ledger.close(timeout_s=10)
            code = 0 if flushed and closed and ledger.drops() == {"write_failed": 20} else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not close within 60 s")
    proxy.restore()
    ledger.close()
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_a_sqlite_file_locked_by_another_process_drops_counted_then_writes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ledger_sqlite, "BUSY_TIMEOUT_MS", 300)
    path = tmp_path / "usage.db"
    ledger = UsageLedger(path, api_key_secret=SECRET, flush_interval_s=0.1)
    ledger.record(_usage(0))
    assert ledger.flush()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for n in range(200):
            ledger.record(_usage(n))  # never raises, never waits
        assert ledger.flush(timeout_s=30)
        lost = ledger.drops().get("write_failed", 0)
        assert lost > 0 and any("locked" in m for m in _drop_messages(caplog))
    finally:
        holder.stdin = None
        holder.terminate()
        holder.wait(30)
    for n in range(200):
        ledger.record(_usage(n))
    assert ledger.flush(timeout_s=30)
    assert ledger.drops()["write_failed"] == lost
    assert _requests(ledger) == 401 - lost
    ledger.close()
    check_consistent(path)


LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(600)
"""


def test_a_ledger_on_a_read_only_filesystem_is_refused_at_setup(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    with mounted(mountpoint, "-t", "tmpfs", "-o", "size=4m", "tmpfs"):
        UsageLedger(mountpoint / "usage.db").close()
        remount = subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)],
                                 capture_output=True, text=True, check=False)  # fmt: skip
        if remount.returncode:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        for name in ("usage.db", "new.db"):
            with pytest.raises(ValueError, match=r"cannot open the usage ledger .*Read-only.* "
                               r"it needs a file it can write"):  # fmt: skip
                UsageLedger(mountpoint / name)


def test_a_damaged_settings_row_is_a_clear_setup_error(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    UsageLedger(path, api_key_secret=SECRET).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE otel_tokens_settings SET value = 'not json'")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="damaged 'api_key_secret' setting"):
        UsageLedger(path)


EXIT_CHILD = """
import sys
from otel_tokens import Usage, UsageLedger, configure
endpoint, target, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ledger = UsageLedger(target, api_key_secret="a-test-secret-of-enough-bytes", flush_interval_s=60)
telemetry = configure(exporters="otlp", otlp_endpoint=endpoint, export_interval_s=0.2)
tracker = telemetry.tracker(ledger=ledger)
for n in range(count):
    tracker.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1))
if pause == "pause":  # until the test has made the database stop answering too
    print("stall now", flush=True)
    sys.stdin.readline()
    print("exiting", flush=True)
"""  # and exits: the telemetry and the ledger shut down at interpreter exit


def test_a_process_exits_within_one_timeout_with_both_its_collector_and_database_stuck(
    proxied: tuple[str, TcpProxy],
) -> None:
    url, proxy = proxied
    url = url.replace("&tcp_user_timeout=1000", "")  # stuck on the database for 30 s
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {**os.environ, "OTEL_TOKENS_SHUTDOWN_TIMEOUT": "2", "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", EXIT_CHILD, dead, url, "1000", "pause"],
                             env=env, text=True, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "stall now"
        proxy.stall()  # the ledger's database stops answering too
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "exiting"
        started = time.monotonic()
        child.wait(60)
        took = time.monotonic() - started
    finally:
        child.kill()
        proxy.restore()
    assert child.returncode == 0
    assert took < 2.0 + 1.0  # one timeout for both (each its own would be 4 s), and a margin


FORK_CHILD = """
import os, sys
from opentelemetry.metrics import NoOpMeter
from otel_tokens import TokenTracker, Usage, UsageLedger
ledger = UsageLedger(sys.argv[1], flush_interval_s=0.05)  # no secret: it makes one on first need
children = []
for n in range(4):  # as a pre-fork server's workers, each making its tracker after the fork
    pid = os.fork()
    if pid == 0:
        tracker = TokenTracker(NoOpMeter(f"worker-{n}"), ledger=ledger)
        tracker.record(Usage(provider="openai", model="m", input_tokens=1, api_key="sk-same"))
        tracker.flush()
        os._exit(0)
    children.append(pid)
codes = [os.waitpid(pid, 0)[1] for pid in children]
print(codes, flush=True)
"""


def test_forked_workers_share_the_secret_through_their_own_connections(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_TOKENS_API_KEY_SECRET", raising=False)
    done = subprocess.run([sys.executable, "-c", FORK_CHILD, target], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "[0, 0, 0, 0]", done.stderr
    with UsageLedger(target) as ledger:  # the secret the first worker made, kept
        fingerprint = ledger.share_keys(None)
        assert fingerprint is not None
        assert [k for k in ledger.key_ids() if k] == [fingerprint("sk-same")]
        assert _requests(ledger, api_key="sk-same") == 4


def test_a_stalled_collector_at_exit_costs_a_healthy_ledger_nothing(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        env = {**os.environ, "OTEL_TOKENS_SHUTDOWN_TIMEOUT": "2", "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", EXIT_CHILD,
             f"http://127.0.0.1:{listener.getsockname()[1]}", str(tmp_path / "u.db"), "5000",
             "no pause"],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    assert check_consistent(tmp_path / "u.db") == 5000  # the ledger closed first, whole


def test_closing_a_blocking_ledger_on_a_stuck_database_ends_within_its_timeout(
    proxied: tuple[str, TcpProxy],
) -> None:
    url, proxy = proxied
    url = url.replace("&tcp_user_timeout=1000", "")  # stuck for 30 s
    ledger = UsageLedger(url, api_key_secret=SECRET, queue_size=10, batch_size=10,
                         when_full="block", flush_interval_s=0.05)  # fmt: skip
    metrics = InMemoryMetrics(ledger=ledger)
    try:
        ledger.record(_usage(0))
        assert ledger.flush(timeout_s=30)
        proxy.stall()
        for n in range(100):
            metrics.tracker.record(_usage(n))  # the tracker's consumer blocks on the ledger
        time.sleep(0.3)
        started = time.monotonic()
        assert ledger.close(timeout_s=1.0) is False
        assert time.monotonic() - started < 5.0  # a hang bound: it used to wait for ever
        assert ledger.drops().get("ledger_closed", 0) > 0
    finally:
        proxy.restore()
        metrics.shutdown()


def test_a_read_only_postgresql_is_a_failed_write_not_a_refused_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for url in postgres_schema():
        ledger = UsageLedger(url, api_key_secret=SECRET, flush_interval_s=10)
        try:
            writer = ledger._store._db  # type: ignore[attr-defined]
            writer.execute("SET default_transaction_read_only = on")  # a standby, say
            for n in range(2000):
                ledger.record(_usage(n))
            ledger.flush()
            assert ledger.drops() == {"write_failed": 2000}  # one failed batch, not 2,000 rows
        finally:
            writer.execute("SET default_transaction_read_only = off")
            ledger.close()


def test_a_snapshot_from_an_older_ledger_with_unsafe_text_is_merged_made_safe(
    tmp_path: Path,
) -> None:
    with UsageLedger(tmp_path / "a.db", api_key_secret=SECRET) as first:
        first.record(_usage(0, request_id="one"))
        first.export(tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    lines[-1] = lines[-1].replace('"model": "gpt-4o-mini"', '"model": "gpt-4o\\n\\u0000"')
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    with UsageLedger(tmp_path / "b.db", api_key_secret=SECRET) as second:
        assert second.merge(tmp_path / "a.jsonl")["requests_added"] == 1
        [row] = second.usage("all", by=["model"])
        assert row.group["model"] == "gpt-4o\ufffd\ufffd"
