"""Read token counts out of anything a provider or its SDK hands back, never raising.

Responses arrive as parsed JSON (dicts) or as SDK objects (attributes, camelCase or
snake_case). Every read goes through `get`, which tolerates both and garbage; every count
through `Counts.count`, which takes only whole numbers >= 0 and remembers when a field was
present but unreadable, so the `Usage` can say its numbers are `malformed`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from otel_tokens._base.usage import MAX_TOKENS, Usage

#: The model name when neither the response nor the caller says which model it was.
UNKNOWN_MODEL = "unknown"


class UsageFields(TypedDict, total=False):
    """`Usage` fields a caller may set; they override what the response says."""

    provider: str
    model: str
    request_model: str | None
    operation: str
    system_tokens: int
    status: str
    error_type: str | None
    latency_s: float | None
    time_to_first_token_s: float | None
    time_per_output_chunk_s: float | None
    streamed: bool
    scenario: str | None
    user_tier: str | None
    team: str | None
    provider_uuid: str | None
    rule_uuid: str | None
    api_key: str | None
    api_key_id: str | None
    server_address: str | None
    server_port: int | None
    service_tier: str | None


def get(obj: object, *names: str) -> Any:
    """The first of `names` that `obj` has as a key or attribute and is not None."""
    if obj is None:
        return None
    if type(obj) is dict:  # parsed JSON, the common case: no isinstance() against an ABC
        for name in names:
            value = obj.get(name)
            if value is not None:
                return value
        return None
    for name in names:
        try:
            if isinstance(obj, Mapping):
                value = obj.get(name)
            elif isinstance(obj, (str, bytes, int, float, list, tuple)):
                return None
            else:
                value = getattr(obj, name, None)
        except Exception:  # a property that raises, a proxy object: treat as absent
            value = None
        if value is not None:
            return value
    return None


def text(obj: object, *names: str) -> str | None:
    """A non-empty string field, or None."""
    value = get(obj, *names)
    return value if isinstance(value, str) and value else None


def is_record(obj: object) -> bool:
    """Whether `obj` can hold fields (a mapping or an object), not a number or a string."""
    return obj is not None and not isinstance(obj, (str, bytes, int, float, bool, list, tuple))


@dataclass
class Counts:
    """Token counts of one response in the package's meaning, and whether any was unreadable."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    malformed: bool = False
    #: True once any usage block was seen; False means the response had none.
    seen: bool = False
    notes: list[str] = field(default_factory=list)
    #: The service tier the response says served it (OpenAI's `service_tier`), if any.
    service_tier: str | None = None

    def saw_service_tier(self, obj: object) -> None:
        """Keep `obj`'s `service_tier`, when it has one as text."""
        tier = get(obj, "service_tier")
        if type(tier) is str and tier:  # an exact str: its len and hash cannot raise or lie
            self.service_tier = tier

    def count(self, obj: object, *names: str) -> int:
        """A count field of `obj`: 0 when absent, 0 and `malformed` when not a whole number."""
        value = get(obj, *names)
        if value is None:
            return 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
            return value
        self.malformed = True
        return 0

    def has(self, obj: object, *names: str) -> bool:
        return get(obj, *names) is not None

    def settle(self) -> None:
        """Make the parts fit their totals, and the totals fit `MAX_TOKENS` (counts each in
        range may add up past it); a provider that broke either rule is `malformed`."""
        for total in ("input", "output"):
            if getattr(self, total) > MAX_TOKENS:
                setattr(self, total, MAX_TOKENS)
                self.malformed = True
        if self.cache_write_1h > self.cache_write:
            self.cache_write_1h, self.malformed = self.cache_write, True
        if self.cache_read + self.cache_write > self.input:
            self.malformed = True
            self.cache_read = min(self.cache_read, self.input)
            self.cache_write = min(self.cache_write, self.input - self.cache_read)
            self.cache_write_1h = min(self.cache_write_1h, self.cache_write)
        if self.reasoning > self.output:
            self.reasoning, self.malformed = self.output, True


def build(
    counts: Counts,
    *,
    provider: str,
    model: str | None,
    operation: str,
    fields: UsageFields,
    final: bool = True,
) -> Usage:
    """The `Usage` of a response: what was read, flagged, then the caller's fields on top."""
    counts.settle()
    status = fields.get("status", "success")
    problem: str | None = None
    if counts.malformed:
        problem = "malformed"
    elif not counts.seen:
        # A failed request that reported nothing used nothing we could know of: no flag.
        problem = None if status == "error" else "missing"
    elif not final:
        problem = "partial"
    merged: dict[str, Any] = {
        "provider": provider,
        "model": model or fields.get("request_model") or UNKNOWN_MODEL,
        "operation": operation,
        "input_tokens": counts.input,
        "output_tokens": counts.output,
        "cache_read_tokens": counts.cache_read,
        "cache_write_tokens": counts.cache_write,
        "cache_write_1h_tokens": counts.cache_write_1h,
        "reasoning_tokens": counts.reasoning,
        "usage_problem": problem,
    }
    if counts.service_tier is not None:
        merged["service_tier"] = counts.service_tier
    merged.update(fields)
    return Usage(**merged)


def normalize(
    response: object,
    fields: UsageFields,
    *,
    provider: str,
    usage_of: Callable[[object], object],
    read_usage: Callable[[object, Counts], None],
    model_of: Callable[[object], str | None],
    operation: str | Callable[[object], str],
) -> Usage:
    """The body of every `from_*` normalizer: find the usage block, read it, build the
    `Usage`; garbage that trips any step still gives a `Usage` flagged `malformed`."""
    provider = fields.get("provider", provider)
    counts = Counts()
    try:
        usage = usage_of(response)
        if usage is not None:
            read_usage(usage, counts)
        model = model_of(response)
        name = operation if isinstance(operation, str) else operation(response)
    except Exception:
        counts, model = Counts(malformed=True, seen=True), None
        name = operation if isinstance(operation, str) else "chat"
    return build(counts, provider=provider, model=model, operation=name, fields=fields)


__all__ = [
    "UNKNOWN_MODEL",
    "Counts",
    "UsageFields",
    "build",
    "get",
    "is_record",
    "normalize",
    "text",
]
