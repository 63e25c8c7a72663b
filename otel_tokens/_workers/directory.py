"""`WorkerDirectory`: the workers' files read as one sum, the files of exited workers
folded into `retired.json` (see `files.py` for the directory's rules)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


from otel_tokens._base.warn import WarnOnce
from otel_tokens._workers.files import (
    DIRECTORY_LOCK,
    PREFIX,
    RETIRED,
    check_directory,
    replace_file,
    try_lock,
    unlock_and_close,
)
from otel_tokens._workers.format import FORMAT, Contribution, Merged, parse

_MALFORMED = (KeyError, IndexError, TypeError, ValueError, ArithmeticError)


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
                lock = try_lock(data_file.with_suffix(".lock"))
                if lock is not None:
                    held.callback(unlock_and_close, lock)
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
            replace_file(self.path / RETIRED, total.state(folded), durable=True)
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
            lock = try_lock(lock_file)
            if lock is not None:
                with contextlib.suppress(OSError):
                    (self.path / f".{lock_file.stem}.json.tmp").unlink(missing_ok=True)
                    lock_file.unlink()
                unlock_and_close(lock)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One reader at a time, so that two never fold the same file."""
        descriptor = os.open(self.path / DIRECTORY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            unlock_and_close(descriptor)  # unlocked first: a forked child may share it
