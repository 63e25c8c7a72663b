"""Assert on the metrics your code records, in one line, without an exporter.

Example:
    >>> from otel_tokens import Usage
    >>> from otel_tokens.testing import InMemoryMetrics
    >>> metrics = InMemoryMetrics()
    >>> metrics.tracker.record(Usage(provider="openai", model="gpt-4o", input_tokens=12))
    >>> metrics.value("llm.usage.input_tokens", model="gpt-4o")
    12
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

try:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ExponentialHistogramDataPoint,
        HistogramDataPoint,
        InMemoryMetricReader,
        Metric,
        NumberDataPoint,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = "otel_tokens.testing needs the OpenTelemetry SDK: pip install 'otel_tokens[sdk]'"
    raise ImportError(msg) from exc

from otel_tokens._base import names as n
from otel_tokens._core.conventions import LATEST, naming
from otel_tokens._core.instruments import ALL
from otel_tokens._core.tracker import TokenTracker

__all__ = ["HistogramValue", "InMemoryMetrics"]

#: Short names for the attributes tests filter on most.
ALIASES = {
    "provider": n.PROVIDER,
    "operation": n.OPERATION,
    "request_model": n.REQUEST_MODEL,
    "model": n.RESPONSE_MODEL,
    "token_type": n.TOKEN_TYPE,
    "status": n.STATUS,
    "streaming": n.STREAMING,
    "scenario": n.SCENARIO,
    "user_tier": n.USER_TIER,
    "team": n.TEAM,
    "error_type": n.ERROR_TYPE,
    "server_address": n.SERVER_ADDRESS,
    "server_port": n.SERVER_PORT,
    "usage_problem": n.USAGE_PROBLEM,
    "api_key_id": n.API_KEY_ID,
    "reason": n.DROP_REASON,
}
#: Every name a tracker's instruments may have, under either choice of conventions.
_KNOWN = frozenset(spec.name for spec in (*ALL, *naming(LATEST).instruments()))


@dataclass(frozen=True)
class HistogramValue:
    """A histogram's data summed over the points that matched."""

    count: int
    sum: float
    bucket_counts: tuple[int, ...]
    explicit_bounds: tuple[float, ...]
    min: float
    max: float


class InMemoryMetrics:
    """A `TokenTracker` on its own MeterProvider with an in-memory reader.

    Args:
        tracker_options: keyword arguments of `TokenTracker` other than the meter.

    Example:
        >>> metrics = InMemoryMetrics(max_series=10)
        >>> metrics.value("llm.requests")
        0
    """

    def __init__(self, **tracker_options: Any) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.tracker = TokenTracker(
            self.provider.get_meter("otel_tokens.testing"), **tracker_options
        )

    def metrics(self) -> dict[str, Metric]:
        """Collect now; every metric by name."""
        data = self.reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    found[metric.name] = metric
        return found

    def points(
        self, name: str, attributes: Mapping[str, Any] | None = None, **aliases: Any
    ) -> list[NumberDataPoint | HistogramDataPoint | ExponentialHistogramDataPoint]:
        """The points of metric `name` whose attributes include the ones given.

        Args:
            name: the OpenTelemetry name, e.g. "llm.usage.input_tokens", or a custom
                meter's name.
            attributes: attributes by their full names.
            aliases: attributes by short name: provider, model, request_model, status, ...

        Raises:
            KeyError: a metric name no tracker instrument has, or an unknown alias.
        """
        wanted = dict(attributes or {})
        for alias, value in aliases.items():
            if alias not in ALIASES:
                msg = f"unknown attribute alias {alias!r}: use one of {sorted(ALIASES)}"
                raise KeyError(msg)
            wanted[ALIASES[alias]] = value
        metric = self.metrics().get(name)
        if metric is None:
            if name not in _KNOWN and name not in self.tracker._custom_meters:
                msg = f"no metric named {name!r}: the tracker's metrics are {sorted(_KNOWN)}"
                raise KeyError(msg)
            return []
        return [p for p in metric.data.data_points if _matches(p.attributes, wanted)]

    def value(
        self, name: str, attributes: Mapping[str, Any] | None = None, **aliases: Any
    ) -> float:
        """The sum of counter `name` over the matching points (0 when none match).

        Raises:
            TypeError: `name` is a histogram (use `histogram()`).
        """
        total: float = 0
        for point in self.points(name, attributes, **aliases):
            if not isinstance(point, NumberDataPoint):
                msg = f"{name!r} is a histogram: use histogram() to read it"
                raise TypeError(msg)
            total += point.value
        return total

    def histogram(
        self, name: str, attributes: Mapping[str, Any] | None = None, **aliases: Any
    ) -> HistogramValue:
        """Histogram `name` merged over the matching points (count 0 when none match).

        Raises:
            TypeError: `name` is not a histogram.
        """
        points = self.points(name, attributes, **aliases)
        if any(not isinstance(p, HistogramDataPoint) for p in points):
            msg = f"{name!r} is not a histogram: use value() to read it"
            raise TypeError(msg)
        histogram_points = [p for p in points if isinstance(p, HistogramDataPoint)]
        if not histogram_points:
            return HistogramValue(0, 0.0, (), (), float("nan"), float("nan"))
        bounds = tuple(histogram_points[0].explicit_bounds)
        buckets = [0] * (len(bounds) + 1)
        for point in histogram_points:
            for i, count in enumerate(point.bucket_counts):
                buckets[i] += count
        return HistogramValue(
            count=sum(p.count for p in histogram_points),
            sum=sum(p.sum for p in histogram_points),
            bucket_counts=tuple(buckets),
            explicit_bounds=bounds,
            min=min(p.min for p in histogram_points),
            max=max(p.max for p in histogram_points),
        )

    def shutdown(self) -> None:
        """Shut the provider down."""
        self.provider.shutdown()


def _matches(attributes: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    have = attributes or {}
    return all(key in have and have[key] == value for key, value in wanted.items())
