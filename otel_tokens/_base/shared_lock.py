"""A lock that many threads may hold at once, or one thread alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType


class SharedLock:
    """Held shared by any number of threads at once, or exclusively by one. A thread
    waiting to hold it exclusively goes before those that ask to share it after it, so that
    a steady stream of shared holders cannot keep it out for ever. Not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._sharing = 0  # threads holding it shared
        self._exclusive = False
        self._waiting = 0  # threads waiting to hold it exclusively

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold it shared for the block: wait while it is held, or waited for, exclusively."""
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._sharing += 1
        try:
            yield
        finally:
            with self._cond:
                self._sharing -= 1
                if not self._sharing:
                    self._cond.notify_all()

    def acquire(self, timeout: float = -1) -> bool:
        """Hold it exclusively, waiting at most `timeout` seconds (-1: as long as it takes).

        Args:
            timeout: the longest to wait, in seconds; -1 waits until it is free.

        Returns:
            False when the time ran out first (then it is not held).
        """
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._sharing:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                self._exclusive = True
                return True
            finally:
                self._waiting -= 1
                if not self._exclusive:  # gave up: those it held back may go on
                    self._cond.notify_all()

    def release(self) -> None:
        """Let go of holding it exclusively."""
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
