"""Google Gemini `usageMetadata`, where thoughts are counted apart from candidates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_tokens._base.usage import Usage
from otel_tokens.providers._read import Counts, UsageFields, get, is_record, normalize, text

if TYPE_CHECKING:
    from typing_extensions import Unpack

OPERATION = "generate_content"


def read_usage(metadata: object, counts: Counts) -> None:
    """Fold Gemini `usageMetadata` (REST camelCase or the SDK's snake_case) into `counts`.

    `promptTokenCount` already includes `cachedContentTokenCount`; the tool-use prompt
    (`toolUsePromptTokenCount`) is input too but counted apart, and `thoughtsTokenCount`
    is output that `candidatesTokenCount` leaves out.
    """
    if not is_record(metadata):
        counts.malformed = True
        return
    counts.seen = True
    prompt = counts.count(metadata, "promptTokenCount", "prompt_token_count")
    tool_prompt = counts.count(metadata, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    counts.input = prompt + tool_prompt
    counts.cache_read = counts.count(
        metadata, "cachedContentTokenCount", "cached_content_token_count"
    )
    thoughts = counts.count(metadata, "thoughtsTokenCount", "thoughts_token_count")
    candidates = counts.count(metadata, "candidatesTokenCount", "candidates_token_count")
    counts.output = candidates + thoughts
    counts.reasoning = thoughts


def metadata_of(response: object) -> object:
    return get(response, "usageMetadata", "usage_metadata")


def model_of(response: object) -> str | None:
    return text(response, "modelVersion", "model_version")


def from_gemini(response: object, **fields: Unpack[UsageFields]) -> Usage:
    """The `Usage` of a Gemini `generateContent` response; never raises on bad data.

    Input is `promptTokenCount + toolUsePromptTokenCount` (cache included), output is
    `candidatesTokenCount + thoughtsTokenCount`, reasoning is `thoughtsTokenCount`.

    Args:
        response: the response body, a dict or the `google-genai` SDK's response.
        **fields: any other `Usage` field (`provider="gcp.vertex_ai"`, ...); these override
            what the response says.

    Example:
        >>> from_gemini({"modelVersion": "gemini-2.5-flash", "usageMetadata": {
        ...     "promptTokenCount": 900, "candidatesTokenCount": 100,
        ...     "thoughtsTokenCount": 400}}).output_tokens
        500
    """
    return normalize(
        response, fields, provider="gcp.gemini", usage_of=metadata_of, read_usage=read_usage,
        model_of=model_of, operation=OPERATION,
    )  # fmt: skip
