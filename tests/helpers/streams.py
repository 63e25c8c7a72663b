"""The providers' documented streams in tests/payloads/, with the usage worked out by hand for
each: shared by the stream accumulator tests and the long-stream tests."""

from __future__ import annotations

from otel_tokens import Usage
from otel_tokens.providers import AnthropicStream, GeminiStream, OpenAIStream


def tokens(u: Usage) -> tuple[int, int, int, int, int, int]:
    return (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
            u.cache_write_1h_tokens, u.reasoning_tokens)  # fmt: skip


# file, accumulator, (input, output, cache read, cache write, 1h write, reasoning), model
STREAMS = [
    ("openai_chat_stream.txt", OpenAIStream, (1362, 8, 1152, 0, 0, 0), "gpt-4.1-2025-04-14"),
    ("openai_responses_stream.txt", OpenAIStream, (3187, 8, 2944, 0, 0, 0), None),
    ("anthropic_stream.txt", AnthropicStream, (8244, 187, 6144, 2048, 0, 0),
     "claude-sonnet-4-5-20250929"),
    ("anthropic_stream_legacy_delta.txt", AnthropicStream, (8244, 187, 6144, 2048, 0, 0),
     "claude-sonnet-4-5-20250929"),
    ("gemini_stream.txt", GeminiStream, (1024, 11 + 795, 0, 0, 0, 795), "gemini-2.5-flash"),
]  # fmt: skip
