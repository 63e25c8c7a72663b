"""One switch moves every instrument to the GenAI conventions' newest names (their main
branch: `gen_ai.client.inference.*`, token counters by `gen_ai.token.modality`), with the
same values; the default keeps the names backends know today."""

from __future__ import annotations

from dataclasses import replace

import pytest

from otel_tokens import Usage
from otel_tokens._core import conventions
from otel_tokens._core import instruments as spec
from otel_tokens.testing import InMemoryMetrics

LATEST = "gen_ai_latest_experimental"
STREAMED = Usage(
    provider="anthropic", model="claude-sonnet-4-5", input_tokens=5_000, output_tokens=400,
    cache_read_tokens=4_000, cache_write_tokens=500, reasoning_tokens=100, latency_s=3.0,
    time_to_first_token_s=0.5, time_per_output_chunk_s=0.02, streamed=True,
    server_address="api.anthropic.com", server_port=443,
)  # fmt: skip
RENAMED = {
    "gen_ai.client.operation.duration": "gen_ai.client.inference.duration",
    "gen_ai.client.operation.time_to_first_chunk": "gen_ai.client.inference.time_to_first_chunk",
    "gen_ai.client.operation.time_per_output_chunk": (
        "gen_ai.client.inference.time_per_output_chunk"
    ),
    "llm.usage.input_tokens": "gen_ai.client.inference.usage.input_tokens",
    "llm.usage.output_tokens": "gen_ai.client.inference.usage.output_tokens",
    "llm.usage.cache_read.input_tokens": "gen_ai.client.inference.usage.cache_read.input_tokens",
    "llm.usage.cache_write.input_tokens": (
        "gen_ai.client.inference.usage.cache_write.input_tokens"
    ),
    "llm.usage.reasoning.output_tokens": "gen_ai.client.inference.usage.reasoning.output_tokens",
}


def _recorded(**options: object) -> InMemoryMetrics:
    metrics = InMemoryMetrics(**options)
    metrics.tracker.record(STREAMED)
    metrics.tracker.record(Usage(provider="openai", model="gpt-4.1", input_tokens=10))
    return metrics


def test_the_latest_names_replace_the_default_ones_with_the_same_values() -> None:
    default, latest = _recorded(), _recorded(conventions=LATEST)
    old, new = default.metrics(), latest.metrics()
    assert set(new) == (set(old) - set(RENAMED) - {"gen_ai.client.token.usage"}) | set(
        RENAMED.values()
    ) | {
        "gen_ai.client.inference.operation.input_tokens",
        "gen_ai.client.inference.operation.output_tokens",
    }
    for before, after in RENAMED.items():
        if spec.ALL[[s.name for s in spec.ALL].index(before)].kind == "counter":
            assert latest.value(after) == default.value(before), after
        else:
            assert latest.histogram(after) == default.histogram(before), after
    assert latest.histogram("gen_ai.client.inference.operation.input_tokens") == default.histogram(
        "gen_ai.client.token.usage", token_type="input"
    )
    assert latest.histogram("gen_ai.client.inference.operation.output_tokens").sum == 400


def test_token_counters_carry_the_modality_and_histograms_no_token_type() -> None:
    latest = _recorded(conventions=LATEST)
    for name in conventions.MODALITY_COUNTERS:
        for point in latest.points(RENAMED[name]):
            assert (point.attributes or {})["gen_ai.token.modality"] == "unknown", name
    for point in latest.points("llm.usage.cost") + latest.points("llm.requests"):
        assert "gen_ai.token.modality" not in (point.attributes or {})
    for point in latest.points("gen_ai.client.inference.operation.input_tokens"):
        attributes = point.attributes or {}
        assert "gen_ai.token.type" not in attributes
        assert attributes.get("server.port") in (None, 443)


def test_the_opentelemetry_opt_in_variable_chooses_the_latest_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http, gen_ai_latest_experimental")
    assert "gen_ai.client.inference.duration" in _recorded().metrics()
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    assert "gen_ai.client.operation.duration" in _recorded().metrics()


def test_an_unknown_choice_is_refused_at_setup() -> None:
    with pytest.raises(ValueError, match=r"conventions must be one of .* got 'latest'"):
        InMemoryMetrics(conventions="latest")


def test_the_naming_lists_every_instrument_it_creates() -> None:
    latest = _recorded(conventions=LATEST)
    latest.tracker._rate_limits(STREAMED, _limits())
    latest.tracker.record(Usage(provider="x", model="y", input_tokens=-1))
    created = set(latest.metrics()) - {"llm.usage.unpriced_tokens"}
    listed = {s.name for s in conventions.naming(LATEST).instruments()}
    assert created == listed - {"llm.usage.unpriced_tokens"}


def _limits() -> object:
    from otel_tokens._base.ratelimit import RateLimits, Reading

    return RateLimits((Reading("tokens", 100, 50, 1.0),), None)


def test_a_service_tier_that_is_not_plain_text_costs_only_itself() -> None:
    from otel_tokens.providers import from_openai

    class Hostile(str):
        def __len__(self) -> int:
            raise RuntimeError("len")

        def __hash__(self) -> int:
            raise RuntimeError("hash")

    body = {"object": "chat.completion", "model": "gpt-4.1", "service_tier": Hostile("flex"),
            "usage": {"prompt_tokens": 100, "completion_tokens": 7}}  # fmt: skip
    usage = from_openai(body)
    assert (usage.input_tokens, usage.output_tokens, usage.usage_problem) == (100, 7, None)
    assert usage.service_tier is None
    plain = from_openai({**body, "service_tier": "flex"})
    assert plain.service_tier == "flex"


def test_a_port_given_as_an_int_subclass_is_exported_as_an_exact_int() -> None:
    class Port(int):
        pass

    metrics = InMemoryMetrics()
    metrics.tracker.record(replace(STREAMED, server_port=Port(8443)))
    (point,) = metrics.points("llm.requests")
    port = (point.attributes or {})["server.port"]
    assert port == 8443 and type(port) is int
