"""A bounded hand-off from request threads to one consumer that works in batches.

Request threads only append to a deque (atomic under the GIL) and, once per full batch, set
an event. One daemon thread per process, started at setup (never on the request path) and
again in a forked child, folds every queue a batch at a time, releasing the queue's lock
between batches so that a metrics collection, which drains what is queued before it reads,
waits for one batch at most. Every drain is bounded by what was queued when it began (at
most the capacity), so producers that outpace the consumer can never keep a drain or a
collection from ending.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from otel_tokens._base.warn import logger

T = TypeVar("T")
R = TypeVar("R")

#: The consumer also wakes this often to fold queues that have not filled a batch.
_WAKE_EVERY_S = 0.25
#: How long a fork waits for a batch being folded to finish (see `_Consumer.before_fork`).
_FORK_WAIT_S = 5.0


class _Consumer:
    """The process's one consumer thread, shared by every Handoff."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handoffs: weakref.WeakSet[Handoff[object]] = weakref.WeakSet()
        self.wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._held_for_fork: list[Handoff[object]] = []

    def register(self, handoff: Handoff[object]) -> None:
        with self._lock:
            self._handoffs.add(handoff)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="otel_tokens-consumer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        wake = self.wake
        while True:
            wake.wait(_WAKE_EVERY_S)
            wake.clear()
            with self._lock:
                handoffs = list(self._handoffs)
            for handoff in handoffs:
                try:
                    handoff.drain_in_batches()
                except Exception:  # keep folding the others, and later ones
                    logger.exception("otel_tokens: folding queued usage failed")

    def before_fork(self) -> None:
        # A fork while this thread folds a batch would copy the SDK's aggregation locks held
        # by it into the child, where no thread would ever release them. Hold every queue's
        # lock across the fork instead, so no batch is under way (bounded, should the
        # forking thread itself be folding).
        with self._lock:
            handoffs = list(self._handoffs)
        self._held_for_fork = [h for h in handoffs if h.hold_for_fork(_FORK_WAIT_S)]

    def after_fork_in_parent(self) -> None:
        for handoff in self._held_for_fork:
            handoff.release_after_fork()
        self._held_for_fork = []

    def after_fork_in_child(self) -> None:
        # Only the forking thread survives a fork: the consumer thread is gone, and locks
        # other threads held at that moment would never be released.
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self._thread = None
        self._held_for_fork = []
        handoffs = list(self._handoffs)
        for handoff in handoffs:
            handoff.after_fork_in_child()
        if handoffs:
            self.register(handoffs[0])


_consumer = _Consumer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_consumer.before_fork,
        after_in_parent=_consumer.after_fork_in_parent,
        after_in_child=_consumer.after_fork_in_child,
    )


class Handoff(Generic[T]):
    """Queue items for `consume`, which is only ever called by one thread at a time.

    Args:
        consume: called with a list of at most `batch_size` items, in the order they came.
        capacity: about the most items held (producers racing may pass it by one each);
            `put()` refuses more rather than grow or block.
        batch_size: how many queued items wake the consumer, and the most it folds at once.
        after_fork: called in a forked child, after the queue was emptied.
    """

    def __init__(
        self,
        consume: Callable[[list[T]], None],
        *,
        capacity: int,
        batch_size: int,
        after_fork: Callable[[], None] | None = None,
    ) -> None:
        self._consume = consume
        self._capacity = capacity
        self._batch_size = batch_size
        self._after_fork = after_fork
        self._items: deque[T] = deque()
        self._drain_lock = threading.Lock()
        self._signalled = False
        _consumer.register(self)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue `item`; False, and nothing queued, when the queue is full. Never blocks."""
        items = self._items
        if len(items) >= self._capacity:
            return False
        items.append(item)
        if len(items) >= self._batch_size and not self._signalled:
            self._signalled = True
            _consumer.wake.set()
        return True

    def drain(self) -> None:
        """Fold everything queued when called, on this thread, after any batch under way."""
        with self._drain_lock:
            self._fold(len(self._items))

    def drain_then(self, read: Callable[[], R]) -> R:
        """Fold what is queued now (at most `capacity`, so the time is bounded however busy
        producers are), then call `read` before any other batch is folded."""
        with self._drain_lock:
            self._fold(len(self._items))
            return read()

    def drain_in_batches(self) -> None:
        """Fold what is queued now, one batch per hold of the lock (the consumer thread's way)."""
        self._signalled = False
        remaining = len(self._items)
        while remaining > 0:
            with self._drain_lock:
                taken = self._fold(min(remaining, self._batch_size))
            if not taken:  # a collection drained the rest meanwhile
                return
            remaining -= taken
            # Locks are not fair: without giving up the CPU here this thread would take the
            # lock again before a collection waiting for it is even scheduled.
            time.sleep(0)

    def _fold(self, count: int) -> int:
        """Consume up to `count` items in batches; return how many were taken."""
        items, taken = self._items, 0
        while taken < count and items:
            batch = [
                items.popleft() for _ in range(min(count - taken, len(items), self._batch_size))
            ]
            taken += len(batch)
            try:
                self._consume(batch)
            except Exception:
                logger.exception("otel_tokens: consuming a batch of %d failed", len(batch))
        return taken

    def hold_for_fork(self, wait_s: float) -> bool:
        """Take the drain lock so that no batch is folded across a fork; False if it is busy."""
        return self._drain_lock.acquire(timeout=wait_s)

    def release_after_fork(self) -> None:
        self._drain_lock.release()

    def after_fork_in_child(self) -> None:
        """Forget what the parent queued (the parent records it) and locks held at the fork."""
        self._items.clear()
        self._drain_lock = threading.Lock()
        self._signalled = False
        if self._after_fork is not None:
            self._after_fork()
