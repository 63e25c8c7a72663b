"""The baseline: the same contract recorded with one OpenTelemetry SDK call per instrument.

Written apart from the tracker (it shares only the instrument table and the prices), so that
a test comparing the two also checks the tracker's attributes, and a benchmark comparing them
measures what the tracker's design saves.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import Meter

from otel_tokens import PriceTable, Usage
from otel_tokens._core import instruments as spec
from otel_tokens._pricing.prices import PICO_PER_USD


def contract_attributes(usage: Usage) -> dict[str, Any]:
    """The design contract's attributes of `usage` (no caps or allow-lists: keep inputs small)."""
    attributes: dict[str, Any] = {
        "gen_ai.provider.name": usage.provider,
        "gen_ai.operation.name": usage.operation,
        "gen_ai.request.model": usage.request_model,
        "gen_ai.response.model": usage.model,
        "llm.status": usage.status,
        "llm.streaming": usage.streamed,
    }
    if usage.status == "error":
        attributes["error.type"] = usage.error_type or "_OTHER"
    elif usage.status == "canceled" and usage.error_type:
        attributes["error.type"] = usage.error_type
    for name, value in (
        ("llm.scenario", usage.scenario),
        ("llm.user.tier", usage.user_tier),
        ("server.address", usage.server_address),
        ("llm.usage.problem", usage.usage_problem),
    ):
        if value:
            attributes[name] = value
    if usage.server_address and usage.server_port is not None:
        attributes["server.port"] = usage.server_port
    return attributes


def cache_worth(usage: Usage, prices: PriceTable | None) -> tuple[int, int]:
    """Cache savings and write premium in pico-dollars, written out apart from the package's."""
    rates = None if prices is None else prices.rates(usage)
    if rates is None:
        return 0, 0
    write_1h = usage.cache_write_1h_tokens
    write_5m = usage.cache_write_tokens - write_1h
    read_saving = usage.cache_read_tokens * (rates.input - rates.cache_read)
    write_5m_extra = write_5m * (rates.cache_write - rates.input)
    write_1h_extra = write_1h * (rates.cache_write_1h - rates.input)
    parts = (read_saving, -write_5m_extra, -write_1h_extra)
    return sum(p for p in parts if p > 0), -sum(p for p in parts if p < 0)


class NaiveRecorder:
    """Record each `Usage` straight into synchronous SDK instruments, one call per instrument."""

    def __init__(self, meter: Meter, prices: PriceTable | None = None) -> None:
        self._prices = prices
        self._histograms = {
            s.name: meter.create_histogram(
                s.name,
                unit=s.unit,
                description=s.description,
                explicit_bucket_boundaries_advisory=list(s.buckets or ()),
            )
            for s in spec.HISTOGRAMS
        }
        self._counters = {
            s.name: meter.create_counter(s.name, unit=s.unit, description=s.description)
            for s in spec.USAGE_COUNTERS
        }

    def record(self, usage: Usage) -> None:
        attributes = contract_attributes(usage)
        counters = self._counters
        counters[spec.INPUT_TOKENS.name].add(usage.input_tokens, attributes)
        counters[spec.OUTPUT_TOKENS.name].add(usage.output_tokens, attributes)
        counters[spec.CACHE_READ_TOKENS.name].add(usage.cache_read_tokens, attributes)
        counters[spec.CACHE_WRITE_TOKENS.name].add(usage.cache_write_tokens, attributes)
        counters[spec.REASONING_TOKENS.name].add(usage.reasoning_tokens, attributes)
        counters[spec.SYSTEM_TOKENS.name].add(usage.system_tokens, attributes)
        counters[spec.REQUESTS.name].add(1, attributes)
        cost = None if self._prices is None else self._prices.cost_pico(usage)
        tokens = usage.input_tokens + usage.output_tokens
        if cost is not None:
            counters[spec.COST.name].add(cost / PICO_PER_USD, attributes)
            saved, premium = cache_worth(usage, self._prices)
            counters[spec.CACHE_SAVINGS.name].add(saved / PICO_PER_USD, attributes)
            counters[spec.CACHE_WRITE_PREMIUM.name].add(premium / PICO_PER_USD, attributes)
        elif tokens:
            counters[spec.UNPRICED_TOKENS.name].add(tokens, attributes)

        token_usage = self._histograms[spec.TOKEN_USAGE.name]
        if usage.input_tokens:
            token_usage.record(usage.input_tokens, {**attributes, "gen_ai.token.type": "input"})
        if usage.output_tokens:
            token_usage.record(usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})
        if usage.latency_s is not None:
            self._histograms[spec.OPERATION_DURATION.name].record(usage.latency_s, attributes)
        if usage.streamed and usage.time_to_first_token_s is not None:
            self._histograms[spec.TIME_TO_FIRST_CHUNK.name].record(
                usage.time_to_first_token_s, attributes
            )
        if usage.streamed and usage.time_per_output_chunk_s is not None:
            self._histograms[spec.TIME_PER_OUTPUT_CHUNK.name].record(
                usage.time_per_output_chunk_s, attributes
            )
