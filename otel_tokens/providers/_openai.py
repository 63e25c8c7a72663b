"""OpenAI and OpenAI-compatible servers (Azure OpenAI, vLLM, DeepSeek, Groq, Mistral, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_tokens._base.usage import Usage
from otel_tokens.providers._read import Counts, UsageFields, get, is_record, normalize, text

if TYPE_CHECKING:
    from typing_extensions import Unpack


def read_usage(usage: object, counts: Counts) -> None:
    """Fold an OpenAI `usage` block (Chat Completions, Responses or embeddings) into `counts`.

    Chat Completions: `prompt_tokens` includes `prompt_tokens_details.cached_tokens` and
    `.cache_write_tokens`; `completion_tokens` includes `.reasoning_tokens`. The Responses
    API says `input_tokens` / `output_tokens` with `input_tokens_details` /
    `output_tokens_details`. DeepSeek reports `prompt_cache_hit_tokens` and
    `prompt_cache_miss_tokens`, which add up to `prompt_tokens`.
    """
    if not is_record(usage):
        counts.malformed = True
        return
    counts.seen = True
    details = get(usage, "prompt_tokens_details", "input_tokens_details")
    hits = counts.count(usage, "prompt_cache_hit_tokens")
    if counts.has(usage, "prompt_tokens", "input_tokens"):
        counts.input = counts.count(usage, "prompt_tokens", "input_tokens")
    else:
        counts.input = hits + counts.count(usage, "prompt_cache_miss_tokens")
    cached = counts.count(details, "cached_tokens")
    counts.cache_read = cached if counts.has(details, "cached_tokens") else hits
    counts.cache_write = counts.count(details, "cache_write_tokens")
    counts.output = counts.count(usage, "completion_tokens", "output_tokens")
    out_details = get(usage, "completion_tokens_details", "output_tokens_details")
    counts.reasoning = counts.count(out_details, "reasoning_tokens")


def operation_of(response: object) -> str:
    """`gen_ai.operation.name` of an OpenAI response, from its `object` field."""
    kind = text(response, "object")
    if kind in ("list", "embedding"):
        return "embeddings"
    if kind == "text_completion":
        return "text_completion"
    return "chat"


def _usage_of(response: object) -> object:
    return get(response, "usage")


def _read_response(response: object, counts: Counts) -> None:
    """The usage block, and the service tier beside it."""
    counts.saw_service_tier(response)
    usage = _usage_of(response)
    if usage is not None:
        read_usage(usage, counts)


def _model_of(response: object) -> str | None:
    return text(response, "model")


def from_openai(response: object, **fields: Unpack[UsageFields]) -> Usage:
    """The `Usage` of an OpenAI (or OpenAI-compatible) response; never raises on bad data.

    Reads Chat Completions, legacy Completions, the Responses API and embeddings, as a
    parsed-JSON dict or as the `openai` SDK's object. A response without usage gives
    `usage_problem="missing"`; an unreadable or inconsistent one `"malformed"`.

    Args:
        response: the response body.
        **fields: any other `Usage` field (`provider="deepseek"`, `latency_s`, `scenario`,
            `status`, ...); these override what the response says.

    Example:
        >>> from_openai({"object": "chat.completion", "model": "gpt-4o-mini",
        ...              "usage": {"prompt_tokens": 1200, "completion_tokens": 80,
        ...                        "prompt_tokens_details": {"cached_tokens": 1024}}}
        ...             ).cache_read_tokens
        1024
    """
    return normalize(
        response, fields, provider="openai", usage_of=lambda r: r, read_usage=_read_response,
        model_of=_model_of, operation=operation_of,
    )  # fmt: skip
