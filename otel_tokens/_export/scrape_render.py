"""Render one collection for every scrape waiting on it: once per format and compression
asked for, and, when one series cannot be encoded, family by family without it.

With the exporter's reader at hand, a collection is written by `scrape_encode` (the same
bytes, in about a sixth of the time); without it, or for what that writer does not write,
as prometheus_client writes the exporter's families.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable, Iterable
from typing import Any

from otel_tokens._base.text import is_safe, safe_text
from otel_tokens._base.warn import WarnOnce
from otel_tokens._export.scrape_encode import Body, Families, NotWrittenError, ScrapeWriter
from otel_tokens._export.scrape_http import Reply, Scrape, make_reply

_OPENMETRICS_EOF = b"# EOF\n"
#: An encoder of prometheus_client's exposition: families in, bytes out.
Encoder = Callable[[Any], bytes]
#: What the exporter's collector needs to have for its collections to be written directly.
_COLLECTOR_PARTS = ("_metrics_datas", "_disable_target_info", "_target_info",
                    "_create_info_metric", "_translate_to_prometheus", "_build_resource_attrs",
                    "_build_scope_attrs", "_check_value", "_resolve_metric_name")  # fmt: skip


class _Collection:
    """One collection: the exporter's families, made when first asked for, and, when the
    writer could take it, its `body`."""

    def __init__(self, families: Callable[[], list[Any]], body: Body | None = None) -> None:
        self._make_families = families
        self._families: Families | None = None
        self.body = body

    def families(self) -> Families:
        if self._families is None:
            self._families = Families(_safe_families(self._make_families()))
        return self._families


class Renderer:
    """Collects `registry` and encodes it for the scrapes waiting on one collection.

    Args:
        registry: what to collect (prometheus_client's `collect()` shape).
        warn: warns once per kind of failure.
        reader: the OpenTelemetry `PrometheusMetricReader` registered in `registry`, if
            its collections may be written directly.
    """

    def __init__(self, registry: Any, warn: WarnOnce, reader: Any = None) -> None:
        self._registry = registry
        self._warn = warn
        collector = getattr(reader, "_collector", None)
        self._reader = reader
        self._writer: ScrapeWriter | None = None
        if reader is not None and all(hasattr(collector, part) for part in _COLLECTOR_PARTS):
            with contextlib.suppress(ImportError):
                self._writer = ScrapeWriter(collector)

    def render(self, scrapes: list[Scrape]) -> list[tuple[int, Reply]]:
        """One collection, encoded once for each format and compression asked for."""
        try:
            collection = self._collect()
        except Exception as exc:
            self._warn(
                ("collect", type(exc).__name__),
                "otel_tokens: collecting metrics for a scrape failed: %r",
                exc,
                exc_info=True,
            )
            failed = make_reply(500, f"collecting metrics failed: {type(exc).__name__}\n".encode())
            return [(scrape.key, failed) for scrape in scrapes]
        replies: dict[tuple[str, bool], Reply] = {}
        answers = []
        for scrape in scrapes:
            which = (scrape.accept, scrape.gzip)
            reply = replies.get(which)
            if reply is None:
                reply = replies[which] = self._encode(collection, *which)
            answers.append((scrape.key, reply))
        return answers

    def _collect(self) -> _Collection:
        """Collect once: through the reader when the writer can write what it collected."""
        writer = self._writer
        if writer is None:
            collected = list(self._registry.collect())
            return _Collection(lambda: collected)
        collector = self._reader._collector
        collector._metrics_datas.clear()  # left by a collection nobody scraped: older
        self._reader.collect()
        datas = list(collector._metrics_datas)
        collector._metrics_datas.clear()
        data = datas[-1] if datas else None  # cumulative: the last one has everything

        def families() -> list[Any]:
            found: dict[str, Any] = {}
            if data is not None:
                target = _target_info(collector, data)
                if target is not None:
                    found["target"] = target
                collector._translate_to_prometheus(data, found)
            return list(found.values())

        try:
            target = None if data is None else _target_info(collector, data)
            if target is not None:
                _safe_families([target])  # its labels made encodable, as every family's
            if data is not None:
                return _Collection(families, writer.body(data, target))
        except NotWrittenError:
            pass
        except Exception as exc:
            self._writer_failed(exc)
        translated = families()  # now, so that a failure fails the collection, as before
        return _Collection(lambda: translated)

    def _writer_failed(self, exc: Exception) -> None:
        self._warn(
            ("writer", type(exc).__name__),
            "otel_tokens: writing a scrape directly failed (%r); it is written by "
            "prometheus_client instead, slower",
            exc,
            exc_info=True,
        )

    def _encode(self, collection: _Collection, accept: str, compress: bool) -> Reply:
        try:
            from prometheus_client.exposition import choose_encoder

            encoder, content_type = choose_encoder(accept)
            if not is_safe(content_type):  # it echoes a version the client sent
                encoder, content_type = choose_encoder("")
            body = self._written(encoder, collection)
            headers = [("Content-Type", content_type)]
            if compress:
                body = gzip.compress(body, compresslevel=6)
                headers.append(("Content-Encoding", "gzip"))
        except Exception as exc:
            self._warn(("encode", type(exc).__name__), "otel_tokens: a scrape failed: %r", exc)
            return make_reply(500, f"encoding metrics failed: {type(exc).__name__}\n".encode())
        return make_reply(200, body, headers)

    def _written(self, encoder: Encoder, collection: _Collection) -> bytes:
        if collection.body is not None and self._writer is not None:
            try:
                return self._writer.encode(collection.body, encoder)
            except NotWrittenError:
                pass
            except Exception as exc:
                self._writer_failed(exc)
        return self._encoded(encoder, collection.families())

    def _encoded(self, encoder: Encoder, families: Families) -> bytes:
        """`families` encoded; if that fails, each family on its own, leaving out those
        that cannot be encoded (warned once per family)."""
        try:
            return encoder(families)
        except Exception as whole:
            first_error = whole
        parts: list[bytes] = []
        ends_with_eof = False
        for family in families.collect():
            try:
                part = encoder(Families([family]))
            except Exception as exc:
                self._warn(
                    ("family", getattr(family, "name", "")),
                    "otel_tokens: metric %r cannot be encoded for Prometheus (%r) and is left "
                    "out of scrapes",
                    getattr(family, "name", "?"),
                    exc,
                )
                continue
            if part.endswith(_OPENMETRICS_EOF):
                part, ends_with_eof = part[: -len(_OPENMETRICS_EOF)], True
            parts.append(part)
        if not parts and not ends_with_eof:
            raise first_error
        return b"".join(parts) + (_OPENMETRICS_EOF if ends_with_eof else b"")


def _safe_families(families: Iterable[Any]) -> list[Any]:
    """The families with every label value and description made encodable (the tracker
    makes its own labels safe already; this covers any other source of a series)."""
    safe = []
    for family in families:
        with contextlib.suppress(Exception):  # a family without the usual shape: as it is
            family.documentation = safe_text(family.documentation)
            family.samples = [
                sample._replace(labels={k: safe_text(v) for k, v in sample.labels.items()})
                if any(not is_safe(v) for v in sample.labels.values())
                else sample
                for sample in family.samples
            ]
        safe.append(family)
    return safe


def _target_info(collector: Any, data: Any) -> Any:
    """The exporter's target_info family, made from `data`'s resources the first time, as
    the exporter makes it; None when it is switched off."""
    if collector._disable_target_info:
        return None
    if collector._target_info is None:
        attributes: dict[str, Any] = {}
        for resource_metrics in data.resource_metrics:
            attributes = {**attributes, **resource_metrics.resource.attributes}
        collector._target_info = collector._create_info_metric(
            "target", "Target metadata", attributes
        )
    return collector._target_info
