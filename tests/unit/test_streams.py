"""Stream accumulators on the providers' documented streams: raw SSE in pieces of any size,
parsed events, and the SDKs' own event objects all give the same hand-computed usage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from otel_tokens._base.usage import find_fault
from otel_tokens._http.sse import SSEParser
from otel_tokens.providers import (
    AnthropicStream,
    BedrockStream,
    GeminiStream,
    OpenAIStream,
    StreamAccumulator,
)
from tests.helpers.paths import PAYLOADS
from tests.helpers.streams import STREAMS, tokens


def sse_events(name: str) -> list[tuple[str | None, bytes]]:
    parser = SSEParser()
    raw = (PAYLOADS / name).read_bytes()
    return parser.feed(raw) + parser.close()


def feed_raw(accumulator: StreamAccumulator, name: str, piece: int) -> None:
    raw = (PAYLOADS / name).read_bytes()
    parser = SSEParser()
    for start in range(0, len(raw), piece):
        for event, data in parser.feed(raw[start : start + piece]):
            accumulator.feed_sse(event, data)
    for event, data in parser.close():
        accumulator.feed_sse(event, data)


def feed_parsed(accumulator: StreamAccumulator, name: str) -> None:
    for _, data in sse_events(name):
        if data.strip() != b"[DONE]":
            accumulator.feed(json.loads(data))


@pytest.mark.parametrize("piece", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize(
    ("name", "kind", "expected", "model"), STREAMS, ids=[s[0] for s in STREAMS]
)
def test_raw_sse_in_pieces_of_any_size_gives_the_hand_computed_usage(
    name: str, kind: type[StreamAccumulator], expected: tuple[int, ...], model: str | None,
    piece: int,
) -> None:  # fmt: skip
    accumulator = kind(request_model="asked")
    feed_raw(accumulator, name, piece)
    assert accumulator.final
    usage = accumulator.finish()
    assert tokens(usage) == expected
    if model is not None:
        assert usage.model == model
    assert usage.usage_problem is None
    assert usage.streamed and usage.status == "success"
    assert usage.time_to_first_token_s is not None
    assert usage.latency_s is not None and usage.time_to_first_token_s <= usage.latency_s
    assert find_fault(usage) is None


@pytest.mark.parametrize(
    ("name", "kind", "expected", "model"), STREAMS, ids=[s[0] for s in STREAMS]
)
def test_parsed_events_give_the_same_usage_as_raw_sse(
    name: str, kind: type[StreamAccumulator], expected: tuple[int, ...], model: str | None
) -> None:
    accumulator = kind()
    feed_parsed(accumulator, name)
    usage = accumulator.finish()
    assert tokens(usage) == expected
    assert usage.usage_problem is None
    assert usage.time_to_first_token_s is not None


def test_sdk_event_objects_give_the_same_usage() -> None:
    from anthropic.types import RawMessageStreamEvent
    from openai.types.chat import ChatCompletionChunk
    from pydantic import TypeAdapter

    cases: list[tuple[type[StreamAccumulator], str, Any]] = [
        (OpenAIStream, "openai_chat_stream.txt", TypeAdapter(ChatCompletionChunk)),
        (AnthropicStream, "anthropic_stream.txt", TypeAdapter(RawMessageStreamEvent)),
    ]
    for kind, name, adapter in cases:
        from_objects, from_json = kind(), kind()
        for _, data in sse_events(name):
            if data.strip() == b"[DONE]" or b'"ping"' in data:
                continue
            obj = adapter.validate_json(data)
            assert not isinstance(obj, dict)
            from_objects.feed(obj)
            from_json.feed(json.loads(data))
        assert tokens(from_objects.finish()) == tokens(from_json.finish()), name
        assert from_objects.final, name


def test_bedrock_converse_stream_events_as_boto3_yields_them() -> None:
    accumulator = BedrockStream(model="amazon.nova-pro-v1:0")
    for event in json.loads((PAYLOADS / "bedrock_converse_stream_events.json").read_text()):
        accumulator.feed(event)
    usage = accumulator.finish()
    assert tokens(usage) == (31 + 4096, 96, 4096, 0, 0, 0)
    assert usage.model == "amazon.nova-pro-v1:0" and usage.time_to_first_token_s is not None


def test_a_stream_abandoned_halfway_is_canceled_with_the_usage_seen_so_far() -> None:
    events = sse_events("anthropic_stream.txt")
    accumulator = AnthropicStream()
    for event, data in events[:4]:  # message_start, content_block_start, ping, first delta
        accumulator.feed_sse(event, data)
    usage = accumulator.finish(status="canceled")
    assert usage.status == "canceled"
    assert tokens(usage) == (8244, 1, 6144, 2048, 0, 0)  # output so far: message_start's 1
    assert usage.usage_problem == "partial"
    assert find_fault(usage) is None


def test_an_openai_stream_abandoned_before_its_usage_chunk_says_usage_is_missing() -> None:
    events = sse_events("openai_chat_stream.txt")
    accumulator = OpenAIStream(request_model="gpt-4.1")
    for event, data in events[:3]:
        accumulator.feed_sse(event, data)
    usage = accumulator.finish(status="canceled")
    assert (usage.status, usage.usage_problem, usage.input_tokens) == ("canceled", "missing", 0)
    assert usage.time_to_first_token_s is not None


def test_a_stream_without_include_usage_is_flagged_missing_not_zero() -> None:
    accumulator = OpenAIStream()
    for event, data in sse_events("openai_chat_stream.txt"):
        if b'"usage":{' not in data:
            accumulator.feed_sse(event, data)
    usage = accumulator.finish()
    assert (usage.status, usage.usage_problem) == ("success", "missing")


@pytest.mark.parametrize(
    ("name", "kind", "error_type"),
    [
        ("anthropic_stream_error.txt", AnthropicStream, "overloaded_error"),
        ("openai_chat_stream_error.txt", OpenAIStream, "server_error"),
    ],
)
def test_an_error_inside_the_stream_makes_the_request_an_error(
    name: str, kind: type[StreamAccumulator], error_type: str
) -> None:
    accumulator = kind()
    feed_raw(accumulator, name, 64)
    usage = accumulator.finish()
    assert (usage.status, usage.error_type) == ("error", error_type)
    assert find_fault(usage) is None


def test_a_gemini_error_chunk_makes_the_request_an_error() -> None:
    # Gemini's documented error body (`code`, `message`, `status`) arriving as a stream chunk.
    accumulator = GeminiStream()
    first_event, first_data = sse_events("gemini_stream.txt")[0]
    accumulator.feed_sse(first_event, first_data)
    accumulator.feed_sse(None, b'{"error": {"code": 503, "message": "The model is overloaded.",'
                               b' "status": "UNAVAILABLE"}}')  # fmt: skip
    usage = accumulator.finish()
    assert (usage.status, usage.error_type, usage.input_tokens) == ("error", "UNAVAILABLE", 1024)


@pytest.mark.parametrize("kind", [OpenAIStream, AnthropicStream, GeminiStream, BedrockStream])
@pytest.mark.parametrize(
    "event",
    [None, 42, "text", [1], {}, {"usage": 7}, {"type": "message_start", "message": 5},
     {"choices": "x"}, {"usageMetadata": {"promptTokenCount": "many"}}],
)  # fmt: skip
def test_garbage_events_never_raise_and_still_finish(
    kind: type[StreamAccumulator], event: Any
) -> None:
    accumulator = kind()
    accumulator.feed(event)
    accumulator.feed_sse(None, b"{not json")
    accumulator.feed_sse("message_delta", b"\xff\xfe")
    usage = accumulator.finish()
    assert find_fault(usage) is None
    assert usage.usage_problem in ("malformed", "missing")


def test_sse_parser_handles_crlf_cr_comments_and_multi_line_data() -> None:
    parser = SSEParser()
    events = parser.feed(b": comment\r\nevent: a\r\ndata: 1\r\ndata: 2\r\n\r")
    events += parser.feed(b"\ndata:3\r\rdata: 4")
    events += parser.close()
    assert events == [("a", b"1\n2"), (None, b"3"), (None, b"4")]


def test_sse_parser_drops_an_endless_event_instead_of_holding_it() -> None:
    parser = SSEParser()
    chunk = b"data: " + b"x" * (1 << 20)
    for _ in range(5):
        parser.feed(chunk)
    assert parser.overflowed
    assert parser.feed(b"\n\ndata: ok\n\n") == [(None, b"ok")]


def numbered_stream(count: int) -> bytes:
    return b"".join(b"event: e\ndata: %d\n\n: a comment\n\n" % i for i in range(count))


@pytest.mark.parametrize("piece", [1, 5, 64, 1000])
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_sse_parser_skip_keeps_the_last_events_and_the_unfinished_one(
    piece: int, line_end: bytes
) -> None:
    raw = numbered_stream(300).replace(b"\n", line_end) + b"data: unfinis"
    chunks = [raw[i : i + piece] for i in range(0, len(raw), piece)]
    parser = SSEParser()
    tail = parser.skip(chunks, 3)
    assert tail is not None
    assert parser.feed(tail) == [("e", b"297"), ("e", b"298"), ("e", b"299")]
    # (a last CR may be half a CRLF, so with CR line ends the event ends at close())
    assert parser.feed(b"hed" + line_end * 2) + parser.close() == [(None, b"unfinished")]


def test_sse_parser_skip_gives_up_when_the_chunks_hold_too_few_events() -> None:
    parser = SSEParser()
    parser.feed(b"data: pend")
    chunks = [b"ing\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert parser.skip(chunks, 3) is None
    assert parser.feed_tail(chunks, 3) == [(None, b"pending"), (None, b"1"), (None, b"2")]


def test_sse_parser_feed_tail_returns_only_the_last_events() -> None:
    raw = numbered_stream(100)
    parser = SSEParser()
    assert parser.feed_tail([raw[i : i + 7] for i in range(0, len(raw), 7)], 2) == [
        ("e", b"98"), ("e", b"99")
    ]  # fmt: skip
