"""The one table of instruments: names, kinds, units, buckets and their Prometheus names.

Everything that names a metric (the tracker, the README, the tests, the dashboards) reads it
from here, so a rename happens in one place and a test catches every copy that disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Advised boundaries of the GenAI semantic conventions for `gen_ai.client.token.usage`.
TOKEN_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

#: Advised boundaries of the GenAI semantic conventions for durations, seconds.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

Kind = Literal["histogram", "counter", "gauge"]


@dataclass(frozen=True)
class InstrumentSpec:
    """How one instrument is created and what it is called once Prometheus has it."""

    name: str
    kind: Kind
    unit: str
    description: str
    prometheus: str
    buckets: tuple[float, ...] | None = None


TOKEN_USAGE = InstrumentSpec(
    "gen_ai.client.token.usage",
    "histogram",
    "{token}",
    "Tokens per request, by gen_ai.token.type (input includes cache, output includes reasoning).",
    "gen_ai_client_token_usage",
    TOKEN_BUCKETS,
)
OPERATION_DURATION = InstrumentSpec(
    "gen_ai.client.operation.duration",
    "histogram",
    "s",
    "Wall time of the whole LLM request.",
    "gen_ai_client_operation_duration_seconds",
    DURATION_BUCKETS,
)
TIME_TO_FIRST_CHUNK = InstrumentSpec(
    "gen_ai.client.operation.time_to_first_chunk",
    "histogram",
    "s",
    "Time until the first content chunk of a streamed response.",
    "gen_ai_client_operation_time_to_first_chunk_seconds",
    DURATION_BUCKETS,
)
TIME_PER_OUTPUT_CHUNK = InstrumentSpec(
    "gen_ai.client.operation.time_per_output_chunk",
    "histogram",
    "s",
    "Mean time between the chunks of a streamed response after the first, one point per request.",
    "gen_ai_client_operation_time_per_output_chunk_seconds",
    DURATION_BUCKETS,
)

INPUT_TOKENS = InstrumentSpec(
    "llm.usage.input_tokens",
    "counter",
    "{token}",
    "All prompt tokens, cache reads and writes included.",
    "llm_usage_input_tokens_total",
)
OUTPUT_TOKENS = InstrumentSpec(
    "llm.usage.output_tokens",
    "counter",
    "{token}",
    "All completion tokens, reasoning included.",
    "llm_usage_output_tokens_total",
)
CACHE_READ_TOKENS = InstrumentSpec(
    "llm.usage.cache_read.input_tokens",
    "counter",
    "{token}",
    "Input tokens served from the provider's prompt cache.",
    "llm_usage_cache_read_input_tokens_total",
)
CACHE_WRITE_TOKENS = InstrumentSpec(
    "llm.usage.cache_write.input_tokens",
    "counter",
    "{token}",
    "Input tokens written to the provider's prompt cache.",
    "llm_usage_cache_write_input_tokens_total",
)
REASONING_TOKENS = InstrumentSpec(
    "llm.usage.reasoning.output_tokens",
    "counter",
    "{token}",
    "Output tokens spent on hidden reasoning.",
    "llm_usage_reasoning_output_tokens_total",
)
SYSTEM_TOKENS = InstrumentSpec(
    "llm.usage.system_tokens",
    "counter",
    "{token}",
    "Tokens the gateway spent itself, outside the user's prompt and answer.",
    "llm_usage_system_tokens_total",
)
COST = InstrumentSpec(
    "llm.usage.cost",
    "counter",
    "USD",
    "Cost of priced requests in US dollars.",
    "llm_usage_cost_USD_total",
)
#: The prompt cache's worth, in two counters that only go up (so that rate() and sums over
#: processes and restarts stay right); their difference, which may be negative, is the net.
CACHE_SAVINGS = InstrumentSpec(
    "llm.usage.cache_savings",
    "counter",
    "USD",
    "What cache reads saved against the full input price, in US dollars (priced models).",
    "llm_usage_cache_savings_USD_total",
)
CACHE_WRITE_PREMIUM = InstrumentSpec(
    "llm.usage.cache_write_premium",
    "counter",
    "USD",
    "What cache writes cost above the full input price, in US dollars (priced models).",
    "llm_usage_cache_write_premium_USD_total",
)
UNPRICED_TOKENS = InstrumentSpec(
    "llm.usage.unpriced_tokens",
    "counter",
    "{token}",
    "Input and output tokens of requests whose model has no known price.",
    "llm_usage_unpriced_tokens_total",
)
REQUESTS = InstrumentSpec(
    "llm.requests",
    "counter",
    "{request}",
    "Finished LLM requests, by llm.status.",
    "llm_requests_total",
)

#: The package's own health: records it had to drop, and records that went to the overflow series.
DROPPED = InstrumentSpec(
    "otel_tokens.records.dropped",
    "counter",
    "{record}",
    "Usage records dropped instead of recorded, by reason.",
    "otel_tokens_records_dropped_total",
)
OVERFLOWED = InstrumentSpec(
    "otel_tokens.series.overflow",
    "counter",
    "{record}",
    "Usage records recorded on the overflow series because the series cap was reached.",
    "otel_tokens_series_overflow_total",
)

#: Rate-limit headroom, the newest each provider reported in its response headers.
RATELIMIT_LIMIT = InstrumentSpec(
    "llm.ratelimit.limit",
    "gauge",
    "{count}",
    "The provider's rate limit per window, of what llm.ratelimit.kind names.",
    "llm_ratelimit_limit",
)
RATELIMIT_REMAINING = InstrumentSpec(
    "llm.ratelimit.remaining",
    "gauge",
    "{count}",
    "What is left of the provider's rate limit now, of what llm.ratelimit.kind names.",
    "llm_ratelimit_remaining",
)
RATELIMIT_RESET = InstrumentSpec(
    "llm.ratelimit.reset",
    "gauge",
    "s",
    "Seconds until the provider's rate limit is whole again (retry_after: until a 429 said "
    "to retry).",
    "llm_ratelimit_reset_seconds",
)

#: Budgets set in a usage ledger (`UsageLedger.set_budget`), by llm.budget.scope, subject,
#: period and unit (USD or {token}).
BUDGET_SPENT = InstrumentSpec(
    "llm.budget.spent",
    "gauge",
    "{amount}",
    "What a budget's current period has spent, in llm.budget.unit.",
    "llm_budget_spent",
)
BUDGET_REMAINING = InstrumentSpec(
    "llm.budget.remaining",
    "gauge",
    "{amount}",
    "What is left of a budget this period, in llm.budget.unit; negative once overspent.",
    "llm_budget_remaining",
)
BUDGET_EXHAUSTION = InstrumentSpec(
    "llm.budget.exhaustion",
    "gauge",
    "s",
    "Seconds until a budget runs out at the last hour's rate (0 once spent); no point when "
    "it resets first or nothing is spent.",
    "llm_budget_exhaustion_seconds",
)

HISTOGRAMS = (TOKEN_USAGE, OPERATION_DURATION, TIME_TO_FIRST_CHUNK, TIME_PER_OUTPUT_CHUNK)
USAGE_COUNTERS = (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    CACHE_READ_TOKENS,
    CACHE_WRITE_TOKENS,
    REASONING_TOKENS,
    SYSTEM_TOKENS,
    COST,
    CACHE_SAVINGS,
    CACHE_WRITE_PREMIUM,
    UNPRICED_TOKENS,
    REQUESTS,
)
SELF_COUNTERS = (DROPPED, OVERFLOWED)
RATELIMIT_GAUGES = (RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET)
BUDGET_GAUGES = (BUDGET_SPENT, BUDGET_REMAINING, BUDGET_EXHAUSTION)

#: Every instrument a TokenTracker creates, in the order the README lists them.
ALL = HISTOGRAMS + USAGE_COUNTERS + RATELIMIT_GAUGES + BUDGET_GAUGES + SELF_COUNTERS
