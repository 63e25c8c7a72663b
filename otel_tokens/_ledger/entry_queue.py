"""The ledger's queue: entries in three slots side by side, with no object made per entry.

An entry is the recorded thing, when it happened and its cost (`rows.QueuedCost`). A
wrapper object per entry would be one more object the garbage collector tracks while it
waits, and a queue of 100,000 of them, promoted to its oldest generation, brought on full
collections that took a sixth of the writer's time; the usage is the caller's, and the two
numbers are not tracked at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import repeat, starmap
from typing import Any

from otel_tokens._ledger.rows import QueuedCost

#: The slots of the queue an entry takes.
STRIDE = 3


class EntryQueue:
    """A queue of entries, added from any thread and taken under the writer's lock."""

    def __init__(self) -> None:
        self._slots: deque[Any] = deque()
        #: Whether an `add()` ran out of memory halfway, leaving the slots out of step.
        self.torn = False

    def add(self, entry: object, at_us: int, cost_pico: QueuedCost, most: int) -> int | None:
        """Queue an entry unless `most` are queued already, in one call no other thread
        comes between (under the GIL one C call; without it, deque.extend holds the
        deque's own lock).

        Returns:
            The entries queued once it is in (0 when the writer took them all meanwhile),
            or None when the queue was full and it is not in.

        Raises:
            MemoryError: when the slots could not all be added (`torn` is then set).
        """
        slots = self._slots
        if len(slots) >= most * STRIDE:
            return None
        try:
            slots.extend((entry, at_us, cost_pico))
        except MemoryError:  # a slot or two may be in: the writer must not read past them
            self.torn = True
            raise
        return len(slots) // STRIDE

    def __len__(self) -> int:
        """The entries queued (a length read while another thread adds one may see part of
        it: the count rounds down)."""
        return len(self._slots) // STRIDE

    def take(self, count: int) -> list[Any]:
        """Take the slots of `count` entries (no more than are queued) from the front, for
        `entries_of`: in one C call, which nothing interrupts, not even Ctrl-C on the main
        thread.

        Raises:
            MemoryError: when the list of them could not be made; the slots popped are gone
                and `torn` is set.
        """
        try:
            return list(starmap(self._slots.popleft, repeat((), count * STRIDE)))
        except MemoryError:
            self.torn = True
            raise

    def clear(self) -> int:
        """Take out every slot queued now, in one C call (an entry added meanwhile stays,
        in step); how many entries they held."""
        slots = len(self._slots)
        deque(starmap(self._slots.popleft, repeat((), slots)), maxlen=0)  # pops, keeps none
        self.torn = False
        return slots // STRIDE


def entries_of(slots: list[Any]) -> Iterator[tuple[Any, int, QueuedCost]]:
    """The (entry, at_us, cost_pico) of each entry of slots taken."""
    return zip(*(slots[start::STRIDE] for start in range(STRIDE)), strict=True)
