"""Exporters that say whether they exported: what `Telemetry.force_flush()` reports.

The SDK's periodic reader drops an exporter's result, so its `force_flush()` is True even
when nothing reached the collector, and the OTLP exporters log every retry of every failed
export. Each exporter `configure()` makes is wrapped here: the wrapper keeps the last
result, warns once when exports start failing and once when they work again, and the
exporters' own per-retry warnings and per-export errors are left out of the log (the
wrapper's warning quotes the error).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from otel_tokens._base.text import safe_label, said
from otel_tokens._base.warn import logger

#: The specification's default for OTEL_EXPORTER_OTLP_TIMEOUT, in seconds.
DEFAULT_OTLP_TIMEOUT_S = 10.0
OTLP_TIMEOUT_ENVS = ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
#: The loggers of the SDK's OTLP metric exporters, whose per-retry warnings are left out.
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)
_RETRY_CHATTER = ("Transient error", "Shutdown in progress, aborting retry")
#: How the exporters say an export failed for good: kept, and said by `CheckedExporter`.
_FAILED = "Failed to export"


def resolve_otlp_timeout(value: float | None) -> float:
    """The OTLP export timeout: `value` (seconds), else the OTEL_EXPORTER_OTLP_[METRICS_]
    TIMEOUT variables read as milliseconds, as the specification says (the Python SDK
    alone reads them as seconds, so "10000" would wait almost three hours), else 10 s. A
    value under 100 cannot mean milliseconds (no export takes that little): it was written
    for the SDK, and is taken as seconds, with a warning.

    Raises:
        ValueError: a value that is not a positive number, naming where it came from.
    """
    if value is not None:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not 0 < value < math.inf:
            msg = f"otlp_timeout_s must be a number of seconds > 0, got {value!r}"
            raise ValueError(msg)
        return float(value)
    for name in OTLP_TIMEOUT_ENVS:
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            millis = float(raw)
        except ValueError:
            millis = math.nan
        if not 0 < millis < math.inf:
            msg = f"{name} must be a number of milliseconds > 0, got {raw!r}"
            raise ValueError(msg)
        if millis < 100:  # nobody means an export timeout under 100 ms: the SDK's seconds
            logger.warning(
                "otel_tokens: %s=%s is taken as %s seconds, as the Python SDK reads it; the "
                "OpenTelemetry specification says milliseconds, which otel_tokens reads from "
                "100 up: write %d for %s seconds (or pass otlp_timeout_s=)",
                name,
                raw,
                raw,
                round(millis * 1000),
                raw,
            )
            return millis
        return millis / 1000
    return DEFAULT_OTLP_TIMEOUT_S


class _LeaveOutRetries(logging.Filter):
    """Drops the OTLP exporters' per-retry warnings, and keeps their per-export error for
    `CheckedExporter` to say once per outage (logged on the exporting thread, kept there)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        # The gRPC logger is shared by the SDK's span and log exporters: theirs pass.
        if not (isinstance(record.args, tuple) and "metrics" in record.args):
            return True
        if message.startswith(_FAILED):
            self.failures.last = record.getMessage()
            return False
        return not message.startswith(_RETRY_CHATTER)

    def take(self) -> str:
        """What the exporter said of the last failed export on this thread ("" if none)."""
        said, self.failures.last = getattr(self.failures, "last", ""), ""
        return str(said)


_filter = _LeaveOutRetries()
_filter_lock = threading.Lock()


def leave_out_retry_warnings() -> None:
    """Attach the filter to the SDK's OTLP metric exporter loggers (once)."""
    with _filter_lock:
        for name in _SDK_LOGGERS:
            sdk_logger = logging.getLogger(name)
            if _filter not in sdk_logger.filters:
                sdk_logger.addFilter(_filter)


class CheckedExporter(MetricExporter):
    """An exporter that keeps the outcome of its exports and says when they fail.

    Args:
        inner: the exporter that exports.
        where: where it exports to, for messages ("http://collector:4318/v1/metrics").
        warn: whether to warn when exports start failing and when they work again (the
            worker file exporter says so itself).
    """

    def __init__(self, inner: MetricExporter, where: str, *, warn: bool = True) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self.where = _without_credentials(where)
        self._warn = warn
        self._lock = threading.Lock()
        self._failing = False
        #: How many exports began and how many finished, and whether the last one that
        #: finished succeeded.
        self.started = 0
        self.exports = 0
        self.last_ok = True

    def mark(self) -> tuple[int, int]:
        """Where the exports stand now, for `settled_since()`."""
        with self._lock:
            return self.started, self.exports

    def settled_since(self, mark: tuple[int, int]) -> bool:
        """Whether every export that began since `mark` (or was under way then) has
        finished, and the last of them succeeded."""
        started_then, finished_then = mark
        with self._lock:
            if self.exports < self.started:  # one is still under way
                return False
            return self.last_ok or self.exports == finished_then == started_then

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        with self._lock:
            self.started += 1
        why = ""
        _filter.take()
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # an exporter that raises: a failed export, not a traceback
            result, why = MetricExportResult.FAILURE, f": {said(exc)}"
        ok = result is MetricExportResult.SUCCESS
        if not ok and not why:
            told = _filter.take()
            why = f" ({safe_label(told, 300)})" if told else ""
        with self._lock:
            self.exports += 1
            self.last_ok = ok
            started, ended = not ok and not self._failing, ok and self._failing
            self._failing = not ok
        if self._warn and started:
            logger.warning(
                "otel_tokens: exporting metrics to %s failed%s; counters stay cumulative, so "
                "the next export that reaches it carries everything (said once, until it works)",
                self.where,
                why,
            )
        elif self._warn and ended:
            logger.warning("otel_tokens: exporting metrics to %s works again", self.where)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _without_credentials(where: str) -> str:
    """`where` fit for a log: a URL's user and password left out."""
    return re.sub(r"//[^/@\s]*@", "//", where)
