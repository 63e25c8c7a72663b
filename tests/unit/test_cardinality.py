"""Label values are bounded: cut to a length, allow-listed, and capped per instrument."""

from __future__ import annotations

import gc
import os

import pytest

from otel_tokens import TokenTracker, Usage
from otel_tokens.testing import InMemoryMetrics


def usage(**changes: object) -> Usage:
    fields: dict[str, object] = {"provider": "openai", "model": "gpt-4o", "input_tokens": 10}
    fields.update(changes)
    return Usage(**fields)  # type: ignore[arg-type]


def test_long_label_values_are_cut_to_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    metrics = InMemoryMetrics(max_label_length=16)
    metrics.tracker.record(usage(scenario="s" * 1000))
    metrics.tracker.record(usage(scenario="s" * 2000))
    (point,) = metrics.points("llm.requests")
    assert point.attributes["llm.scenario"] == "s" * 16
    assert point.value == 2
    assert sum("cut to that length" in r.getMessage() for r in caplog.records) == 1


def test_the_team_is_a_label_bounded_like_the_tier() -> None:
    metrics = InMemoryMetrics(max_label_length=16)
    metrics.tracker.record(usage(team="search"))
    metrics.tracker.record(usage(team="t" * 500))
    with metrics.tracker.track(provider="openai", model="gpt-4o", team="search") as req:
        req.input_tokens = 5
    assert metrics.value("llm.requests", team="search") == 2
    assert metrics.value("llm.usage.input_tokens", team="search") == 15
    assert metrics.value("llm.requests", team="t" * 16) == 1
    assert metrics.value("llm.requests") == 3


def test_models_outside_the_allow_list_are_other() -> None:
    metrics = InMemoryMetrics(models=["gpt-4o"])
    metrics.tracker.record(usage(model="gpt-4o"))
    metrics.tracker.record(usage(model="ft:gpt-4o:acme:1", request_model="ft:gpt-4o:acme:1"))
    metrics.tracker.record(usage(model="ft:gpt-4o:acme:2", request_model="gpt-4o"))
    assert metrics.value("llm.requests", model="gpt-4o") == 1
    assert metrics.value("llm.requests", model="other", request_model="other") == 1
    assert metrics.value("llm.requests", model="other", request_model="gpt-4o") == 1


def test_series_cap_sends_new_attribute_sets_to_one_counted_overflow_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = InMemoryMetrics(max_series=5)
    for i in range(20):
        metrics.tracker.record(usage(user_tier=f"tier-{i}", latency_s=0.1, output_tokens=3))
    requests = metrics.points("llm.requests")
    assert len(requests) == 6  # five admitted sets and the overflow series
    overflow = [p for p in requests if p.attributes.get("otel.metric.overflow") is True]
    assert len(overflow) == 1 and overflow[0].value == 15
    assert metrics.value("llm.usage.input_tokens") == 200  # nothing lost, only merged
    assert metrics.value("otel_tokens.series.overflow") == 15
    tokens = metrics.points("gen_ai.client.token.usage", {"otel.metric.overflow": True})
    assert sorted(p.attributes["gen_ai.token.type"] for p in tokens) == ["input", "output"]
    for name in ("gen_ai.client.operation.duration", "llm.usage.output_tokens"):
        assert len(metrics.points(name)) == 6, name
    assert sum("series cap" in r.getMessage() for r in caplog.records) == 1


def test_admitted_series_keep_counting_after_the_cap_is_reached() -> None:
    metrics = InMemoryMetrics(max_series=2)
    for tier in ("a", "b", "c", "d", "a", "b"):
        metrics.tracker.record(usage(user_tier=tier))
    assert metrics.value("llm.requests", user_tier="a") == 2
    assert metrics.value("llm.requests", user_tier="b") == 2
    assert metrics.value("llm.requests", {"otel.metric.overflow": True}) == 2


def test_largest_series_cap_keeps_every_instrument_inside_the_sdk_limit() -> None:
    metrics = InMemoryMetrics(max_series=991)
    for i in range(1_100):  # past the cap, from more providers than keep an overflow series
        provider = "openai" if i < 991 else f"provider-{i % 12}"
        metrics.tracker.record(usage(provider=provider, user_tier=f"t{i}", output_tokens=1))
    tokens = metrics.points("gen_ai.client.token.usage")
    # 991 sets, 8 overflow series that keep their provider and one for the rest, two each:
    assert len(tokens) == 2 * 1000
    assert metrics.value("otel_tokens.series.overflow") == 109  # counted by the tracker
    overflow = [p for p in tokens if p.attributes.get("otel.metric.overflow")]
    assert all("gen_ai.token.type" in p.attributes for p in overflow)  # not the SDK's overflow


def test_overflow_is_still_warned_after_a_flood_of_unpriced_model_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from otel_tokens import ModelPrice, PriceTable

    metrics = InMemoryMetrics(max_series=200, prices=PriceTable({"m": ModelPrice(1, 1)}))
    for i in range(1_500):
        metrics.tracker.record(usage(model=f"ft:client-chosen-{i}-" + "x" * 500))
    metrics.tracker.record(usage(input_tokens=-1))
    metrics.metrics()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("has no price" in m for m in messages) == 64  # bounded, then silent
    assert sum("series cap" in m for m in messages) == 1
    assert sum("dropped a usage record" in m for m in messages) == 1
    assert max(len(m) for m in messages) < 1000  # long model names are cut in the log too


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_memory_stays_flat_under_a_million_distinct_tiers_and_models() -> None:
    metrics = InMemoryMetrics(max_series=100)
    tracker = metrics.tracker

    def throw(start: int, stop: int) -> None:
        for i in range(start, stop):
            if i % 2:
                tracker.record(usage(user_tier=f"tier-{i}"))
            else:
                tracker.record(usage(model=f"model-{i}"))
            if i % 10_000 == 0:
                metrics.metrics()  # a collection, as an exporter makes; within the queue's size
        metrics.metrics()

    throw(0, 200_000)  # past the cap and every cache's bound
    gc.collect()
    before = _resident_bytes()
    throw(200_000, 1_000_000)
    gc.collect()
    grown = _resident_bytes() - before
    assert metrics.value("llm.requests") == 1_000_000
    assert len(metrics.points("llm.requests")) == 101  # the cap and the overflow series
    assert metrics.value("otel_tokens.records.dropped") == 0
    assert grown < 4 * 1024 * 1024, f"resident memory grew by {grown:,} bytes"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"max_series": 0}, "max_series must be an int from 1 to 991"),
        ({"max_series": 992}, "the SDK keeps 2000 series per instrument"),
        ({"max_series": "10"}, "max_series must be an int"),
        ({"max_label_length": 2}, "max_label_length must be an int from 8 to 1024, got 2"),
        ({"models": ["gpt-4o", ""]}, "models must be non-empty str model names"),
        ({"opt_in_attributes": ["llm.user.id"]}, "unknown opt-in attributes ['llm.user.id']"),
        ({"prices": {"gpt-4o": 1}}, "prices must be a PriceTable or a price file path, got dict"),
    ],
)
def test_bad_settings_raise_at_setup(options: dict[str, object], words: str) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    with pytest.raises(ValueError, match=None) as raised:
        TokenTracker(MeterProvider().get_meter("x"), **options)  # type: ignore[arg-type]
    assert words in str(raised.value)


def test_a_second_tracker_on_the_same_meter_is_refused() -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    meter = MeterProvider().get_meter("gateway")
    TokenTracker(meter)
    with pytest.raises(ValueError, match="already has a TokenTracker"):
        TokenTracker(meter)
