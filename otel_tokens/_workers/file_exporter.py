"""`WorkerFileExporter`: each worker process writes its cumulative metrics to a file of
its own in the shared directory (see `files.py` for the directory's rules)."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import weakref
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from otel_tokens._base.warn import WarnOnce, logger
from otel_tokens._workers.files import PREFIX, replace_file, unlock_and_close
from otel_tokens._workers.format import encode

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
                replace_file(self.directory / f"{name}.json", state, durable=False)
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
                unlock_and_close(self._lock_file)
                self._lock_file = None
