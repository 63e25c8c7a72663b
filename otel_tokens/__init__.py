"""OpenTelemetry metrics for LLM token usage: tokens by class, cost, latency, status.

Example:
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from otel_tokens import TokenTracker, Usage
    >>> tracker = TokenTracker(MeterProvider().get_meter("my-gateway"))
    >>> tracker.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1200,
    ...                      output_tokens=300, cache_read_tokens=1000, latency_s=1.8))
"""

from __future__ import annotations

from otel_tokens._configure import Telemetry, configure
from otel_tokens._custom_meter import CustomMeter
from otel_tokens._ledger import UsageLedger
from otel_tokens._ledger_query import UsageTotals
from otel_tokens._meters import MeterTotals
from otel_tokens._pricing import ModelPrice, PriceTable
from otel_tokens._track import TrackedRequest
from otel_tokens._tracker import TokenTracker
from otel_tokens._usage import Usage
from otel_tokens._version import __version__
from otel_tokens._worker_server import WorkerMetricsServer

__all__ = [
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
