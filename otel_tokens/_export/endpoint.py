"""The Prometheus pull endpoint of one process (`configure()`'s) or of many (the worker
server's): where it listens, and the error that says it cannot.

The exporter and prometheus_client are imported only when an endpoint is made, so the core
package needs `opentelemetry-api` alone; a missing extra fails with the `pip install` line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader

DEFAULT_PROMETHEUS_HOST = "127.0.0.1"
DEFAULT_PROMETHEUS_PORT = 9464


def import_error(extra: str, what: str, exc: ImportError) -> ImportError:
    """An ImportError naming the extra that `what` needs, caused by `exc`."""
    msg = f"{what} needs an extra that is not installed: pip install 'otel_tokens[{extra}]'"
    error = ImportError(msg)
    error.__cause__ = exc
    return error


def setting(name: str) -> str | None:
    """The environment variable `name`, stripped; None when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def prometheus_address(host: str | None, port: int | None) -> tuple[str, int]:
    host = host or setting("OTEL_EXPORTER_PROMETHEUS_HOST") or DEFAULT_PROMETHEUS_HOST
    source = "prometheus_port"
    if port is None:
        raw, source = setting("OTEL_EXPORTER_PROMETHEUS_PORT"), "OTEL_EXPORTER_PROMETHEUS_PORT"
        try:
            port = DEFAULT_PROMETHEUS_PORT if raw is None else int(raw)
        except ValueError:
            msg = f"OTEL_EXPORTER_PROMETHEUS_PORT must be a port number, got {raw!r}"
            raise ValueError(msg) from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        msg = f"{source} must be a port number from 0 to 65535, got {port!r}"
        raise ValueError(msg)
    return host, port


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


class PrometheusServer:
    """A pull endpoint serving one reader's own registry (never prometheus_client's global one)."""

    def __init__(
        self, host: str, port: int, make_reader: Callable[[Any], MetricReader] | None = None
    ) -> None:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry
        except ImportError as exc:
            raise import_error("prometheus", "the Prometheus exporter", exc) from None
        from otel_tokens._export.scrape_server import ScrapeServer

        registry = CollectorRegistry()  # its own, never prometheus_client's global one
        make = make_reader or (lambda registry: PrometheusMetricReader(registry=registry))
        self.reader = make(registry)
        try:
            self._server = ScrapeServer(host, port, registry, self.reader)
        except OSError as exc:
            self.reader.shutdown()
            raise CannotServeError(host, port, exc) from exc
        bound_host, bound_port = str(self._server.server_address[0]), self._server.server_address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}/metrics"

    def close(self) -> None:
        self._server.close()
