"""Every instrument of the design contract: exact name, kind, unit, buckets, attributes, values."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

from otel_tokens import Usage
from otel_tokens._base.ratelimit import RateLimits, Reading
from otel_tokens.testing import InMemoryMetrics

TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864]  # fmt: skip
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92]  # fmt: skip

# Written out by hand from the design contract, not read from the package's table.
CONTRACT = {
    "gen_ai.client.token.usage": ("histogram", "{token}"),
    "gen_ai.client.operation.duration": ("histogram", "s"),
    "gen_ai.client.operation.time_to_first_chunk": ("histogram", "s"),
    "llm.usage.input_tokens": ("counter", "{token}"),
    "llm.usage.output_tokens": ("counter", "{token}"),
    "llm.usage.cache_read.input_tokens": ("counter", "{token}"),
    "llm.usage.cache_write.input_tokens": ("counter", "{token}"),
    "llm.usage.reasoning.output_tokens": ("counter", "{token}"),
    "llm.usage.system_tokens": ("counter", "{token}"),
    "llm.usage.cost": ("counter", "USD"),
    "llm.usage.cache_savings": ("counter", "USD"),
    "llm.usage.cache_write_premium": ("counter", "USD"),
    "llm.usage.unpriced_tokens": ("counter", "{token}"),
    "llm.requests": ("counter", "{request}"),
    "llm.ratelimit.limit": ("gauge", "{count}"),
    "llm.ratelimit.remaining": ("gauge", "{count}"),
    "llm.ratelimit.reset": ("gauge", "s"),
    "otel_tokens.records.dropped": ("counter", "{record}"),
    "otel_tokens.series.overflow": ("counter", "{record}"),
}

COMMON = {
    "gen_ai.provider.name": "anthropic",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "claude-sonnet-4-5",
    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
    "llm.status": "success",
    "llm.streaming": True,
    "llm.scenario": "claude_code",
    "llm.user.tier": "pro",
    "server.address": "api.anthropic.com",
}

STREAMED = Usage(
    provider="anthropic",
    model="claude-sonnet-4-5-20250929",
    request_model="claude-sonnet-4-5",
    input_tokens=50_000,
    output_tokens=1_200,
    cache_read_tokens=40_000,
    cache_write_tokens=8_000,
    reasoning_tokens=700,
    system_tokens=150,
    latency_s=6.4,
    time_to_first_token_s=0.9,
    streamed=True,
    scenario="claude_code",
    user_tier="pro",
    server_address="api.anthropic.com",
)


@pytest.fixture
def recorded(metrics: InMemoryMetrics) -> InMemoryMetrics:
    metrics.tracker.record(STREAMED)
    metrics.tracker.record(STREAMED)
    return metrics


def test_every_contract_instrument_exists_with_kind_and_unit(recorded: InMemoryMetrics) -> None:
    recorded.tracker.record(Usage(provider="x", model="unpriced-model", input_tokens=1))
    recorded.tracker.record(Usage(provider="x", model="y", input_tokens=-1))  # dropped
    limits = RateLimits((Reading("tokens", 100, 40, 3.0),), None)
    recorded.tracker._rate_limits(STREAMED, limits)  # what a transport reads from headers
    found = recorded.metrics()
    assert set(found) == set(CONTRACT)
    for name, (kind, unit) in CONTRACT.items():
        metric = found[name]
        assert metric.unit == unit, name
        if kind == "histogram":
            assert isinstance(metric.data, Histogram), name
        elif kind == "gauge":
            assert isinstance(metric.data, Gauge), name
        else:
            assert isinstance(metric.data, Sum) and metric.data.is_monotonic, name


@pytest.mark.parametrize(
    ("name", "bounds"),
    [
        ("gen_ai.client.token.usage", TOKEN_BUCKETS),
        ("gen_ai.client.operation.duration", DURATION_BUCKETS),
        ("gen_ai.client.operation.time_to_first_chunk", DURATION_BUCKETS),
    ],
)
def test_histograms_use_the_conventions_advised_buckets(
    recorded: InMemoryMetrics, name: str, bounds: list[float]
) -> None:
    points = recorded.points(name)
    assert points
    for point in points:
        assert list(point.explicit_bounds) == bounds


def test_token_usage_has_one_point_per_token_type_with_exact_values(
    recorded: InMemoryMetrics,
) -> None:
    points = recorded.points("gen_ai.client.token.usage")
    by_type = {p.attributes["gen_ai.token.type"]: p for p in points}
    assert set(by_type) == {"input", "output"}
    assert dict(by_type["input"].attributes) == {**COMMON, "gen_ai.token.type": "input"}
    assert dict(by_type["output"].attributes) == {**COMMON, "gen_ai.token.type": "output"}
    assert (by_type["input"].count, by_type["input"].sum) == (2, 100_000)
    assert (by_type["output"].count, by_type["output"].sum) == (2, 2_400)
    # 50 000 lies in (16384, 65536]: bucket index 8; 1 200 in (1024, 4096]: index 6.
    assert by_type["input"].bucket_counts[8] == 2 and sum(by_type["input"].bucket_counts) == 2
    assert by_type["output"].bucket_counts[6] == 2 and sum(by_type["output"].bucket_counts) == 2


def test_durations_have_exact_values_and_attributes(recorded: InMemoryMetrics) -> None:
    (duration,) = recorded.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes) == COMMON
    assert (duration.count, duration.sum, duration.min, duration.max) == (2, 12.8, 6.4, 6.4)
    assert duration.bucket_counts[10] == 2  # 6.4 lies in (5.12, 10.24]
    (ttft,) = recorded.points("gen_ai.client.operation.time_to_first_chunk")
    assert dict(ttft.attributes) == COMMON
    assert (ttft.count, ttft.sum) == (2, 1.8)
    assert ttft.bucket_counts[7] == 2  # 0.9 lies in (0.64, 1.28]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llm.usage.input_tokens", 100_000),
        ("llm.usage.output_tokens", 2_400),
        ("llm.usage.cache_read.input_tokens", 80_000),
        ("llm.usage.cache_write.input_tokens", 16_000),
        ("llm.usage.reasoning.output_tokens", 1_400),
        ("llm.usage.system_tokens", 300),
        ("llm.requests", 2),
    ],
)
def test_counters_have_exact_values_and_the_common_attributes(
    recorded: InMemoryMetrics, name: str, expected: int
) -> None:
    (point,) = recorded.points(name)
    assert dict(point.attributes) == COMMON
    assert point.value == expected


def test_cost_is_exact_for_a_priced_model_and_absent_when_unpriced(
    recorded: InMemoryMetrics,
) -> None:
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 cache write, $15 output per 1M.
    # Per request: 2 000 uncached*3 + 40 000*0.30 + 8 000*3.75 + 1 200*15 = 66 000 per 1M.
    (cost,) = recorded.points("llm.usage.cost")
    assert dict(cost.attributes) == COMMON
    assert cost.value == pytest.approx(2 * 0.066, abs=1e-15)
    assert recorded.points("llm.usage.unpriced_tokens") == []


def test_unpriced_model_counts_tokens_and_has_no_cost_series(metrics: InMemoryMetrics) -> None:
    metrics.tracker.record(
        Usage(provider="aws.bedrock", model="mystery-1", input_tokens=900, output_tokens=100)
    )
    assert metrics.value("llm.usage.unpriced_tokens", model="mystery-1") == 1_000
    assert metrics.points("llm.usage.cost", model="mystery-1") == []


def test_failed_request_carries_error_type_on_every_instrument(metrics: InMemoryMetrics) -> None:
    metrics.tracker.record(
        Usage(
            provider="openai",
            model="gpt-4o",
            input_tokens=10,
            status="error",
            error_type="rate_limited",
            latency_s=0.2,
        )
    )
    expected = {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "llm.status": "error",
        "llm.streaming": False,
        "error.type": "rate_limited",
    }
    (duration,) = metrics.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes) == expected
    (requests,) = metrics.points("llm.requests")
    assert dict(requests.attributes) == expected
    # No output tokens and not streamed: no output point and no time to first chunk.
    assert [
        p.attributes["gen_ai.token.type"] for p in metrics.points("gen_ai.client.token.usage")
    ] == ["input"]
    assert metrics.points("gen_ai.client.operation.time_to_first_chunk") == []


def test_error_without_a_type_is_reported_as_other(metrics: InMemoryMetrics) -> None:
    metrics.tracker.record(Usage(provider="openai", model="gpt-4o", status="error"))
    assert metrics.value("llm.requests", error_type="_OTHER") == 1


def test_error_type_that_looks_like_a_message_is_not_a_label(
    metrics: InMemoryMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    for host in ("10.0.0.1", "10.0.0.2"):
        metrics.tracker.record(
            Usage(
                provider="openai",
                model="gpt-4o",
                status="error",
                error_type=f"connection refused by {host}",
            )
        )
    assert metrics.value("llm.requests", error_type="_OTHER") == 2
    assert len(metrics.points("llm.requests")) == 1
    assert sum("class of failure" in r.getMessage() for r in caplog.records) == 1


def test_nothing_is_exported_before_anything_is_recorded() -> None:
    metrics = InMemoryMetrics()
    assert metrics.value("llm.requests") == 0
    assert metrics.points("gen_ai.client.token.usage") == []
    metrics.shutdown()
