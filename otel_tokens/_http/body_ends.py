"""What the usage of a JSON response is read from, in memory bounded whatever its size.

A small body is kept whole and parsed. Of a large one (a long completion, an embedding of
many inputs, or a hostile upstream's endless body) only the ends are kept as it passes:
every provider puts the model near the start and the usage at the end, and a proxy or SDK
that reorders keys puts them at the start, so the first and last 64 KiB hold both. Memory
per response is at most `WHOLE_LIMIT` plus the last chunk, however long the body.
"""

from __future__ import annotations

from collections import deque

#: Bodies up to this size are kept whole and parsed.
WHOLE_LIMIT = 256 * 1024
#: Of a larger body, this much of its start and of its end.
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 64 * 1024


class BodyEnds:
    """The bytes of one body as they pass: all of it while small, then its two ends."""

    __slots__ = ("_head", "_kept", "_tail", "_tail_size", "size")

    def __init__(self) -> None:
        self._kept: list[bytes] = []  # the whole body, while it is small
        self._head: bytes | None = None  # set once it is large
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        #: Every byte seen.
        self.size = 0

    @property
    def whole(self) -> bool:
        """Whether every byte is still kept."""
        return self._head is None

    def add(self, chunk: bytes) -> None:
        """Take the body's next bytes."""
        self.size += len(chunk)
        if self._head is None:
            self._kept.append(chunk)
            if self.size > WHOLE_LIMIT:
                joined = b"".join(self._kept)
                self._kept = []
                self._head = joined[:HEAD_BYTES]
                self._keep_tail(joined[-TAIL_BYTES:])
            return
        self._keep_tail(chunk)

    def _keep_tail(self, chunk: bytes) -> None:
        tail = self._tail
        tail.append(chunk)
        self._tail_size += len(chunk)
        while len(tail) > 1 and self._tail_size - len(tail[0]) >= TAIL_BYTES:
            self._tail_size -= len(tail.popleft())

    def bytes(self) -> bytes:
        """The body when whole; else its start, a space, and its end."""
        if self._head is None:
            return b"".join(self._kept)
        return self._head + b" " + b"".join(self._tail)[-TAIL_BYTES:]

    def clear(self) -> None:
        self._kept, self._head, self._tail, self._tail_size = [], None, deque(), 0
