"""Long streams as the transport reads them: once a stream's first events are read, its
chunks are kept (the last few of a stream of one event per chunk, else all of them) and all
but the closing events are let go unread. Whatever the chunking, line endings or
compression, and wherever the caller stops, the usage must be the one the accumulator gives
when it reads every event, or be flagged."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from otel_tokens import Usage
from otel_tokens._http.meter import LATER_BYTES, RING_CHUNKS, ResponseMeter
from otel_tokens._http.route import Route
from otel_tokens._http.sse import SSEParser
from otel_tokens._http.streams import AsyncStream, SyncStream
from tests.helpers.fake_providers import long_events
from tests.helpers.streams import STREAMS, tokens

WIRES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini"}


def wire_of(name: str) -> str:
    return next(wire for prefix, wire in WIRES.items() if name.startswith(prefix))


def chunked(raw: bytes, sizes: str, line_end: bytes = b"\n", seed: int = 7) -> list[bytes]:
    """`raw` cut one event per chunk, in pieces of a fixed size, or of random sizes."""
    if sizes == "events":
        end = line_end * 2
        return [block + end for block in raw.split(end) if block]
    rng = random.Random(seed)
    chunks, at = [], 0
    while at < len(raw):
        size = int(sizes) if sizes.isdigit() else rng.randint(1, 3000)
        chunks.append(raw[at : at + size])
        at += size
    return chunks


def meter_for(name: str, made: list[Usage], *, encoding: str = "") -> ResponseMeter:
    wire = wire_of(name)
    in_path = wire == "gemini"  # Gemini names the model in the path, the others in the body
    route = Route(wire=wire, provider=wire, path_model="asked" if in_path else None,
                  server_address=None, server_port=None, api_key=None,
                  body=None if in_path else b'{"model": "asked"}')  # fmt: skip
    return ResponseMeter(
        lambda make: made.append(make()), route=route, started=time.perf_counter(),
        status_code=200, content_type="text/event-stream", content_encoding=encoding,
        fields={"provider": wire},
    )  # fmt: skip


class Body:
    """A response body arriving in the given chunks, as a transport's byte stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True


def read_through_transport(
    meter: ResponseMeter, chunks: list[bytes], stop_after: int | None
) -> int:
    """Iterate the chunks the way httpx does, through the transport's stream; bytes seen."""
    stream = SyncStream(Body(chunks), meter)
    seen = 0
    iterator: Iterator[bytes] = iter(stream)
    for index, chunk in enumerate(iterator):
        seen += len(chunk)
        if stop_after is not None and index + 1 >= stop_after:
            break
    stream.close()
    return seen


@pytest.mark.parametrize("sizes", ["events", "1", "4096", "random"])
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize(
    ("name", "expected", "model"),
    [(s[0], s[2], s[3]) for s in STREAMS],
    ids=[s[0] for s in STREAMS],
)
def test_a_long_stream_in_any_chunking_gives_the_same_usage(
    name: str, expected: tuple[int, ...], model: str | None, sizes: str, line_end: bytes
) -> None:
    raw = b"".join(long_events(name)).replace(b"\n", line_end)
    assert len(raw) > 4 * LATER_BYTES  # so that chunks are let go unread several times
    chunks = chunked(raw, sizes, line_end)
    made: list[Usage] = []
    meter = meter_for(name, made)
    assert read_through_transport(meter, chunks, None) == sum(map(len, chunks))
    assert len(made) == 1
    usage = made[0]
    assert tokens(usage) == expected
    assert usage.status == "success" and usage.usage_problem is None
    assert usage.request_model == "asked"
    if model is not None:
        assert usage.model == model
    assert usage.time_to_first_token_s is not None


@pytest.fixture
def skipped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the tails `SSEParser.skip` kept (one per time it let events go unread)."""
    kept: list[int] = []
    real = SSEParser.skip

    def spy(self: SSEParser, chunks: list[bytes], count: int, **options: Any) -> bytes | None:
        tail = real(self, chunks, count, **options)
        if tail is not None:
            kept.append(len(tail))
        return tail

    monkeypatch.setattr(SSEParser, "skip", spy)
    return kept


def test_the_events_of_a_long_stream_in_pieces_are_let_go_unread(skipped: list[int]) -> None:
    made: list[Usage] = []
    raw = b"".join(long_events("openai_chat_stream.txt"))
    meter = meter_for("openai_chat_stream.txt", made)
    read_through_transport(meter, chunked(raw, "4096"), None)
    assert meter.ring is None  # events cut across chunks: all chunks kept, read every so often
    assert len(skipped) >= 4  # every LATER_BYTES, and at the end
    assert max(skipped) < 4096  # only the last few events were kept each time
    assert tokens(made[0]) == STREAMS[0][2]


class AsyncBody:
    """`Body` for the async transport."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("sizes", ["events", "4096"])
def test_the_async_transport_reads_a_long_stream_the_same_way(sizes: str) -> None:
    made: list[Usage] = []
    meter = meter_for("anthropic_stream.txt", made)
    chunks = chunked(b"".join(long_events("anthropic_stream.txt")), sizes)

    async def read() -> int:
        stream = AsyncStream(AsyncBody(chunks), meter)
        seen = sum([len(chunk) async for chunk in stream])
        await stream.aclose()
        return seen

    assert asyncio.run(read()) == sum(map(len, chunks))
    assert (meter.ring is not None) == (sizes == "events")
    assert tokens(made[0]) == STREAMS[2][2] and made[0].usage_problem is None


def test_a_stream_of_one_event_per_chunk_keeps_only_its_last_chunks(skipped: list[int]) -> None:
    made: list[Usage] = []
    chunks = long_events("openai_chat_stream.txt")
    meter = meter_for("openai_chat_stream.txt", made)
    most = 0
    stream = SyncStream(Body(chunks), meter)
    for _ in stream:
        most = max(most, len(meter.ring or ()))
    stream.close()
    assert len(chunks) > 10 * RING_CHUNKS
    assert most == RING_CHUNKS + 1  # never more: those read, and one before them
    assert len(skipped) == 1 and skipped[0] < 4096  # read once, at the end: its last events
    assert tokens(made[0]) == STREAMS[0][2] and made[0].usage_problem is None


@pytest.mark.parametrize(
    ("name", "status", "problem", "input_tokens"),
    [("openai_chat_stream.txt", "canceled", "missing", 0),
     ("anthropic_stream.txt", "canceled", "partial", 8244),
     ("gemini_stream.txt", "canceled", "partial", 1024)],
)  # fmt: skip
def test_a_long_stream_abandoned_halfway_keeps_the_usage_seen_so_far(
    name: str, status: str, problem: str, input_tokens: int
) -> None:
    made: list[Usage] = []
    chunks = chunked(b"".join(long_events(name)), "events")
    read_through_transport(meter_for(name, made), chunks, stop_after=len(chunks) // 2)
    usage = made[0]
    assert (usage.status, usage.usage_problem, usage.input_tokens) == (
        status,
        problem,
        input_tokens,
    )


def test_a_gzipped_long_stream_gives_the_same_usage() -> None:
    made: list[Usage] = []
    raw = gzip.compress(b"".join(long_events("anthropic_stream.txt")))
    meter = meter_for("anthropic_stream.txt", made, encoding="gzip")
    read_through_transport(meter, chunked(raw, "random"), None)
    assert tokens(made[0]) == STREAMS[2][2] and made[0].usage_problem is None


def test_keep_alive_comments_after_the_usage_do_not_hide_it() -> None:
    events = long_events("openai_chat_stream.txt")
    events[-1:-1] = [b": keep-alive\n\n"] * 50  # between the usage chunk and [DONE]
    made: list[Usage] = []
    read_through_transport(meter_for("openai_chat_stream.txt", made), events, None)
    assert tokens(made[0]) == STREAMS[0][2] and made[0].usage_problem is None


def test_a_stream_of_few_huge_events_is_read_whole(skipped: list[int]) -> None:
    events = long_events("openai_chat_stream.txt")
    filler = events[2]
    big = filler.replace(b'"content":"', b'"content":"' + b"x" * (LATER_BYTES * 2), 1)
    events = [*events[:3], big, big, big, *events[-2:]]  # usage chunk, [DONE]
    made: list[Usage] = []
    read_through_transport(
        meter_for("openai_chat_stream.txt", made), chunked(b"".join(events), "4096"), None
    )
    assert tokens(made[0]) == STREAMS[0][2] and made[0].usage_problem is None


_EMPTY_CHUNK = b'data: {"object":"chat.completion.chunk","model":"gpt-4.1","choices":[]}\n\n'


def with_trailing(events: list[bytes], trailing: int) -> list[bytes]:
    """`events` with `trailing` data events between the usage chunk and `[DONE]`."""
    return [*events[:-1], *[_EMPTY_CHUNK] * trailing, events[-1]]


@pytest.mark.parametrize(
    ("sizes", "trailing"),
    [("events", 3), ("events", RING_CHUNKS - 2), ("4096", 3), ("4096", 100)],
)  # within the ring (its chunks: the usage chunk, the trailing ones, [DONE]), or the reach
def test_data_events_after_the_usage_chunk_do_not_hide_it(sizes: str, trailing: int) -> None:
    raw = b"".join(with_trailing(long_events("openai_chat_stream.txt"), trailing))
    made: list[Usage] = []
    read_through_transport(meter_for("openai_chat_stream.txt", made), chunked(raw, sizes), None)
    assert tokens(made[0]) == STREAMS[0][2] and made[0].usage_problem is None


def test_a_usage_chunk_the_ring_let_go_is_flagged_not_zero() -> None:
    events = with_trailing(long_events("openai_chat_stream.txt"), RING_CHUNKS - 1)
    made: list[Usage] = []
    read_through_transport(meter_for("openai_chat_stream.txt", made), events, None)
    assert made[0].status == "success" and made[0].usage_problem == "missing"


_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def test_an_anthropic_usage_at_the_ring_s_far_end_is_read() -> None:
    """message_delta, then pings, then message_stop: exactly the chunks the ring reads."""
    events = long_events("anthropic_stream.txt")
    made: list[Usage] = []
    chunks = [*events[:-1], *[_PING] * (RING_CHUNKS - 2), events[-1]]
    read_through_transport(meter_for("anthropic_stream.txt", made), chunks, None)
    assert tokens(made[0]) == STREAMS[2][2] and made[0].usage_problem is None


def test_an_anthropic_usage_the_ring_let_go_is_flagged_not_trusted() -> None:
    """message_stop alone would make message_start's counts look final: they are not."""
    events = long_events("anthropic_stream.txt")
    made: list[Usage] = []
    chunks = [*events[:-1], *[b": keep-alive\n\n"] * (RING_CHUNKS + 6), events[-1]]
    read_through_transport(meter_for("anthropic_stream.txt", made), chunks, None)
    assert made[0].usage_problem == "partial"
    assert made[0].input_tokens == 8244  # what message_start said; its output is not final


@pytest.mark.parametrize("name", [s[0] for s in STREAMS if s[0].endswith("stream.txt")])
def test_closing_events_cut_finer_than_the_ring_holds_are_flagged(name: str) -> None:
    events = long_events(name)
    tail = b"".join(events[-3:])
    pieces = [tail[at : at + 4] for at in range(0, len(tail), 4)]
    assert len(pieces) > RING_CHUNKS + 1
    made: list[Usage] = []
    read_through_transport(meter_for(name, made), [*events[:-3], *pieces], None)
    expected = next(s[2] for s in STREAMS if s[0] == name)
    assert tokens(made[0]) == expected or made[0].usage_problem in ("missing", "partial")


def test_a_responses_stream_is_kept_whole_for_its_large_closing_events() -> None:
    """The Responses API closes with the whole response: a long answer makes its last
    events large, and cut in network-sized pieces they outnumber any ring."""
    name = "openai_responses_stream.txt"
    events = long_events(name)
    padded = [e.replace(b'"text":"', b'"text":"' + b"y" * 30_000, 1) for e in events[-4:]]
    tail = b"".join(padded)
    pieces = [tail[at : at + 1448] for at in range(0, len(tail), 1448)]
    assert len(pieces) > RING_CHUNKS + 1
    made: list[Usage] = []
    meter = meter_for(name, made)
    read_through_transport(meter, [*events[:-4], *pieces], None)
    assert meter.ring is None
    assert tokens(made[0]) == STREAMS[1][2] and made[0].usage_problem is None


def test_a_failure_reading_the_ring_flags_the_usage_and_keeps_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("deque mutated during iteration")

    monkeypatch.setattr(SSEParser, "feed_tail", broken)
    made: list[Usage] = []
    events = long_events("anthropic_stream.txt")
    read_through_transport(meter_for("anthropic_stream.txt", made), events, None)
    assert len(made) == 1 and made[0].usage_problem == "partial"


def test_copying_the_ring_tries_again_when_it_changes_underneath() -> None:
    from otel_tokens._http.meter import _copy

    class Changing(deque[bytes]):
        failures = 2

        def __iter__(self) -> Iterator[bytes]:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("deque mutated during iteration")
            return super().__iter__()

    assert _copy(Changing([b"a", b"b"])) == [b"a", b"b"]


@pytest.mark.parametrize("name", [s[0] for s in STREAMS if s[0].endswith("stream.txt")])
def test_a_stream_whose_closing_events_come_in_pieces_after_whole_ones(name: str) -> None:
    """A server that sent its first events whole may cut the last ones (a proxy, TCP)."""
    events = long_events(name)
    tail = b"".join(events[-3:])
    size = len(tail) // 20 + 1
    pieces = [tail[at : at + size] for at in range(0, len(tail), size)]
    made: list[Usage] = []
    read_through_transport(meter_for(name, made), [*events[:-3], *pieces], None)
    expected = next(s[2] for s in STREAMS if s[0] == name)
    assert tokens(made[0]) == expected and made[0].usage_problem is None


def in_lines(event: str, data: dict[str, Any]) -> list[bytes]:
    """An event whose JSON is cut into many `data:` lines, one chunk each (SSE joins them)."""
    parts = json.dumps(data).split(", ")
    lines = [f"data: {part},\n".encode() for part in parts[:-1]] + [
        f"data: {parts[-1]}\n\n".encode()
    ]
    return [f"event: {event}\n".encode(), *lines]


def test_a_full_ring_that_begins_inside_an_event_reads_no_half_of_it() -> None:
    """When the ring has let chunks go, its first chunks may be the last lines of an event:
    read alone they are not JSON, and must not make the stream look malformed."""
    events = long_events("anthropic_stream.txt")
    delta = {"type": "content_block_delta", "index": 0, "pad": [0] * 40,
             "delta": {"type": "text_delta", "text": "more"}}  # fmt: skip
    long_delta = in_lines("content_block_delta", delta)
    assert 2 * len(long_delta) > RING_CHUNKS - 2  # the ring holds less than two of them
    middle = long_delta * 5
    made: list[Usage] = []
    read_through_transport(
        meter_for("anthropic_stream.txt", made), [*events[:4], *middle, *events[-2:]], None
    )
    assert tokens(made[0]) == STREAMS[2][2] and made[0].usage_problem is None


def test_a_gzipped_stream_larger_than_what_is_read_at_once_is_skipped_too(
    skipped: list[int],
) -> None:
    events = long_events("anthropic_stream.txt")
    events[5:-4] = [e.replace(b'"text":"', b'"text":"%s' % os.urandom(96).hex().encode(), 1)
                    for e in events[5:-4]]  # fmt: skip
    raw = gzip.compress(b"".join(events))
    assert len(raw) > 2 * LATER_BYTES
    made: list[Usage] = []
    meter = meter_for("anthropic_stream.txt", made, encoding="gzip")
    read_through_transport(meter, chunked(raw, "random"), None)
    assert tokens(made[0]) == STREAMS[2][2] and made[0].usage_problem is None
    assert len(skipped) >= 2


def test_a_response_closed_from_another_thread_while_its_chunks_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The consumer thread makes the `Usage` while the request thread may still be reading
    what the caller kept: it must wait, not read half-handled chunks."""
    inside, go = threading.Event(), threading.Event()
    real = SSEParser.skip

    def held(self: SSEParser, chunks: list[bytes], count: int, **options: Any) -> bytes | None:
        if threading.current_thread().name == "reader":
            inside.set()
            go.wait(10)
        return real(self, chunks, count, **options)

    monkeypatch.setattr(SSEParser, "skip", held)
    made: list[Usage] = []
    makers: list[threading.Thread] = []

    def record_later(make: Any) -> None:  # as the consumer thread would, at once
        makers.append(threading.Thread(target=lambda: made.append(make())))
        makers[-1].start()

    meter = meter_for("openai_chat_stream.txt", made)
    meter._record_later = record_later
    events = long_events("openai_chat_stream.txt")
    first = 0
    while meter.later is None:  # in halves: not one event per chunk, so no ring
        half = len(events[first]) // 2
        meter.on_chunk(events[first][:half])
        meter.on_chunk(events[first][half:])
        first += 1
    assert meter.later is not None and meter.ring is None
    meter.later.extend(events[first:])  # the caller's loop kept the rest, [DONE] included
    reader = threading.Thread(target=meter.on_later, name="reader")
    reader.start()
    assert inside.wait(10)
    meter.on_close()  # the caller saw [DONE] and closed, from another thread
    makers[0].join(0.5)  # it must be waiting for the reader (bounded: not a timing assertion)
    go.set()
    reader.join(10)
    makers[0].join(10)
    assert tokens(made[0]) == STREAMS[0][2]
    assert (made[0].status, made[0].usage_problem) == ("success", None)
