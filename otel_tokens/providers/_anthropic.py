"""Anthropic Messages, whose `input_tokens` leaves out cache reads and cache writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_tokens._base.usage import Usage
from otel_tokens.providers._read import Counts, UsageFields, get, is_record, normalize, text

if TYPE_CHECKING:
    from typing_extensions import Unpack


def read_usage(usage: object, counts: Counts) -> None:
    """Fold an Anthropic `usage` block into `counts`, adding the cache back into input.

    Fields absent from `usage` keep what `counts` already holds: a stream's
    `message_delta` may repeat only `output_tokens` after `message_start` gave the rest.
    """
    if not is_record(usage):
        counts.malformed = True
        return
    counts.seen = True
    uncached = counts.count(usage, "input_tokens")
    had_input = counts.has(usage, "input_tokens")
    split = get(usage, "cache_creation")
    if counts.has(usage, "cache_read_input_tokens"):
        counts.cache_read = counts.count(usage, "cache_read_input_tokens")
    if counts.has(usage, "cache_creation_input_tokens"):
        counts.cache_write = counts.count(usage, "cache_creation_input_tokens")
    elif split is not None:
        counts.cache_write = counts.count(split, "ephemeral_5m_input_tokens") + counts.count(
            split, "ephemeral_1h_input_tokens"
        )
    if split is not None:
        counts.cache_write_1h = counts.count(split, "ephemeral_1h_input_tokens")
    if had_input:
        counts.input = uncached + counts.cache_read + counts.cache_write
    if counts.has(usage, "output_tokens"):
        counts.output = counts.count(usage, "output_tokens")


def _usage_of(response: object) -> object:
    return get(response, "usage")


def _model_of(response: object) -> str | None:
    return text(response, "model")


def from_anthropic(response: object, **fields: Unpack[UsageFields]) -> Usage:
    """The `Usage` of an Anthropic Messages response; never raises on bad data.

    `input_tokens` becomes `input_tokens + cache_read_input_tokens +
    cache_creation_input_tokens`, so input counts the cache as every provider's does here;
    `cache_creation.ephemeral_1h_input_tokens` becomes `cache_write_1h_tokens`.

    Args:
        response: the response body, a dict or the `anthropic` SDK's `Message`.
        **fields: any other `Usage` field; these override what the response says.

    Example:
        >>> from_anthropic({"model": "claude-sonnet-4-5", "usage": {"input_tokens": 50,
        ...     "cache_read_input_tokens": 4000, "output_tokens": 300}}).input_tokens
        4050
    """
    return normalize(
        response, fields, provider="anthropic", usage_of=_usage_of, read_usage=read_usage,
        model_of=_model_of, operation="chat",
    )  # fmt: skip
