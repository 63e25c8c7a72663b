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

    def feed_tail(self, chunks: Sequence[bytes], count: int, *, marker: bytes = b"") -> list[Event]:
        """The last `count` events that `chunks` complete, and before them the last event
        holding `marker` (if any); the other events are not read.

        Args:
            chunks: the stream's next bytes, in order.
            count: how many of the last complete events to return.
            marker: bytes that mark an event to return wherever it is (its usage, say).
        """
        tail = self.skip(chunks, count, marker=marker)
        return self.feed(b"".join(chunks) if tail is None else tail)

    def skip(
        self, chunks: Sequence[bytes], count: int, *, marker: bytes = b"", reach: int | None = None
    ) -> bytes | None:
        """Skip, unread, all but the last `count` events that `chunks` complete and the last
        event before them that holds `marker`.

        A reader that needs only a stream's closing events calls this every so many chunks
        and keeps what it returns: the bytes of the skipped events are not even joined, let
        alone split or parsed, so a piece of 1 MiB costs what 1 KiB does.

        Args:
            chunks: the stream's next bytes, in order.
            count: how many of the last complete events to keep.
            marker: bytes that mark one more event to keep: the last one holding them.
            reach: how far before the kept events to look for `marker` (None: anywhere).

        Returns:
            The bytes of the kept events and of the unfinished one after them, which the
            parser has forgotten and which are to be fed again; None, with nothing
            changed, when `chunks` do not complete more than `count` events.
        """
        taken = count + 1  # most servers write one event per chunk
        if marker and chunks:  # and `reach` bytes before those: all of them when None
            mean = max(1, sum(map(len, chunks)) // len(chunks))
            taken = len(chunks) if reach is None else taken + -(-reach // mean) + count
        while True:
            whole = taken >= len(chunks)
            joined = b"".join(chunks if whole else chunks[-taken:])
            # Unless all is taken, the pending bytes, and the rest of an event being
            # skipped, end before these chunks.
            buffer = _lines(self._pending + joined if whole else joined)
            at = _kept_from(buffer, count)
            if at >= 0 and (whole or not marker or (reach is not None and len(buffer) >= reach)):
                break
            if whole:
                return None
            taken *= 2
        kept = buffer[at + 2 :]
        if marker:
            low = at - reach if reach is not None else 0
            if whole and self._skipping:  # the start is the rest of an event being dropped
                low = max(low, buffer.find(b"\n\n") + 2)
            spot = buffer.rfind(marker, max(0, low), at)
            begin = _block_start(buffer, spot) if spot >= 0 else -1
            if begin > 0 or (begin == 0 and whole and not self._skipping):
                kept = buffer[begin : buffer.find(b"\n\n", spot)] + b"\n\n" + kept
        self._pending, self._skipping = b"", False
        return kept

    def restart(self, *, mid_event: bool = True) -> None:
        """Forget the unfinished event: the next bytes come from later in the stream.

        Args:
            mid_event: whether they may begin inside an event, whose rest (up to the first
                blank line) is then skipped; False when they begin an event.
        """
        self._pending, self._skipping = b"", mid_event

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


def _block_start(buffer: bytes, at: int) -> int:
    """Where the event holding `buffer[at]` begins."""
    end_of_previous = buffer.rfind(b"\n\n", 0, at)
    return 0 if end_of_previous < 0 else end_of_previous + 2


def _kept_from(buffer: bytes, count: int) -> int:
    """Where the separator before the last `count` complete events of `buffer` is; -1 when
    it does not hold that many events with a separator before them."""
    at, found = buffer.rfind(b"\n\n"), 0  # the end of the last complete event
    while found < count and at > 0:
        before = buffer.rfind(b"\n\n", 0, at)
        if before < 0:  # this block may begin before these bytes
            return -1
        if _has_data(buffer, before + 2, at):  # comments and blank blocks do not count
            found += 1
        at = before
    return at if found == count else -1


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
