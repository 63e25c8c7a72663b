"""`Telemetry`: what `configure()` made (a MeterProvider, its exporters, maybe a Prometheus
endpoint) and the tracker on it; it flushes and shuts them down within one timeout."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
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
    from opentelemetry.sdk.resources import Resource

    from otel_tokens._export.endpoint import PrometheusServer
    from otel_tokens._export.exporting import CheckedExporter


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
        prometheus: PrometheusServer | None,
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
