"""What a worker metrics file holds, and how several of them add up.

A file is one JSON object: `format`, `pid`, `resource`, a table of the attribute sets its
points use (`attributes`), a table of histogram bucket bounds (`bounds`), and `metrics`,
each with its points as rows that name their attribute set and bounds by index. A row of a
sum or gauge is `[attributes, start, time, value]`; of a histogram, `[attributes, start,
time, sum, count, bounds, bucket counts, min, max]`. A value is an int, a float, or, in
`retired.json`, "q<n>": n units of 2**-100.

Sums are kept in those units as Python ints, so they are exact and do not depend on the
order they are added in: a float is converted once (exactly, for any value above 2**-48)
and the total is rounded to a float once, when served. A total that grows can therefore
never be served smaller than before.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

FORMAT = "otel_tokens.worker-metrics/2"
INSTANCE_ID = "service.instance.id"
_SCALE = 100  # fixed point: values in units of 2**-100
KINDS = ("sum", "gauge", "histogram")

#: (scope name, scope version, metric name, kind, unit, monotonic): a Prometheus family.
MetricKey = tuple[str, str, str, str, str, bool]
# A point, as a list for speed: [attributes, start, time, value, has_float] for a sum or
# gauge, then for a histogram also [count, bounds, buckets, min, max].
ATTRS, START, TIME, VALUE, FLOATY, COUNT, BOUNDS, BUCKETS, LOW, HIGH = range(10)
Points = dict[str, list[Any]]  # by the attribute set's canonical JSON


def encode(metrics_data: MetricsData, pid: int) -> tuple[dict[str, Any], list[str]]:
    """A worker file's content for the SDK's cumulative `metrics_data`; and the names of
    metrics that cannot be summed (exponential histograms: this package makes none)."""
    attributes: dict[str, int] = {}
    attribute_table: list[dict[str, Any]] = []
    bounds: dict[tuple[float, ...], int] = {}

    def attribute_index(point: Any) -> int:
        values = dict(point.attributes or {})
        label = json.dumps(values, sort_keys=True)
        index = attributes.get(label)
        if index is None:
            index = attributes[label] = len(attribute_table)
            attribute_table.append(values)
        return index

    metrics: list[dict[str, Any]] = []
    skipped: list[str] = []
    resource: dict[str, Any] = {}
    for resource_metrics in metrics_data.resource_metrics:
        resource.update(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data = metric.data
                rows: list[list[Any]] = []
                if isinstance(data, (Sum, Gauge)):
                    kind = "sum" if isinstance(data, Sum) else "gauge"
                    monotonic = isinstance(data, Sum) and data.is_monotonic
                    rows = [
                        [attribute_index(p), p.start_time_unix_nano, p.time_unix_nano, p.value]
                        for p in data.data_points
                    ]
                elif isinstance(data, HistogramData):
                    kind, monotonic = "histogram", True
                    for p in data.data_points:
                        index = bounds.setdefault(tuple(p.explicit_bounds), len(bounds))
                        rows.append([attribute_index(p), p.start_time_unix_nano,
                                     p.time_unix_nano, p.sum, p.count, index,
                                     list(p.bucket_counts), p.min, p.max])  # fmt: skip
                else:
                    skipped.append(metric.name)
                    continue
                metrics.append({
                    "scope": scope_metrics.scope.name,
                    "scope_version": scope_metrics.scope.version or "",
                    "name": metric.name, "description": metric.description or "",
                    "unit": metric.unit or "", "kind": kind, "monotonic": monotonic,
                    "points": rows,
                })  # fmt: skip
    state = {
        "format": FORMAT,
        "pid": pid,  # for people reading the directory
        "resource": resource,
        "attributes": attribute_table,
        "bounds": [list(b) for b in bounds],
        "metrics": metrics,
    }
    return state, skipped


def _fixed(value: object) -> tuple[int, bool]:
    """A value in units of 2**-100, and whether it was a float."""
    if isinstance(value, bool):
        msg = f"not a number: {value!r}"
        raise TypeError(msg)
    if isinstance(value, int):
        return value << _SCALE, False
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"value {value!r} is not finite"
            raise ValueError(msg)
        return int(math.ldexp(value, _SCALE)), True
    if isinstance(value, str) and value.startswith("q"):
        return int(value[1:]), True
    msg = f"not a number: {value!r}"
    raise TypeError(msg)


def _stored(fixed: int, floaty: bool) -> int | str:
    return f"q{fixed}" if floaty else fixed >> _SCALE


def _served(fixed: int, floaty: bool) -> int | float:
    """Rounded once, at the end (int / int is correctly rounded in Python)."""
    return fixed / (1 << _SCALE) if floaty else fixed >> _SCALE


def _extreme(value: object) -> float | None:
    """A histogram's min or max; None when unknown (the SDK writes inf when it keeps none)."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


@dataclass
class Contribution:
    """One file's metrics, checked and converted."""

    metrics: dict[MetricKey, Points] = field(default_factory=dict)
    descriptions: dict[MetricKey, tuple[int, str]] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)


def parse(state: Mapping[str, Any], *, exited: bool = False) -> Contribution:
    """Check and convert a file's content; `exited` leaves out its up-down sums.

    Raises:
        KeyError, IndexError, TypeError, ValueError, ArithmeticError: a malformed file.
    """
    attribute_table = state["attributes"]
    labels = []
    for attributes in attribute_table:
        if not isinstance(attributes, dict):
            msg = f"attributes {attributes!r} are not an object"
            raise TypeError(msg)
        labels.append(json.dumps(attributes, sort_keys=True))
    bounds_table = [tuple(float(b) if type(b) is float else int(b) for b in bounds)
                    for bounds in state["bounds"]]  # fmt: skip
    out = Contribution(resource=dict(state["resource"]))
    for entry in state["metrics"]:
        key: MetricKey = (
            str(entry["scope"]), str(entry["scope_version"]), str(entry["name"]),
            str(entry["kind"]), str(entry["unit"]), bool(entry["monotonic"]),
        )  # fmt: skip
        kind = key[3]
        if kind not in KINDS:
            msg = f"unknown kind {kind!r}"
            raise ValueError(msg)
        if exited and kind == "sum" and not key[5]:
            continue  # in-flight counts of a process that is gone mean nothing
        points: Points = {}
        if kind == "histogram":
            for index, start, time, total, count, bounds, buckets, low, high in entry["points"]:
                edges = bounds_table[bounds]
                if len(buckets) != len(edges) + 1 or sum(buckets) != count:
                    msg = f"bucket counts {buckets} do not fit bounds {edges} and count {count}"
                    raise ValueError(msg)
                value, floaty = _fixed(total)
                points[labels[index]] = [attribute_table[index], start, time, value, floaty,
                                         count, edges, buckets, _extreme(low),
                                         _extreme(high)]  # fmt: skip
        else:
            for index, start, time, number in entry["points"]:
                value, floaty = _fixed(number)
                points[labels[index]] = [attribute_table[index], start, time, value, floaty]
        times = [point[TIME] for point in points.values()]
        if not all(type(t) is int for t in times):
            msg = f"times {times[:3]}... are not all integers"
            raise TypeError(msg)
        newest = max(times, default=0)
        out.metrics[key] = points
        out.descriptions[key] = (newest, str(entry["description"]))
    return out


@dataclass
class Merged:
    """The sum of several files' metrics, point by point."""

    metrics: dict[MetricKey, Points] = field(default_factory=dict)
    descriptions: dict[MetricKey, tuple[int, str]] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0  # worker files whose process is alive

    def add(self, part: Contribution) -> None:
        """Add one file's contribution (which is left unchanged)."""
        self.resources.append(part.resource)
        for key, points in part.metrics.items():
            kind = key[3]
            newest, description = part.descriptions[key]
            if newest >= self.descriptions.get(key, (-1, ""))[0]:
                self.descriptions[key] = (newest, description)  # the newest data's words
            target = self.metrics.get(key)
            if target is None:
                self.metrics[key] = {label: list(point) for label, point in points.items()}
                continue
            for label, point in points.items():
                seen = target.get(label)
                if seen is None:
                    target[label] = list(point)
                else:
                    _combine(kind, seen, point)

    def state(self, folded: list[str]) -> dict[str, Any]:
        """The sum as a file's content (how `retired.json` holds it), with the names of the
        worker files it holds."""
        attributes: dict[str, int] = {}
        bounds: dict[tuple[float, ...], int] = {}
        metrics = []
        for key, points in self.metrics.items():
            rows = []
            for label, p in points.items():
                index = attributes.setdefault(label, len(attributes))
                row = [index, p[START], p[TIME], _stored(p[VALUE], p[FLOATY])]
                if key[3] == "histogram":
                    edges = bounds.setdefault(p[BOUNDS], len(bounds))
                    row += [p[COUNT], edges, p[BUCKETS], p[LOW], p[HIGH]]
                rows.append(row)
            metrics.append({
                "scope": key[0], "scope_version": key[1], "name": key[2], "kind": key[3],
                "unit": key[4], "monotonic": key[5],
                "description": self.descriptions.get(key, (0, ""))[1], "points": rows,
            })  # fmt: skip
        return {
            "format": FORMAT,
            "resource": self.common_resource(),
            "attributes": [json.loads(label) for label in attributes],
            "bounds": [list(b) for b in bounds],
            "metrics": metrics,
            "folded": folded,
        }

    def common_resource(self) -> dict[str, Any]:
        """The resource attributes every file shares (never a worker's instance id)."""
        if not self.resources:
            return {}
        first, *others = self.resources
        return {
            name: value
            for name, value in first.items()
            if name != INSTANCE_ID and all(other.get(name) == value for other in others)
        }

    def metrics_data(self) -> MetricsData:
        """The sum as the SDK's data classes, one scope per instrumentation."""
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
            description = self.descriptions.get(key, (0, ""))[1]
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


def _combine(kind: str, seen: list[Any], point: list[Any]) -> None:
    if kind == "gauge":  # the value of the worker that exported last
        if point[TIME] > seen[TIME]:
            seen[START:] = point[START:]
        return
    seen[START] = min(seen[START], point[START])
    seen[TIME] = max(seen[TIME], point[TIME])
    seen[VALUE] += point[VALUE]
    seen[FLOATY] = seen[FLOATY] or point[FLOATY]
    if kind != "histogram":
        return
    counts = point[BUCKETS]
    if seen[BOUNDS] != point[BOUNDS]:  # other bounds: add up on the bounds both have
        shared = tuple(sorted(set(seen[BOUNDS]) & set(point[BOUNDS])))
        seen[BUCKETS] = _rebucket(seen[BOUNDS], seen[BUCKETS], shared)
        counts = _rebucket(point[BOUNDS], counts, shared)
        seen[BOUNDS] = shared
    seen[COUNT] += point[COUNT]
    seen[BUCKETS] = list(map(operator.add, seen[BUCKETS], counts))
    seen[LOW] = _either(min, seen[LOW], point[LOW])
    seen[HIGH] = _either(max, seen[HIGH], point[HIGH])


def _either(
    pick: Callable[[float, float], float], a: float | None, b: float | None
) -> float | None:
    """`pick` of two bounds, either of which may be unknown."""
    if a is None or b is None:
        return a if b is None else b
    return pick(a, b)


def _rebucket(
    bounds: tuple[float, ...], buckets: list[int], shared: tuple[float, ...]
) -> list[int]:
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


def _number_point(p: list[Any]) -> NumberDataPoint:
    return NumberDataPoint(
        attributes=p[ATTRS], start_time_unix_nano=p[START], time_unix_nano=p[TIME],
        value=_served(p[VALUE], p[FLOATY]),
    )  # fmt: skip


def _histogram_point(p: list[Any]) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=p[ATTRS], start_time_unix_nano=p[START], time_unix_nano=p[TIME],
        count=p[COUNT], sum=_served(p[VALUE], p[FLOATY]), bucket_counts=p[BUCKETS],
        explicit_bounds=p[BOUNDS],
        min=p[LOW] if p[LOW] is not None else math.inf,
        max=p[HIGH] if p[HIGH] is not None else -math.inf,
    )  # fmt: skip
