"""AWS Bedrock Converse, whose `inputTokens` leaves out cache reads and writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_tokens._base.usage import Usage
from otel_tokens.providers._read import Counts, UsageFields, get, is_record, normalize

if TYPE_CHECKING:
    from typing_extensions import Unpack


def read_usage(usage: object, counts: Counts) -> None:
    """Fold a Converse `usage` block into `counts`: input gains the cache reads and writes.

    Bedrock's `totalTokens` is `inputTokens + outputTokens + cacheReadInputTokens +
    cacheWriteInputTokens`: its `inputTokens` counts only the uncached prompt.
    """
    if not is_record(usage):
        counts.malformed = True
        return
    counts.seen = True
    counts.cache_read = counts.count(usage, "cacheReadInputTokens")
    counts.cache_write = counts.count(usage, "cacheWriteInputTokens")
    counts.input = counts.count(usage, "inputTokens") + counts.cache_read + counts.cache_write
    for detail in get(usage, "cacheDetails") or ():  # cache writes by lifetime, "5m" or "1h"
        if get(detail, "ttl") == "1h":
            counts.cache_write_1h += counts.count(detail, "inputTokens")
    counts.output = counts.count(usage, "outputTokens")


def _usage_of(response: object) -> object:
    return get(response, "usage")


def from_bedrock(response: object, **fields: Unpack[UsageFields]) -> Usage:
    """The `Usage` of a Bedrock Converse response; never raises on bad data.

    The response does not name its model, so pass `model=` (the `modelId` you called).

    Args:
        response: the Converse response dict (boto3 returns dicts).
        **fields: `model=` and any other `Usage` field; these override the response.

    Example:
        >>> from_bedrock({"usage": {"inputTokens": 20, "outputTokens": 300,
        ...     "cacheReadInputTokens": 1000}}, model="amazon.nova-pro-v1:0").input_tokens
        1020
    """
    # Converse responses do not name the model: the caller's model= does.
    return normalize(
        response, fields, provider="aws.bedrock", usage_of=_usage_of, read_usage=read_usage,
        model_of=lambda _: None, operation="chat",
    )  # fmt: skip
