"""Invalid usage is dropped, counted by reason and warned about once per reason; never raised."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import pytest

from otel_tokens import Usage
from otel_tokens.testing import InMemoryMetrics

GOOD = Usage(provider="openai", model="gpt-4o", input_tokens=100, output_tokens=50,
             cache_read_tokens=20, reasoning_tokens=10, latency_s=1.0)  # fmt: skip

# (changes to GOOD, drop reason, words the message must contain)
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"input_tokens": -1}, "negative_tokens", "input_tokens must be >= 0, got -1"),
    ({"output_tokens": -5}, "negative_tokens", "output_tokens must be >= 0, got -5"),
    ({"system_tokens": -1}, "negative_tokens", "system_tokens"),
    ({"input_tokens": 1.5}, "bad_type", "input_tokens must be an int, got 1.5"),
    ({"input_tokens": "100"}, "bad_type", "input_tokens must be an int, got '100'"),
    ({"output_tokens": True}, "bad_type", "output_tokens must be an int, got True"),
    ({"input_tokens": None}, "bad_type", "input_tokens must be an int, got None"),
    ({"input_tokens": 10**12}, "too_many_tokens", "input_tokens must be <= 1,000,000,000"),
    ({"cache_read_tokens": 101}, "cache_exceeds_input", "(101) must not exceed input_tokens (100)"),
    ({"cache_read_tokens": 60, "cache_write_tokens": 41}, "cache_exceeds_input", "(101)"),
    ({"reasoning_tokens": 51}, "reasoning_exceeds_output", "reasoning_tokens (51)"),
    ({"status": "failed"}, "unknown_status", "got 'failed'"),
    ({"status": "cancelled"}, "unknown_status", "got 'cancelled'"),
    ({"error_type": "timeout"}, "error_type_on_success", "'timeout' but status is 'success'"),
    ({"latency_s": math.nan}, "bad_latency", "got nan"),
    ({"latency_s": math.inf}, "bad_latency", "got inf"),
    ({"latency_s": -0.1}, "bad_latency", "got -0.1"),
    ({"latency_s": 10**7}, "bad_latency", "got 10000000"),
    ({"latency_s": "1.0"}, "bad_latency", "got '1.0'"),
    ({"time_to_first_token_s": 0.5}, "bad_time_to_first_token", "streamed is False"),
    (
        {"time_to_first_token_s": 2.0, "streamed": True},
        "bad_time_to_first_token",
        "must not exceed latency_s",
    ),
    ({"time_to_first_token_s": math.nan, "streamed": True}, "bad_time_to_first_token", "nan"),
    ({"streamed": "yes"}, "bad_type", "streamed must be a bool, got 'yes'"),
    ({"provider": ""}, "bad_label", "provider must be a non-empty str, got ''"),
    ({"model": None}, "bad_label", "model must be a non-empty str, got None"),
    ({"scenario": 42}, "bad_label", "scenario must be a str or None, got 42"),
    ({"user_tier": ["pro"]}, "bad_label", "user_tier must be a str or None"),
    ({"service_tier": 3}, "bad_label", "service_tier must be a str or None, got 3"),
    ({"server_port": 0}, "bad_type", "server_port must be None or an int from 1 to 65535, got 0"),
    ({"server_port": 70_000}, "bad_type", "got 70000"),
    ({"server_port": "443"}, "bad_type", "got '443'"),
    ({"server_port": True}, "bad_type", "got True"),
    ({"time_per_output_chunk_s": 0.01}, "bad_time_per_output_chunk", "streamed is False"),
    (
        {"time_per_output_chunk_s": -1.0, "streamed": True},
        "bad_time_per_output_chunk",
        "got -1.0",
    ),
    (
        {"time_per_output_chunk_s": math.inf, "streamed": True},
        "bad_time_per_output_chunk",
        "got inf",
    ),
]


@pytest.mark.parametrize(
    ("changes", "reason", "words"), BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)]
)
def test_bad_usage_is_dropped_counted_and_explained(
    changes: dict[str, Any], reason: str, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = InMemoryMetrics()
    bad = replace(GOOD, **changes)
    with pytest.raises(ValueError, match=None) as raised:
        bad.validate()
    assert words in str(raised.value)

    metrics.tracker.record(bad)
    metrics.tracker.record(bad)
    metrics.tracker.record(GOOD)

    assert metrics.value("otel_tokens.records.dropped", reason=reason) == 2
    assert metrics.value("llm.requests") == 1
    assert metrics.value("llm.usage.input_tokens") == 100
    warnings = [
        r.getMessage() for r in caplog.records if "dropped a usage record" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert words in warnings[0] and reason in warnings[0]


def test_each_kind_of_fault_is_warned_once_however_often(caplog: pytest.LogCaptureFixture) -> None:
    metrics = InMemoryMetrics()
    for i in range(1_000):
        metrics.tracker.record(replace(GOOD, input_tokens=-i - 1))
        metrics.tracker.record(replace(GOOD, status=f"weird{i}"))
    assert metrics.value("otel_tokens.records.dropped", reason="negative_tokens") == 1_000
    assert metrics.value("otel_tokens.records.dropped", reason="unknown_status") == 1_000
    drop_logs = [r for r in caplog.records if "dropped a usage record" in r.getMessage()]
    assert len(drop_logs) == 2
    assert all(r.levelno == logging.WARNING and r.name == "otel_tokens" for r in drop_logs)


@pytest.mark.parametrize("garbage", [None, 42, "usage", {"provider": "openai"}, object()])
def test_record_of_something_that_is_not_a_usage_never_raises(garbage: object) -> None:
    metrics = InMemoryMetrics()
    metrics.tracker.record(garbage)  # type: ignore[arg-type]
    assert metrics.value("otel_tokens.records.dropped", reason="not_usage") == 1


def test_valid_usage_passes_validate() -> None:
    GOOD.validate()
    Usage(provider="p", model="m").validate()


def test_usage_construction_never_raises_on_bad_values() -> None:
    # Built on a gateway's request path from provider data: it must not throw there.
    usage = Usage(provider="openai", model="gpt-4o", input_tokens=-3, latency_s=math.nan)
    assert usage.input_tokens == -3


def test_request_model_defaults_to_model() -> None:
    assert Usage(provider="p", model="m").request_model == "m"
    assert Usage(provider="p", model="m", request_model="alias").request_model == "alias"
