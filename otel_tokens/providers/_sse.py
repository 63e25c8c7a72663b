"""A server-sent events splitter that takes bytes as they arrive, in pieces of any size."""

from __future__ import annotations

from collections.abc import Sequence

#: An event this long without its end is not an SSE stream we should hold on to.
MAX_PENDING_BYTES = 4 * 1024 * 1024

Event = tuple[str | None, bytes]


class SSEParser:
    """Split a byte stream into (event name, data) pairs; keeps only the unfinished tail.

    Lines may end in LF, CRLF or CR; several `data:` lines join with LF; comments and
    other fields are skipped, as the SSE specification says.
    """

    __slots__ = ("_pending", "_skipping", "overflowed")

    def __init__(self) -> None:
        self._pending = b""
        self._skipping = False
        #: Set when an event grew past MAX_PENDING_BYTES and was thrown away.
        self.overflowed = False

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that `chunk` completes."""
        buffer = self._take(chunk)
        *blocks, rest = buffer.split(b"\n\n")
        self._keep(rest)
        return [event for block in blocks if (event := _parse(block)) is not None]

    def feed_tail(self, chunks: Sequence[bytes], count: int) -> list[Event]:
        """The last `count` events that `chunks` complete; the ones before are not read.

        Args:
            chunks: the stream's next bytes, in order.
            count: how many of the last complete events to return.
        """
        tail = self.skip(chunks, count)
        return self.feed(b"".join(chunks) if tail is None else tail)

    def skip(self, chunks: Sequence[bytes], count: int) -> bytes | None:
        """Skip all but the last `count` events that `chunks` complete, unread.

        A reader that needs only a stream's closing events calls this every so many
        chunks and keeps what it returns: the bytes of the skipped events are not even
        joined, let alone split or parsed, so a piece of 1 MiB costs what 1 KiB does.

        Args:
            chunks: the stream's next bytes, in order.
            count: how many of the last complete events to keep.

        Returns:
            The bytes of the kept events and of the unfinished one after them, which the
            parser has forgotten and which are to be fed again; None, with nothing
            changed, when `chunks` do not complete more than `count` events.
        """
        taken = count + 1  # most servers write one event per chunk
        while taken < len(chunks):
            # The pending bytes, and the rest of an event being skipped, end before these.
            buffer = _lines(b"".join(chunks[-taken:]))
            at, found = buffer.rfind(b"\n\n"), 0  # the end of the last complete event
            while found < count and at > 0:
                before = buffer.rfind(b"\n\n", 0, at)
                if before < 0:  # this block may begin before these chunks
                    break
                if _has_data(buffer, before + 2, at):  # comments and blank blocks do not count
                    found += 1
                at = before
            if found == count:
                self._pending, self._skipping = b"", False
                return buffer[at + 2 :]
            taken *= 2
        return None

    def close(self) -> list[Event]:
        """The last event, when the stream ended without a blank line after it."""
        rest, self._pending = self._pending, b""
        event = _parse(rest.rstrip(b"\r\n"))
        return [] if event is None else [event]

    def _take(self, chunk: bytes) -> bytes:
        """The pending bytes and `chunk`, line ends made LF, an overlong event's rest cut."""
        buffer = _lines(self._pending + chunk if self._pending else chunk)
        self._pending = b""
        if self._skipping:  # the rest of an event too long to keep, up to its end
            end = buffer.find(b"\n\n")
            if end < 0:
                return buffer[-1:]
            buffer, self._skipping = buffer[end + 2 :], False
        return buffer

    def _keep(self, rest: bytes) -> None:
        if len(rest) > MAX_PENDING_BYTES:
            rest, self.overflowed, self._skipping = rest[-1:], True, True
        self._pending = rest


def _has_data(buffer: bytes, start: int, end: int) -> bool:
    """Whether the block `buffer[start:end]` has a `data:` line."""
    return buffer.startswith(b"data", start, end) or buffer.find(b"\ndata", start, end) >= 0


def _lines(buffer: bytes) -> bytes:
    """`buffer` with every line ending made LF; a last CR stays, it may be half a CRLF."""
    if b"\r" not in buffer:
        return buffer
    held = b""
    if buffer.endswith(b"\r"):
        buffer, held = buffer[:-1], b"\r"
    return buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held


def _parse(block: bytes) -> Event | None:
    if block.startswith(b"data:") and b"\n" not in block:  # the common one-line event
        data = block[5:]
        return None, data[1:] if data.startswith(b" ") else data
    name: str | None = None
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        field, colon, value = line.partition(b":")
        if not colon or not field:
            continue  # a comment (":..."), a blank or a field without a value
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data_lines.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data_lines:
        return None
    return name, b"\n".join(data_lines)
