"""The other baseline: the same data recorded with plain prometheus_client, as a gateway that
never used OpenTelemetry would: one labelled Counter or Histogram per instrument, in a
registry of its own, the same label values (missing ones empty) and the same buckets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from otel_tokens import PriceTable, Usage
from otel_tokens._core import instruments as spec
from otel_tokens._pricing.prices import PICO_PER_USD
from tests.helpers.naive import cache_worth, contract_attributes

#: Every attribute the contract may set, as Prometheus label names.
LABELS = (
    "gen_ai.provider.name", "gen_ai.operation.name", "gen_ai.request.model",
    "gen_ai.response.model", "llm.status", "llm.streaming", "error.type", "llm.scenario",
    "llm.user.tier", "server.address", "llm.usage.problem", "server.port",
)  # fmt: skip
_NAMES = [label.replace(".", "_") for label in LABELS]


class PrometheusClientRecorder:
    """Record each `Usage` into prometheus_client metrics, one call per instrument."""

    def __init__(self, prices: PriceTable | None = None) -> None:
        self._prices = prices
        self.registry = CollectorRegistry()
        self._counters = {
            s.name: Counter(
                s.prometheus.removesuffix("_total"), s.description, _NAMES, registry=self.registry
            )
            for s in spec.USAGE_COUNTERS
        }
        self._histograms = {
            s.name: Histogram(
                s.prometheus,
                s.description,
                _NAMES + (["gen_ai_token_type"] if s is spec.TOKEN_USAGE else []),
                buckets=list(s.buckets or ()),
                registry=self.registry,
            )
            for s in spec.HISTOGRAMS
        }

    def record(self, usage: Usage) -> None:
        attributes = contract_attributes(usage)
        values = [str(attributes.get(label, "")) for label in LABELS]
        counters = self._counters
        for instrument, amount in (
            (spec.INPUT_TOKENS, usage.input_tokens), (spec.OUTPUT_TOKENS, usage.output_tokens),
            (spec.CACHE_READ_TOKENS, usage.cache_read_tokens),
            (spec.CACHE_WRITE_TOKENS, usage.cache_write_tokens),
            (spec.REASONING_TOKENS, usage.reasoning_tokens),
            (spec.SYSTEM_TOKENS, usage.system_tokens), (spec.REQUESTS, 1),
        ):  # fmt: skip
            counters[instrument.name].labels(*values).inc(amount)
        cost = None if self._prices is None else self._prices.cost_pico(usage)
        tokens = usage.input_tokens + usage.output_tokens
        if cost is not None:
            counters[spec.COST.name].labels(*values).inc(cost / PICO_PER_USD)
            saved, premium = cache_worth(usage, self._prices)
            counters[spec.CACHE_SAVINGS.name].labels(*values).inc(saved / PICO_PER_USD)
            counters[spec.CACHE_WRITE_PREMIUM.name].labels(*values).inc(premium / PICO_PER_USD)
        elif tokens:
            counters[spec.UNPRICED_TOKENS.name].labels(*values).inc(tokens)
        token_usage = self._histograms[spec.TOKEN_USAGE.name]
        if usage.input_tokens:
            token_usage.labels(*values, "input").observe(usage.input_tokens)
        if usage.output_tokens:
            token_usage.labels(*values, "output").observe(usage.output_tokens)
        if usage.latency_s is not None:
            self._histograms[spec.OPERATION_DURATION.name].labels(*values).observe(usage.latency_s)
        if usage.streamed and usage.time_to_first_token_s is not None:
            first = self._histograms[spec.TIME_TO_FIRST_CHUNK.name]
            first.labels(*values).observe(usage.time_to_first_token_s)
        if usage.streamed and usage.time_per_output_chunk_s is not None:
            gaps = self._histograms[spec.TIME_PER_OUTPUT_CHUNK.name]
            gaps.labels(*values).observe(usage.time_per_output_chunk_s)
