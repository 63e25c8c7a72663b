"""Meter one HTTP response as its bytes pass to the caller, and record exactly one `Usage`.

The caller's bytes are never held back or changed: each chunk is looked at and handed on.
A streamed (SSE) body's first events go through the provider's stream accumulator as they
pass, until it knows the model and the time of the first token. After that only the stream's
closing events matter, since in every provider's protocol the usage, errors and `[DONE]`
close it, so the chunks are only kept:

- from a server that sends each event in a chunk of its own (most do: they flush every
  event), when the events that close the stream are small (not the Responses API's), the
  last `RING_CHUNKS` chunks, in a ring that lets older ones go;
- otherwise (events cut across chunks, a compressed body) every chunk, and every
  `LATER_BYTES` all but the last few events are let go unread.

A JSON body is kept whole while small, and only its two ends once large (`_body_ends`).
The closing events and JSON bodies are read on the tracker's consumer thread, off the
request path.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from otel_tokens._base.ratelimit import RateLimits, read_rate_limits
from otel_tokens._base.usage import Usage
from otel_tokens._http.body_ends import BodyEnds
from otel_tokens._http.decoding import Decoder
from otel_tokens._http.json_body import parse_body
from otel_tokens._http.route import Route
from otel_tokens._http.sse import SSEParser
from otel_tokens.providers import (
    AnthropicStream,
    BedrockStream,
    GeminiStream,
    OpenAIStream,
    StreamAccumulator,
    UsageFields,
    from_anthropic,
    from_bedrock,
    from_gemini,
    from_openai,
)

#: How many bytes the caller's loop adds to `ResponseMeter.later` between `on_later()` calls.
LATER_BYTES = 64 * 1024
#: How many of an event-aligned stream's last chunks are read (`ResponseMeter.ring` keeps
#: one more, which tells whether the first of them begins an event).
RING_CHUNKS = 64
#: How a chunk that ends an event ends.
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
#: How many events at the end of those bytes are read: enough for every protocol's closing
#: events (OpenAI: usage chunk, `[DONE]`; Anthropic: `message_delta`, `message_stop`).
_CLOSING_EVENTS = 4
#: And the last event with usage in so many bytes before those (in all of them at the end).
_USAGE_REACH = 16 * 1024

_NORMALIZERS: dict[str, Callable[..., Usage]] = {
    "openai": from_openai,
    "anthropic": from_anthropic,
    "gemini": from_gemini,
    "bedrock": from_bedrock,
}
_ACCUMULATORS: dict[str, type[StreamAccumulator]] = {
    "openai": OpenAIStream,
    "anthropic": AnthropicStream,
    "gemini": GeminiStream,
    "bedrock": BedrockStream,
}


def error_type_of_status(status_code: int) -> str:
    """A bounded `error.type` for an HTTP failure."""
    if status_code == 429:
        return "rate_limited"
    if status_code in (408, 504):
        return "timeout"
    return f"http_{status_code}"


def error_type_of_exception(exc: BaseException) -> str:
    """A bounded `error.type` for a failed connection: `timeout` or the exception's class."""
    name = type(exc).__name__
    return "timeout" if "Timeout" in name else name


class ResponseMeter:
    """Watch one response's bytes; record its `Usage` once, whichever way it ends.

    Args:
        record_later: the tracker's `_record_later`, given a function that makes the `Usage`.
        route: what the request was.
        started: `time.perf_counter()` when the request was sent.
        status_code: the response's HTTP status.
        content_type: its Content-Type.
        content_encoding: its Content-Encoding.
        fields: `Usage` fields from the transport and the request (scenario, tier, key id).
        headers: the response's header pairs (str or bytes), read for rate limits on the
            consumer thread.
        rate_limits: where the rate limits they report go, with the response's `Usage`.
    """

    def __init__(
        self,
        record_later: Callable[[Callable[[], Usage]], None],
        *,
        route: Route,
        started: float,
        status_code: int,
        content_type: str,
        content_encoding: str,
        fields: UsageFields,
        headers: Any = None,
        rate_limits: Callable[[Usage, RateLimits], None] | None = None,
    ) -> None:
        self._record_later = record_later
        self._headers = headers  # not copied: read only on the consumer thread
        self._rate_limits = rate_limits
        self._route = route
        self._started = started
        self._fields = fields
        self._status_code = status_code
        # The request thread reads the body, but the consumer thread makes the `Usage`, and
        # a response may be closed from another thread: they take turns.
        self._lock = threading.RLock()
        self._ending = threading.Lock()
        self._read_all = False  # the consumer read what was left
        self._done = False
        self._saw_done_marker = False
        self._decoder = Decoder(content_encoding) if content_encoding else None
        self._streaming = "text/event-stream" in content_type.lower()
        self._sse: SSEParser | None = None
        self._stream: StreamAccumulator | None = None
        self._body = BodyEnds()  # of a JSON response
        self._unreadable = route.unreadable_stream or (
            self._decoder is not None and self._decoder.failed
        )
        #: Once a stream's first events are read, the caller's loop only appends its chunks
        #: to `ring`, when it is set, or else here, calling `on_later()` after every
        #: `LATER_BYTES` of them or so; all but the stream's last few events are then let go
        #: unread. Set (to a list, maybe unused) when that begins.
        self.later: list[bytes] | None = None
        #: The last `RING_CHUNKS` chunks, for a stream whose first chunks each ended an event.
        self.ring: deque[bytes] | None = None
        #: Chunks of the body so far (the caller's loop counts the ones it keeps itself),
        #: and how many there were when the first content arrived.
        self.chunks = 0
        self._chunks_at_first: int | None = None
        self._aligned = self._decoder is None  # every chunk so far ended an event
        self._usage_let_go = False  # the ring let chunks go, and no usage among the rest
        # A stream's `_unreadable` means reading its closing events failed: flagged too.
        self._kept = b""  # the last events of the chunks `later` had, already decoded
        if self._streaming and not self._unreadable:
            self._sse = SSEParser()
            self._stream = _ACCUMULATORS[route.wire](started=started, **fields)

    def on_chunk(self, chunk: bytes) -> None:
        """Look at one chunk on its way to the caller; never raises."""
        if self._done:
            return
        self.chunks += 1
        if self.ring is not None:  # a caller that does not keep `ring` or `later` itself
            self.ring.append(chunk)
            return
        if self.later is not None:
            self.later.append(chunk)
            self.on_later()
            return
        with self._lock:
            self._look(chunk)
            stream = self._stream
            if self._chunks_at_first is None and stream is not None and stream.first_token_seen:
                self._chunks_at_first = self.chunks

    def _look(self, chunk: bytes) -> None:
        if self._unreadable or self._read_all:
            return
        try:
            if self._sse is not None:
                if self._decoder is not None:
                    chunk = self._decoder(chunk)
                self._aligned = self._aligned and chunk.endswith(_EVENT_ENDS)
                self._events(self._sse.feed(chunk))
            elif self._decoder is not None:
                for piece in self._decoder.pieces(chunk):
                    self._body.add(piece)
            else:
                self._body.add(chunk)
        except Exception:
            self._unreadable = True
            self._body.clear()

    def _events(self, events: list[tuple[str | None, bytes]]) -> None:
        """Hand parsed events to the accumulator; switch to reading later once it can."""
        stream = self._stream
        assert stream is not None
        for event, data in events:
            if data == b"[DONE]":
                self._saw_done_marker = True
            else:
                stream.feed_sse(event, data)
        if self.later is None and not self._done and not stream.needs_every_event:
            if self._aligned and stream.small_closing_events:
                self.ring = deque(maxlen=RING_CHUNKS + 1)
            self.later = []

    def on_later(self) -> None:
        """The caller's loop added about `LATER_BYTES` to `later`; never raises."""
        with self._lock:
            if self._read_all:  # chunks after the end: nobody will read them
                if self.later is not None:
                    self.later.clear()
                return
            self._read_later()

    def _read_later(self, *, final: bool = False) -> None:
        """Skip all but the closing events among the chunks in `later`, unread; at the
        `final` call, read those (or the closing events of `ring`)."""
        later = self.later
        if later is None:
            return
        if self.ring is not None:
            if final:
                self._read_ring(self.ring)
            return
        chunks = later[:]
        later.clear()  # the same list: the caller's loop holds it
        if self._unreadable:
            return
        try:
            if self._decoder is not None:  # decoded chunk by chunk, so that most stay unread
                decode = self._decoder
                chunks = [decoded for chunk in chunks if (decoded := decode(chunk))]
            if self._kept:
                chunks.insert(0, self._kept)
            sse = self._sse
            assert sse is not None
            marker = self._stream.usage_marker if self._stream is not None else b""
            if final:
                self._events(sse.feed_tail(chunks, _CLOSING_EVENTS, marker=marker))
                return
            tail = sse.skip(chunks, _CLOSING_EVENTS, marker=marker, reach=_USAGE_REACH)
            if tail is None:  # a few long events: read them all
                self._kept = b""
                self._events(sse.feed(b"".join(chunks)))
            else:
                self._kept = tail  # until the next call, or the final one
        except Exception:
            self._unreadable = True

    def _read_ring(self, ring: deque[bytes]) -> None:
        """Read the closing events of the chunks the ring kept.

        When the ring is full, chunks before it were let go: its oldest chunk is not read,
        only looked at to know whether the next one begins an event. And if no usage is
        among the events read, the usage was let go with them: flagged, never trusted.
        """
        sse = self._sse
        if self._unreadable or sse is None:
            return
        let_go = False
        try:
            chunks = _copy(ring)  # the caller's loop may still be appending, on another thread
            ring.clear()
            let_go = len(chunks) > RING_CHUNKS
            if let_go:
                sse.restart(mid_event=not chunks.pop(0).endswith(_EVENT_ENDS))
            marker = self._stream.usage_marker if self._stream is not None else b""
            events = sse.feed_tail(chunks, _CLOSING_EVENTS, marker=marker)
            self._events(events)
            self._usage_let_go = let_go and not any(marker in data for _, data in events)
        except Exception:
            self._unreadable = True

    def on_end(self) -> None:
        """The body was read to its end."""
        self._finish("success")

    def on_close(self) -> None:
        """The caller closed the response: after the end, or having stopped reading early."""
        self._finish(None)

    def on_error(self, exc: BaseException) -> None:
        """Reading the body failed."""
        if isinstance(exc, Exception):
            self._finish("error", error_type_of_exception(exc))
        else:  # KeyboardInterrupt, task cancellation: the caller gave up
            self._finish("canceled")

    def _finish(self, ended: str | None, error_type: str | None = None) -> None:
        with self._ending:  # not the reading lock: closing never waits for a read
            if self._done:
                return
            self._done = True
        at = time.perf_counter()
        with contextlib.suppress(Exception):  # metering must never break the caller's request
            self._record_later(partial(self._usage, ended, error_type, at))

    def _usage(self, ended: str | None, error_type: str | None, at: float) -> Usage:
        """The response's `Usage`, made on the tracker's consumer thread: its last events
        are read only here."""
        with self._lock:
            self._read_later(final=True)
            if self._sse is not None and ended == "success":  # a last event without "\n\n"
                self._events(self._sse.close())
            self._read_all = True
            usage = self._make_usage(ended, error_type, at)
        self._report_limits(usage)
        return usage

    def _report_limits(self, usage: Usage) -> None:
        """Hand on the rate limits the response's headers reported; never raises."""
        headers, report = self._headers, self._rate_limits
        self._headers = None
        if headers is None or report is None:
            return
        with contextlib.suppress(Exception):  # broken headers cost only their limits
            limits = read_rate_limits(_text_pairs(headers), time.time())
            if limits is not None:
                report(usage, limits)

    def _make_usage(self, ended: str | None, error_type: str | None, at: float) -> Usage:
        status = ended
        if status is None:  # closed: complete if the provider's last event had arrived
            complete = self._saw_done_marker or (self._stream is not None and self._stream.final)
            if self._stream is None and self._body.size:
                complete = True  # a JSON body closed after being read; parsed below
            status = "success" if complete else "canceled"
        if self._status_code >= 400 and status == "success":
            status, error_type = "error", error_type_of_status(self._status_code)
        fields: UsageFields = {**self._fields, "status": status}
        if error_type is not None:
            fields["error_type"] = error_type
        request_model = self._route.request_model()
        if request_model is not None:
            fields["request_model"] = request_model
        if self._stream is not None:
            at_first = self._chunks_at_first
            usage = self._stream.finish(
                status=status, error_type=error_type, at=at, request_model=request_model,
                chunks=0 if at_first is None else self.chunks - at_first,
            )  # fmt: skip
            if (self._unreadable or self._usage_let_go) and usage.usage_problem is None:
                seen = usage.input_tokens or usage.output_tokens
                return _with_problem(usage, "partial" if seen else "missing")
            return usage
        fields["latency_s"] = max(0.0, at - self._started)
        # An error answers a streamed request with JSON: it still asked to stream.
        fields["streamed"] = self._streaming or (
            self._status_code >= 400 and self._route.asked_to_stream()
        )
        normalize = _NORMALIZERS[self._route.wire]
        body, whole = self._body.bytes(), self._body.whole
        self._body.clear()
        parsed = None if self._unreadable else parse_body(body, self._route.wire, whole=whole)
        usage = normalize(parsed, **fields)
        if self._unreadable and status != "error":
            return _with_problem(usage, "missing")
        if parsed is None and body and status == "success":
            return _with_problem(usage, "malformed")
        return usage


def _text_pairs(pairs: Any) -> Iterator[tuple[str, str]]:
    """Header pairs as text: raw bytes are Latin-1, as HTTP/1.1 sends them."""
    for name, value in pairs:
        yield (
            name.decode("latin-1") if isinstance(name, bytes) else name,
            value.decode("latin-1") if isinstance(value, bytes) else value,
        )


def _with_problem(usage: Usage, problem: str) -> Usage:
    from dataclasses import replace

    return replace(usage, usage_problem=problem)


def _copy(ring: deque[bytes]) -> list[bytes]:
    """The ring's chunks. A deque appended to while it is copied raises (on a free-threaded
    Python): try again, and give up after a few tries."""
    for _ in range(8):
        try:
            return list(ring)
        except RuntimeError:
            continue
    return list(ring)
