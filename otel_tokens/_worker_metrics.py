"""Prometheus totals that stay right when a server runs the app in several worker processes.

A pre-fork server (gunicorn, `uvicorn --workers`) runs one app in N processes, each with its
own SDK state, so any one process's `/metrics` holds only its share and a scrape lands on
one of them at random. Here each worker writes its cumulative metrics to its own file in a
shared directory, every export interval and once more at shutdown, and one endpoint, in any
process, serves their sum through the OpenTelemetry Prometheus exporter's own translation,
so the names are exactly those of a single process's endpoint.

A worker holds an exclusive `flock` on a companion `.lock` file while it lives. The kernel
releases it when the process ends, however it ends, so the endpoint knows an exited
worker's file is final: it adds it to `retired.json` (counters and histograms summed,
gauges newest-wins, up-down sums dropped) and deletes it. Totals therefore never go back
when a worker is replaced, and the directory does not grow with every restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_tokens._warn import WarnOnce

FORMAT = "otel_tokens.worker-metrics/1"
PREFIX = "otel_tokens-"
RETIRED = "retired.json"
_DIRECTORY_LOCK = ".otel_tokens.lock"
_INSTANCE_ID = "service.instance.id"

#: (scope name, scope version, metric name, kind, unit, description, monotonic)
MetricKey = tuple[str, str, str, str, str, str, bool]


def check_directory(directory: str | os.PathLike[str], source: str) -> Path:
    """The directory worker metrics go to, made if missing.

    Raises:
        ValueError: it cannot be made or written, naming where the path came from.
    """
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        msg = (
            f"{source} {str(path)!r} cannot hold worker metrics: {exc.strerror or exc}; "
            "give a directory this process can write"
        )
        raise ValueError(msg) from exc
    return path


class WorkerFileExporter(MetricExporter):
    """Writes this process's cumulative metrics to `<directory>/otel_tokens-<pid>-<random>.json`.

    The file is replaced whole (write, then rename), so a reader sees the previous export or
    this one, never a mix. A process forked after this was made writes its own file.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()  # cumulative, the default: each file holds its worker's totals
        self.directory = directory
        self._host = socket.gethostname()
        self._pid = -1
        self._name = ""
        self._lock_file: int | None = None
        self._warn = WarnOnce()
        self._guard = threading.Lock()
        self._shut_down = False

    def _claim(self) -> str:
        """The file name of this exporter in this process, holding its lock (taken anew
        after a fork). Unique per exporter: several in one process never share a file."""
        pid = os.getpid()
        if self._pid != pid:
            if self._lock_file is not None:  # the parent's, inherited: closing it here does
                os.close(self._lock_file)  # not release the parent's lock
            name = f"{PREFIX}{pid}-{secrets.token_hex(6)}"
            descriptor = os.open(self.directory / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            self._lock_file, self._pid, self._name = descriptor, pid, name
        return self._name

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Write `metrics_data` (cumulative) over this process's previous export."""
        with self._guard:
            if self._shut_down:  # its last file may be retired already: never write again
                return MetricExportResult.FAILURE
            try:
                resource = _resource_of(metrics_data)
                name = self._claim()
                state = {
                    "format": FORMAT,
                    "pid": os.getpid(),
                    "host": self._host,
                    "resource": resource,
                    "metrics": encode(metrics_data),
                }
                _replace(self.directory / f"{name}.json", state)
            except (OSError, TypeError, ValueError) as exc:
                self._warn(
                    "write",
                    "otel_tokens: cannot write worker metrics to %s: %s; the merged Prometheus "
                    "endpoint shows this process's totals as of its last good write",
                    self.directory,
                    exc,
                )
                return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Release the lock: the last export is final and may be retired."""
        with self._guard:
            self._shut_down = True
            if self._lock_file is not None and self._pid == os.getpid():
                os.close(self._lock_file)
                self._lock_file = None


def _replace(path: Path, state: dict[str, Any]) -> None:
    """Write `state` as JSON over `path` at once (a reader sees the old file or the new),
    readable by this user only."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(state, out, separators=(",", ":"))
    os.replace(temporary, path)


def _resource_of(metrics_data: MetricsData) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for resource_metrics in metrics_data.resource_metrics:
        attributes.update(resource_metrics.resource.attributes)
    return attributes


def encode(metrics_data: MetricsData) -> list[dict[str, Any]]:
    """Metrics as JSON-ready dicts: one per metric, its points as lists."""
    out = []
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            for metric in scope_metrics.metrics:
                data = metric.data
                entry: dict[str, Any] = {
                    "scope": scope.name,
                    "scope_version": scope.version or "",
                    "name": metric.name,
                    "description": metric.description or "",
                    "unit": metric.unit or "",
                }
                if isinstance(data, Sum):
                    entry["kind"] = "sum"
                    entry["monotonic"] = data.is_monotonic
                    entry["points"] = [_number(point) for point in data.data_points]
                elif isinstance(data, Gauge):
                    entry["kind"], entry["monotonic"] = "gauge", False
                    entry["points"] = [_number(point) for point in data.data_points]
                elif isinstance(data, HistogramData):
                    entry["kind"], entry["monotonic"] = "histogram", True
                    entry["points"] = [_histogram(point) for point in data.data_points]
                else:  # exponential histograms: this package makes none
                    continue
                out.append(entry)
    return out


def _number(point: NumberDataPoint) -> list[Any]:
    return [dict(point.attributes or {}), point.start_time_unix_nano, point.time_unix_nano,
            point.value]  # fmt: skip


def _histogram(point: HistogramDataPoint) -> list[Any]:
    return [dict(point.attributes or {}), point.start_time_unix_nano, point.time_unix_nano,
            point.count, point.sum, list(point.explicit_bounds), list(point.bucket_counts),
            point.min, point.max]  # fmt: skip


@dataclass
class Merged:
    """The sum of several workers' metrics, point by point."""

    metrics: dict[MetricKey, dict[str, list[Any]]] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # histogram points whose buckets differ from the first seen
    running: int = 0  # worker files whose process is alive

    def add(self, state: Mapping[str, Any], *, exited: bool = False) -> None:
        """Add one worker's (or the retired) state; `exited` drops its up-down sums."""
        self.resources.append(dict(state.get("resource", {})))
        for entry in state["metrics"]:
            key: MetricKey = (
                entry["scope"], entry["scope_version"], entry["name"], entry["kind"],
                entry["unit"], entry["description"], bool(entry["monotonic"]),
            )  # fmt: skip
            if exited and entry["kind"] == "sum" and not entry["monotonic"]:
                continue  # in-flight counts of a process that is gone mean nothing
            points = self.metrics.setdefault(key, {})
            for point in entry["points"]:
                label = json.dumps(point[0], sort_keys=True)
                seen = points.get(label)
                if seen is None:
                    points[label] = list(point)
                elif not self._combine(entry["kind"], seen, point):
                    self.skipped += 1

    @staticmethod
    def _combine(kind: str, seen: list[Any], point: list[Any]) -> bool:
        if kind == "gauge":  # the newest value wins
            if point[2] > seen[2]:
                seen[1:] = point[1:]
            return True
        seen[1] = min(seen[1], point[1])
        seen[2] = max(seen[2], point[2])
        if kind == "sum":
            seen[3] += point[3]
            return True
        if seen[5] != point[5]:  # other bucket bounds: cannot be added
            return False
        seen[3] += point[3]
        seen[4] += point[4]
        seen[6] = [a + b for a, b in zip(seen[6], point[6], strict=True)]
        seen[7] = _either(min, seen[7], point[7])
        seen[8] = _either(max, seen[8], point[8])
        return True

    def state(self) -> dict[str, Any]:
        """The merged state, in the worker file format (how `retired.json` is written)."""
        metrics = [
            {"scope": k[0], "scope_version": k[1], "name": k[2], "kind": k[3], "unit": k[4],
             "description": k[5], "monotonic": k[6], "points": list(points.values())}
            for k, points in self.metrics.items()
        ]  # fmt: skip
        return {"format": FORMAT, "resource": self.common_resource(), "metrics": metrics}

    def common_resource(self) -> dict[str, Any]:
        """The resource attributes every worker shares (never a worker's instance id)."""
        if not self.resources:
            return {}
        first, *others = self.resources
        return {
            name: value
            for name, value in first.items()
            if name != _INSTANCE_ID and all(other.get(name) == value for other in others)
        }

    def metrics_data(self) -> MetricsData:
        """The merged metrics as the SDK's data classes, one scope per instrumentation."""
        scopes: dict[tuple[str, str], list[Metric]] = {}
        for key, points in self.metrics.items():
            scope_name, scope_version, name, kind, unit, description, monotonic = key
            data: Sum | Gauge | HistogramData
            if kind == "histogram":
                data = HistogramData(
                    data_points=[_histogram_point(p) for p in points.values()],
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                )
            elif kind == "gauge":
                data = Gauge(data_points=[_number_point(p) for p in points.values()])
            else:
                data = Sum(
                    data_points=[_number_point(p) for p in points.values()],
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=monotonic,
                )
            metric = Metric(name=name, description=description, unit=unit, data=data)
            scopes.setdefault((scope_name, scope_version), []).append(metric)
        scope_metrics = [
            ScopeMetrics(
                scope=InstrumentationScope(name, version or None), metrics=metrics, schema_url=""
            )
            for (name, version), metrics in scopes.items()
        ]
        resource = ResourceMetrics(
            resource=Resource(self.common_resource()), scope_metrics=scope_metrics, schema_url=""
        )
        return MetricsData(resource_metrics=[resource])


def _either(pick: Any, a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return float(pick(a, b))


def _number_point(point: list[Any]) -> NumberDataPoint:
    attributes, start, time, value = point
    return NumberDataPoint(
        attributes=attributes, start_time_unix_nano=start, time_unix_nano=time, value=value
    )


def _histogram_point(point: list[Any]) -> HistogramDataPoint:
    attributes, start, time, count, total, bounds, buckets, low, high = point
    return HistogramDataPoint(
        attributes=attributes, start_time_unix_nano=start, time_unix_nano=time, count=count,
        sum=total, bucket_counts=buckets, explicit_bounds=bounds, min=low, max=high,
    )  # fmt: skip


class WorkerDirectory:
    """Reads the workers' files in a directory as one sum, retiring the files of exited ones.

    Args:
        directory: where the workers write (made if missing).

    Raises:
        ValueError: the directory cannot be made or written.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = check_directory(directory, "the worker metrics directory")
        self._warn = WarnOnce()

    def merged(self) -> Merged:
        """Every worker's latest export plus what exited workers left, summed."""
        with self._locked():
            retired = self._read(self.path / RETIRED)
            exited: list[tuple[Path, Path, int, dict[str, Any]]] = []
            merged = Merged()
            if retired is not None:
                merged.add(retired)
            for data_file in sorted(self.path.glob(f"{PREFIX}*.json")):
                lock_file = data_file.with_suffix(".lock")
                held = _try_lock(lock_file)
                state = self._read(data_file)
                if state is None:
                    if held is not None:
                        os.close(held)
                    continue
                if held is None:
                    merged.add(state)
                    merged.running += 1
                else:
                    exited.append((data_file, lock_file, held, state))
            if exited:
                self._retire(retired, exited)
            for _, _, _, state in exited:
                merged.add(state, exited=True)
        if merged.skipped:
            self._warn(
                "buckets",
                "otel_tokens: %d histogram point(s) in %s have other bucket bounds than the "
                "first worker's and were left out of the sum; restart the workers with one "
                "version of the app",
                merged.skipped,
                self.path,
            )
        return merged

    def _retire(
        self, retired: dict[str, Any] | None, exited: list[tuple[Path, Path, int, dict[str, Any]]]
    ) -> None:
        """Fold exited workers' final files into `retired.json`, then delete them."""
        total = Merged()
        if retired is not None:
            total.add(retired)
        for _, _, _, state in exited:
            total.add(state, exited=True)
        try:
            _replace(self.path / RETIRED, total.state())
            for data_file, lock_file, _, _ in exited:
                data_file.unlink()
                lock_file.unlink(missing_ok=True)
        except OSError as exc:
            self._warn(
                "retire",
                "otel_tokens: cannot fold exited workers' metrics into %s: %s; their files "
                "are kept and still counted",
                self.path / RETIRED,
                exc,
            )
        finally:
            for *_, held, _ in exited:
                os.close(held)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One reader at a time, so that two never retire the same file."""
        descriptor = os.open(self.path / _DIRECTORY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._warn(
                ("read", path.name),
                "otel_tokens: cannot read worker metrics %s (%s); it is left out of the sum",
                path,
                exc,
            )
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            self._warn(
                ("format", path.name),
                "otel_tokens: %s is not a worker metrics file of this version (%r); it is "
                "left out of the sum",
                path,
                state.get("format") if isinstance(state, dict) else type(state).__name__,
            )
            return None
        return state


def _try_lock(lock_file: Path) -> int | None:
    """The lock of an exited worker, now held by this process; None while its worker lives."""
    try:
        descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor
