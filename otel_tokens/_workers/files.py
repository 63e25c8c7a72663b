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
import tempfile
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: The directory several worker processes write their totals to (prometheus_client's name).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

PREFIX = "otel_tokens-"
RETIRED = "retired.json"
DIRECTORY_LOCK = ".otel_tokens.lock"


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


def unlock_and_close(descriptor: int) -> None:
    """Release a lock even where a forked child shares the descriptor, then close it."""
    with contextlib.suppress(OSError):
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


def replace_file(path: Path, state: dict[str, Any], *, durable: bool) -> None:
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


def try_lock(lock_file: Path) -> int | None:
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
