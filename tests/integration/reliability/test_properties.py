"""Property-based tests of everything that takes outside input: `Usage` and the tracker, the
normalizers, the stream accumulators, the SSE parser, the HTTP transport and the Prometheus
endpoint. A gateway hands them whatever a caller or an upstream sent, so every input here
may be hostile; each property must hold for all of them."""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import logging
import threading
import types
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from unittest.mock import MagicMock
from urllib.parse import urlsplit

import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from otel_tokens import Usage, configure
from otel_tokens._base.names import STATUSES, USAGE_PROBLEMS
from otel_tokens._base.usage import MAX_TOKENS, TOKEN_FIELDS
from otel_tokens._http.sse import SSEParser
from otel_tokens.httpx import MeteredTransport
from otel_tokens.providers import (
    AnthropicStream,
    BedrockStream,
    GeminiStream,
    OpenAIStream,
    StreamAccumulator,
    from_anthropic,
    from_bedrock,
    from_gemini,
    from_openai,
)
from otel_tokens.testing import InMemoryMetrics

# Reproducible in CI: no example database, the same examples on every run.
COMMON: dict[str, Any] = {
    "database": None,
    "derandomize": True,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@pytest.fixture(autouse=True)
def _quiet_warnings() -> Iterator[None]:
    """Every example makes a fresh tracker, which warns once per kind of fault: not wanted."""
    logger = logging.getLogger("otel_tokens")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Hostile values


def _shown_by_hypothesis(self: object, printer: Any, cycle: bool) -> None:
    """How Hypothesis shows a hostile value in a report (it would call repr() otherwise)."""
    printer.text(f"<{type(self).__name__}>")


class _ReprRaises(str):
    """A label whose repr raises."""

    _repr_pretty_ = _shown_by_hypothesis

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _HashRaises(str):
    """A label whose hash raises."""

    _repr_pretty_ = _shown_by_hypothesis

    def __hash__(self) -> int:
        raise RuntimeError("no hash")


class _EqRaises(str):
    """A label whose == raises (its hash is the str's)."""

    __hash__ = str.__hash__
    _repr_pretty_ = _shown_by_hypothesis

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")


class _Opaque:
    """An object on which every operation raises: repr, ==, hash, bool, len, iter, attributes."""

    _repr_pretty_ = _shown_by_hypothesis

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __bool__(self) -> bool:
        raise RuntimeError("no bool")

    def __len__(self) -> int:
        raise RuntimeError("no len")

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("no iter")


HUGE = 10**5000  # repr() of it raises: Python refuses ints of more than 4,300 digits
NASTY_TEXT = ["\ud800", "\udfff", "a\x00b", "\x1b[31m", "\x7f\x9f", "line\nbreak", '"', "\\",
              "🦜", "", " ", "x" * 5000]  # fmt: skip
#: Any text, lone surrogates included.
TEXT = st.text(st.characters(exclude_categories=()), max_size=40) | st.sampled_from(NASTY_TEXT)
#: Numbers of every kind; in-range token counts stay below a third of the limit, so that the
#: sums the normalizers make stay in range (counts in the band above are tested on their own).
SAFE_COUNT = MAX_TOKENS // 3


def _sums_past_the_limit(value: object) -> bool:
    return isinstance(value, (int, float)) and SAFE_COUNT < value <= MAX_TOKENS


EDGE_NUMBERS = [0, 1, -1, SAFE_COUNT, MAX_TOKENS + 1, 2**63, 1.5, 1e300, float("nan"),
                float("inf"), -float("inf"), -0.0]  # fmt: skip
#: Built, not listed: Hypothesis shows a strategy's values, and repr() of HUGE raises.
HUGE_INTS = st.sampled_from([1, -1]).map(lambda sign: sign * HUGE)
NUMBERS = (
    st.integers(0, 5000) | st.integers() | st.floats() | st.sampled_from(EDGE_NUMBERS) | HUGE_INTS
).filter(lambda v: not _sums_past_the_limit(v))
PLAIN = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
HOSTILE_STR = st.sampled_from([_ReprRaises, _HashRaises, _EqRaises])
LABEL_TEXT = st.sampled_from(["openai", "gpt-4o", "chat", "success", "missing", "x"]) | TEXT
#: Anything a caller may pass: plain values, str subclasses whose dunders raise, opaque objects.
ANYTHING = (
    PLAIN
    | st.builds(_ReprRaises, LABEL_TEXT)
    | st.builds(lambda cls, text: cls(text), HOSTILE_STR, LABEL_TEXT)
    | st.builds(_Opaque)
)

# ---------------------------------------------------------------------------------------------
# Usage and the tracker

USAGE_FIELDS = [f.name for f in dataclasses.fields(Usage)]
ARBITRARY_USAGE = st.fixed_dictionaries(
    {"provider": ANYTHING, "model": ANYTHING},
    optional={name: ANYTHING for name in USAGE_FIELDS if name not in ("provider", "model")},
)
GOOD_USAGES = st.builds(
    Usage,
    provider=st.sampled_from(["openai", "anthropic"]),
    model=st.sampled_from(["gpt-4o", "claude-haiku-4-5"]),
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**6),
    latency_s=st.none() | st.floats(0, 600),
)


def _spoiled(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Usage]:
    """A good Usage with one to three fields replaced by `values` (maybe still valid)."""
    fields = st.dictionaries(st.sampled_from(USAGE_FIELDS), values, min_size=1, max_size=3)
    return st.builds(lambda good, bad: dataclasses.replace(good, **bad), GOOD_USAGES, fields)


def _is_valid(usage: object) -> bool:
    try:
        if not isinstance(usage, Usage):
            return False
        usage.validate()
    except Exception:  # ValueError; or whatever a hostile value's dunder raised
        return False
    return True


def _drops(metrics: InMemoryMetrics) -> float:
    return metrics.value("otel_tokens.records.dropped")


def _check_one_bad_record(before: list[Usage], bad: object, after: list[Usage]) -> None:
    metrics = InMemoryMetrics()
    try:
        for usage in [*before, bad, *after]:
            metrics.tracker.record(usage)  # type: ignore[arg-type]
        valid = _is_valid(bad)
        assert metrics.value("llm.requests") == len(before) + len(after) + valid
        assert _drops(metrics) == (not valid)
    finally:
        metrics.shutdown()


@settings(max_examples=200, **COMMON)
@given(fields=ARBITRARY_USAGE)
def test_a_usage_of_any_values_is_made_and_recorded_without_raising(
    fields: dict[str, Any],
) -> None:
    """Constructing a Usage from any values and recording it never raises."""
    metrics = InMemoryMetrics()
    try:
        usage = Usage(**fields)
        metrics.tracker.record(usage)
        metrics.tracker.flush()
        assert metrics.value("llm.requests") + _drops(metrics) == 1
    finally:
        metrics.shutdown()


BAD_VALUES = PLAIN | st.builds(_ReprRaises, LABEL_TEXT) | st.builds(_Opaque)


@settings(max_examples=200, **COMMON)
@given(
    before=st.lists(GOOD_USAGES, max_size=5),
    bad=_spoiled(BAD_VALUES) | ANYTHING,
    after=st.lists(GOOD_USAGES, max_size=5),
)
def test_one_bad_record_among_good_ones_costs_only_itself(
    before: list[Usage], bad: object, after: list[Usage]
) -> None:
    """Every valid record is counted, and the bad one is counted as dropped unless valid."""
    _check_one_bad_record(before, bad, after)


@settings(max_examples=50, **COMMON)
@given(
    before=st.lists(GOOD_USAGES, max_size=3),
    bad=st.builds(
        lambda good, name, cls: dataclasses.replace(good, **{name: cls(getattr(good, name))}),
        GOOD_USAGES,
        st.sampled_from(["provider", "model"]),
        st.sampled_from([_HashRaises, _EqRaises]),
    ),
    after=st.lists(GOOD_USAGES, max_size=3),
)
@example(
    before=[],
    bad=Usage(provider=_EqRaises("openai"), model="gpt-4o"),
    after=[Usage(provider="openai", model="gpt-4o")],
)
def test_a_label_whose_eq_or_hash_raises_costs_only_itself(
    before: list[Usage], bad: Usage, after: list[Usage]
) -> None:
    """A valid record whose label is a str subclass with a raising == or hash costs only itself."""
    _check_one_bad_record(before, bad, after)


TRACKED_ATTRIBUTES = ["provider", "model", "request_model", "operation", "streamed", "scenario",
                      "user_tier", "provider_uuid", "rule_uuid", "api_key", "server_address",
                      "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                      "reasoning_tokens", "system_tokens", "status", "error_type"]  # fmt: skip


class _BlocksOwnError(Exception):
    """The exception the block itself raises."""


def _check_track(values: dict[str, Any], raises: bool, first_token: bool) -> None:
    metrics = InMemoryMetrics()
    try:
        try:
            with metrics.tracker.track(provider="openai", model="gpt-4o") as req:
                if first_token:
                    req.first_token()
                for name, value in values.items():
                    setattr(req, name, value)
                if raises:
                    raise _BlocksOwnError
        except _BlocksOwnError:
            assert raises
        assert metrics.value("llm.requests") + _drops(metrics) == 1
    finally:
        metrics.shutdown()


@settings(max_examples=200, **COMMON)
@given(
    values=st.dictionaries(
        st.sampled_from(TRACKED_ATTRIBUTES),
        PLAIN | st.builds(_ReprRaises, LABEL_TEXT) | st.builds(_HashRaises, LABEL_TEXT),
        max_size=4,
    ),
    raises=st.booleans(),
    first_token=st.booleans(),
)
def test_track_raises_nothing_but_the_blocks_own_exception(
    values: dict[str, Any], raises: bool, first_token: bool
) -> None:
    """A tracked block that sets any values on `req` raises only its own exception."""
    _check_track(values, raises, first_token)


@settings(max_examples=30, **COMMON)
@given(
    values=st.dictionaries(
        st.sampled_from(["status", "error_type"]),
        st.builds(_Opaque) | st.builds(_EqRaises, st.just("success")),
        min_size=1,
    ),
    raises=st.booleans(),
    first_token=st.booleans(),
)
@example(values={"status": _EqRaises("success")}, raises=False, first_token=False)
def test_track_survives_a_status_whose_eq_raises(
    values: dict[str, Any], raises: bool, first_token: bool
) -> None:
    """A block that sets a status or error_type whose == or bool() raises raises nothing."""
    _check_track(values, raises, first_token)


# ---------------------------------------------------------------------------------------------
# Normalizers and stream accumulators

COUNT_KEYS = [
    "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens",
    "cached_tokens", "cache_write_tokens", "reasoning_tokens", "prompt_cache_hit_tokens",
    "prompt_cache_miss_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
    "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "promptTokenCount",
    "candidatesTokenCount", "thoughtsTokenCount", "cachedContentTokenCount",
    "toolUsePromptTokenCount", "prompt_token_count", "candidates_token_count",
    "thoughts_token_count", "inputTokens", "outputTokens", "cacheReadInputTokens",
    "cacheWriteInputTokens", "totalTokens",
]  # fmt: skip
STRUCTURE_KEYS = [
    "usage", "usageMetadata", "usage_metadata", "prompt_tokens_details", "input_tokens_details",
    "completion_tokens_details", "output_tokens_details", "cache_creation", "cacheDetails",
    "ttl", "model", "modelVersion", "model_version", "object", "type", "message", "delta",
    "choices", "content", "text", "candidates", "parts", "finishReason", "metadata",
    "contentBlockDelta", "response", "error", "code", "status",
]  # fmt: skip
WORDS = [
    "1h", "5m", "list", "embedding", "text_completion", "chat.completion", "message_start",
    "message_delta", "message_stop", "content_block_delta", "error", "response.created",
    "response.output_text.delta", "response.completed", "response.incomplete",
    "response.failed", "response.error", "STOP", "gpt-4o", "hello",
]  # fmt: skip
KEYS = st.sampled_from(COUNT_KEYS + STRUCTURE_KEYS) | TEXT
LEAVES = st.none() | st.booleans() | NUMBERS | TEXT | st.sampled_from(WORDS)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)
#: A token count: mostly plausible, sometimes anything.
PLAUSIBLE = st.integers(1, 50_000)
COUNT = st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, st.just(0), NUMBERS, JSON)


def _counts(*names: str, **nested: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A usage block with some of count fields `names` and of the `nested` blocks, or junk."""
    fields = {name: COUNT for name in names} | nested
    block = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(block, block, block, JSON)


def _consistent(make: Callable[..., dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A usage block whose parts fit their totals, from uncached input `a`, cache reads `b`,
    cache writes `c` (`d` of them for an hour), output `e` and reasoning `r`."""
    n = st.integers(0, 50_000)
    parts = st.tuples(n, n, n, n, n, n).map(lambda t: (*t[:3], min(t[3], t[2]), t[4], t[5]))
    return parts.map(lambda t: make(*t))


OPENAI_USAGE = _consistent(
    lambda a, b, c, d, e, r: {
        "prompt_tokens": a + b + c, "completion_tokens": e + r,
        "prompt_tokens_details": {"cached_tokens": b, "cache_write_tokens": c},
        "completion_tokens_details": {"reasoning_tokens": r},
    }
) | _counts(
    "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
    "prompt_cache_hit_tokens", "prompt_cache_miss_tokens",
    prompt_tokens_details=_counts("cached_tokens", "cache_write_tokens"),
    input_tokens_details=_counts("cached_tokens"),
    completion_tokens_details=_counts("reasoning_tokens"),
    output_tokens_details=_counts("reasoning_tokens"),
)  # fmt: skip
ANTHROPIC_USAGE = _consistent(
    lambda a, b, c, d, e, r: {
        "input_tokens": a, "cache_read_input_tokens": b, "cache_creation_input_tokens": c,
        "cache_creation": {"ephemeral_5m_input_tokens": c - d, "ephemeral_1h_input_tokens": d},
        "output_tokens": e,
    }
) | _counts(
    "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
    cache_creation=_counts("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"),
)  # fmt: skip
GEMINI_USAGE = _consistent(
    lambda a, b, c, d, e, r: {
        "promptTokenCount": a + b, "cachedContentTokenCount": b, "toolUsePromptTokenCount": c,
        "candidatesTokenCount": e, "thoughtsTokenCount": r,
    }
) | _counts(
    "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "cachedContentTokenCount",
    "toolUsePromptTokenCount", "prompt_token_count", "candidates_token_count",
)  # fmt: skip
CACHE_DETAILS = st.lists(
    st.fixed_dictionaries({"ttl": st.sampled_from(["1h", "5m"]) | JSON, "inputTokens": COUNT}),
    max_size=3,
)
BEDROCK_USAGE = _consistent(
    lambda a, b, c, d, e, r: {
        "inputTokens": a, "cacheReadInputTokens": b, "cacheWriteInputTokens": c,
        "cacheDetails": [{"ttl": "1h", "inputTokens": d}, {"ttl": "5m", "inputTokens": c - d}],
        "outputTokens": e,
    }
) | _counts(
    "inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens",
    cacheDetails=CACHE_DETAILS,
)  # fmt: skip
MODEL = TEXT | st.sampled_from(["gpt-4o", "claude-haiku-4-5"]) | JSON
DELTA = st.fixed_dictionaries({}, optional={"content": TEXT, "text": TEXT, "tool_calls": JSON})
CANDIDATES = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "content": st.fixed_dictionaries({"parts": st.lists(DELTA, max_size=2)}) | JSON,
            "finishReason": st.sampled_from(["STOP", "MAX_TOKENS"]) | JSON,
        },
    ),
    max_size=2,
)
RESPONSE_EVENT_TYPES = st.sampled_from([w for w in WORDS if w.startswith("response.")])
ANTHROPIC_EVENT_TYPES = st.sampled_from(
    ["message_start", "message_delta", "message_stop", "content_block_delta"]
)
#: Bodies and events shaped like each provider's, so that the deep paths are read.
OPENAI_BODIES = st.fixed_dictionaries(
    {"usage": OPENAI_USAGE},
    optional={
        "model": MODEL,
        "object": st.sampled_from(WORDS) | JSON,
        "choices": st.lists(st.fixed_dictionaries({"delta": DELTA}), max_size=2),
    },
)
OPENAI_EVENTS = OPENAI_BODIES | st.fixed_dictionaries(
    {"type": RESPONSE_EVENT_TYPES},
    optional={
        "response": st.fixed_dictionaries(
            {}, optional={"model": MODEL, "usage": OPENAI_USAGE, "error": JSON}
        )
    },
)
ANTHROPIC_BODIES = st.fixed_dictionaries({"usage": ANTHROPIC_USAGE}, optional={"model": MODEL})
ANTHROPIC_EVENTS = st.fixed_dictionaries(
    {"type": ANTHROPIC_EVENT_TYPES},
    optional={
        "message": st.fixed_dictionaries({}, optional={"model": MODEL, "usage": ANTHROPIC_USAGE}),
        "usage": ANTHROPIC_USAGE,
        "delta": DELTA,
    },
)
GEMINI_BODIES = st.fixed_dictionaries(
    {"usageMetadata": GEMINI_USAGE}, optional={"modelVersion": MODEL, "candidates": CANDIDATES}
)
BEDROCK_BODIES = st.fixed_dictionaries({"usage": BEDROCK_USAGE})
BEDROCK_EVENTS = st.fixed_dictionaries(
    {"metadata": st.fixed_dictionaries({"usage": BEDROCK_USAGE})}
) | st.fixed_dictionaries({"contentBlockDelta": st.fixed_dictionaries({"delta": DELTA})})
ERRORS = st.fixed_dictionaries({"error": JSON}, optional={"type": st.just("error")})
ALL_SHAPES = st.one_of(OPENAI_EVENTS, ANTHROPIC_BODIES, ANTHROPIC_EVENTS, GEMINI_BODIES,
                       BEDROCK_BODIES, BEDROCK_EVENTS, ERRORS)  # fmt: skip


def _as_object(value: Any) -> Any:
    """`value` as an SDK would hand it over: dicts become objects with attributes."""
    if type(value) is dict:
        return types.SimpleNamespace(**{k: _as_object(v) for k, v in value.items()})
    if type(value) is list:
        return [_as_object(v) for v in value]
    return value


def _with_opaque_leaves(value: Any) -> Any:
    """`value` with every None in it replaced by an object on which everything raises."""
    if type(value) is dict:
        return {k: _with_opaque_leaves(v) for k, v in value.items()}
    if type(value) is list:
        return [_with_opaque_leaves(v) for v in value]
    return _Opaque() if value is None else value


def _responses(shapes: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Responses or events: shaped as parsed JSON, as SDK objects, as other mappings, with
    objects that raise on every touch inside; any JSON; any object."""
    return st.one_of(
        shapes,
        shapes,
        shapes.map(_as_object),
        shapes.map(types.MappingProxyType),
        shapes.map(_with_opaque_leaves),
        ALL_SHAPES,
        JSON,
        st.builds(_Opaque) | st.builds(MagicMock) | ANYTHING,
    )


def _json_bytes(value: Any) -> bytes:
    """`value` as JSON, with ints too long for json.dumps written out as digits."""
    huge: list[int] = []

    def swap(v: Any) -> Any:
        if type(v) is dict:
            return {k: swap(x) for k, x in v.items()}
        if type(v) is list:
            return [swap(x) for x in v]
        if type(v) is int and abs(v) > 10**4000:
            huge.append(v)
            return f"@@huge{len(huge) - 1}@@"
        return v

    text = json.dumps(swap(value))
    for i, v in enumerate(huge):
        text = text.replace(f'"@@huge{i}@@"', "-" * (v < 0) + "9" * 5000)
    return text.encode()


SSE_NAMES = st.none() | st.sampled_from(WORDS) | TEXT
SSE_JUNK = st.binary(max_size=40) | st.sampled_from(
    [b"[DONE]", b" [DONE] ", b"", b"{", b"null", b"\xff\xfe", b"[" * 5000]
)


def _sse_data(shapes: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The data of a server-sent event: shaped JSON, any JSON, or junk."""
    return st.one_of(shapes.map(_json_bytes), (ALL_SHAPES | JSON).map(_json_bytes), SSE_JUNK)


def _check_sound(usage: object) -> None:
    """A Usage whose counts are whole and >= 0, valid unless flagged."""
    assert type(usage) is Usage
    for name in TOKEN_FIELDS:
        value = getattr(usage, name)
        assert type(value) is int and value >= 0, (name, value)
    if usage.usage_problem is None:
        usage.validate()
    else:
        assert usage.usage_problem in USAGE_PROBLEMS


HI = st.fixed_dictionaries({"text": st.just("hi")})
#: Each provider's documented stream: the model and first content, then the usage.
OPENAI_STREAM = st.tuples(
    st.fixed_dictionaries({"model": MODEL, "choices": st.just([{"delta": {"content": "hi"}}])}),
    st.fixed_dictionaries({"choices": st.just([]), "usage": OPENAI_USAGE}),
)
ANTHROPIC_STREAM = st.tuples(
    st.fixed_dictionaries(
        {"type": st.just("message_start"),
         "message": st.fixed_dictionaries({"model": MODEL, "usage": ANTHROPIC_USAGE})}
    ),
    st.fixed_dictionaries({"type": st.just("content_block_delta"), "delta": HI}),
    st.fixed_dictionaries({"type": st.just("message_delta"), "usage": ANTHROPIC_USAGE}),
    st.just({"type": "message_stop"}),
)  # fmt: skip
GEMINI_STREAM = st.tuples(
    st.fixed_dictionaries(
        {"modelVersion": MODEL, "candidates": st.just([{"content": {"parts": [{"text": "hi"}]}}]),
         "usageMetadata": GEMINI_USAGE}
    ),
    st.fixed_dictionaries(
        {"candidates": st.just([{"finishReason": "STOP"}]), "usageMetadata": GEMINI_USAGE}
    ),
)  # fmt: skip
BEDROCK_STREAM = st.tuples(
    st.just({"contentBlockDelta": {"delta": {"text": "hi"}}}),
    st.fixed_dictionaries({"metadata": st.fixed_dictionaries({"usage": BEDROCK_USAGE})}),
)


class Provider(NamedTuple):
    """A provider's normalizer and stream accumulator, and what they are fed."""

    normalize: Callable[..., Usage]
    stream: type[StreamAccumulator]
    bodies: st.SearchStrategy[Any]
    events: st.SearchStrategy[Any]
    documented_stream: st.SearchStrategy[tuple[Any, ...]]


PROVIDERS = {
    "openai": Provider(from_openai, OpenAIStream, OPENAI_BODIES, OPENAI_EVENTS | ERRORS,
                       OPENAI_STREAM),
    "anthropic": Provider(from_anthropic, AnthropicStream, ANTHROPIC_BODIES,
                          ANTHROPIC_EVENTS | ERRORS, ANTHROPIC_STREAM),
    "gemini": Provider(from_gemini, GeminiStream, GEMINI_BODIES, GEMINI_BODIES | ERRORS,
                       GEMINI_STREAM),
    "bedrock": Provider(from_bedrock, BedrockStream, BEDROCK_BODIES, BEDROCK_EVENTS,
                        BEDROCK_STREAM),
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@settings(max_examples=200, **COMMON)
@given(data=st.data())
def test_a_normalizer_turns_anything_into_a_sound_usage(provider: str, data: st.DataObject) -> None:
    """A normalizer never raises and gives whole counts >= 0, valid unless flagged."""
    response = data.draw(_responses(PROVIDERS[provider].bodies), label="response")
    fields = {"model": "amazon.nova-pro-v1:0"} if provider == "bedrock" else {}
    _check_sound(PROVIDERS[provider].normalize(response, **fields))


SUMMED_PAST_THE_LIMIT = {
    "openai": lambda a, b: {"usage": {"prompt_cache_hit_tokens": a, "prompt_cache_miss_tokens": b}},
    "anthropic": lambda a, b: {"usage": {"input_tokens": a, "cache_read_input_tokens": b}},
    "gemini": lambda a, b: {"usageMetadata": {"candidatesTokenCount": a, "thoughtsTokenCount": b}},
    "bedrock": lambda a, b: {"usage": {"inputTokens": a, "cacheWriteInputTokens": b}},
}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@settings(max_examples=20, **COMMON)
@given(a=st.integers(0, MAX_TOKENS), b=st.integers(0, MAX_TOKENS))
@example(a=MAX_TOKENS, b=1)
def test_counts_that_sum_past_the_limit_are_flagged(provider: str, a: int, b: int) -> None:
    """Counts each in range but summing past the limit give a Usage valid or flagged."""
    _check_sound(PROVIDERS[provider].normalize(SUMMED_PAST_THE_LIMIT[provider](a, b)))


FINISHES = st.sampled_from([("success", None), ("canceled", None), ("error", None),
                            ("error", "timeout")])  # fmt: skip


def _as_steps(events: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [("feed", event) for event in events]


def _as_sse_steps(events: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [("sse", event.get("type"), _json_bytes(event)) for event in events]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@settings(max_examples=120, **COMMON)
@given(data=st.data(), finish=FINISHES, with_fields=st.booleans())
def test_a_stream_accumulator_folds_anything_into_a_sound_usage(
    provider: str, data: st.DataObject, finish: tuple[str, str | None], with_fields: bool
) -> None:
    """feed() and feed_sse() of any events, then finish(), never raise and give a sound Usage."""
    events, documented = PROVIDERS[provider].events, PROVIDERS[provider].documented_stream
    any_steps = st.lists(
        st.tuples(st.just("feed"), _responses(events))
        | st.tuples(st.just("sse"), SSE_NAMES, _sse_data(events)),
        max_size=8,
    )
    steps = data.draw(any_steps | documented.map(_as_steps) | documented.map(_as_sse_steps))
    kind = PROVIDERS[provider].stream
    accumulator = kind(request_model="m", scenario="s") if with_fields else kind()
    for step in steps:
        if step[0] == "feed":
            accumulator.feed(step[1])
        else:
            accumulator.feed_sse(step[1], step[2])
        assert isinstance(accumulator.needs_every_event, bool)
    status, error_type = finish
    usage = accumulator.finish(status=status, error_type=error_type)
    _check_sound(usage)
    assert usage.streamed is True
    assert usage.status in STATUSES


# ---------------------------------------------------------------------------------------------
# The SSE parser

Event = tuple[str | None, bytes]
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])
DATA_VALUE = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
EVENT_NAME = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=12
)
SSE_EVENTS = st.lists(
    st.tuples(st.none() | EVENT_NAME, st.lists(DATA_VALUE, min_size=1, max_size=3)),
    max_size=8,
)


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[list[Event], list[bytes]]:
    """Well-formed events, and the stream that carries them cut into chunks anywhere."""
    end = draw(LINE_ENDS)
    events: list[Event] = []
    stream = b""
    for name, values in draw(SSE_EVENTS):
        lines = []
        if draw(st.booleans()):  # a keep-alive comment block, which is no event
            stream += b": ping" + end + end
        if name is not None:
            lines.append(b"event: " + name.encode())
        for value in values:
            compact = not value.startswith(b" ") and draw(st.booleans())
            lines.append((b"data:" if compact else b"data: ") + value)
            if draw(st.integers(0, 4)) == 0:  # other fields and comments are skipped
                lines.append(draw(st.sampled_from([b": note", b"id: 7", b"retry: 10", b"x"])))
        stream += end.join(lines) + end + end
        events.append((name, b"\n".join(values)))
    if events and draw(st.booleans()):  # the last event without its blank line
        stream = stream[: -len(end) * draw(st.sampled_from([1, 2]))]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    return events, chunks


def _parse_all(chunks: list[bytes]) -> list[Event]:
    parser = SSEParser()
    found = [event for chunk in chunks for event in parser.feed(chunk)]
    return found + parser.close()


@settings(max_examples=400, **COMMON)
@given(stream=sse_streams())
def test_sse_parser_yields_exactly_the_events_sent(
    stream: tuple[list[Event], list[bytes]],
) -> None:
    """Fed in chunks cut anywhere, with any line ends, the parser yields the events in order."""
    events, chunks = stream
    assert _parse_all(chunks) == events


SSE_PIECES = st.sampled_from([b"data:", b"event:", b":", b" ", b"\r", b"\n", b"x", b"\xff"])


@settings(max_examples=400, **COMMON)
@given(
    garbage=st.binary(max_size=200) | st.lists(SSE_PIECES, max_size=40).map(b"".join),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_sse_parser_takes_garbage_the_same_in_any_chunks(garbage: bytes, cuts: list[int]) -> None:
    """Any bytes parse without raising, to the same events however they are cut."""
    points = sorted(min(c, len(garbage)) for c in cuts)
    chunks = [garbage[a:b] for a, b in itertools.pairwise([0, *points, len(garbage)])]
    found = _parse_all(chunks)
    assert all(isinstance(d, bytes) and (n is None or isinstance(n, str)) for n, d in found)
    assert found == _parse_all([garbage])


# ---------------------------------------------------------------------------------------------
# The HTTP transport, against a real server on 127.0.0.1


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the upstream answers: status, content type, body, and how the body is sent:
    `length` (Content-Length), `chunked` (in these pieces), `cut` (chunked, the connection
    closed before the end) or `short` (Content-Length longer than the body)."""

    status: int
    content_type: str
    body: bytes
    mode: str
    cuts: tuple[int, ...] = ()

    def pieces(self) -> list[bytes]:
        points = sorted(min(c, len(self.body)) for c in self.cuts)
        return [self.body[a:b] for a, b in itertools.pairwise([0, *points, len(self.body)])]

    def sent(self) -> bytes:
        """The body bytes the server writes."""
        if self.mode == "cut":
            return b"".join(self.pieces()[:-1])
        return self.body


class _Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        self.replies: dict[str, Reply] = {}
        self.ids = itertools.count()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that stopped reading early: expected, and no test's business


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        reply = self.server.replies[self.headers["x-reply"]]
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        if reply.mode in ("length", "short"):
            self.send_header("content-length", str(len(reply.body) + (reply.mode == "short")))
        else:
            self.send_header("transfer-encoding", "chunked")
        if reply.mode in ("cut", "short"):
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        if reply.mode in ("length", "short"):
            self.wfile.write(reply.body)
            return
        pieces = reply.pieces()
        for piece in pieces[:-1] if reply.mode == "cut" else pieces:
            if piece:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
        if reply.mode == "chunked":
            self.wfile.write(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def upstream() -> Iterator[_Upstream]:
    server = _Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[httpx2.Client, httpx2.Client, InMemoryMetrics]]:
    """A plain client, a metered one, and the metered one's metrics."""
    metrics = InMemoryMetrics()
    plain = httpx2.Client(transport=httpx2.HTTPTransport())
    metered = httpx2.Client(transport=MeteredTransport(metrics.tracker, httpx2.HTTPTransport()))
    yield plain, metered, metrics
    plain.close()
    metered.close()
    metrics.shutdown()


def _sse(events: list[tuple[str | None, bytes]]) -> bytes:
    return b"".join(
        (b"" if name is None else b"event: " + name.encode("utf-8", "replace") + b"\n")
        + b"data: " + data.replace(b"\n", b"").replace(b"\r", b"") + b"\n\n"
        for name, data in events
    )  # fmt: skip


#: The paths the transport meters, and whose responses they are.
ROUTES = {
    "/v1/chat/completions": "openai",
    "/v1/messages": "anthropic",
    "/v1beta/models/gemini-2.5-flash:generateContent": "gemini",
}
PATHS = list(ROUTES)


def _replies(provider: str) -> st.SearchStrategy[Reply]:
    """What an upstream of `provider` may answer: its JSON, its SSE stream (maybe cut short),
    any JSON, any bytes; with an ok or error status, sent whole or cut."""
    row = PROVIDERS[provider]
    sse = (
        st.lists(st.tuples(SSE_NAMES, _sse_data(row.events)), min_size=1, max_size=8)
        | row.documented_stream.map(lambda evs: [(e.get("type"), _json_bytes(e)) for e in evs])
    ).map(_sse)
    content = st.one_of(
        st.tuples(st.just("application/json"), (row.bodies | JSON).map(_json_bytes)),
        st.tuples(st.just("text/event-stream"), sse),
        st.tuples(st.just("text/event-stream"), st.tuples(sse, st.integers(0, 2000))
                  .map(lambda t: t[0][: t[1]])),  # a stream cut short
        st.tuples(st.sampled_from(["application/json", "text/event-stream"]),
                  st.binary(max_size=300)),
    )  # fmt: skip
    return st.builds(
        lambda status, content, mode, cuts: Reply(status, *content, mode, cuts),
        st.sampled_from([200, 200, 200, 429, 500]),
        content,
        st.sampled_from(["length", "chunked", "chunked", "cut", "short"]),
        st.lists(st.integers(0, 400), max_size=6).map(tuple),
    )


REQUEST_JSON = st.fixed_dictionaries({"model": TEXT | JSON, "stream": st.booleans()})
REQUEST_BODIES = REQUEST_JSON.map(_json_bytes) | st.binary(max_size=50)


def _call(
    client: httpx2.Client, url: str, reply_id: str, body: bytes, stop_after: int | None
) -> tuple[int | None, bytes, type[BaseException] | None]:
    """The status, the raw body bytes read and the exception raised, if any."""
    status, received = None, []
    try:
        with client.stream("POST", url, content=body, headers={"x-reply": reply_id}) as response:
            status = response.status_code
            for chunk in response.iter_raw():
                received.append(chunk)
                if stop_after is not None and len(received) >= stop_after:
                    break
    except Exception as exc:
        return status, b"".join(received), type(exc)
    return status, b"".join(received), None


@pytest.mark.slow
@settings(max_examples=60, **COMMON)
@given(
    data=st.data(),
    path=st.sampled_from(PATHS),
    request_body=REQUEST_BODIES,
    stop_after=st.none() | st.none() | st.integers(1, 3),
)
def test_the_transport_passes_any_response_through_and_counts_it_once(
    upstream: _Upstream,
    clients: tuple[httpx2.Client, httpx2.Client, InMemoryMetrics],
    data: st.DataObject,
    path: str,
    request_body: bytes,
    stop_after: int | None,
) -> None:
    """The caller gets the upstream's bytes, fails only as a plain transport does, and each
    call is one request on llm.requests."""
    reply = data.draw(_replies(ROUTES[path]), label="reply")
    plain, metered, metrics = clients
    reply_id = str(next(upstream.ids))
    upstream.replies[reply_id] = reply
    url = upstream.base_url + path
    try:
        expected = _call(plain, url, reply_id, request_body, stop_after)
        before = metrics.value("llm.requests")
        got = _call(metered, url, reply_id, request_body, stop_after)
        assert metrics.value("llm.requests") - before == 1
    finally:
        del upstream.replies[reply_id]
    assert got[0] == expected[0] == reply.status
    assert got[2] is expected[2]
    if stop_after is None:
        assert got[1] == expected[1] == reply.sent()
    else:
        assert reply.sent().startswith(got[1])


@pytest.mark.parametrize("path", PATHS[:2])
@settings(max_examples=10, **COMMON)
@given(depth=st.integers(1, 20_000))
@example(depth=10_000)
def test_a_json_body_nested_to_any_depth_is_counted_once(
    upstream: _Upstream,
    clients: tuple[httpx2.Client, httpx2.Client, InMemoryMetrics],
    path: str,
    depth: int,
) -> None:
    """A JSON body of any nesting depth reaches the caller whole and is counted once."""
    _, metered, metrics = clients
    reply_id = str(next(upstream.ids))
    upstream.replies[reply_id] = Reply(200, "application/json", b"[" * depth, "length")
    try:
        before = metrics.value("llm.requests")
        got = _call(metered, upstream.base_url + path, reply_id, b"{}", None)
        assert got == (200, b"[" * depth, None)
        assert metrics.value("llm.requests") - before == 1
    finally:
        del upstream.replies[reply_id]


# ---------------------------------------------------------------------------------------------
# The Prometheus endpoint


def _scrape(url: str) -> tuple[int, str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        connection.close()


OPTIONAL_LABELS = st.fixed_dictionaries(
    {},
    optional={name: TEXT.filter(bool) for name in
              ("request_model", "scenario", "user_tier", "server_address")},
)  # fmt: skip
LABELLED_USAGES = st.builds(
    lambda provider, model, operation, failed, labels: Usage(
        provider=provider, model=model, operation=operation, input_tokens=5, output_tokens=2,
        status="error" if failed else "success", error_type=failed, latency_s=0.1, **labels,
    ),
    TEXT.filter(bool), TEXT.filter(bool), TEXT.filter(bool), st.none() | TEXT.filter(bool),
    OPTIONAL_LABELS,
)  # fmt: skip


@pytest.mark.slow
@settings(max_examples=30, **COMMON)
@given(usages=st.lists(LABELLED_USAGES, min_size=1, max_size=6))
def test_the_prometheus_endpoint_serves_any_labels_parseably(usages: list[Usage]) -> None:
    """Whatever text the labels hold, every scrape is a 200 that parses, with every request."""
    assert all(_is_valid(u) for u in usages)
    telemetry = configure(exporters="prometheus", prometheus_port=0)
    try:
        tracker = telemetry.tracker()
        for usage in usages:
            tracker.record(usage)
        tracker.flush()
        url = telemetry.prometheus_url
        assert url is not None
        for _ in range(2):
            status, text = _scrape(url)
            assert status == 200
            requests = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "llm_requests_total"
            )
            assert requests == len(usages)
    finally:
        telemetry.shutdown()
