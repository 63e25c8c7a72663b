"""Prometheus totals that stay right when a server runs the app in several worker processes.

A pre-fork server (gunicorn, `uvicorn --workers`) runs one app in N processes, each with its
own SDK state, so any one process's `/metrics` holds only its share and a scrape lands on
one of them at random. Here each worker writes its cumulative metrics to its own file in a
shared directory, every export interval and once more at shutdown, and one endpoint, in any
process, serves their sum through the OpenTelemetry Prometheus exporter's own translation,
so the names are exactly those of a single process's endpoint.

A worker holds an exclusive `flock` on a companion `.lock` file while it lives. The kernel
releases it when the process ends, however it ends, so the endpoint knows an exited
worker's file is final: it adds it to `retired.json` (counters and histograms summed,
gauges newest-wins, up-down sums dropped), records that it did, and deletes it. Sums are
exact (fractions, not floats), so a total never goes back because of the order it was
added in; totals never go back when a worker is replaced; and the directory does not grow
with every restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from otel_tokens._base.warn import WarnOnce, logger
from otel_tokens._workers.format import FORMAT, Contribution, Merged, encode, parse

PREFIX = "otel_tokens-"
RETIRED = "retired.json"
_DIRECTORY_LOCK = ".otel_tokens.lock"
_MALFORMED = (KeyError, IndexError, TypeError, ValueError, ArithmeticError)


def check_directory(directory: str | os.PathLike[str], source: str) -> Path:
    """The directory worker metrics go to, made if missing, checked for writes and locks.

    Args:
        directory: the path.
        source: where it came from, for the error ("PROMETHEUS_MULTIPROC_DIR", "--dir").

    Raises:
        ValueError: it cannot be made or written, or cannot lock files (a network file
            system), naming where the path came from.
    """
    if fcntl is None:
        msg = f"{source}: worker metrics need file locks (fcntl), which this platform lacks"
        raise ValueError(msg)
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except OSError as exc:
        msg = (
            f"{source} {str(path)!r} cannot hold worker metrics: {exc.strerror or exc}; "
            "give a local directory this process can write"
        )
        raise ValueError(msg) from exc
    return path


_live_exporters: weakref.WeakSet[WorkerFileExporter] = weakref.WeakSet()


def _forget_parents_after_fork() -> None:
    for exporter in list(_live_exporters):
        exporter._start_afresh()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_after_fork)


class WorkerFileExporter(MetricExporter):
    """Writes this process's cumulative metrics to `<directory>/otel_tokens-<pid>-<random>.json`.

    The file is replaced whole (write, then rename), so a reader sees the previous export or
    this one, never a mix. A process forked after this was made writes a file of its own;
    its counters start from zero, but SDK histograms hold what the parent observed before
    the fork, which is why `configure()` belongs after the fork.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()  # cumulative, the default: each file holds its worker's totals
        self.directory = directory
        self._warn = WarnOnce()
        self._shut_down = False
        self._failing = False
        self._start_afresh()
        _live_exporters.add(self)

    def _start_afresh(self) -> None:
        """No file, lock or guard of a parent process (also how a forked child starts)."""
        inherited = getattr(self, "_lock_file", None)
        if inherited is not None:  # closed, not unlocked: the lock stays the parent's
            with contextlib.suppress(OSError):
                os.close(inherited)
        self._guard = threading.Lock()
        self._pid = -1
        self._name = ""
        self._lock_file: int | None = None  # a parent's is closed by the kernel at its exit
        self._lock_inode = -1

    def _claim(self) -> str:
        """The file name of this exporter in this process, holding its lock. A lock file
        that was deleted or replaced is made and taken anew."""
        pid = os.getpid()
        if self._pid != pid:
            self._name = f"{PREFIX}{pid}-{secrets.token_hex(6)}"
            self._pid = pid
        lock_path = self.directory / f"{self._name}.lock"
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = -2
        if self._lock_file is None or current != self._lock_inode:
            # Locked before it is in place: the lock path never names an unlocked file, so
            # a reader can never take this living worker for an exited one.
            temporary = self.directory / f".{self._name}.lock.tmp"
            descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.replace(temporary, lock_path)
            if self._lock_file is not None:
                os.close(self._lock_file)
            self._lock_file, self._lock_inode = descriptor, os.fstat(descriptor).st_ino
        return self._name

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Write `metrics_data` (cumulative) over this process's previous export."""
        with self._guard:
            if self._shut_down:  # its last file may be folded already: never write again
                return MetricExportResult.FAILURE
            try:
                self.directory.mkdir(parents=True, exist_ok=True)  # if emptied meanwhile
                name = self._claim()
                state, skipped = encode(metrics_data, os.getpid())
                if skipped:
                    self._warn(
                        ("skipped", tuple(skipped)),
                        "otel_tokens: worker metrics cannot sum exponential histograms; %s "
                        "are left out of the summed endpoint",
                        skipped,
                    )
                _replace(self.directory / f"{name}.json", state, durable=False)
            except (OSError, TypeError, ValueError) as exc:
                self._failing = True
                self._warn(
                    "write",
                    "otel_tokens: cannot write worker metrics to %s: %s; the summed Prometheus "
                    "endpoint shows this process's totals as of its last good write",
                    self.directory,
                    exc,
                )
                return MetricExportResult.FAILURE
            if self._failing:
                self._failing = False
                logger.warning(
                    "otel_tokens: writing worker metrics to %s works again", self.directory
                )
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Release the lock: the last export is final and may be folded."""
        with self._guard:
            self._shut_down = True
            if self._lock_file is not None and self._pid == os.getpid():
                _unlock_and_close(self._lock_file)
                self._lock_file = None


def _unlock_and_close(descriptor: int) -> None:
    """Release a lock even where a forked child shares the descriptor, then close it."""
    with contextlib.suppress(OSError):
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


def _replace(path: Path, state: dict[str, Any], *, durable: bool) -> None:
    """Write `state` as JSON over `path` at once (a reader sees the old file or the new),
    readable by this user only; `durable`: on disk before the rename (and the rename too)."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(state, out, separators=(",", ":"))
        if durable:
            out.flush()
            os.fsync(out.fileno())
    os.replace(temporary, path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@dataclass
class _Read:
    """A file as last read: what identifies that version of it, and its contribution."""

    version: tuple[int, int, int]  # inode, size, modification time
    part: Contribution
    folded: list[str]


class WorkerDirectory:
    """Reads the workers' files in a directory as one sum, folding the files of exited ones.

    Args:
        directory: where the workers write (made if missing).
        source: where the path came from, for errors.

    Raises:
        ValueError: the directory cannot be made, written or locked in.
    """

    def __init__(self, directory: str | os.PathLike[str], source: str = "the directory") -> None:
        self.path = check_directory(directory, source)
        self._warn = WarnOnce(limit=100)
        self._read: dict[str, _Read] = {}  # by file name: unchanged files are not parsed again
        self._stale: set[str] = set()  # files served as last read: they could not be read

    def merged(self) -> Merged:
        """Every worker's latest export plus what exited workers left, summed. A file that
        cannot be read counts as it was last read, so no total drops because of it.

        Raises:
            OSError: the directory or its lock cannot be opened.
            LookupError: `retired.json` has never been readable: serving without it would
                show every total dropping.
        """
        self.path.mkdir(parents=True, exist_ok=True)  # if emptied while this serves
        with self._locked(), contextlib.ExitStack() as held:
            merged = Merged()
            retired = self._load(self.path / RETIRED)
            if retired is None and (self.path / RETIRED).exists():
                msg = f"{self.path / RETIRED} cannot be read; nothing is served until it can"
                raise LookupError(msg)
            if retired is not None:
                merged.add(retired.part)
            folded = set(retired.folded) if retired is not None else set()
            exited: list[tuple[Path, Contribution]] = []
            for data_file in sorted(self.path.glob(f"{PREFIX}*.json")):
                lock = _try_lock(data_file.with_suffix(".lock"))
                if lock is not None:
                    held.callback(_unlock_and_close, lock)
                if data_file.stem in folded:  # a fold that stopped before deleting it
                    if lock is not None:
                        self._remove(data_file)
                    continue
                read = self._load(data_file, exited=lock is not None)
                if read is None:
                    continue
                merged.add(read.part)
                if lock is None:
                    merged.running += 1
                elif data_file.exists():  # (it is not there when only its last read is)
                    exited.append((data_file, read.part))
            if exited and RETIRED not in self._stale:  # never over a retired.json unread
                self._fold(retired, exited)
            self._sweep()
        return merged

    def _load(self, path: Path, *, exited: bool = False) -> _Read | None:
        """The file's contribution: parsed anew when it changed, else as last read."""
        known = self._read.get(path.name)
        try:
            status = path.stat()
            version = (status.st_ino, status.st_size, status.st_mtime_ns)
            if known is not None and known.version == version and not exited:
                return known
            state = json.loads(path.read_text())
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                found = state.get("format") if isinstance(state, dict) else type(state).__name__
                msg = f"it is not a worker metrics file of this version ({found!r})"
                raise ValueError(msg)
            folded = state.get("folded", [])
            if not isinstance(folded, list) or not all(isinstance(f, str) for f in folded):
                msg = f"its folded list {folded!r} is not a list of file names"
                raise ValueError(msg)
            read = _Read(version, parse(state, exited=exited), folded)
        except FileNotFoundError:
            self._read.pop(path.name, None)
            return None
        except (OSError, *_MALFORMED) as exc:
            self._stale.add(path.name)
            self._warn(
                ("read", path.name),
                "otel_tokens: cannot read worker metrics %s (%s); %s",
                path,
                exc,
                "it counts as it was last read" if known else "it is left out of the sum",
            )
            return known
        self._read[path.name] = read
        self._stale.discard(path.name)
        return read

    def _fold(self, retired: _Read | None, exited: list[tuple[Path, Contribution]]) -> None:
        """Fold exited workers' final files into `retired.json`, then delete them. The new
        `retired.json` names them first, so a fold cut short is never counted twice."""
        total = Merged()
        if retired is not None:
            total.add(retired.part)
        for _, part in exited:
            total.add(part)
        stems = {p.stem for p in self.path.glob(f"{PREFIX}*.json")}
        stems |= {p.stem for p in self.path.glob(f"{PREFIX}*.lock")}
        folded = [stem for stem in (retired.folded if retired else []) if stem in stems]
        folded += [path.stem for path, _ in exited]
        try:
            _replace(self.path / RETIRED, total.state(folded), durable=True)
            status = (self.path / RETIRED).stat()
        except OSError as exc:
            self._warn(
                "fold",
                "otel_tokens: cannot fold exited workers' metrics into %s: %s; their files "
                "are kept and still counted",
                self.path / RETIRED,
                exc,
            )
            return
        part = Contribution(total.metrics, total.descriptions, total.common_resource())
        version = (status.st_ino, status.st_size, status.st_mtime_ns)
        self._read[RETIRED] = _Read(version, part, folded)  # as if read: it is what was written
        for data_file, _ in exited:
            self._remove(data_file)

    def _remove(self, data_file: Path) -> None:
        """Delete a folded worker's files (its lock is held by this process)."""
        self._read.pop(data_file.name, None)
        for path in (
            data_file,
            self.path / f".{data_file.name}.tmp",
            data_file.with_suffix(".lock"),
        ):
            with contextlib.suppress(OSError):
                path.unlink()

    def _sweep(self) -> None:
        """Delete what exited writers left beside their data: locks without a data file,
        and half-written temporary files."""
        for lock_file in self.path.glob(f"{PREFIX}*.lock"):
            if lock_file.with_suffix(".json").exists():
                continue
            lock = _try_lock(lock_file)
            if lock is not None:
                with contextlib.suppress(OSError):
                    (self.path / f".{lock_file.stem}.json.tmp").unlink(missing_ok=True)
                    lock_file.unlink()
                _unlock_and_close(lock)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One reader at a time, so that two never fold the same file."""
        descriptor = os.open(self.path / _DIRECTORY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            _unlock_and_close(descriptor)  # unlocked first: a forked child may share it


def _try_lock(lock_file: Path) -> int | None:
    """The lock of an exited worker, now held by this process; None while its worker lives,
    or when there is no lock file (it is never assumed gone: its file stays counted)."""
    try:
        descriptor = os.open(lock_file, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor
