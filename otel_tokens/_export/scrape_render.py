"""Render one collection for every scrape waiting on it: once per format and compression
asked for, and, when one series cannot be encoded, family by family without it."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable, Iterable
from typing import Any

from otel_tokens._base.text import is_safe, safe_text
from otel_tokens._base.warn import WarnOnce
from otel_tokens._export.scrape_http import Reply, Scrape, make_reply

_OPENMETRICS_EOF = b"# EOF\n"
#: An encoder of prometheus_client's exposition: families in, bytes out.
Encoder = Callable[[Any], bytes]


class _Families:
    """A collection's metric families, in the shape the encoders read (`collect()`)."""

    def __init__(self, families: Iterable[Any]) -> None:
        self._families = list(families)

    def collect(self) -> list[Any]:
        return self._families


class Renderer:
    """Collects `registry` and encodes it for the scrapes waiting on one collection.

    Args:
        registry: what to collect (prometheus_client's `collect()` shape).
        warn: warns once per kind of failure.
    """

    def __init__(self, registry: Any, warn: WarnOnce) -> None:
        self._registry = registry
        self._warn = warn

    def render(self, scrapes: list[Scrape]) -> list[tuple[int, Reply]]:
        """One collection, encoded once for each format and compression asked for."""
        try:
            families = _Families(_safe_families(self._registry.collect()))
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
                reply = replies[which] = self._encode(families, *which)
            answers.append((scrape.key, reply))
        return answers

    def _encode(self, families: _Families, accept: str, compress: bool) -> Reply:
        try:
            from prometheus_client.exposition import choose_encoder

            encoder, content_type = choose_encoder(accept)
            if not is_safe(content_type):  # it echoes a version the client sent
                encoder, content_type = choose_encoder("")
            body = self._encoded(encoder, families)
            headers = [("Content-Type", content_type)]
            if compress:
                body = gzip.compress(body, compresslevel=6)
                headers.append(("Content-Encoding", "gzip"))
        except Exception as exc:
            self._warn(("encode", type(exc).__name__), "otel_tokens: a scrape failed: %r", exc)
            return make_reply(500, f"encoding metrics failed: {type(exc).__name__}\n".encode())
        return make_reply(200, body, headers)

    def _encoded(self, encoder: Encoder, families: _Families) -> bytes:
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
                part = encoder(_Families([family]))
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
