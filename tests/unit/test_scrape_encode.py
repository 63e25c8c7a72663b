"""The endpoint's own writer (`scrape_encode`) against prometheus_client's rendering of the
OpenTelemetry exporter's families: the same bytes for every format, hostile labels and
shapes, and the usual rendering wherever it does not write."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from otel_tokens._base.text import safe_text
from otel_tokens._base.warn import WarnOnce
from otel_tokens._export.scrape_encode import ScrapeWriter
from otel_tokens._export.scrape_http import Scrape
from otel_tokens._export.scrape_render import Renderer

#: What clients send: nothing, OpenMetrics as Prometheus asks, the text format 1.0.0, and
#: escapings the writer leaves to prometheus_client.
ACCEPTS = [
    "",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;q=0.4",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0;escaping=values",
]
HOSTILE = ['say "hi"', "back\\slash", "new\nline", "lone \ud800", "nul\x00", "é ☃ 🦀", "", " "]


def _endpoint(
    views: tuple[View, ...] = (), **options: Any
) -> tuple[MeterProvider, Renderer, Renderer]:
    """A provider with a Prometheus reader, and two renderers of its registry: the writer's
    (given the reader) and the usual one."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry, **options)
    resource = Resource({"service.name": "gw", "host.name": 'h"1', "deployment": "x\ny"})
    provider = MeterProvider(metric_readers=[reader], resource=resource, views=list(views))
    return provider, Renderer(registry, WarnOnce(), reader), Renderer(registry, WarnOnce())


def _bodies(renderer: Renderer, accept: str) -> bytes:
    [(_, reply)] = renderer.render([Scrape(1, accept, False)])
    assert reply.status == 200, reply.body
    return reply.body


def _record_everything(provider: MeterProvider, seed: int) -> None:
    """Every kind of instrument, on two meters, with hostile label values, keys that
    sanitise alike, and points missing some keys."""
    rng = random.Random(seed)
    first = provider.get_meter("gw", "1.0", attributes={"team": "a\\b"})
    second = provider.get_meter("other")
    other = second.create_counter("llm.other")
    counter = first.create_counter("llm.requests", unit="{request}", description='All "of" them')
    floats = first.create_counter("llm.cost", unit="USD", description="Back\\slash\nnew line")
    level = first.create_up_down_counter("llm.in_flight", unit="{request}")
    tokens = first.create_histogram("gen_ai.client.token.usage", unit="{token}")
    latency = first.create_histogram("llm.latency", unit="s", description="")
    signed = first.create_histogram("llm.signed")
    first.create_observable_gauge(
        "llm.limit",
        callbacks=[lambda options: [Observation(7.5, {"a.b": "dot"}), Observation(-0.0)]],
    )
    for _ in range(300):
        value = rng.choice(HOSTILE)
        attributes: dict[str, Any] = {
            "gen_ai.request.model": rng.choice(["gpt-4o", value, "m-" + value]),
            "llm.user.tier": rng.choice(["free", "pro"]),
        }
        if rng.random() < 0.3:
            attributes["a.b"] = value  # sanitises like a_b below
        if rng.random() < 0.3:
            attributes["a_b"] = rng.choice([True, 3, 2.5, ("x", "y")])
        if rng.random() < 0.2:
            attributes["le"] = "mine"  # a histogram's own bucket label name
        counter.add(rng.randint(0, 5), attributes)
        other.add(1, attributes)  # the same attributes under another scope's labels
        floats.add(rng.random() / 7, attributes)
        level.add(rng.randint(-3, 3), attributes)
        tokens.record(rng.randint(0, 3_000_000), attributes)
        latency.record(rng.uniform(0, 100), attributes)
        signed.record(rng.uniform(0, 10), attributes)


_NEGATIVE = View(
    instrument_name="llm.signed", aggregation=ExplicitBucketHistogramAggregation([-5, 0, 5])
)


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"disable_target_info": True, "scope_info_enabled": False},
        {"prefix": "gw", "resource_attribute_filter": lambda key: key != "service.name"},
    ],
    ids=["defaults", "no_info", "prefix_and_resource"],
)
def test_every_format_is_written_byte_for_byte_as_prometheus_client_writes_it(
    accept: str, options: dict[str, Any]
) -> None:
    provider, written, usual = _endpoint((_NEGATIVE,), **options)
    for seed in (1, 2):  # the second scrape from label text kept by the first
        _record_everything(provider, seed)
        ours = _bodies(written, accept)
        assert ours == _bodies(usual, accept)
    assert written._writer is not None and written._writer._labels  # it did write
    provider.shutdown()


def test_one_name_on_two_meters_is_one_family_whose_series_keep_their_own_labels() -> None:
    provider, written, usual = _endpoint()
    provider.get_meter("gw").create_counter("llm.requests").add(1, {"model": "a", "tier": "b"})
    provider.get_meter("other").create_counter("llm.requests").add(2, {"kind": "c"})
    families = list(text_string_to_metric_families(_bodies(written, "").decode()))
    [requests] = [family for family in families if family.name == "llm_requests"]
    labels = {s.value: {k: v for k, v in s.labels.items() if not k.startswith("otel_")}
              for s in requests.samples}  # fmt: skip
    assert labels == {1.0: {"model": "a", "tier": "b"}, 2.0: {"kind": "c"}}
    # The exporter's families label the second meter's series with the first one's label
    # names (zipped with its own values): there the writer is right, not identical.
    assert b'llm_requests_total{model="c",' in _bodies(usual, "")
    provider.shutdown()


def test_what_it_writes_parses_back_to_the_values_recorded() -> None:
    provider, written, _ = _endpoint()
    meter = provider.get_meter("gw")
    counter = meter.create_counter("llm.requests")
    histogram = meter.create_histogram("llm.latency", unit="s")
    for n, value in enumerate(HOSTILE):
        counter.add(n + 1, {"model": value})
        histogram.record(n / 2, {"model": value})
    text = _bodies(written, "").decode()
    openmetrics = _bodies(written, ACCEPTS[1]).decode()
    for families in (text_string_to_metric_families(text), openmetrics_families(openmetrics)):
        parsed = {(s.name, s.labels.get("model"), s.labels.get("le")): s.value
                  for family in families for s in family.samples}  # fmt: skip
        for n, value in enumerate(HOSTILE):
            model = safe_text(value)
            assert parsed[("llm_requests_total", model, None)] == n + 1
            assert parsed[("llm_latency_seconds_count", model, None)] == 1
            assert parsed[("llm_latency_seconds_sum", model, None)] == n / 2
            assert parsed[("llm_latency_seconds_bucket", model, "+Inf")] == 1
    provider.shutdown()


def test_label_text_is_kept_only_for_the_series_of_the_last_scrape() -> None:
    provider, written, _ = _endpoint()
    counter = provider.get_meter("gw").create_counter("llm.requests")
    for n in range(500):
        counter.add(1, {"model": f"m{n}"})
    _bodies(written, "")
    writer = written._writer
    assert writer is not None
    kept = len(writer._labels)
    assert kept >= 500
    # A reader whose series are gone (another collection): what is kept follows it.
    provider2, written2, _ = _endpoint()
    written2._writer = writer
    provider2.get_meter("gw").create_counter("llm.requests").add(1, {"model": "m0"})
    _bodies(written2, "")
    assert len(writer._labels) == 1
    provider.shutdown()
    provider2.shutdown()


def test_names_it_does_not_write_are_rendered_the_usual_way() -> None:
    provider, written, usual = _endpoint(prefix="gw:eu")  # a colon: legacy, and kept
    _record_everything(provider, 3)
    for accept in ACCEPTS:
        assert _bodies(written, accept) == _bodies(usual, accept)
    assert written._writer is not None and not written._writer._labels  # it did not write
    provider.shutdown()


def test_data_the_exporter_cannot_translate_fails_the_same_way() -> None:
    exponential = View(
        instrument_name="llm.latency", aggregation=ExponentialBucketHistogramAggregation()
    )
    provider, written, usual = _endpoint((exponential,))
    _record_everything(provider, 3)
    ours, theirs = (r.render([Scrape(1, "", False)])[0][1] for r in (written, usual))
    assert ours == theirs and ours.status == 500  # the exporter reads .value off every point
    provider.shutdown()


def _failing(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(ScrapeWriter, method, fail)


@pytest.mark.parametrize("method", ["body", "encode"])
def test_a_writer_that_fails_leaves_the_scrape_to_prometheus_client_and_warns_once(
    method: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    provider, written, usual = _endpoint()
    _record_everything(provider, 4)
    _failing(monkeypatch, method)
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        for _ in range(3):
            assert _bodies(written, "") == _bodies(usual, "")
    said = [r.getMessage() for r in caplog.records if "writing a scrape directly" in r.message]
    assert len(said) == 1 and "a bug in the writer" in said[0]
    provider.shutdown()


def test_a_collection_nobody_scraped_is_not_served_twice() -> None:
    provider, written, _ = _endpoint()
    counter = provider.get_meter("gw").create_counter("llm.requests")
    counter.add(1)
    assert written._reader is not None
    written._reader.collect()  # queued by someone else's collect(), never scraped
    counter.add(1)
    body = _bodies(written, "").decode()
    lines = [line for line in body.splitlines() if line.startswith("llm_requests_total{")]
    assert len(lines) == 1 and lines[0].endswith("} 2.0")
    provider.shutdown()
