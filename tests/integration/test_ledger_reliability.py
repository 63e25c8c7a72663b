"""The usage ledger when things go wrong around it: a process killed outright, two processes
writing one file, a disk that turns read-only or fills up, close() racing record(), fork().

Everything here is real: SQLite files, child processes, SIGKILL, and (where the machine lets
root mount) ext4 and tmpfs filesystems that the kernel itself makes read-only or full. No test
asserts on how long anything takes; every loop and every wait has a bound, and the waits are
generous hang guards, not speed checks.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otel_tokens import Usage, UsageLedger
from tests.conftest import POSTGRES, SECRET
from tests.helpers.ledger_checks import (
    HANG_S,
    check_consistent,
    mounted,
    run_command,
    select_rows,
)


def usage(request_id: str | None = None, n: int = 0, **fields: object) -> Usage:
    """A request's usage whose numbers follow from `n`, so a test can sum what it sent."""
    values: dict[str, object] = {
        "provider": "openai", "model": "gpt-4o-mini", "input_tokens": n % 997 + 1,
        "output_tokens": n % 13, "api_key": f"sk-{n % 3}", "request_id": request_id,
    }  # fmt: skip
    values.update(fields)
    return Usage(**values)  # type: ignore[arg-type]


def _count(target: str | Path, prefix: str) -> int:
    """How many request rows have a uid that starts with `prefix` (which ends in "-")."""
    end = prefix[:-1] + "."  # the character after "-": the uid index answers the range
    sql = f"SELECT COUNT(*) FROM otel_tokens_requests WHERE uid >= '{prefix}' AND uid < '{end}'"
    return int(select_rows(target, sql)[0][0])


def _uids(target: str | Path, prefix: str = "") -> set[str]:
    rows = select_rows(target, "SELECT uid FROM otel_tokens_requests")
    return {uid for (uid,) in rows if uid.startswith(prefix)}


class _Child:
    """A Python child process whose stdout lines the test reads with a hang guard."""

    def __init__(self, code: str, *args: str, stderr: Path) -> None:
        self._stderr_path = stderr
        self._stderr = stderr.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self) -> str:
        """The child's next line; fails if it ended or printed nothing for HANG_S."""
        try:
            got = self._lines.get(timeout=HANG_S)
        except queue.Empty:
            got = None
        if got is None:
            self.process.kill()
            self.process.wait(HANG_S)
            msg = f"the child ended or hung: {self._stderr_path.read_text()[-3000:]}"
            raise AssertionError(msg)
        return got

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def finish(self) -> None:
        """Kill the child if it still runs (a failed test) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(HANG_S)
        self._stderr.close()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# 1. SIGKILL mid-stream

_RECORD_UNTIL_KILLED = r"""
import sys, time
from otel_tokens import Usage, UsageLedger

target, prefix = sys.argv[1], sys.argv[2]
ledger = UsageLedger(target, api_key_secret="a-test-secret-of-enough-bytes",
                     flush_interval_s=0.05, batch_size=100, when_full="block")
base = sum(t.requests for t in ledger.usage("all"))
n = 0

def record(count):
    global n
    for _ in range(count):
        ledger.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=n % 997 + 1,
                            output_tokens=n % 13, api_key=f"sk-{n % 3}",
                            request_id=f"{prefix}{n:07d}"))
        n += 1

print("ready", flush=True)
for _ in range(1000):  # bounded; the test kills it long before the end
    record(3000)  # thirty batches: the writer is mid-transaction most of the time
    ledger.flush()
    print(f"flushed {n - 1}", flush=True)
    record(1)  # one row and no flush(): only the writer's timer writes it
    for _ in range(6000):
        if sum(t.requests for t in ledger.usage("all")) >= base + n:
            break
        time.sleep(0.005)
    else:
        sys.exit("the writer did not write a lone row on its timer")
    print(f"written {n - 1}", flush=True)
print("done", flush=True)
sys.stdin.read()
"""


def _wait_sessions_gone(application_name: str) -> None:
    """Wait until PostgreSQL has no session left of a killed client, so that nothing of it
    can still commit while the test reads."""
    sql = f"SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{application_name}'"
    for _ in range(int(HANG_S / 0.01)):
        if select_rows(POSTGRES, sql) == [(0,)]:
            return
        time.sleep(0.01)
    pytest.fail(f"the sessions of {application_name} never ended")


def test_sigkill_mid_stream_loses_only_rows_not_yet_committed(target: str, tmp_path: Path) -> None:
    """A child records numbered requests (flush_interval_s=0.05, batch_size=100) and is
    killed with SIGKILL mid-stream, three times on one database: once right after it
    acknowledged a commit, twice while its writer is halfway through a 3000-row burst.

    What is checked after each kill, and why it is the honest form of "a process killed
    outright loses at most what was queued in the last flush_interval_s":

    * every row known committed before the kill is there: rows the child flushed (it
      prints "flushed k" once flush() returned), a lone row it left to the writer's timer
      with no flush() call and watched appear (it prints "written k"), and the rows the
      test itself saw committed through its own connection;
    * what survives is exactly a prefix 0..m of the recording order, m at or past all of
      those: the loss is only the tail not yet committed, never an older row, never a hole;
    * the file passes PRAGMA integrity_check, opens again as a ledger, and its hourly
      rollup equals the sums of its request rows (a batch and its sums commit together).

    The wall-clock half of the claim (that tail is at most flush_interval_s long) depends
    on the writer thread being scheduled and the disk answering, which no test can assert
    without timing; what makes it true is checked instead: the timer writes a row without
    a flush() call, and commits are in order, so a kill loses only what was recorded since
    the last commit.
    """
    postgres = target.startswith("postgresql://")
    # Kill right after an acknowledgement, then twice while the writer is mid-burst: once
    # the test itself sees 100, then 700, rows past the acknowledged one committed.
    for round_, (lines, beyond) in enumerate(((4, 0), (5, 100), (6, 700))):
        prefix = f"round{round_}-"
        named = f"{target}&application_name={prefix}killed" if postgres else target
        child = _Child(_RECORD_UNTIL_KILLED, named, prefix, stderr=tmp_path / "child.err")
        committed = 0  # rows known committed: acknowledged by the child or seen by the test
        try:
            assert child.line() == "ready"
            for _ in range(lines):  # "flushed k" and "written k" alternate
                kind, _, number = child.line().partition(" ")
                assert kind in ("flushed", "written"), kind
                committed = int(number) + 1
            for _ in range(int(HANG_S / 0.002) if beyond else 0):
                seen = _count(target, prefix)
                if seen >= committed + beyond:
                    committed = seen
                    break
                time.sleep(0.002)
            child.process.send_signal(signal.SIGKILL)
            assert child.process.wait(HANG_S) == -signal.SIGKILL
        finally:
            child.finish()
        if postgres:  # the server ends the dead client's sessions (rolls back) on its own time
            _wait_sessions_gone(f"{prefix}killed")
        total = check_consistent(target)
        kept = sorted(int(uid.removeprefix(prefix)) for uid in _uids(target, prefix))
        assert kept == list(range(len(kept))), "a hole: a row was lost before a later one"
        assert len(kept) >= committed, (len(kept), committed)
        with UsageLedger(target) as reopened:
            assert sum(t.requests for t in reopened.usage("all")) == total


# 2. Two processes on one SQLite file

_WRITE_ALONGSIDE = r"""
import json, sqlite3, sys, time
from otel_tokens import Usage, UsageLedger

path, me, other, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()  # the barrier: both processes open the new file and write from here
ledger = UsageLedger(path, api_key_secret="a-test-secret-of-enough-bytes", batch_size=50,
                     flush_interval_s=0.05)

def one(rid, i):
    ledger.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=i % 997 + 1,
                        output_tokens=i % 13, api_key=f"sk-{i % 3}", request_id=rid))

def part(lo, hi):
    for i in range(lo, hi):
        one(f"{me}-{i:06d}", i)
        if i % 20 == 0:  # both processes record these: each must count once
            one(f"shared-{i // 20:06d}", i // 20)

half = n // 2
part(0, half)
flushed = [ledger.flush()]
watch = sqlite3.connect(path, timeout=30)
for _ in range(12000):  # until the other process's first half is in (so they overlap)
    if watch.execute("SELECT 1 FROM otel_tokens_requests WHERE uid = ?",
                     (f"{other}-{half - 1:06d}",)).fetchone():
        break
    time.sleep(0.005)
else:
    sys.exit("the other process's rows never appeared")
watch.close()
part(half, n)
flushed.append(ledger.flush())
drops = ledger.drops()
ledger.close()
print(json.dumps({"flushed": flushed, "drops": drops}), flush=True)
"""


def test_two_processes_write_one_sqlite_file_at_once(tmp_path: Path) -> None:
    """Two processes open a new ledger file at the same moment (a barrier on stdin) and
    write 20k rows each in batches of 50 (400 transactions each), plus 1000 request ids
    both record. Each waits halfway for the other's first half, so their writing surely
    overlaps. Neither drops a row, and the file holds exactly both, shared ids once."""
    path = tmp_path / "usage.db"
    n = 20_000
    children = [
        _Child(_WRITE_ALONGSIDE, str(path), me, other, str(n), stderr=tmp_path / f"{me}.err")
        for me, other in (("a", "b"), ("b", "a"))
    ]
    try:
        assert [child.line() for child in children] == ["ready", "ready"]
        for child in children:
            child.send("go\n")
        reports = [json.loads(child.line()) for child in children]
        assert [child.process.wait(HANG_S) for child in children] == [0, 0]
    finally:
        for child in children:
            child.finish()
    assert reports == [{"flushed": [True, True], "drops": {}}] * 2
    shared = n // 20
    assert check_consistent(path) == 2 * n + shared
    (tokens,) = select_rows(path, "SELECT SUM(input_tokens) FROM otel_tokens_requests")
    assert tokens[0] == 2 * sum(i % 997 + 1 for i in range(n)) + sum(
        j % 997 + 1 for j in range(shared)
    )
    rows = select_rows(path, "SELECT uid FROM otel_tokens_requests ORDER BY id")
    order = [uid[0] for (uid,) in rows if not uid.startswith("shared-")]
    runs = 1 + sum(a != b for a, b in itertools.pairwise(order))
    assert runs >= 3, "the two processes' transactions did not interleave"
    with UsageLedger(path) as reopened:
        assert reopened.usage("all")[0].requests == 2 * n + shared


# 3. A disk that turns read-only, or fills up


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real 16 MB ext4 filesystem on a loop device, mounted errors=remount-ro; yields the
    mount point and the device name (`loop0`)."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4 (e2fsprogs)")
    image = tmp_path / "disk.img"
    with image.open("wb") as file:
        file.truncate(16 << 20)
    made = run_command("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
    mountpoint = tmp_path / "mnt"
    with mounted(mountpoint, "-o", "loop,errors=remount-ro", str(image)) as source:
        yield mountpoint, Path(source).name


def _drop_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [record.getMessage() for record in caplog.records if record.name == "otel_tokens"]
    return [message for message in messages if "ledger dropped" in message]


def test_a_filesystem_turning_read_only_drops_and_warns_never_raises(
    ext4: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The kernel itself turns the ledger's filesystem read-only under the open ledger: an
    ext4 mounted errors=remount-ro is sent an error through its trigger_fs_error knob, the
    path a failing disk takes. record() goes on returning, every row is counted under
    write_failed, one warning is logged, and queries still answer from what was written.

    That the same ledger writes again once the disk is writable cannot be shown here: the
    kernel keeps such a filesystem read-only until it is unmounted, which the open ledger
    prevents. The next test shows it with the ledger's files made unwritable and writable
    again."""
    mountpoint, device = ext4
    trigger = Path(f"/sys/fs/ext4/{device}/trigger_fs_error")
    if not trigger.exists():
        pytest.skip(f"this kernel has no {trigger}")
    caplog.set_level(logging.WARNING, logger="otel_tokens")
    ledger = UsageLedger(mountpoint / "usage.db", api_key_secret=SECRET, flush_interval_s=0.05)
    try:
        for i in range(20):
            ledger.record(usage(f"before-{i}", i))
        assert ledger.flush()
        trigger.write_text("otel_tokens test: the disk fails\n")
        with pytest.raises(OSError) as refused:
            (mountpoint / "probe").write_bytes(b"x")
        assert refused.value.errno == errno.EROFS  # the kernel's read-only, not a permission
        for i in range(300):
            ledger.record(usage(f"after-{i}", i))  # never raises
        assert ledger.flush()
        assert ledger.drops() == {"write_failed": 300}
        (warning,) = _drop_warnings(caplog)
        assert "writing to" in warning and "disk I/O error" in warning
        assert ledger.usage("all")[0].requests == 20
    finally:
        ledger.close()  # must not raise either


def test_writes_resume_when_the_ledger_files_are_writable_again(
    ext4: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger's file and WAL become unwritable under the open ledger, then writable.

    A filesystem that goes read-only at runtime cannot be made writable again while a file
    on it is open (remount,ro and a read-only bind mount are refused with EBUSY while the
    ledger holds its files open for writing, and an error-remounted ext4 stays read-only
    until unmounted), so the stand-in is the ext4 immutable attribute (chattr +i): the
    kernel fails write() on the already open descriptors (EPERM rather than EROFS), which
    SQLite reports as the very SQLITE_IOERR_WRITE a read-only filesystem gives; chattr -i
    lifts it in place."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr (e2fsprogs)")
    mountpoint, _ = ext4
    path = mountpoint / "usage.db"
    files = [str(path), f"{path}-wal"]
    caplog.set_level(logging.WARNING, logger="otel_tokens")
    ledger = UsageLedger(path, api_key_secret=SECRET, flush_interval_s=0.05)
    try:
        for i in range(20):
            ledger.record(usage(f"before-{i}", i))
        assert ledger.flush()
        locked = run_command("chattr", "+i", *files)
        if locked.returncode:
            pytest.skip(f"chattr +i is not permitted here: {locked.stderr.strip()}")
        try:
            with pytest.raises(PermissionError):
                Path(files[1]).open("ab").close()
            for i in range(300):
                ledger.record(usage(f"blocked-{i}", i))  # never raises
            assert ledger.flush()
        finally:
            assert run_command("chattr", "-i", *files).returncode == 0
        assert ledger.drops() == {"write_failed": 300}
        (warning,) = _drop_warnings(caplog)
        assert "disk I/O error" in warning
        for i in range(50):
            ledger.record(usage(f"again-{i}", i))
        assert ledger.flush()
        assert ledger.drops() == {"write_failed": 300}  # nothing more dropped
    finally:
        ledger.close()
    assert _uids(path) == {f"before-{i}" for i in range(20)} | {f"again-{i}" for i in range(50)}
    assert check_consistent(path) == 70


def test_a_really_full_disk_drops_and_warns_then_writes_again_when_space_is_freed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 1 MB tmpfs that a ballast file fills to the last byte (ENOSPC from the kernel, not
    SQLite's max_page_count): rows are counted under write_failed with one warning, and once
    the ballast is deleted new rows are written; the file stays sound throughout."""
    mountpoint = tmp_path / "small"
    with mounted(mountpoint, "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"):
        caplog.set_level(logging.WARNING, logger="otel_tokens")
        path = mountpoint / "usage.db"
        ledger = UsageLedger(path, api_key_secret=SECRET, flush_interval_s=0.05, batch_size=200)
        sent = 0
        try:
            for i in range(100):
                ledger.record(usage(f"before-{i}", i))
            sent += 100
            assert ledger.flush()
            with (mountpoint / "ballast").open("wb", buffering=0) as ballast:
                for _ in range(64):  # 64 x 64 KiB is four times the disk
                    try:
                        ballast.write(b"\0" * 65536)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
                        break
                else:
                    pytest.fail("the 1 MB tmpfs never filled up")
            for _ in range(50):  # until the full disk refuses a batch
                for _ in range(200):
                    ledger.record(usage(f"full-{sent}", sent))  # never raises
                    sent += 1
                assert ledger.flush()
                if ledger.drops():
                    break
            dropped = ledger.drops().get("write_failed", 0)
            assert dropped > 0 and set(ledger.drops()) == {"write_failed"}
            (warning,) = _drop_warnings(caplog)
            assert "database or disk is full" in warning
            (mountpoint / "ballast").unlink()
            for i in range(200):
                ledger.record(usage(f"freed-{i}", i))
            sent += 200
            assert ledger.flush()
            assert ledger.drops() == {"write_failed": dropped}
        finally:
            ledger.close()
        assert {f"freed-{i}" for i in range(200)} <= _uids(path)
        assert check_consistent(path) == sent - dropped


# 4. close() racing record(), and fork()


def test_close_while_threads_record_keeps_everything_recorded_before_it(tmp_path: Path) -> None:
    """Four threads record as fast as they can while the main thread closes the ledger.
    Every record() that returned before close() was called is written (a thread notes the
    last one it saw return before the closing flag went up), the file is sound and nothing
    is counted twice."""
    path = tmp_path / "usage.db"
    ledger = UsageLedger(path, api_key_secret=SECRET, batch_size=200, flush_interval_s=0.05,
                         queue_size=5000, when_full="block")  # fmt: skip
    closing = threading.Event()
    before: dict[int, int] = {}
    errors: list[BaseException] = []

    def feed(thread: int) -> None:
        after = 0
        try:
            for i in range(200_000):  # bounded; they stop 200 rows after close() begins
                ledger.record(usage(f"t{thread}-{i:06d}", i))
                if not closing.is_set():
                    before[thread] = i
                else:
                    after += 1
                    if after == 200:
                        return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(int(HANG_S / 0.005)):  # until each thread has recorded 2000 rows
        if all(before.get(t, -1) >= 2000 for t in range(4)) or errors:
            break
        time.sleep(0.005)
    closing.set()
    ledger.close()
    for thread in threads:
        thread.join(HANG_S)
    assert errors == []
    stored = _uids(path)
    for t in range(4):
        missing = {f"t{t}-{i:06d}" for i in range(before[t] + 1)} - stored
        assert not missing, f"thread {t}: {len(missing)} rows recorded before close() lost"
    assert check_consistent(path) == len(stored)


def test_a_record_after_close_is_written_or_counted_as_dropped(tmp_path: Path) -> None:
    """Every record() is either written or counted in drops(); a request that finishes
    while its server shuts down (after close()) is no exception."""
    path = tmp_path / "usage.db"
    ledger = UsageLedger(path, api_key_secret=SECRET)
    ledger.record(usage("before-close"))
    ledger.close()
    ledger.record(usage("after-close"))  # never raises
    ledger.close()
    assert _uids(path) == {"before-close"}
    assert ledger.drops() == {"ledger_closed": 1}


def _fork(child: Callable[[], object]) -> tuple[int, int]:
    """Start `child` in a forked copy of this process; its pid, and the pipe its JSON
    result comes back on (see `_result`)."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            os.write(write, json.dumps(child()).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _result(pid: int, read: int, hang_s: float = HANG_S) -> object:
    """The forked child's result, or None if it was still running after `hang_s` (then it
    is killed)."""
    out = b""
    deadline = time.monotonic() + hang_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            chunk = os.read(read, 65536)
            if not chunk:
                break
            out += chunk
    finally:
        os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    return json.loads(out)


def test_rows_queued_at_fork_are_counted_once(tmp_path: Path) -> None:
    """A process forks while five rows without request ids wait in the queue; the child
    flushes its ledger before it ends (so does any atexit or close() in it)."""
    path = tmp_path / "usage.db"
    ledger = UsageLedger(path, api_key_secret=SECRET, flush_interval_s=3600, batch_size=1000)
    try:
        for i in range(5):
            ledger.record(usage(None, i))

        def child() -> object:
            return ledger.flush()

        assert _result(*_fork(child)) is True
    finally:
        ledger.close()
    assert check_consistent(path) == 5


def test_a_forked_child_keeps_its_rows_when_the_parent_closes_first(tmp_path: Path) -> None:
    """The daemon pattern: the parent forks and exits (closing its ledger at exit), the
    child goes on recording. Every row the child records is written or counted dropped."""
    path = tmp_path / "usage.db"
    ledger = UsageLedger(path, api_key_secret=SECRET, flush_interval_s=0.05)
    ledger.record(usage("parent-0"))
    ledger.flush()
    go_read, go_write = os.pipe()

    def child() -> object:
        os.close(go_write)
        os.read(go_read, 1)  # until the parent has closed its ledger
        for i in range(3):
            ledger.record(usage(f"child-{i}", i))
        return {"flushed": ledger.flush(), "drops": ledger.drops()}

    started = _fork(child)
    os.close(go_read)
    ledger.close()
    os.write(go_write, b"x")
    os.close(go_write)
    result = _result(*started)
    assert isinstance(result, dict)
    assert result["flushed"] is True
    assert result["drops"] == {}
    assert _uids(path, "child-") == {"child-0", "child-1", "child-2"}  # its own connection


def test_a_child_forked_while_the_writer_writes_can_flush(tmp_path: Path) -> None:
    """Holding the store's lock from another thread stands for the writer being inside a
    transaction at the instant of fork(), which under load is most of the time (in a
    scratch run, 15 of 20 children forked while a thread recorded hung). The child's
    flush(timeout_s=0.5) must return; the test gives it ten times that before calling it
    hung."""
    path = tmp_path / "usage.db"
    ledger = UsageLedger(path, api_key_secret=SECRET, flush_interval_s=0.05)
    store_lock: threading.Lock = ledger._store._lock  # type: ignore[attr-defined]
    inside, leave = threading.Event(), threading.Event()

    def writing() -> None:
        with store_lock:
            inside.set()
            leave.wait(HANG_S)

    holder = threading.Thread(target=writing)
    holder.start()
    try:
        assert inside.wait(HANG_S)

        def child() -> object:
            ledger.record(usage("child-0"))
            return ledger.flush(timeout_s=0.5)

        result = _result(*_fork(child), hang_s=5.0)
    finally:
        leave.set()
        holder.join(HANG_S)
        ledger.close()
    assert result is not None, "the forked child hung in flush()"


def test_parent_and_forked_child_both_write_through_their_own_connections(target: str) -> None:
    """After a fork, the child opens its own connection and the parent's goes on working:
    on PostgreSQL a child that closed the inherited connection would end the parent's
    session; on SQLite it would write through a handle SQLite forbids using after fork()."""
    ledger = UsageLedger(target, api_key_secret=SECRET, flush_interval_s=0.05)
    try:
        ledger.record(usage("parent-0"))
        ledger.flush()

        def child() -> object:
            ledger.record(usage("child-0"))
            flushed = ledger.flush(timeout_s=HANG_S)
            ledger.close()
            return {"flushed": flushed, "drops": ledger.drops()}

        assert _result(*_fork(child)) == {"flushed": True, "drops": {}}
        ledger.record(usage("parent-1"))
        assert ledger.flush(timeout_s=HANG_S)
        assert ledger.drops() == {}
        assert _uids(target) == {"parent-0", "parent-1", "child-0"}
    finally:
        ledger.close()


_OPEN_NEW_FILES = r"""
import sys
from otel_tokens import UsageLedger

sys.stdin.readline()  # all start together
for path in sys.argv[1:]:
    UsageLedger(path).close()
print("ok", flush=True)
"""


def test_processes_opening_the_same_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL needs it alone, and SQLite does not wait for that: three
    processes opening the same 150 new files in step must all succeed (before the fix, about
    one open in a hundred failed with "database is locked")."""
    paths = [str(tmp_path / f"usage-{i}.db") for i in range(150)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_NEW_FILES, *paths],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=HANG_S) for child in children]
    finally:
        for child in children:
            child.kill()
    assert [
        (out.strip(), child.returncode) for (out, _), child in zip(results, children, strict=True)
    ] == [("ok", 0)] * 3, [err for _, err in results]
