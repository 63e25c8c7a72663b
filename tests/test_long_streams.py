"""Long streams as the transport reads them: once a stream's first events are read, its
chunks are kept and all but the closing events are let go unread. Whatever the chunking,
line endings or compression, and wherever the caller stops, the usage must be the one the
accumulator gives when it reads every event."""

from __future__ import annotations

import gzip
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from otel_tokens import Usage
from otel_tokens._http_meter import LATER_BYTES, ResponseMeter
from otel_tokens._http_route import Route
from otel_tokens.httpx import _SyncStream
from otel_tokens.providers._sse import SSEParser
from tests.fake_providers import long_events
from tests.test_streams import STREAMS, tokens

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
                  server_address=None, api_key=None,
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
    stream = _SyncStream(Body(chunks), meter)
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


def test_the_events_of_a_long_stream_are_let_go_unread(skipped: list[int]) -> None:
    made: list[Usage] = []
    raw = b"".join(long_events("openai_chat_stream.txt"))
    read_through_transport(meter_for("openai_chat_stream.txt", made), chunked(raw, "events"), None)
    assert len(skipped) >= 4  # every LATER_BYTES, and at the end
    assert max(skipped) < 4096  # only the last few events were kept each time
    assert tokens(made[0]) == STREAMS[0][2]


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


@pytest.mark.parametrize("trailing", [3, 100])  # up to _USAGE_REACH of them
def test_data_events_after_the_usage_chunk_do_not_hide_it(trailing: int) -> None:
    events = long_events("openai_chat_stream.txt")
    usage_chunk, done = events[-2], events[-1]
    empty = b'data: {"object":"chat.completion.chunk","model":"gpt-4.1","choices":[]}\n\n'
    events[-2:] = [usage_chunk, *[empty] * trailing, done]
    made: list[Usage] = []
    read_through_transport(meter_for("openai_chat_stream.txt", made), events, None)
    assert tokens(made[0]) == STREAMS[0][2] and made[0].usage_problem is None


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
    while meter.later is None:
        meter.on_chunk(events[first])
        first += 1
    assert meter.later is not None
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
