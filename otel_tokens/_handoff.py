"""A bounded hand-off from request threads to one consumer that works in batches.

Request threads only append to a deque (atomic under the GIL, no lock). The consumer runs
on whichever thread calls `drain()` (a metrics collection does, before it reads) or on a
background thread that starts when a batch is ready and exits after it has been idle, so
an unused tracker holds no thread and a forked child starts clean.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from otel_tokens._warn import logger

T = TypeVar("T")
R = TypeVar("R")

_IDLE_EXIT_S = 5.0

_live_handoffs: weakref.WeakSet[Handoff[object]] = weakref.WeakSet()
_fork_hook_installed = False
_fork_hook_lock = threading.Lock()


def _reset_all_after_fork() -> None:
    for handoff in list(_live_handoffs):
        handoff._reset_after_fork()


def _install_fork_hook() -> None:
    global _fork_hook_installed  # noqa: PLW0603 - one hook for the process, installed once
    with _fork_hook_lock:
        if not _fork_hook_installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_reset_all_after_fork)
            _fork_hook_installed = True


class Handoff(Generic[T]):
    """Queue items for `consume`, which is always called by one thread at a time.

    Args:
        consume: called with a list of items, in the order they were put.
        capacity: the most items held; `put()` refuses more rather than grow or block.
        batch_size: how many queued items wake the background consumer.
        name: the background thread's name.
    """

    def __init__(
        self,
        consume: Callable[[list[T]], None],
        *,
        capacity: int,
        batch_size: int,
        name: str,
    ) -> None:
        self._consume = consume
        self._capacity = capacity
        self._batch_size = batch_size
        self._name = name
        self._items: deque[T] = deque()
        self._drain_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._woken = False
        _install_fork_hook()
        _live_handoffs.add(self)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue `item`; False, and nothing queued, when the queue is full. Never blocks."""
        items = self._items
        if len(items) >= self._capacity:
            return False
        items.append(item)
        if len(items) >= self._batch_size and not self._woken:
            self._start_consumer()
        return True

    def drain(self) -> None:
        """Consume everything queued now, on this thread, after any batch already under way."""
        with self._drain_lock:
            self._drain_locked()

    def drain_then(self, read: Callable[[], R]) -> R:
        """Drain, then call `read` while no batch can be consumed: a consistent view of state."""
        with self._drain_lock:
            self._drain_locked()
            return read()

    def _drain_locked(self) -> None:
        items = self._items
        while items:
            batch = [items.popleft() for _ in range(min(len(items), self._batch_size))]
            try:
                self._consume(batch)
            except Exception:
                logger.exception("otel_tokens: consuming a batch of %d failed", len(batch))

    def _start_consumer(self) -> None:
        with self._thread_lock:
            self._woken = True
            self._wake.set()
            if self._thread is None:
                thread = threading.Thread(
                    target=_consumer_loop,
                    args=(weakref.ref(self), self._wake),
                    name=self._name,
                    daemon=True,
                )
                try:
                    thread.start()
                except RuntimeError:
                    # No new threads at interpreter shutdown: collections still drain.
                    return
                self._thread = thread

    def _idle_exit(self) -> bool:
        """Forget the consumer thread if nothing woke it meanwhile; True when it may stop."""
        with self._thread_lock:
            if self._wake.is_set():
                return False
            self._thread = None
            return True

    def _reset_after_fork(self) -> None:
        # The parent still owns what it queued; the child must not record it again, and
        # locks held by parent threads at fork time would never be released here.
        self._items.clear()
        self._drain_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._woken = False


def _consumer_loop(ref: weakref.ref[Handoff[object]], wake: threading.Event) -> None:
    while True:
        woke = wake.wait(_IDLE_EXIT_S)
        handoff = ref()
        if handoff is None or handoff._wake is not wake:
            return
        if woke:
            wake.clear()
            handoff._woken = False
            handoff.drain()
        elif handoff._idle_exit():
            return
        del handoff
