"""`tracker.track()`: times the block, sets status from how it ended, records once on exit."""

from __future__ import annotations

import asyncio
import time

import pytest

from otel_tokens.testing import InMemoryMetrics


class UpstreamTimeoutError(Exception):
    pass


def test_success_records_tokens_and_latency(metrics: InMemoryMetrics) -> None:
    with metrics.tracker.track(provider="openai", model="gpt-4o", scenario="openai") as req:
        time.sleep(0.05)
        req.input_tokens, req.output_tokens = 1200, 300
        req.cache_read_tokens = 1000
    assert metrics.value("llm.requests", status="success", scenario="openai") == 1
    assert metrics.value("llm.usage.input_tokens") == 1200
    assert metrics.value("llm.usage.cache_read.input_tokens") == 1000
    duration = metrics.histogram("gen_ai.client.operation.duration")
    assert duration.count == 1 and 0.05 <= duration.sum < 5


def test_exception_is_an_error_with_its_class_name_and_still_propagates(
    metrics: InMemoryMetrics,
) -> None:
    with (
        pytest.raises(UpstreamTimeoutError),
        metrics.tracker.track(provider="openai", model="gpt-4o") as req,
    ):
        req.input_tokens = 50
        raise UpstreamTimeoutError("upstream took too long")
    assert metrics.value("llm.requests", status="error", error_type="UpstreamTimeoutError") == 1
    assert metrics.value("llm.usage.input_tokens", status="error") == 50


def test_an_exception_class_defined_in_a_function_is_named_by_its_plain_name(
    metrics: InMemoryMetrics,
) -> None:
    class LocalError(Exception):
        pass

    with pytest.raises(LocalError), metrics.tracker.track(provider="openai", model="gpt-4o"):
        raise LocalError
    assert metrics.value("llm.requests", error_type="LocalError") == 1


def test_error_type_set_in_the_block_wins_over_the_class_name(metrics: InMemoryMetrics) -> None:
    with (
        pytest.raises(RuntimeError),
        metrics.tracker.track(provider="openai", model="gpt-4o") as req,
    ):
        req.error_type = "rate_limited"
        raise RuntimeError("429")
    assert metrics.value("llm.requests", error_type="rate_limited") == 1


def test_setting_error_type_without_raising_marks_the_request_failed(
    metrics: InMemoryMetrics,
) -> None:
    with metrics.tracker.track(provider="openai", model="gpt-4o") as req:
        req.error_type = "http_503"
    assert metrics.value("llm.requests", status="error", error_type="http_503") == 1


def test_keyboard_interrupt_is_canceled_not_error(metrics: InMemoryMetrics) -> None:
    with pytest.raises(KeyboardInterrupt), metrics.tracker.track(provider="openai", model="gpt-4o"):
        raise KeyboardInterrupt
    assert metrics.value("llm.requests", status="canceled") == 1
    assert metrics.value("llm.requests", status="error") == 0
    (point,) = metrics.points("llm.requests")
    assert "error.type" not in point.attributes


def test_async_success_with_streaming_measures_time_to_first_token(
    metrics: InMemoryMetrics,
) -> None:
    async def call() -> None:
        async with metrics.tracker.track(provider="anthropic", model="claude-sonnet-4-5") as req:
            await asyncio.sleep(0.03)
            req.first_token()
            await asyncio.sleep(0.03)
            req.first_token()  # only the first call counts
            req.input_tokens, req.output_tokens = 10, 20

    asyncio.run(call())
    assert metrics.value("llm.requests", streaming=True, status="success") == 1
    ttft = metrics.histogram("gen_ai.client.operation.time_to_first_chunk")
    duration = metrics.histogram("gen_ai.client.operation.duration")
    assert ttft.count == 1 and 0.03 <= ttft.sum < duration.sum


def test_async_exception_is_an_error(metrics: InMemoryMetrics) -> None:
    async def call() -> None:
        async with metrics.tracker.track(provider="openai", model="gpt-4o"):
            raise UpstreamTimeoutError

    with pytest.raises(UpstreamTimeoutError):
        asyncio.run(call())
    assert metrics.value("llm.requests", status="error", error_type="UpstreamTimeoutError") == 1


def test_async_cancellation_is_canceled_and_propagates(metrics: InMemoryMetrics) -> None:
    async def call() -> None:
        async with metrics.tracker.track(provider="openai", model="gpt-4o", streamed=True) as req:
            req.input_tokens = 700
            req.first_token()
            req.output_tokens = 12  # what had streamed before the client went away
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(call())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert metrics.value("llm.requests", status="canceled", streaming=True) == 1
    assert metrics.value("llm.usage.output_tokens", status="canceled") == 12


def test_timeout_around_the_block_cancels_it(metrics: InMemoryMetrics) -> None:
    async def slow() -> None:
        async with metrics.tracker.track(provider="openai", model="gpt-4o"):
            await asyncio.sleep(10)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow(), timeout=0.02)

    asyncio.run(main())
    assert metrics.value("llm.requests", status="canceled") == 1


def test_block_may_set_the_model_that_answered(metrics: InMemoryMetrics) -> None:
    with metrics.tracker.track(provider="openai", model="gpt-4o") as req:
        req.model = "gpt-4o-2024-08-06"
    (point,) = metrics.points("llm.requests")
    assert point.attributes["gen_ai.request.model"] == "gpt-4o"
    assert point.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"


def test_invalid_counts_set_in_the_block_are_dropped_not_raised(metrics: InMemoryMetrics) -> None:
    with metrics.tracker.track(provider="openai", model="gpt-4o") as req:
        req.input_tokens = -1
    assert metrics.value("otel_tokens.records.dropped", reason="negative_tokens") == 1


def test_repr_hides_the_api_key(metrics: InMemoryMetrics) -> None:
    with metrics.tracker.track(provider="openai", model="gpt-4o", api_key="sk-secret-123") as req:
        assert "sk-secret" not in repr(req)
