"""What the prompt cache saved and what it cost extra, per model, from the bundled prices:
every figure here is worked out by hand in the README's "Cache economics" section."""

from __future__ import annotations

import pytest

from otel_tokens import ModelPrice, PriceTable, Usage
from otel_tokens.testing import InMemoryMetrics

SAVINGS = "llm.usage.cache_savings"
PREMIUM = "llm.usage.cache_write_premium"


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> InMemoryMetrics:
    monkeypatch.delenv("OTEL_TOKENS_PRICE_FILE", raising=False)
    return InMemoryMetrics()  # the bundled price table


def _worth(metrics: InMemoryMetrics, model: str) -> tuple[float, float]:
    return metrics.value(SAVINGS, model=model), metrics.value(PREMIUM, model=model)


def test_anthropic_reads_save_and_5m_and_1h_writes_cost_extra(metrics: InMemoryMetrics) -> None:
    # claude-sonnet-4-5: input $3, cache read $0.30, 5-minute write $3.75, 1-hour write $6.
    metrics.tracker.record(Usage(
        provider="anthropic", model="claude-sonnet-4-5", input_tokens=50_000,
        cache_read_tokens=40_000, cache_write_tokens=8_000, cache_write_1h_tokens=2_000,
        output_tokens=500,
    ))  # fmt: skip
    saved, premium = _worth(metrics, "claude-sonnet-4-5")
    assert saved == pytest.approx(0.108)  # 40,000 x (3 - 0.30) / 1e6
    assert premium == pytest.approx(0.0105)  # 6,000 x 0.75 / 1e6 + 2,000 x 3 / 1e6
    assert saved - premium == pytest.approx(0.0975)


def test_writes_that_are_never_read_make_the_net_negative(metrics: InMemoryMetrics) -> None:
    metrics.tracker.record(Usage(
        provider="anthropic", model="claude-sonnet-4-5", input_tokens=10_500,
        cache_write_tokens=10_000, output_tokens=20,
    ))  # fmt: skip
    saved, premium = _worth(metrics, "claude-sonnet-4-5")
    assert (saved, premium) == (0, pytest.approx(0.0075))  # 10,000 x (3.75 - 3) / 1e6


def test_openai_writes_are_free_so_only_reads_count(metrics: InMemoryMetrics) -> None:
    # gpt-4.1: input $2, cached input $0.50; a cache write is billed at the input price.
    metrics.tracker.record(Usage(
        provider="openai", model="gpt-4.1", input_tokens=10_000, cache_read_tokens=8_192,
        output_tokens=100,
    ))  # fmt: skip
    metrics.tracker.record(Usage(
        provider="openai", model="gpt-4.1", input_tokens=3_000, cache_write_tokens=2_048,
        output_tokens=100,
    ))  # fmt: skip
    saved, premium = _worth(metrics, "gpt-4.1")
    assert saved == pytest.approx(0.012288)  # 8,192 x (2 - 0.50) / 1e6
    assert premium == 0


def test_gemini_cached_content_saves_its_discount(metrics: InMemoryMetrics) -> None:
    # gemini-2.5-pro (up to 200k input): input $1.25, cached content $0.125.
    metrics.tracker.record(Usage(
        provider="gcp.gemini", model="gemini-2.5-pro", input_tokens=100_000,
        cache_read_tokens=80_000, output_tokens=1_000,
    ))  # fmt: skip
    assert _worth(metrics, "gemini-2.5-pro") == (pytest.approx(0.09), 0)  # 80,000 x 1.125 / 1e6


def test_every_priced_series_has_both_counters_so_their_difference_matches() -> None:
    prices = PriceTable({"m": ModelPrice(input=1, output=1)})
    metrics = InMemoryMetrics(prices=prices)
    metrics.tracker.record(Usage(provider="p", model="m", input_tokens=10))  # no cache at all
    metrics.tracker.record(Usage(provider="p", model="unpriced", input_tokens=10))
    for name in (SAVINGS, PREMIUM):
        (point,) = metrics.points(name)  # none on the unpriced model: never a silent $0
        assert point.attributes["gen_ai.response.model"] == "m"  # type: ignore[index]
        assert point.value == 0  # type: ignore[union-attr]


def test_a_write_priced_below_input_counts_as_a_saving() -> None:
    prices = PriceTable({"m": ModelPrice(input=4, output=1, cache_read=1, cache_write=3)})
    metrics = InMemoryMetrics(prices=prices)
    metrics.tracker.record(Usage(
        provider="p", model="m", input_tokens=3_000_000, cache_read_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    ))  # fmt: skip
    assert _worth(metrics, "m") == (pytest.approx(3 + 1), 0)  # reads save $3, writes $1
