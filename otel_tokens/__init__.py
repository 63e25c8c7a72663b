"""OpenTelemetry metrics for LLM token usage: tokens by class, cost, latency, status.

Example:
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from otel_tokens import TokenTracker, Usage
    >>> tracker = TokenTracker(MeterProvider().get_meter("my-gateway"))
    >>> tracker.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1200,
    ...                      output_tokens=300, cache_read_tokens=1000, latency_s=1.8))
"""

from __future__ import annotations

from otel_tokens._base.meters import MeterTotals
from otel_tokens._base.usage import Usage
from otel_tokens._configure.configure import configure
from otel_tokens._configure.telemetry import Telemetry
from otel_tokens._core.custom_meter import CustomMeter
from otel_tokens._core.track import TrackedRequest
from otel_tokens._core.tracker import TokenTracker
from otel_tokens._ledger.budgets import Budget, BudgetStatus
from otel_tokens._ledger.ledger import UsageLedger
from otel_tokens._ledger.query import UsageTotals
from otel_tokens._pricing.prices import ModelPrice
from otel_tokens._pricing.table import PriceTable
from otel_tokens._version import __version__
from otel_tokens._workers.server import WorkerMetricsServer

__all__ = [
    "Budget",
    "BudgetStatus",
    "CustomMeter",
    "MeterTotals",
    "ModelPrice",
    "PriceTable",
    "Telemetry",
    "TokenTracker",
    "TrackedRequest",
    "Usage",
    "UsageLedger",
    "UsageTotals",
    "WorkerMetricsServer",
    "__version__",
    "configure",
]
