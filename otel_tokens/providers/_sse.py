"""A server-sent events splitter that takes bytes as they arrive, in pieces of any size."""

from __future__ import annotations

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
        buffer = self._pending + chunk if self._pending else chunk
        if b"\r" in buffer:
            held = b""
            if buffer.endswith(b"\r"):  # may be the first half of a CRLF
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        if self._skipping:  # the rest of an event too long to keep, up to its end
            end = buffer.find(b"\n\n")
            if end < 0:
                self._pending = buffer[-1:]
                return []
            buffer, self._skipping = buffer[end + 2 :], False
        *blocks, rest = buffer.split(b"\n\n")
        if len(rest) > MAX_PENDING_BYTES:
            rest, self.overflowed, self._skipping = rest[-1:], True, True
        self._pending = rest
        return [event for block in blocks if (event := _parse(block)) is not None]

    def close(self) -> list[Event]:
        """The last event, when the stream ended without a blank line after it."""
        rest, self._pending = self._pending, b""
        event = _parse(rest.rstrip(b"\r\n"))
        return [] if event is None else [event]


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
