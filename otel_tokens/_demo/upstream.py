"""What the demo's simulated upstreams answer: bodies and stream events shaped as each
provider documents them, so that the demo reads them with the package's own normalizers
and stream accumulators, as a gateway would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: How many content events a simulated stream has between its first and closing events.
CONTENT_EVENTS = 4


@dataclass(frozen=True)
class Tokens:
    """One answer's token counts in this package's meaning (input includes the cache,
    output includes the reasoning)."""

    prompt: int
    cached: int = 0
    written: int = 0
    written_1h: int = 0  # the part of `written` cached for an hour
    answer: int = 0
    thinking: int = 0


def response_body(wire: str, model: str, tokens: Tokens) -> dict[str, Any]:
    """A whole (not streamed) response of `wire` ("openai", "openai_embeddings",
    "anthropic", "gemini" or "bedrock") as its provider documents it."""
    if wire == "openai_embeddings":
        usage = {"prompt_tokens": tokens.prompt, "total_tokens": tokens.prompt}
        return {"object": "list", "data": [], "model": model, "usage": usage}
    if wire == "openai":
        return {"object": "chat.completion", "model": model, "usage": _openai_usage(tokens),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "..."},
                             "finish_reason": "stop"}]}  # fmt: skip
    if wire == "anthropic":
        usage = {**_anthropic_input(tokens), "output_tokens": tokens.answer}
        text = [{"type": "text", "text": "..."}]
        return {"type": "message", "role": "assistant", "model": model, "usage": usage,
                "content": text, "stop_reason": "end_turn"}  # fmt: skip
    if wire == "gemini":
        return {"modelVersion": model, "usageMetadata": _gemini_usage(tokens, tokens.answer),
                "candidates": [{"content": {"parts": [{"text": "..."}], "role": "model"},
                                "finishReason": "STOP"}]}  # fmt: skip
    if wire == "bedrock":
        return {"output": {"message": {"role": "assistant", "content": [{"text": "..."}]}},
                "stopReason": "end_turn", "usage": _bedrock_usage(tokens)}  # fmt: skip
    msg = f"no simulated responses for wire {wire!r}"
    raise ValueError(msg)


def stream_events(wire: str, model: str, tokens: Tokens) -> list[dict[str, Any]]:
    """The events of a streamed response of `wire`, as its provider documents them: the
    opening event, CONTENT_EVENTS of content, and the closing ones with the usage."""
    content = range(1, CONTENT_EVENTS + 1)
    if wire == "openai":

        def chunk(delta: dict[str, Any], usage: Any = None, choices: bool = True) -> dict[str, Any]:
            return {"object": "chat.completion.chunk", "model": model, "usage": usage,
                    "choices": [{"index": 0, "delta": delta}] if choices else []}  # fmt: skip

        return [chunk({"role": "assistant", "content": ""}),
                *(chunk({"content": " word"}) for _ in content),
                chunk({}, _openai_usage(tokens), choices=False)]  # fmt: skip
    if wire == "anthropic":
        start = {"type": "message_start", "message": {
            "type": "message", "role": "assistant", "model": model, "content": [],
            "usage": {**_anthropic_input(tokens), "output_tokens": 1}}}  # fmt: skip
        delta = {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": " word"}}  # fmt: skip
        end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
               "usage": {"output_tokens": tokens.answer}}  # fmt: skip
        return [start, *(delta for _ in content), end, {"type": "message_stop"}]
    if wire == "gemini":  # every chunk carries the usage so far
        return [{"modelVersion": model,
                 "usageMetadata": _gemini_usage(tokens, tokens.answer * i // CONTENT_EVENTS),
                 "candidates": [{"content": {"parts": [{"text": " word"}], "role": "model"},
                                 **({"finishReason": "STOP"} if i == CONTENT_EVENTS else {})}]}
                for i in content]  # fmt: skip
    if wire == "bedrock":  # as boto3's converse_stream() yields them
        delta = {"contentBlockDelta": {"delta": {"text": " word"}, "contentBlockIndex": 0}}
        metadata = {"usage": _bedrock_usage(tokens), "metrics": {"latencyMs": 1}}
        return [{"messageStart": {"role": "assistant"}}, *(delta for _ in content),
                {"messageStop": {"stopReason": "end_turn"}}, {"metadata": metadata}]  # fmt: skip
    msg = f"no simulated streams for wire {wire!r}"
    raise ValueError(msg)


def error_body(wire: str, error_type: str) -> dict[str, Any]:
    """The body of a failed call: each provider's documented error shape."""
    if wire == "anthropic":
        return {"type": "error", "error": {"type": error_type, "message": "simulated"}}
    if wire == "gemini":
        return {"error": {"code": 500, "message": "simulated", "status": error_type}}
    if wire == "bedrock":
        return {"message": "simulated", "__type": error_type}
    return {"error": {"message": "simulated", "type": error_type, "code": None}}


def _openai_usage(tokens: Tokens) -> dict[str, Any]:
    return {"prompt_tokens": tokens.prompt, "completion_tokens": tokens.answer,
            "total_tokens": tokens.prompt + tokens.answer,
            "prompt_tokens_details": {"cached_tokens": tokens.cached,
                                      "cache_write_tokens": tokens.written},
            "completion_tokens_details": {"reasoning_tokens": tokens.thinking}}  # fmt: skip


def _anthropic_input(tokens: Tokens) -> dict[str, Any]:
    # Anthropic's input_tokens leaves out the cache reads and writes.
    return {"input_tokens": tokens.prompt - tokens.cached - tokens.written,
            "cache_read_input_tokens": tokens.cached,
            "cache_creation_input_tokens": tokens.written,
            "cache_creation": {"ephemeral_5m_input_tokens": tokens.written - tokens.written_1h,
                               "ephemeral_1h_input_tokens": tokens.written_1h}}  # fmt: skip


def _gemini_usage(tokens: Tokens, answer: int) -> dict[str, Any]:
    # Gemini's promptTokenCount includes the cache; thoughts are not in candidates.
    thinking = min(tokens.thinking, answer)
    return {"promptTokenCount": tokens.prompt, "cachedContentTokenCount": tokens.cached,
            "candidatesTokenCount": answer - thinking, "thoughtsTokenCount": thinking,
            "totalTokenCount": tokens.prompt + answer}  # fmt: skip


def _bedrock_usage(tokens: Tokens) -> dict[str, Any]:
    # Bedrock's inputTokens leaves out the cache reads and writes.
    return {"inputTokens": tokens.prompt - tokens.cached - tokens.written,
            "outputTokens": tokens.answer, "cacheReadInputTokens": tokens.cached,
            "cacheWriteInputTokens": tokens.written,
            "totalTokens": tokens.prompt + tokens.answer}  # fmt: skip
