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
gauges newest-wins, up-down sums dropped), records that it did, and deletes it. Sums are
exact (fractions, not floats), so a total never goes back because of the order it was
added in; totals never go back when a worker is replaced; and the directory does not grow
with every restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

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

from otel_tokens._warn import WarnOnce, logger

FORMAT = "otel_tokens.worker-metrics/1"
PREFIX = "otel_tokens-"
RETIRED = "retired.json"
_DIRECTORY_LOCK = ".otel_tokens.lock"
_INSTANCE_ID = "service.instance.id"

#: (scope name, scope version, metric name, kind, unit, monotonic): a Prometheus family.
MetricKey = tuple[str, str, str, str, str, bool]
Number = int | Fraction


def check_directory(directory: str | os.PathLike[str], source: str) -> Path:
    """The directory worker metrics go to, made if missing, checked for writes and locks.

    Args:
        directory: the path.
        source: where it came from, for the error ("PROMETHEUS_MULTIPROC_DIR", "--dir").

    Raises:
        ValueError: it cannot be made or written, or cannot lock files (a network file
            system), naming where the path came from.
    """
    if fcntl is None:
        msg = f"{source}: worker metrics need file locks (fcntl), which this platform lacks"
        raise ValueError(msg)
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except OSError as exc:
        msg = (
            f"{source} {str(path)!r} cannot hold worker metrics: {exc.strerror or exc}; "
            "give a local directory this process can write"
        )
        raise ValueError(msg) from exc
    return path


_live_exporters: weakref.WeakSet[WorkerFileExporter] = weakref.WeakSet()


def _forget_parents_after_fork() -> None:
    for exporter in list(_live_exporters):
        exporter._start_afresh()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_after_fork)


class WorkerFileExporter(MetricExporter):
    """Writes this process's cumulative metrics to `<directory>/otel_tokens-<pid>-<random>.json`.

    The file is replaced whole (write, then rename), so a reader sees the previous export or
    this one, never a mix. A process forked after this was made writes a file of its own;
    its counters start from zero, but SDK histograms hold what the parent observed before
    the fork, which is why `configure()` belongs after the fork.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()  # cumulative, the default: each file holds its worker's totals
        self.directory = directory
        self._warn = WarnOnce()
        self._shut_down = False
        self._failing = False
        self._start_afresh()
        _live_exporters.add(self)

    def _start_afresh(self) -> None:
        """No file, lock or guard of a parent process (also how a forked child starts)."""
        inherited = getattr(self, "_lock_file", None)
        if inherited is not None:  # closed, not unlocked: the lock stays the parent's
            with contextlib.suppress(OSError):
                os.close(inherited)
        self._guard = threading.Lock()
        self._pid = -1
        self._name = ""
        self._lock_file: int | None = None  # a parent's is closed by the kernel at its exit
        self._lock_inode = -1

    def _claim(self) -> str:
        """The file name of this exporter in this process, holding its lock. A lock file
        that was deleted or replaced is made and taken anew."""
        pid = os.getpid()
        if self._pid != pid:
            self._name = f"{PREFIX}{pid}-{secrets.token_hex(6)}"
            self._pid = pid
        lock_path = self.directory / f"{self._name}.lock"
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = -2
        if self._lock_file is None or current != self._lock_inode:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if self._lock_file is not None:
                os.close(self._lock_file)
            self._lock_file, self._lock_inode = descriptor, os.fstat(descriptor).st_ino
        return self._name

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Write `metrics_data` (cumulative) over this process's previous export."""
        with self._guard:
            if self._shut_down:  # its last file may be folded already: never write again
                return MetricExportResult.FAILURE
            try:
                self.directory.mkdir(parents=True, exist_ok=True)  # if emptied meanwhile
                name = self._claim()
                state = {
                    "format": FORMAT,
                    "pid": os.getpid(),  # for people reading the directory
                    "resource": _resource_of(metrics_data),
                    "metrics": self._encode(metrics_data),
                }
                _replace(self.directory / f"{name}.json", state, durable=False)
            except (OSError, TypeError, ValueError) as exc:
                self._failing = True
                self._warn(
                    "write",
                    "otel_tokens: cannot write worker metrics to %s: %s; the summed Prometheus "
                    "endpoint shows this process's totals as of its last good write",
                    self.directory,
                    exc,
                )
                return MetricExportResult.FAILURE
            if self._failing:
                self._failing = False
                logger.warning(
                    "otel_tokens: writing worker metrics to %s works again", self.directory
                )
        return MetricExportResult.SUCCESS

    def _encode(self, metrics_data: MetricsData) -> list[dict[str, Any]]:
        entries, skipped = encode(metrics_data)
        if skipped:
            self._warn(
                ("skipped", tuple(skipped)),
                "otel_tokens: worker metrics cannot sum exponential histograms; %s are left "
                "out of the summed endpoint",
                skipped,
            )
        return entries

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Release the lock: the last export is final and may be folded."""
        with self._guard:
            self._shut_down = True
            if self._lock_file is not None and self._pid == os.getpid():
                _unlock_and_close(self._lock_file)
                self._lock_file = None


def _unlock_and_close(descriptor: int) -> None:
    """Release a lock even where a forked child shares the descriptor, then close it."""
    with contextlib.suppress(OSError):
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


def _replace(path: Path, state: dict[str, Any], *, durable: bool) -> None:
    """Write `state` as JSON over `path` at once (a reader sees the old file or the new),
    readable by this user only; `durable`: on disk before the rename (and the rename too)."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(state, out, separators=(",", ":"), default=_exact)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    os.replace(temporary, path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _exact(value: object) -> str:
    """A fraction in JSON: "numerator/denominator", read back exactly by `_number`."""
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    msg = f"cannot write {type(value).__name__} {value!r} to a worker metrics file"
    raise TypeError(msg)


def _number(value: object) -> Number:
    """A value from a file, exact: an int, or a float or "n/d" string as a fraction."""
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (float, str)):
        return Fraction(value)
    msg = f"not a number: {value!r}"
    raise TypeError(msg)


def _resource_of(metrics_data: MetricsData) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for resource_metrics in metrics_data.resource_metrics:
        attributes.update(resource_metrics.resource.attributes)
    return attributes


def encode(metrics_data: MetricsData) -> tuple[list[dict[str, Any]], list[str]]:
    """Metrics as JSON-ready dicts, one per metric with its points as lists; and the names
    of those that cannot be summed (exponential histograms: this package makes none)."""
    out, skipped = [], []
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
                    entry["points"] = [_number_row(point) for point in data.data_points]
                elif isinstance(data, Gauge):
                    entry["kind"], entry["monotonic"] = "gauge", False
                    entry["points"] = [_number_row(point) for point in data.data_points]
                elif isinstance(data, HistogramData):
                    entry["kind"], entry["monotonic"] = "histogram", True
                    entry["points"] = [_histogram_row(point) for point in data.data_points]
                else:
                    skipped.append(metric.name)
                    continue
                out.append(entry)
    return out, skipped


def _number_row(point: NumberDataPoint) -> list[Any]:
    return [dict(point.attributes or {}), point.start_time_unix_nano, point.time_unix_nano,
            point.value]  # fmt: skip


def _histogram_row(point: HistogramDataPoint) -> list[Any]:
    return [dict(point.attributes or {}), point.start_time_unix_nano, point.time_unix_nano,
            point.count, point.sum, list(point.explicit_bounds), list(point.bucket_counts),
            point.min, point.max]  # fmt: skip


@dataclass
class Point:
    """One series of one metric, summed over workers. `value` is a sum or gauge value; a
    histogram has `count`, `value` (its sum), `bounds`, `buckets`, `low` and `high`."""

    attributes: dict[str, Any]
    start: int
    time: int
    value: Number
    count: int = 0
    bounds: list[float] = field(default_factory=list)
    buckets: list[int] = field(default_factory=list)
    low: float | None = None
    high: float | None = None


def _point(kind: str, row: list[Any]) -> Point:
    """A point read from a file row; ValueError or TypeError when the row is malformed."""
    if kind == "histogram":
        attributes, start, time, count, total, bounds, buckets, low, high = row
        bounds = [b if isinstance(b, int) else float(b) for b in bounds]  # as the SDK had them
        buckets = [int(b) for b in buckets]
        if len(buckets) != len(bounds) + 1 or sum(buckets) != int(count):
            msg = f"histogram buckets {buckets} do not fit bounds {bounds} and count {count}"
            raise ValueError(msg)
        return Point(dict(attributes), int(start), int(time), _number(total), int(count),
                     bounds, buckets, _optional(low), _optional(high))  # fmt: skip
    attributes, start, time, value = row
    return Point(dict(attributes), int(start), int(time), _number(value))


def _optional(value: object) -> float | None:
    return None if value is None else float(_number(value))


@dataclass
class Merged:
    """The sum of several workers' metrics, point by point, exactly."""

    metrics: dict[MetricKey, dict[str, Point]] = field(default_factory=dict)
    descriptions: dict[MetricKey, str] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0  # worker files whose process is alive

    def add(self, state: Mapping[str, Any], *, exited: bool = False) -> None:
        """Add one worker's (or the retired) state; `exited` drops its up-down sums.

        Raises:
            ValueError, TypeError, KeyError: a malformed state; nothing of it is added.
        """
        parsed = []
        for entry in state["metrics"]:
            key: MetricKey = (
                str(entry["scope"]), str(entry["scope_version"]), str(entry["name"]),
                str(entry["kind"]), str(entry["unit"]), bool(entry["monotonic"]),
            )  # fmt: skip
            if key[3] not in ("sum", "gauge", "histogram"):
                msg = f"unknown kind {key[3]!r}"
                raise ValueError(msg)
            if exited and key[3] == "sum" and not key[5]:
                continue  # in-flight counts of a process that is gone mean nothing
            points = [_point(key[3], row) for row in entry["points"]]
            parsed.append((key, str(entry["description"]), points))
        self.resources.append(dict(state.get("resource", {})))
        for key, description, points in parsed:
            self.descriptions[key] = description  # the last one added: the newest file
            merged = self.metrics.setdefault(key, {})
            for point in points:
                label = json.dumps(point.attributes, sort_keys=True)
                seen = merged.get(label)
                if seen is None:
                    merged[label] = point
                else:
                    _combine(key[3], seen, point)

    def state(self, folded: list[str]) -> dict[str, Any]:
        """The merged state in the worker file format, as `retired.json` holds it, with the
        names of the worker files it holds."""
        metrics = [
            {"scope": k[0], "scope_version": k[1], "name": k[2], "kind": k[3], "unit": k[4],
             "monotonic": k[5], "description": self.descriptions.get(k, ""),
             "points": [_row(k[3], p) for p in points.values()]}
            for k, points in self.metrics.items()
        ]  # fmt: skip
        return {
            "format": FORMAT,
            "resource": self.common_resource(),
            "metrics": metrics,
            "folded": folded,
        }

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
            scope_name, scope_version, name, kind, unit, monotonic = key
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
            description = self.descriptions.get(key, "")
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


def _combine(kind: str, seen: Point, point: Point) -> None:
    if kind == "gauge":  # the value of the worker that exported last
        if point.time > seen.time:
            seen.start, seen.time, seen.value = point.start, point.time, point.value
        return
    seen.start = min(seen.start, point.start)
    seen.time = max(seen.time, point.time)
    seen.value += point.value
    if kind != "histogram":
        return
    if seen.bounds != point.bounds:  # other bounds: add on the bounds both have
        shared = sorted(set(seen.bounds) & set(point.bounds))
        seen.buckets = _rebucket(seen.bounds, seen.buckets, shared)
        point = Point(
            **{**point.__dict__, "buckets": _rebucket(point.bounds, point.buckets, shared)}
        )
        seen.bounds = shared
    seen.count += point.count
    seen.buckets = [a + b for a, b in zip(seen.buckets, point.buckets, strict=True)]
    seen.low = _either(min, seen.low, point.low)
    seen.high = _either(max, seen.high, point.high)


def _rebucket(bounds: list[float], buckets: list[int], shared: list[float]) -> list[int]:
    """Bucket counts on `shared` (a subset of `bounds`): cumulative counts at a shared
    bound are exact, so each new bucket is a difference of two of them."""
    cumulative, running = {}, 0
    for bound, count in zip(bounds, buckets, strict=False):
        running += count
        cumulative[bound] = running
    out, below = [], 0
    for bound in shared:
        out.append(cumulative[bound] - below)
        below = cumulative[bound]
    out.append(sum(buckets) - below)
    return out


def _row(kind: str, point: Point) -> list[Any]:
    if kind == "histogram":
        return [point.attributes, point.start, point.time, point.count, point.value,
                point.bounds, point.buckets, point.low, point.high]  # fmt: skip
    return [point.attributes, point.start, point.time, point.value]


def _either(
    pick: Callable[[float, float], float], a: float | None, b: float | None
) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return pick(a, b)


def _served(value: Number) -> int | float:
    """Rounded once, at the end: exact sums that only grow never round to a smaller float."""
    return value if isinstance(value, int) else float(value)


def _number_point(point: Point) -> NumberDataPoint:
    return NumberDataPoint(
        attributes=point.attributes,
        start_time_unix_nano=point.start,
        time_unix_nano=point.time,
        value=_served(point.value),
    )


def _histogram_point(point: Point) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=point.attributes, start_time_unix_nano=point.start,
        time_unix_nano=point.time, count=point.count, sum=_served(point.value),
        bucket_counts=point.buckets, explicit_bounds=point.bounds,
        min=point.low if point.low is not None else float("inf"),
        max=point.high if point.high is not None else float("-inf"),
    )  # fmt: skip


class WorkerDirectory:
    """Reads the workers' files in a directory as one sum, folding the files of exited ones.

    Args:
        directory: where the workers write (made if missing).
        source: where the path came from, for errors.

    Raises:
        ValueError: the directory cannot be made, written or locked in.
    """

    def __init__(self, directory: str | os.PathLike[str], source: str = "the directory") -> None:
        self.path = check_directory(directory, source)
        self._warn = WarnOnce(limit=100)

    def merged(self) -> Merged:
        """Every worker's latest export plus what exited workers left, summed.

        Raises:
            OSError: the directory or its lock cannot be opened.
        """
        self.path.mkdir(parents=True, exist_ok=True)  # if emptied while this serves
        with self._locked(), contextlib.ExitStack() as held:
            merged = Merged()
            retired_path = self.path / RETIRED
            retired = self._read(retired_path)
            folded = set(retired.get("folded", [])) if retired is not None else set()
            if retired is not None and not self._add(merged, retired, retired_path):
                retired = None
            can_fold = retired is not None or not retired_path.exists()
            exited: list[tuple[Path, dict[str, Any]]] = []
            for data_file in sorted(self.path.glob(f"{PREFIX}*.json")):
                if data_file.stem in folded:  # a fold that stopped before deleting it
                    if can_fold:
                        self._remove(data_file)
                    continue
                lock = _try_lock(data_file.with_suffix(".lock"))
                if lock is not None:
                    held.callback(_unlock_and_close, lock)
                state = self._read(data_file)
                if state is None:
                    continue
                if lock is None:
                    if self._add(merged, state, data_file):
                        merged.running += 1
                elif self._add(merged, state, data_file, exited=True):
                    exited.append((data_file, state))
            if exited and can_fold:
                self._fold(retired, exited)
            if can_fold:
                self._sweep()
        return merged

    def _add(
        self, merged: Merged, state: dict[str, Any], path: Path, *, exited: bool = False
    ) -> bool:
        try:
            merged.add(state, exited=exited)
        except (KeyError, TypeError, ValueError) as exc:
            self._warn(
                ("malformed", path.name),
                "otel_tokens: worker metrics file %s is malformed (%r); it is left out of the sum",
                path,
                exc,
            )
            return False
        return True

    def _fold(
        self, retired: dict[str, Any] | None, exited: list[tuple[Path, dict[str, Any]]]
    ) -> None:
        """Fold exited workers' final files into `retired.json`, then delete them. The new
        `retired.json` names them first, so a fold cut short is never counted twice."""
        total = Merged()
        if retired is not None:
            total.add(retired)
        for _, state in exited:
            total.add(state, exited=True)
        present = {p.stem for p in self.path.glob(f"{PREFIX}*.json")}
        still = [stem for stem in (retired or {}).get("folded", []) if stem in present]
        try:
            _replace(self.path / RETIRED, total.state(still + [p.stem for p, _ in exited]),
                     durable=True)  # fmt: skip
        except OSError as exc:
            self._warn(
                "fold",
                "otel_tokens: cannot fold exited workers' metrics into %s: %s; their files "
                "are kept and still counted",
                self.path / RETIRED,
                exc,
            )
            return
        for data_file, _ in exited:
            self._remove(data_file)

    def _remove(self, data_file: Path) -> None:
        with contextlib.suppress(OSError):
            data_file.unlink()
        with contextlib.suppress(OSError):
            data_file.with_suffix(".lock").unlink()

    def _sweep(self) -> None:
        """Delete what exited writers left beside their data: locks without a data file,
        and half-written temporary files."""
        for lock_file in self.path.glob(f"{PREFIX}*.lock"):
            if lock_file.with_suffix(".json").exists():
                continue
            lock = _try_lock(lock_file)
            if lock is not None:
                with contextlib.suppress(OSError):
                    lock_file.unlink()
                    (self.path / f".{lock_file.stem}.json.tmp").unlink(missing_ok=True)
                _unlock_and_close(lock)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One reader at a time, so that two never fold the same file."""
        descriptor = os.open(self.path / _DIRECTORY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            _unlock_and_close(descriptor)  # unlocked first: a forked child may share it

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._warn(
                ("read", path.name),
                "otel_tokens: cannot read worker metrics %s (%s); it is left out of the sum%s",
                path,
                exc,
                ", and nothing is folded until it is fixed or moved away"
                if path.name == RETIRED
                else "",
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
    """The lock of an exited worker, now held by this process; None while its worker lives,
    or when there is no lock file (it is never assumed gone: its file stays counted)."""
    try:
        descriptor = os.open(lock_file, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor
