"""Normalizers on the providers' documented payloads, on their SDK objects, and on garbage.

The payloads in tests/payloads/ are shaped as each provider documents them (sources in
tests/payloads/SOURCES.md); the expected numbers are worked out by hand there.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from otel_tokens import Usage
from otel_tokens._base.usage import find_fault
from otel_tokens.providers import (
    UNKNOWN_MODEL,
    from_anthropic,
    from_bedrock,
    from_gemini,
    from_openai,
)
from tests.helpers.normalizer_cells import CELLS
from tests.helpers.paths import PAYLOADS


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def tokens(usage: Usage) -> dict[str, int]:
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_read": usage.cache_read_tokens,
        "cache_write": usage.cache_write_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
        "reasoning": usage.reasoning_tokens,
    }


def counts(
    input: int, output: int, cache_read: int = 0, cache_write: int = 0, cache_write_1h: int = 0,
    reasoning: int = 0,
) -> dict[str, int]:  # fmt: skip
    return {
        "input": input, "output": output, "cache_read": cache_read, "cache_write": cache_write,
        "cache_write_1h": cache_write_1h, "reasoning": reasoning,
    }  # fmt: skip


# file, normalizer, extra fields, expected counts, model, operation (SOURCES.md's table)
DOCUMENTED = [
    ("openai_chat.json", from_openai, {}, counts(2463, 891, cache_read=1920, reasoning=448),
     "gpt-4.1-2025-04-14", "chat"),
    ("openai_chat_cache_write.json", from_openai, {},
     counts(15342, 517, cache_read=12032, cache_write=3186, reasoning=211), None, "chat"),
    ("openai_responses.json", from_openai, {},
     counts(5231, 1378, cache_read=4096, cache_write=1024, reasoning=1024), None, "chat"),
    ("openai_embeddings.json", from_openai, {}, counts(37, 0), "text-embedding-3-small",
     "embeddings"),
    ("deepseek_chat.json", from_openai, {"provider": "deepseek"},
     counts(2217, 913, cache_read=1920, reasoning=688), None, "chat"),
    ("anthropic_message.json", from_anthropic, {},
     counts(16832, 761, cache_read=12032, cache_write=4488, cache_write_1h=1088),
     "claude-sonnet-4-5-20250929", "chat"),
    ("gemini_generate.json", from_gemini, {},
     counts(4196 + 212, 391 + 1187, cache_read=3072, reasoning=1187), "gemini-2.5-flash",
     "generate_content"),
    ("bedrock_converse.json", from_bedrock, {"model": "anthropic.claude-sonnet-4-5"},
     counts(9751, 412, cache_read=8192, cache_write=1536, cache_write_1h=1024),
     "anthropic.claude-sonnet-4-5", "chat"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "normalize", "fields", "expected", "model", "operation"),
    DOCUMENTED,
    ids=[d[0] for d in DOCUMENTED],
)
def test_documented_payload_gives_the_hand_computed_usage(
    name: str, normalize: Any, fields: dict[str, Any], expected: dict[str, int],
    model: str | None, operation: str,
) -> None:  # fmt: skip
    body = payload(name)
    usage = normalize(body, **fields)
    assert tokens(usage) == expected
    assert usage.model == (model or body["model"])
    assert usage.operation == operation
    assert usage.usage_problem is None
    assert find_fault(usage) is None


def test_sdk_objects_give_the_same_usage_as_their_json() -> None:
    from anthropic.types import Message
    from openai.types import CreateEmbeddingResponse
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

    cases = [
        (from_openai, ChatCompletion, "openai_chat.json"),
        (from_openai, ChatCompletion, "openai_chat_cache_write.json"),
        (from_openai, Response, "openai_responses.json"),
        (from_openai, CreateEmbeddingResponse, "openai_embeddings.json"),
        (from_anthropic, Message, "anthropic_message.json"),
    ]
    for normalize, sdk_type, name in cases:
        body = payload(name)
        obj = sdk_type.model_validate(body)
        assert not isinstance(obj, dict)
        assert normalize(obj) == normalize(body), name


def test_gemini_sdk_style_snake_case_object_reads_like_its_json() -> None:
    meta = payload("gemini_generate.json")["usageMetadata"]
    snake = SimpleNamespace(
        model_version="gemini-2.5-flash",
        usage_metadata=SimpleNamespace(
            prompt_token_count=meta["promptTokenCount"],
            candidates_token_count=meta["candidatesTokenCount"],
            cached_content_token_count=meta["cachedContentTokenCount"],
            thoughts_token_count=meta["thoughtsTokenCount"],
            tool_use_prompt_token_count=meta["toolUsePromptTokenCount"],
        ),
    )
    assert from_gemini(snake) == from_gemini(payload("gemini_generate.json"))


@pytest.mark.parametrize(
    ("provider", "field", "usage_field", "normalize", "body", "expected"),
    CELLS,
    ids=[f"{c[0]}:{c[2]}:{i}" for i, c in enumerate(CELLS)],
)
def test_each_cell_of_the_readme_table(
    provider: str, field: str, usage_field: str, normalize: Any, body: dict[str, Any],
    expected: Any,
) -> None:  # fmt: skip
    usage = normalize(body)
    name = usage_field.split(" ", 1)[0]
    assert getattr(usage, name) == expected
    assert usage.usage_problem is None
    assert find_fault(usage) is None


class Exploding:
    """An SDK-like object whose every attribute raises, as a broken proxy would."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)


GARBAGE: list[tuple[Any, str | None]] = [
    (None, "missing"),
    (42, "missing"),
    ("not json", "missing"),
    ([1, 2], "missing"),
    ({}, "missing"),
    ({"usage": None}, "missing"),
    ({"usage": 42}, "malformed"),
    ({"usage": "many"}, "malformed"),
    (SimpleNamespace(usage=42), "malformed"),
    (Exploding(), "missing"),
]


@pytest.mark.parametrize("normalize", [from_openai, from_anthropic, from_gemini, from_bedrock])
@pytest.mark.parametrize(("body", "problem"), GARBAGE, ids=[repr(g[0])[:30] for g in GARBAGE])
def test_garbage_gives_a_flagged_recordable_usage_and_never_raises(
    normalize: Any, body: Any, problem: str | None
) -> None:
    if normalize is from_gemini and isinstance(body, dict) and "usage" in body:
        body = {"usageMetadata": body["usage"]}
    if normalize is from_gemini and isinstance(body, SimpleNamespace):
        body = SimpleNamespace(usageMetadata=body.usage)
    usage = normalize(body, request_model="asked-for")
    assert usage.usage_problem == problem
    assert usage.model == "asked-for"  # what the caller knew survives
    assert tokens(usage) == counts(0, 0)
    assert find_fault(usage) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # strings, negatives, booleans and fractions are unreadable: 0 and flagged
        ({"usage": {"prompt_tokens": "12", "completion_tokens": 5}}, counts(0, 5)),
        ({"usage": {"prompt_tokens": -3, "completion_tokens": 5}}, counts(0, 5)),
        ({"usage": {"prompt_tokens": True, "completion_tokens": 5}}, counts(0, 5)),
        ({"usage": {"prompt_tokens": 2.5, "completion_tokens": 5}}, counts(0, 5)),
        # parts larger than their totals are cut to fit, and flagged
        ({"usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}},
         counts(10, 0, cache_read=10)),
        ({"usage": {"completion_tokens": 10,
                    "completion_tokens_details": {"reasoning_tokens": 11}}},
         counts(0, 10, reasoning=10)),
        ({"usage": {"prompt_tokens": 10, "prompt_tokens_details": [1, 2]}}, counts(10, 0)),
    ],
)  # fmt: skip
def test_malformed_counts_are_flagged_with_what_could_be_read(
    body: dict[str, Any], expected: dict[str, int]
) -> None:
    usage = from_openai(body)
    assert tokens(usage) == expected
    if body["usage"].get("prompt_tokens_details") != [1, 2]:
        assert usage.usage_problem == "malformed"
    assert find_fault(usage) is None


def test_whole_number_floats_from_lenient_servers_are_read() -> None:
    usage = from_openai({"usage": {"prompt_tokens": 12.0, "completion_tokens": 3.0}})
    assert tokens(usage) == counts(12, 3)
    assert usage.usage_problem is None


def test_anthropic_1h_writes_larger_than_all_writes_are_cut_and_flagged() -> None:
    usage = from_anthropic(
        {"usage": {"input_tokens": 1, "cache_creation_input_tokens": 5,
                   "cache_creation": {"ephemeral_1h_input_tokens": 9}}}
    )  # fmt: skip
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (5, 5)
    assert usage.usage_problem == "malformed"


def test_an_error_response_without_usage_is_not_flagged() -> None:
    usage = from_openai(payload("openai_error_429.json"), status="error", error_type="rate_limited")
    assert usage.usage_problem is None
    assert (usage.status, usage.error_type, usage.model) == ("error", "rate_limited", UNKNOWN_MODEL)


def test_fields_override_what_the_response_says() -> None:
    usage = from_openai(
        payload("openai_chat.json"), provider="azure.ai.openai", request_model="gpt-4o",
        scenario="openai", user_tier="pro", latency_s=1.5, api_key="sk-secret",
    )  # fmt: skip
    assert usage.provider == "azure.ai.openai"
    assert (usage.request_model, usage.model) == ("gpt-4o", "gpt-4.1-2025-04-14")
    assert (usage.scenario, usage.user_tier, usage.latency_s) == ("openai", "pro", 1.5)
    assert "sk-secret" not in repr(usage)


def test_recorded_usage_has_the_bundled_price_and_problem_label() -> None:
    from otel_tokens.testing import InMemoryMetrics

    metrics = InMemoryMetrics()  # the bundled price table
    # claude-sonnet-4-5 (bundled, base tier): $3 input, $0.30 read, $3.75 5m write, $6 1h write,
    # $15 output per million. 312*3 + 12032*0.30 + 3400*3.75 + 1088*6 + 761*15
    # = 936 + 3609.6 + 12750 + 6528 + 11415 = 35238.6 per million = $0.0352386
    metrics.tracker.record(from_anthropic(payload("anthropic_message.json")))
    metrics.tracker.record(from_openai({"model": "gpt-4o-mini"}))  # no usage block
    assert metrics.value("llm.usage.cost", model="claude-sonnet-4-5-20250929") == pytest.approx(
        0.0352386, abs=1e-12
    )
    assert metrics.value("llm.usage.input_tokens", model="claude-sonnet-4-5-20250929") == 16832
    assert metrics.value("llm.requests", model="gpt-4o-mini", usage_problem="missing") == 1
