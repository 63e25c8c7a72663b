"""`configure()`: one call from nothing to a MeterProvider that exports, and a tracker on it.

The SDK and each exporter are imported only here, when asked for, so the core package needs
`opentelemetry-api` alone; a missing extra fails with the `pip install` line that adds it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_tokens._base.shutdown import (
    DEFAULT_TIMEOUT_S,
    TELEMETRY,
    TIMEOUT_ENV,
    at_exit,
    cancel_at_exit,
    exit_budget,
    run_within,
    shutdown_timeout,
)
from otel_tokens._base.warn import logger
from otel_tokens._core.tracker import TokenTracker
from otel_tokens._version import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource

    from otel_tokens._export.exporting import CheckedExporter

EXPORTERS = ("otlp", "prometheus", "console")
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROMETHEUS_HOST = "127.0.0.1"
DEFAULT_PROMETHEUS_PORT = 9464
_METRICS_PATH = "/v1/metrics"
#: The directory several worker processes write their totals to (prometheus_client's name).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_WRITE_MS = 5_000


def _import_error(extra: str, what: str, exc: ImportError) -> ImportError:
    msg = f"{what} needs an extra that is not installed: pip install 'otel_tokens[{extra}]'"
    error = ImportError(msg)
    error.__cause__ = exc
    return error


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _exporter_names(exporters: str | Iterable[str] | None) -> list[str]:
    source = "exporters"
    if exporters is None:
        exporters, source = _env("OTEL_METRICS_EXPORTER") or "otlp", "OTEL_METRICS_EXPORTER"
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
            protocol, source = _env(name), name
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
    raw = _env("OTEL_METRIC_EXPORT_INTERVAL")
    if raw is not None and not (raw.isdigit() and int(raw) > 0):
        msg = f"OTEL_METRIC_EXPORT_INTERVAL must be a whole number of milliseconds > 0, got {raw!r}"
        raise ValueError(msg)
    return None


def _prometheus_address(host: str | None, port: int | None) -> tuple[str, int]:
    host = host or _env("OTEL_EXPORTER_PROMETHEUS_HOST") or DEFAULT_PROMETHEUS_HOST
    source = "prometheus_port"
    if port is None:
        raw, source = _env("OTEL_EXPORTER_PROMETHEUS_PORT"), "OTEL_EXPORTER_PROMETHEUS_PORT"
        try:
            port = DEFAULT_PROMETHEUS_PORT if raw is None else int(raw)
        except ValueError:
            msg = f"OTEL_EXPORTER_PROMETHEUS_PORT must be a port number, got {raw!r}"
            raise ValueError(msg) from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        msg = f"{source} must be a port number from 0 to 65535, got {port!r}"
        raise ValueError(msg)
    return host, port


def _env_interval_ms(default: int) -> int:
    """OTEL_METRIC_EXPORT_INTERVAL (checked by `_export_interval_ms`), else `default`."""
    raw = _env("OTEL_METRIC_EXPORT_INTERVAL")
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
        directory, source = _env(MULTIPROC_ENV), MULTIPROC_ENV
    if directory is None:
        return None
    if host is not None or port is not None:
        msg = (
            f"{source} ({str(directory)!r}) makes this process write its totals there for "
            "`otel-tokens serve-metrics` to serve, so prometheus_host and prometheus_port do "
            f"not apply: pass one or the other (unset {MULTIPROC_ENV} to serve from here)"
        )
        raise ValueError(msg)
    from otel_tokens._workers.directory import check_directory

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
        raise _import_error("sdk", "configure()", exc) from None
    explicit = dict(attributes or {})
    if service_name is not None:
        explicit["service.name"] = service_name
    # The SDK's default resource carries a `service.instance.id` made once per process (and
    # made anew in a forked child), so worker processes pushing to one collector keep their
    # own series instead of overwriting each other's.
    return Resource.create(explicit)


class CannotServeError(OSError):
    """The Prometheus endpoint cannot listen where it was asked to."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        self.where = f"{host}:{port}"
        self.reason = str(cause.strerror or cause)
        super().__init__(cause.errno, self.says("prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT"))

    def says(self, *fixes: str) -> str:
        """The message, naming `fixes` as where to give another port."""
        return (
            f"cannot serve Prometheus metrics on {self.where}: {self.reason}; pass another "
            f"{' or set '.join(fixes)} (0 picks a free port)"
        )


class _PrometheusServer:
    """A pull endpoint serving one reader's own registry (never prometheus_client's global one)."""

    def __init__(
        self, host: str, port: int, make_reader: Callable[[Any], MetricReader] | None = None
    ) -> None:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry
        except ImportError as exc:
            raise _import_error("prometheus", "the Prometheus exporter", exc) from None
        from otel_tokens._export.scrape_server import ScrapeServer

        registry = CollectorRegistry()  # its own, never prometheus_client's global one
        make = make_reader or (lambda registry: PrometheusMetricReader(registry=registry))
        self.reader = make(registry)
        try:
            self._server = ScrapeServer(host, port, registry)
        except OSError as exc:
            self.reader.shutdown()
            raise CannotServeError(host, port, exc) from exc
        bound_host, bound_port = str(self._server.server_address[0]), self._server.server_address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}/metrics"

    def close(self) -> None:
        self._server.close()


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
        or _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
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
        raise _import_error("otlp", f"the OTLP exporter ({protocol})", exc) from None
    leave_out_retry_warnings()
    checked = CheckedExporter(exporter, f"the OTLP collector at {where} ({protocol})")
    return PeriodicExportingMetricReader(checked, export_interval_millis=interval_ms), checked


_live_telemetries: weakref.WeakSet[Telemetry] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    for telemetry in list(_live_telemetries):
        telemetry._lock = threading.Lock()  # one held by a parent thread would never be freed


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


class Telemetry:
    """A configured MeterProvider with its exporters, and the tracker that records on it.

    Made by `configure()`. Shut down at interpreter exit by itself; `shutdown()` earlier
    exports what is left and stops the Prometheus endpoint.
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        resource: Resource,
        prometheus: _PrometheusServer | None,
        *,
        exporters: Iterable[CheckedExporter] = (),
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.meter_provider = meter_provider
        self.resource = resource
        self._prometheus = prometheus
        self._exporters = list(exporters)
        self._timeout_s = timeout_s
        self._tracker: TokenTracker | None = None
        self._tracker_options: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._shut_down = False
        self._pid = os.getpid()
        self._exit_step = at_exit(self._shutdown_at_exit, TELEMETRY)
        _live_telemetries.add(self)

    @property
    def prometheus_url(self) -> str | None:
        """The URL Prometheus scrapes, or None without the Prometheus exporter."""
        return None if self._prometheus is None else self._prometheus.url

    @property
    def service_instance_id(self) -> str:
        """This process's `service.instance.id`."""
        return str(self.resource.attributes["service.instance.id"])

    def tracker(self, **options: Any) -> TokenTracker:
        """The tracker on this provider, made on first call with `options`.

        Args:
            options: keyword arguments of `TokenTracker` other than the meter; only on the
                first call.

        Raises:
            ValueError: options on a later call that differ from the first call's.
        """
        if os.getpid() != self._pid:
            logger.warning(
                "otel_tokens: configure() ran in process %d, which then forked; this process "
                "(%d) would export under the parent's service.instance.id. Call configure() "
                "in each worker after the fork (gunicorn: post_fork; uvicorn: app startup)",
                self._pid,
                os.getpid(),
            )
            self._pid = os.getpid()
        with self._lock:
            if self._tracker is None:
                meter = self.meter_provider.get_meter("otel_tokens", __version__)
                self._tracker = TokenTracker(meter, **options)
                self._tracker_options = options
            elif options and options != self._tracker_options:
                msg = (
                    "the tracker was already made with other options "
                    f"({sorted(self._tracker_options)}); pass options on the first call only"
                )
                raise ValueError(msg)
            return self._tracker

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Export what has been recorded now.

        Args:
            timeout_s: the longest to wait; default the shutdown timeout (5 s).

        Returns:
            True when every export that ran succeeded in time; False when one failed (a
            collector that refused or is down) or did not finish in time.
        """
        timeout = self._timeout_s if timeout_s is None else shutdown_timeout(timeout_s, "timeout_s")
        marks = [(exporter, exporter.mark()) for exporter in self._exporters]
        millis = round(timeout * 1000)
        done, flushed = run_within(
            lambda: self.meter_provider.force_flush(timeout_millis=millis), timeout, "flush"
        )
        return bool(done and flushed) and all(e.settled_since(mark) for e, mark in marks)

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Export what is left, stop the exporters and the Prometheus endpoint. Idempotent.

        Returns within `timeout_s` (default: `shutdown_timeout_s` of `configure()`, 5 s)
        however long a collector takes to answer, or fails to.

        Returns:
            True when the last exports succeeded in time; False, with a warning, when one
            failed or was given up.
        """
        with self._lock:
            if self._shut_down:
                return True
            self._shut_down = True
        cancel_at_exit(self._exit_step)
        timeout = self._timeout_s if timeout_s is None else shutdown_timeout(timeout_s, "timeout_s")
        marks = [(exporter, exporter.mark()) for exporter in self._exporters]
        millis = round(timeout * 1000)
        try:
            done, _ = run_within(
                lambda: self.meter_provider.shutdown(timeout_millis=millis), timeout, "shutdown"
            )
        finally:
            if self._prometheus is not None:
                self._prometheus.close()
        unsettled = [e.where for e, mark in marks if not e.settled_since(mark)]
        if not done or unsettled:
            logger.warning(
                "otel_tokens: the last export to %s did not succeed within the shutdown "
                "timeout of %.1f s; what it held is lost (raise shutdown_timeout_s or %s to "
                "wait longer)",
                ", ".join(unsettled) or "the readers",
                timeout,
                TIMEOUT_ENV,
            )
        return done and not unsettled

    def _shutdown_at_exit(self) -> None:
        self.shutdown(timeout_s=exit_budget(self._timeout_s))

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


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
        _prometheus_address(prometheus_host, prometheus_port)
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
            prometheus = _PrometheusServer(*address)
            all_readers.append(prometheus.reader)
        if workers_dir is not None:
            from otel_tokens._workers.directory import WorkerFileExporter

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
