"""`configure()`: one call from nothing to a MeterProvider that exports, and a tracker on it.

The SDK and each exporter are imported only here, when asked for, so the core package needs
`opentelemetry-api` alone; a missing extra fails with the `pip install` line that adds it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_tokens._base.shutdown import (
    shutdown_timeout,
)
from otel_tokens._base.warn import logger
from otel_tokens._configure.telemetry import Telemetry
from otel_tokens._export.endpoint import PrometheusServer, import_error, prometheus_address, setting
from otel_tokens._workers.files import MULTIPROC_ENV, check_directory

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource

    from otel_tokens._export.exporting import CheckedExporter

EXPORTERS = ("otlp", "prometheus", "console")
PROTOCOLS = ("grpc", "http/protobuf")
_METRICS_PATH = "/v1/metrics"
WORKER_WRITE_MS = 5_000


def _exporter_names(exporters: str | Iterable[str] | None) -> list[str]:
    source = "exporters"
    if exporters is None:
        exporters, source = setting("OTEL_METRICS_EXPORTER") or "otlp", "OTEL_METRICS_EXPORTER"
    items = exporters.split(",") if isinstance(exporters, str) else list(exporters)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        msg = f"{source} names unknown exporters {unknown}: use any of {list(EXPORTERS)} or 'none'"
        raise ValueError(msg)
    return list(dict.fromkeys(names))


def _otlp_protocol(protocol: str | None) -> str:
    source = "otlp_protocol"
    if protocol is None:
        for name in ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol, source = setting(name), name
            if protocol:
                break
    protocol = protocol or "http/protobuf"
    if protocol not in PROTOCOLS:
        msg = f"{source} must be one of {list(PROTOCOLS)}, got {protocol!r}"
        raise ValueError(msg)
    return protocol


def _export_interval_ms(seconds: float | None) -> int | None:
    """The export interval to pass to readers: None leaves it to the SDK (which reads
    OTEL_METRIC_EXPORT_INTERVAL), once that variable is known to be valid."""
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            msg = f"export_interval_s must be a number of seconds > 0, got {seconds!r}"
            raise ValueError(msg)
        return max(1, round(seconds * 1000))
    raw = setting("OTEL_METRIC_EXPORT_INTERVAL")
    if raw is not None and not (raw.isdigit() and int(raw) > 0):
        msg = f"OTEL_METRIC_EXPORT_INTERVAL must be a whole number of milliseconds > 0, got {raw!r}"
        raise ValueError(msg)
    return None


def _env_interval_ms(default: int) -> int:
    """OTEL_METRIC_EXPORT_INTERVAL (checked by `_export_interval_ms`), else `default`."""
    raw = setting("OTEL_METRIC_EXPORT_INTERVAL")
    return default if raw is None else int(raw)


def _workers_dir(
    directory: str | os.PathLike[str] | None, host: str | None, port: int | None
) -> Path | None:
    """The directory worker processes write their totals to, if one is asked for.

    Raises:
        ValueError: a directory that cannot be used, or one given with a host or port to
            serve on (a worker writing to a directory serves nothing).
    """
    source = "prometheus_multiproc_dir"
    if directory is None:
        directory, source = setting(MULTIPROC_ENV), MULTIPROC_ENV
    if directory is None:
        return None
    if host is not None or port is not None:
        msg = (
            f"{source} ({str(directory)!r}) makes this process write its totals there for "
            "`otel-tokens serve-metrics` to serve, so prometheus_host and prometheus_port do "
            f"not apply: pass one or the other (unset {MULTIPROC_ENV} to serve from here)"
        )
        raise ValueError(msg)

    path = check_directory(directory, source)
    logger.info(
        "otel_tokens: %s is set: this process writes its Prometheus totals to %s for "
        "`otel-tokens serve-metrics` (or WorkerMetricsServer) to serve, not on a port",
        source,
        path,
    )
    return path


def _resource(service_name: str | None, attributes: Mapping[str, Any] | None) -> Resource:
    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError as exc:
        raise import_error("sdk", "configure()", exc) from None
    explicit = dict(attributes or {})
    if service_name is not None:
        explicit["service.name"] = service_name
    # The SDK's default resource carries a `service.instance.id` made once per process (and
    # made anew in a forked child), so worker processes pushing to one collector keep their
    # own series instead of overwriting each other's.
    return Resource.create(explicit)


def _otlp_reader(
    protocol: str,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    interval_ms: int | None,
    timeout_s: float,
) -> tuple[MetricReader, CheckedExporter]:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from otel_tokens._export.exporting import CheckedExporter, leave_out_retry_warnings

    # The timeout is passed in seconds, so the SDK never reads the variables in seconds.
    kwargs: dict[str, Any] = {"timeout": timeout_s}
    if headers is not None:
        kwargs["headers"] = dict(headers)
    where = (
        endpoint
        or setting("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        or setting("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcExporter,
            )

            if endpoint is not None:
                kwargs["endpoint"] = endpoint
            exporter: Any = GrpcExporter(**kwargs)
            where = where or "http://localhost:4317"
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpExporter,
            )

            if endpoint is not None:
                base = endpoint.rstrip("/")
                kwargs["endpoint"] = base if base.endswith(_METRICS_PATH) else base + _METRICS_PATH
            exporter = HttpExporter(**kwargs)
            where = where or "http://localhost:4318"
    except ImportError as exc:
        raise import_error("otlp", f"the OTLP exporter ({protocol})", exc) from None
    leave_out_retry_warnings()
    checked = CheckedExporter(exporter, f"the OTLP collector at {where} ({protocol})")
    return PeriodicExportingMetricReader(checked, export_interval_millis=interval_ms), checked


def configure(
    *,
    exporters: str | Iterable[str] | None = None,
    service_name: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    otlp_protocol: str | None = None,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    prometheus_host: str | None = None,
    prometheus_port: int | None = None,
    prometheus_multiproc_dir: str | os.PathLike[str] | None = None,
    export_interval_s: float | None = None,
    otlp_timeout_s: float | None = None,
    shutdown_timeout_s: float | None = None,
    readers: Iterable[MetricReader] = (),
) -> Telemetry:
    """Build a MeterProvider that exports, honouring the standard `OTEL_*` variables.

    An argument wins over its environment variable, which wins over the default. The
    provider is not made global: pass `telemetry.meter_provider` where one is needed.

    Args:
        exporters: any of "otlp", "prometheus", "console" (a list or a comma-separated
            str), or "none"; default `OTEL_METRICS_EXPORTER`, else "otlp".
        service_name: `service.name`; default `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`.
        resource_attributes: more resource attributes. `service.instance.id` is a UUID per
            process (new in a forked worker) unless given here or in `OTEL_RESOURCE_ATTRIBUTES`.
        otlp_protocol: "grpc" or "http/protobuf"; default `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`,
            `OTEL_EXPORTER_OTLP_PROTOCOL`, else "http/protobuf".
        otlp_endpoint: the collector's base URL (":4317" for gRPC, ":4318" for HTTP, where
            "/v1/metrics" is appended); default `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
            `OTEL_EXPORTER_OTLP_ENDPOINT`, else localhost.
        otlp_headers: headers for the collector; default `OTEL_EXPORTER_OTLP_HEADERS`.
        prometheus_host: the address to serve on; default `OTEL_EXPORTER_PROMETHEUS_HOST`,
            else 127.0.0.1. Serving on all interfaces must be asked for ("0.0.0.0").
        prometheus_port: default `OTEL_EXPORTER_PROMETHEUS_PORT`, else 9464; 0 picks a free port.
        prometheus_multiproc_dir: for a server with several worker processes: instead of
            serving, this process writes its totals to a file in this directory, and one
            `WorkerMetricsServer` serves the sum of all workers' files; default
            `PROMETHEUS_MULTIPROC_DIR` (as prometheus_client's multiprocess mode).
        export_interval_s: seconds between OTLP/console exports and worker file writes;
            default `OTEL_METRIC_EXPORT_INTERVAL` (ms), else 60 for OTLP and console and 5
            for worker files.
        otlp_timeout_s: how long one OTLP export may take, retries included; default
            `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT` (read as
            milliseconds, as the specification says; the Python SDK alone reads seconds),
            else 10.
        shutdown_timeout_s: the most `shutdown()` (and so interpreter exit) and
            `force_flush()` wait for exporters; default `OTEL_TOKENS_SHUTDOWN_TIMEOUT`
            (seconds), else 5.
        readers: more metric readers (an `InMemoryMetricReader` in tests).

    Raises:
        ValueError: an unknown exporter or protocol, a bad port or interval, or a worker
            directory that cannot be written, naming the argument or environment variable
            it came from.
        ImportError: an exporter whose extra is not installed, naming the `pip install`.
        OSError: the Prometheus port cannot be bound.

    Example:
        >>> from otel_tokens import configure
        >>> telemetry = configure(exporters="console", export_interval_s=30)
        >>> tracker = telemetry.tracker()
        >>> telemetry.shutdown()
        True
    """
    names = _exporter_names(exporters)
    protocol = _otlp_protocol(otlp_protocol) if "otlp" in names else None
    interval_ms = _export_interval_ms(export_interval_s)
    timeout_s = shutdown_timeout(shutdown_timeout_s)
    resource = _resource(service_name, resource_attributes)  # first: it says if the SDK is missing
    workers_dir = (
        _workers_dir(prometheus_multiproc_dir, prometheus_host, prometheus_port)
        if "prometheus" in names
        else None
    )
    address = (
        prometheus_address(prometheus_host, prometheus_port)
        if "prometheus" in names and workers_dir is None
        else None
    )
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    from otel_tokens._export.exporting import CheckedExporter, resolve_otlp_timeout

    export_timeout_s = resolve_otlp_timeout(otlp_timeout_s) if protocol is not None else 0.0
    all_readers: list[MetricReader] = list(readers)
    checked: list[CheckedExporter] = []
    prometheus = None
    try:
        # Bind the port first: it is what most often fails, and nothing else has started yet.
        if address is not None:
            prometheus = PrometheusServer(*address)
            all_readers.append(prometheus.reader)
        if workers_dir is not None:
            from otel_tokens._workers.file_exporter import WorkerFileExporter

            files = CheckedExporter(WorkerFileExporter(workers_dir), str(workers_dir), warn=False)
            checked.append(files)
            all_readers.append(
                PeriodicExportingMetricReader(
                    files, export_interval_millis=interval_ms or _env_interval_ms(WORKER_WRITE_MS)
                )
            )
        if protocol is not None:
            reader, exporter = _otlp_reader(
                protocol, otlp_endpoint, otlp_headers, interval_ms, export_timeout_s
            )
            checked.append(exporter)
            all_readers.append(reader)
        if "console" in names:
            all_readers.append(
                PeriodicExportingMetricReader(
                    ConsoleMetricExporter(), export_interval_millis=interval_ms
                )
            )
    except BaseException:
        if prometheus is not None:
            prometheus.close()
        raise
    provider = MeterProvider(metric_readers=all_readers, resource=resource, shutdown_on_exit=False)
    return Telemetry(provider, resource, prometheus, exporters=checked, timeout_s=timeout_s)
