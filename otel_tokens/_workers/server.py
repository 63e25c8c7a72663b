"""The one Prometheus endpoint for all the worker processes that write to a directory."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from otel_tokens._base.warn import WarnOnce
from otel_tokens._export.endpoint import PrometheusServer, import_error, prometheus_address
from otel_tokens._version import __version__


class WorkerMetricsServer:
    """Serves the sum of every worker's metrics in `directory` for Prometheus to scrape.

    Workers write there when configured with `configure(exporters="prometheus",
    prometheus_multiproc_dir=directory)`. Run this once per host: in the server's master
    process (gunicorn's `when_ready` hook), or on its own (`otel-tokens serve-metrics`).
    Each scrape reads the workers' latest files; the files of workers that exited are
    folded into one, so totals never go back when a worker is replaced. Metric names are
    exactly those of a single process's Prometheus endpoint.

    Args:
        directory: where the workers write; made if missing.
        host: the address to serve on; default `OTEL_EXPORTER_PROMETHEUS_HOST`, else
            127.0.0.1.
        port: default `OTEL_EXPORTER_PROMETHEUS_PORT`, else 9464; 0 picks a free port.

    Raises:
        ValueError: a directory that cannot be made or written, or a bad port.
        ImportError: the `prometheus` extra is not installed.
        OSError: the port cannot be bound.

    Example:
        >>> import tempfile
        >>> from otel_tokens import WorkerMetricsServer
        >>> with WorkerMetricsServer(tempfile.mkdtemp(), port=0) as server:
        ...     server.url.startswith("http://127.0.0.1:")
        True
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from opentelemetry.metrics import CallbackOptions, Observation
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import MetricsData
            from opentelemetry.sdk.resources import Resource

            from otel_tokens._workers.directory import WorkerDirectory
            from otel_tokens._workers.format import Merged
        except ImportError as exc:
            raise import_error("prometheus", "WorkerMetricsServer", exc) from None
        self.directory = WorkerDirectory(directory, "the worker metrics directory")
        workers = self.directory
        scrape = threading.local()  # a scrape runs the callback, then _receive_metrics

        warn = WarnOnce(limit=100)

        def count_running(options: CallbackOptions) -> Iterable[Observation]:
            try:
                scrape.merged = workers.merged()  # read once per scrape, and served below
            except Exception as exc:  # a scrape with a gap, never one that drops to zero
                scrape.merged = None
                warn(
                    ("scrape", type(exc).__name__, str(exc)),
                    "otel_tokens: cannot sum the worker metrics in %s: %s; scrapes serve none "
                    "of them meanwhile (a gap in the series, not a drop to zero)",
                    workers.path,
                    exc,
                )
                return []
            return [Observation(scrape.merged.running)]

        class SumOfWorkers(PrometheusMetricReader):
            """Serves, at each scrape, the workers' sum next to this process's own gauge."""

            def _receive_metrics(
                self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
            ) -> None:
                own = list(metrics_data.resource_metrics) if metrics_data else []
                merged: Merged | None = getattr(scrape, "merged", None)
                scrape.merged = None
                if merged is None or not merged.metrics:
                    return  # nothing written yet: no target_info made from no resource
                summed = merged.metrics_data().resource_metrics
                both = MetricsData(resource_metrics=[*summed, *own])
                super()._receive_metrics(both, timeout_millis, **kwargs)

        address = prometheus_address(host, port)
        self._server = PrometheusServer(
            *address, make_reader=lambda registry: SumOfWorkers(registry=registry)
        )
        # Its own provider, with no resource of its own: target_info shows the workers'.
        self._provider = MeterProvider(
            metric_readers=[self._server.reader], resource=Resource({}), shutdown_on_exit=False
        )
        self._provider.get_meter("otel_tokens.workers", __version__).create_observable_gauge(
            "otel_tokens.worker.processes",
            callbacks=[count_running],
            unit="{process}",
            description="Worker processes running now whose totals this endpoint sums "
            "(with those of the ones that exited)",
        )
        self.url = self._server.url
        self._closed = False

    def close(self) -> None:
        """Stop serving (the workers' files stay). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._provider.shutdown()
        self._server.close()

    def __enter__(self) -> WorkerMetricsServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
