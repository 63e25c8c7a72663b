"""`Usage`, the one description of a finished LLM request, and the rules it must satisfy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any, NamedTuple

from otel_tokens._base.names import STATUSES, USAGE_PROBLEMS
from otel_tokens._base.text import shown

#: More tokens than this in one request is a bug upstream, not a request (contexts are ~1e7).
MAX_TOKENS = 1_000_000_000
#: A request that took longer than a day is a clock bug, not a request.
MAX_SECONDS = 86_400.0

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "system_tokens",
)
_REQUIRED_LABELS = ("provider", "model", "request_model", "operation")
_OPTIONAL_LABELS = (
    "error_type",
    "scenario",
    "user_tier",
    "provider_uuid",
    "rule_uuid",
    "server_address",
    "api_key_id",
    "request_id",
    "service_tier",
    "team",
)
#: The largest TCP port.
_MAX_PORT = 65_535


@dataclass(frozen=True, slots=True)
class Usage:
    """What one finished LLM request used, in the package's single meaning of each token class.

    `input_tokens` counts ALL prompt tokens (cache reads and writes included) and
    `output_tokens` ALL completion tokens (reasoning included); the cache and reasoning
    fields are parts of those totals, never additions to them, and `cache_write_1h_tokens`
    is the part of `cache_write_tokens` written for an hour rather than five minutes.
    `usage_problem` says when the counts are not the provider's whole report: `missing`
    (no usage in the response), `malformed` (usage present but unreadable or inconsistent)
    or `partial` (a stream that ended before its final usage). Building a `Usage` never
    raises, because it happens on a gateway's request path; `TokenTracker.record()` drops
    an invalid one (counted, warned once per kind of fault) and `validate()` raises.

    Example:
        >>> u = Usage(provider="openai", model="gpt-4o-mini", input_tokens=1200,
        ...           output_tokens=300, cache_read_tokens=1000, latency_s=1.8)
        >>> u.request_model
        'gpt-4o-mini'
    """

    provider: str
    model: str
    request_model: str | None = None
    operation: str = "chat"
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    system_tokens: int = 0
    status: str = "success"
    error_type: str | None = None
    latency_s: float | None = None
    time_to_first_token_s: float | None = None
    streamed: bool = False
    scenario: str | None = None
    user_tier: str | None = None
    provider_uuid: str | None = None
    rule_uuid: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_id: str | None = None
    server_address: str | None = None
    usage_problem: str | None = None
    #: The request's own id (a gateway's request id, a provider's response id): a usage
    #: ledger counts a request id once, however often it is recorded. Never a metric label.
    request_id: str | None = None
    # Fields added later come last, so that positional construction keeps its meaning.
    #: Streaming only: the mean time between the response's chunks after the first one.
    time_per_output_chunk_s: float | None = None
    #: The upstream's port (`server.port`, which the conventions require beside the address).
    server_port: int | None = None
    #: The service tier the provider says served the request (OpenAI's `service_tier`).
    service_tier: str | None = None
    #: The caller's team (`llm.team`), a low-cardinality label like `user_tier`; budgets can
    #: be set per team.
    team: str | None = None

    def __post_init__(self) -> None:
        if self.request_model is None:
            object.__setattr__(self, "request_model", self.model)

    def validate(self) -> None:
        """Check the contract's rules, as `TokenTracker.record()` does before recording.

        Raises:
            ValueError: naming the first field that breaks a rule and its value.
        """
        try:
            checked = plain_text(self)  # as record() checks it
        except Exception:
            checked = self
        fault = find_fault(checked)
        if fault is not None:
            raise ValueError(fault.message)


class Fault(NamedTuple):
    """Why a record cannot be recorded: a bounded `kind` for metrics, a sentence for people."""

    kind: str
    message: str


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_seconds(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # Compared before math.isfinite, which raises on an int too large for a float.
    return 0 <= value <= MAX_SECONDS and math.isfinite(value)


def find_fault(usage: object) -> Fault | None:
    """Return the first rule `usage` breaks, or None when it can be recorded as it is."""
    try:
        return _find_fault(usage)
    except Exception as exc:  # a field whose ==, hash or len raises: it cannot be checked
        return Fault(
            "bad_label", f"a field of the Usage cannot be read or compared: {type(exc).__name__}"
        )


#: The fields that hold text, which series, caches and exporters hash and compare.
_TEXT_FIELDS = (*_REQUIRED_LABELS, *_OPTIONAL_LABELS, "status", "usage_problem", "api_key")
_read_texts = attrgetter(*_TEXT_FIELDS)


def plain_text(usage: Usage) -> Usage:
    """`usage` with every text field an exact `str`. A str subclass may define its own ==,
    hash and str, which may raise or lie; copies of the characters cannot."""
    try:
        values = _read_texts(usage)
    except AttributeError:  # made without __init__: find_fault says which field is missing
        return usage
    for value in values:  # the common case: one C call, then type checks
        if type(value) is not str and value is not None:
            break
    else:
        return usage
    changed: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = getattr(usage, name)
        if type(value) is not str and isinstance(value, str):
            changed[name] = str.__str__(value)
    return replace(usage, **changed) if changed else usage


def _find_fault(usage: object) -> Fault | None:
    if not isinstance(usage, Usage):
        return Fault("not_usage", f"record() takes a Usage, got {type(usage).__name__}")
    for name in _REQUIRED_LABELS:
        value = getattr(usage, name)
        if not (type(value) is str or isinstance(value, str)) or not value:
            return Fault("bad_label", f"Usage.{name} must be a non-empty str, got {shown(value)}")
    for name in _OPTIONAL_LABELS:
        value = getattr(usage, name)
        if value is not None and type(value) is not str and not isinstance(value, str):
            return Fault("bad_label", f"Usage.{name} must be a str or None, got {shown(value)}")
    if usage.api_key is not None and not isinstance(usage.api_key, str):
        # The value is a secret: name its type, never the value.
        return Fault(
            "bad_label", f"Usage.api_key must be a str, got {type(usage.api_key).__name__}"
        )
    for name in TOKEN_FIELDS:
        value = getattr(usage, name)
        if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, first
            continue
        if not _is_int(value):
            return Fault("bad_type", f"Usage.{name} must be an int, got {shown(value)}")
        if value < 0:
            return Fault("negative_tokens", f"Usage.{name} must be >= 0, got {shown(value)}")
        if value > MAX_TOKENS:
            return Fault(
                "too_many_tokens", f"Usage.{name} must be <= {MAX_TOKENS:,}, got {shown(value)}"
            )
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    if cached > usage.input_tokens:
        return Fault(
            "cache_exceeds_input",
            f"Usage.cache_read_tokens + cache_write_tokens ({cached}) must not exceed "
            f"input_tokens ({usage.input_tokens}): input_tokens counts cached tokens too",
        )
    if usage.cache_write_1h_tokens > usage.cache_write_tokens:
        return Fault(
            "cache_exceeds_input",
            f"Usage.cache_write_1h_tokens ({usage.cache_write_1h_tokens}) must not exceed "
            f"cache_write_tokens ({usage.cache_write_tokens}): it is the 1-hour part of them",
        )
    if usage.reasoning_tokens > usage.output_tokens:
        return Fault(
            "reasoning_exceeds_output",
            f"Usage.reasoning_tokens ({usage.reasoning_tokens}) must not exceed output_tokens "
            f"({usage.output_tokens}): output_tokens counts reasoning tokens too",
        )
    if usage.status not in STATUSES:
        return Fault(
            "unknown_status", f"Usage.status must be one of {STATUSES}, got {shown(usage.status)}"
        )
    if usage.status == "success" and usage.error_type:
        return Fault(
            "error_type_on_success",
            f"Usage.error_type is {shown(usage.error_type)} but status is 'success': "
            "set status='error' or drop error_type",
        )
    if usage.usage_problem is not None and usage.usage_problem not in USAGE_PROBLEMS:
        return Fault(
            "bad_label",
            f"Usage.usage_problem must be None or one of {USAGE_PROBLEMS}, "
            f"got {shown(usage.usage_problem)}",
        )
    if not isinstance(usage.streamed, bool):
        return Fault("bad_type", f"Usage.streamed must be a bool, got {shown(usage.streamed)}")
    port = usage.server_port
    if port is not None and not (_is_int(port) and 0 < port <= _MAX_PORT):
        return Fault(
            "bad_type",
            f"Usage.server_port must be None or an int from 1 to 65535, got {shown(port)}",
        )
    return _find_time_fault(usage)


def _find_time_fault(usage: Usage) -> Fault | None:
    latency, ttft = usage.latency_s, usage.time_to_first_token_s
    if latency is not None and not _is_seconds(latency):
        return Fault(
            "bad_latency",
            f"Usage.latency_s must be a finite number of seconds from 0 to {MAX_SECONDS:g}, "
            f"got {shown(latency)}",
        )
    if ttft is None:
        return _find_chunk_fault(usage)
    if not _is_seconds(ttft):
        return Fault(
            "bad_time_to_first_token",
            f"Usage.time_to_first_token_s must be a finite number of seconds from 0 to "
            f"{MAX_SECONDS:g}, got {shown(ttft)}",
        )
    if not usage.streamed:
        return Fault(
            "bad_time_to_first_token",
            f"Usage.time_to_first_token_s is {shown(ttft)} but streamed is False: "
            "set streamed=True or drop it",
        )
    if latency is not None and ttft > latency:
        return Fault(
            "bad_time_to_first_token",
            f"Usage.time_to_first_token_s ({shown(ttft)}) must not exceed latency_s "
            f"({shown(latency)})",
        )
    return _find_chunk_fault(usage)


def _find_chunk_fault(usage: Usage) -> Fault | None:
    per_chunk = usage.time_per_output_chunk_s
    if per_chunk is None:
        return None
    if not _is_seconds(per_chunk):
        return Fault(
            "bad_time_per_output_chunk",
            f"Usage.time_per_output_chunk_s must be a finite number of seconds from 0 to "
            f"{MAX_SECONDS:g}, got {shown(per_chunk)}",
        )
    if not usage.streamed:
        return Fault(
            "bad_time_per_output_chunk",
            f"Usage.time_per_output_chunk_s is {shown(per_chunk)} but streamed is False: "
            "set streamed=True or drop it",
        )
    return None
