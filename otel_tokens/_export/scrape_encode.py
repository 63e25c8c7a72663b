"""A scrape written straight from the SDK's collection: byte for byte what the OpenTelemetry
exporter's translation and prometheus_client's encoders write, in a fraction of their time.

Measured first (`benchmarks/bench_scrape.py`, 990 label sets on every instrument, 94,068
samples): prometheus_client's encoder alone, on families already translated, takes half
of the whole rendering, so no faster translation could bring a scrape under a third of it.
Most of its time goes to each sample's labels, sorted, escaped and joined again at every
scrape. Here each series' label text is kept from one scrape to the next (only for the
series the last scrape had, so it never holds more than one scrape's worth) and the rest
of a line is its number.

It writes only what is simple to hold exact: the kinds the exporter makes (counters,
gauges, histograms), names and label names in the legacy character set (the exporter's
own sanitising makes them so), and the text format or OpenMetrics with underscore or
UTF-8 escaping (what Prometheus asks for). Anything else raises `NotWrittenError`, and the
scrape is rendered the usual way. Family headers and target_info are written by
prometheus_client itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from otel_tokens._base.text import is_safe, safe_text

_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_OPENMETRICS_EOF = "# EOF\n"
#: Family headers remembered, at most (they come from metric names and descriptions).
_MAX_HEADERS = 4096


class NotWrittenError(Exception):
    """This collection or format is rendered the usual way instead."""


class Families:
    """Families in the shape prometheus_client's encoders read (`collect()`)."""

    def __init__(self, families: Iterable[Any]) -> None:
        self._families = list(families)

    def collect(self) -> list[Any]:
        return self._families


@dataclass
class _Family:
    """One family of a scrape: prometheus_client's family object (no samples) for its
    header, and its sample lines; `whole` families (target_info) are encoded as they are."""

    family: Any
    lines: list[str] = field(default_factory=list)
    whole: bool = False


@dataclass
class Body:
    """A collection's families, with the lines every format shares."""

    families: list[_Family]


def _escaped(value: str) -> str:
    """A label value as both encoders write it, made safe first as the endpoint does."""
    if not is_safe(value):
        value = safe_text(value)
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class ScrapeWriter:
    """Writes scrapes of one exporter's collections, remembering label text between them.

    Args:
        collector: the exporter's collector (`PrometheusMetricReader._collector`), for its
            options and its own name, scope and resource functions.
    """

    def __init__(self, collector: Any) -> None:
        from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_attribute
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        self._collector = collector
        self._map_unit: Callable[[str], str] = map_unit
        self._sanitize: Callable[[str], str] = sanitize_attribute
        self._number: Callable[[float], str] = floatToGoString
        self._kinds = (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
        self._names: dict[str, str] = {}
        self._label_names: dict[str, str] = {}
        self._bounds: dict[tuple[float, ...], list[str]] = {}
        self._headers: dict[tuple[Any, ...], str] = {}
        #: Label text by series, of the last scrape and of this one.
        self._labels: dict[Any, tuple[str, str, str]] = {}
        self._next_labels: dict[Any, tuple[str, str, str]] = {}

    def body(self, data: Any, target_info: Any | None) -> Body:
        """The families of `data` (a `MetricsData`), after `target_info` if it is given.

        Raises:
            NotWrittenError: something in `data` this writer does not write.
        """
        collector = self._collector
        families: dict[str, _Family] = {}
        if target_info is not None:
            families["target"] = _Family(target_info, whole=True)
        self._next_labels = {}
        for resource_metrics in data.resource_metrics:
            resource = collector._build_resource_attrs(resource_metrics.resource)
            for scope_metrics in resource_metrics.scope_metrics:
                scope = collector._build_scope_attrs(scope_metrics.scope)
                fixed = [(self._label_name(key), collector._check_value(value))
                         for key, value in chain(resource.items(), scope.items())]  # fmt: skip
                for metric in scope_metrics.metrics:
                    self._metric(metric, fixed, families)
        self._labels, self._next_labels = self._next_labels, {}
        return Body(list(families.values()))

    def encode(self, body: Body, encoder: Any) -> bytes:
        """`body` as `encoder` (one of prometheus_client's, as `choose_encoder` gives it)
        writes it.

        Raises:
            NotWrittenError: an encoder or an escaping this writer does not write.
        """
        how = _written_as(encoder)
        out: list[str] = []
        for family in body.families:
            if family.whole:
                out.append(self._encoded(encoder, family.family))
                continue
            out.append(self._header(how, encoder, family.family))
            out.extend(family.lines)
        if how[0] == "openmetrics":
            out.append(_OPENMETRICS_EOF)
        return "".join(out).encode("utf-8")

    def _encoded(self, encoder: Any, family: Any) -> str:
        text: str = encoder(Families([family])).decode("utf-8")
        return text.removesuffix(_OPENMETRICS_EOF)

    def _header(self, how: tuple[str, ...], encoder: Any, family: Any) -> str:
        key = (how, type(family), family.name, family.documentation, family.unit)
        header = self._headers.get(key)
        if header is None:
            if len(self._headers) >= _MAX_HEADERS:
                self._headers.clear()
            header = self._headers[key] = self._encoded(encoder, family)
        return header

    def _label_name(self, key: str) -> str:
        name = self._label_names.get(key)
        if name is None:
            name = self._sanitize(key)
            if not _LEGACY_NAME.match(name):
                raise NotWrittenError(f"label name {name!r}")
            if len(self._label_names) < _MAX_HEADERS:
                self._label_names[key] = name
        return name

    def _family(self, metric: Any, families: dict[str, _Family]) -> tuple[_Family, int]:
        """The family `metric` goes in (made if new, as the exporter does) and its kind:
        0 counter, 1 gauge, 2 histogram."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Gauge,
            Histogram,
            Sum,
        )

        data = metric.data
        if type(data) is Sum:
            cumulative = data.aggregation_temporality == AggregationTemporality.CUMULATIVE
            kind = 1 if not data.is_monotonic and cumulative else 0
        elif type(data) is Gauge:
            kind = 1
        elif type(data) is Histogram:
            kind = 2
        else:
            raise NotWrittenError(f"metric data {type(data).__name__}")
        name = self._names.get(metric.name)
        if name is None:
            name = self._collector._resolve_metric_name(metric.name)
            if len(self._names) < _MAX_HEADERS:
                self._names[metric.name] = name
        description = metric.description or ""
        unit = self._map_unit(metric.unit or "")
        factory = self._kinds[kind]
        family_id = "|".join((name, description, unit, factory.__name__))
        found = families.get(family_id)
        if found is None:
            made = factory(name=name, documentation=safe_text(description), labels=[], unit=unit)
            if not _LEGACY_NAME.match(made.name):
                raise NotWrittenError(f"metric name {made.name!r}")
            found = families[family_id] = _Family(made)
        return found, kind

    def _metric(
        self, metric: Any, fixed: list[tuple[str, str]], families: dict[str, _Family]
    ) -> None:
        family, kind = self._family(metric, families)
        points = metric.data.data_points
        shapes: dict[tuple[str, ...], None] = {}
        for point in points:
            shapes[tuple(point.attributes)] = None
        keys = {name for name, _ in fixed}
        for shape in shapes:
            keys.update(self._label_name(key) for key in shape)
        label_keys = tuple(sorted(keys))
        context = (family.family.name, label_keys, tuple(fixed))
        lines = family.lines
        number = self._number
        if kind != 2:
            sample = family.family.name + ("_total" if kind == 0 else "")
            for point in points:
                plain = self._labels_of(context, fixed, point.attributes)[0]
                value = number(point.value)
                lines.append(f"{sample}{{{plain}}} {value}\n" if plain else f"{sample} {value}\n")
            return
        name = family.family.name
        for point in points:
            plain, before, after = self._labels_of(context, fixed, point.attributes)
            bounds = point.explicit_bounds
            les = self._les(bounds)
            cumulative = 0
            for le, count in zip(les, point.bucket_counts, strict=False):
                cumulative += count
                lines.append(f"{name}_bucket{{{before}{le}{after}}} {number(cumulative)}\n")
            if bounds and float(f"{bounds[0]}") < 0:
                continue  # as prometheus_client: no count or sum with negative buckets
            braced = f"{{{plain}}}" if plain else ""
            lines.append(f"{name}_count{braced} {number(cumulative)}\n")
            lines.append(f"{name}_sum{braced} {number(point.sum)}\n")

    def _les(self, bounds: Any) -> list[str]:
        key = tuple(bounds)
        les = self._bounds.get(key)
        if les is None:
            les = [f'le="{_escaped(f"{bound}")}"' for bound in chain(bounds, ["+Inf"])]
            if len(self._bounds) < _MAX_HEADERS:
                self._bounds[key] = les
        return les

    def _labels_of(
        self, context: tuple[Any, ...], fixed: list[tuple[str, str]], attributes: Any
    ) -> tuple[str, str, str]:
        """A series' label text: all its labels, and those before and after `le`."""
        try:
            key: Any = (context, tuple(attributes.items()))
            found = self._labels.get(key)
        except TypeError:  # an unhashable value (a list): written every time
            key, found = None, None
        if found is None:
            found = self._written_labels(context[1], fixed, attributes)
        if key is not None:
            self._next_labels[key] = found
        return found

    def _written_labels(
        self, label_keys: tuple[str, ...], fixed: list[tuple[str, str]], attributes: Any
    ) -> tuple[str, str, str]:
        check = self._collector._check_value
        labels = dict(fixed)
        for key, value in attributes.items():
            labels[self._label_name(key)] = check(value)
        parts = [f'{key}="{_escaped(labels.get(key, ""))}"' for key in label_keys]
        before = [p for key, p in zip(label_keys, parts, strict=True) if key < "le"]
        after = [p for key, p in zip(label_keys, parts, strict=True) if key > "le"]
        return (
            ",".join(parts),
            "".join(part + "," for part in before),
            "".join("," + part for part in after),
        )


def _written_as(encoder: Any) -> tuple[str, ...]:
    """Which of prometheus_client's encoders `encoder` is, with its escaping and version.

    Raises:
        NotWrittenError: not one this module writes.
    """
    from prometheus_client import exposition
    from prometheus_client.openmetrics import exposition as openmetrics

    function = getattr(encoder, "func", encoder)
    options = dict(getattr(encoder, "keywords", None) or {})
    if getattr(encoder, "args", ()):
        raise NotWrittenError("an encoder given positional arguments")
    escaping = options.pop("escaping", openmetrics.UNDERSCORES)
    if escaping not in (openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8):
        raise NotWrittenError(f"escaping {escaping!r}")
    if function is exposition.generate_latest and not options:
        return ("text", escaping)
    if function is openmetrics.generate_latest and set(options) <= {"version"}:
        return ("openmetrics", escaping, str(options.get("version", "")))
    raise NotWrittenError(f"encoder {encoder!r}")
