"""Cost arithmetic, checked against sums worked out by hand."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from otel_tokens import ModelPrice, PriceTable, Usage

TABLE = PriceTable(
    {
        # $3 input, $0.30 cache read, $3.75 cache write, $15 output per million tokens.
        "claude-sonnet-4-5": ModelPrice(
            input="3", output="15", cache_read="0.30", cache_write="3.75"
        ),
        # $1.10 input, $0.55 cache read, $4.40 output; reasoning billed as output.
        "o3-mini": ModelPrice(input="1.10", output="4.40", cache_read="0.55"),
        "priced-reasoning": ModelPrice(input=1, output=2, reasoning=8),
        "gpt-4o-mini": ModelPrice(input=0.15, output=0.6),
    }
)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # 2 000*3 + 40 000*0.30 + 8 000*3.75 + 1 200*15 = 6 000+12 000+30 000+18 000 = 66 000 /1M
        (Usage(provider="anthropic", model="claude-sonnet-4-5", input_tokens=50_000,
               cache_read_tokens=40_000, cache_write_tokens=8_000, output_tokens=1_200),
         Decimal("0.066")),
        # 1 000*1.10 + 3 000*0.55 + 500*4.40 (reasoning inside output) = 1 100+1 650+2 200 /1M
        (Usage(provider="openai", model="o3-mini", input_tokens=4_000, cache_read_tokens=3_000,
               output_tokens=500, reasoning_tokens=400), Decimal("0.00495")),
        # 10*1 + 30*2 + 70*8 = 10+60+560 = 630 /1M
        (Usage(provider="x", model="priced-reasoning", input_tokens=10, output_tokens=100,
               reasoning_tokens=70), Decimal("0.00063")),
        # one token at $0.15 per million: 1.5e-7 exactly, no float residue
        (Usage(provider="openai", model="gpt-4o-mini", input_tokens=1), Decimal("0.00000015")),
        (Usage(provider="openai", model="gpt-4o-mini"), Decimal(0)),
    ],
)  # fmt: skip
def test_cost_matches_the_hand_computed_sum(usage: Usage, expected: Decimal) -> None:
    assert TABLE.cost_usd(usage) == expected


def test_price_is_found_by_request_model_when_the_response_model_is_a_snapshot() -> None:
    usage = Usage(provider="openai", model="gpt-4o-mini-2024-07-18", request_model="gpt-4o-mini",
                  input_tokens=1_000_000)  # fmt: skip
    assert TABLE.cost_usd(usage) == Decimal("0.15")


def test_a_different_model_chosen_by_a_router_is_not_priced_as_the_requested_one() -> None:
    usage = Usage(provider="openai", model="mystery-model", request_model="gpt-4o-mini",
                  input_tokens=1_000)  # fmt: skip
    assert TABLE.cost_usd(usage) is None


def test_unknown_model_has_no_price_rather_than_zero() -> None:
    assert TABLE.cost_usd(Usage(provider="x", model="unknown", input_tokens=5)) is None


def test_a_million_tiny_costs_sum_without_drift() -> None:
    one = TABLE.cost_pico(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1))
    assert one is not None
    assert Decimal(one * 1_000_000) / 10**12 == Decimal("0.15")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"input": "-1", "output": "1"}, "ModelPrice.input must be a finite price >= 0"),
        (
            {"input": "abc", "output": "1"},
            "ModelPrice.input must be a number of USD per million tokens, got 'abc'",
        ),
        ({"input": "1", "output": "nan"}, "ModelPrice.output must be a finite price"),
        ({"input": "0.0000001", "output": "1"}, "more than 6 decimals"),
        ({"input": True, "output": "1"}, "got True"),
        ({"input": "1e30", "output": "1"}, "must be at most 1,000,000 USD per million tokens"),
    ],
)
def test_bad_prices_raise_at_setup(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=None) as raised:
        ModelPrice(**kwargs)  # type: ignore[arg-type]
    assert words in str(raised.value)


def test_bad_table_raises_at_setup() -> None:
    with pytest.raises(ValueError, match="PriceTable\\['m'\\] must be a ModelPrice"):
        PriceTable({"m": {"input": 1}})  # type: ignore[dict-item]


def test_a_price_applies_from_its_effective_day_and_the_first_covers_earlier_days() -> None:
    from datetime import date

    table = PriceTable({"o3": [ModelPrice(10, 40, effective="2025-04-16"),
                               ModelPrice(2, 8, effective=date(2025, 6, 10))]})  # fmt: skip
    usage = Usage(provider="openai", model="o3", input_tokens=1_000_000)
    assert table.cost_usd(usage, on=date(2025, 6, 9)) == Decimal(10)
    assert table.cost_usd(usage, on=date(2025, 6, 10)) == Decimal(2)
    assert table.cost_usd(usage, on=date(2024, 1, 1)) == Decimal(10)
    assert table.cost_usd(usage) == Decimal(2)  # today


def test_long_context_tier_prices_every_token_of_a_request_above_it() -> None:
    tiers = [
        ModelPrice(3, 15, cache_read="0.30"),
        ModelPrice(6, "22.50", cache_read="0.60", above_input_tokens=200_000),
    ]
    table = PriceTable({"s": tiers})
    at_limit = Usage(provider="a", model="s", input_tokens=200_000, output_tokens=1_000)
    above = Usage(provider="a", model="s", input_tokens=200_001, cache_read_tokens=100_000,
                  output_tokens=1_000)  # fmt: skip
    # 200 000*3 + 1 000*15 = 615 000 per million
    assert table.cost_usd(at_limit) == Decimal("0.615")
    # 100 001*6 + 100 000*0.60 + 1 000*22.50 = 600 006 + 60 000 + 22 500 = 682 506 per million
    assert table.cost_usd(above) == Decimal("0.682506")


def test_one_hour_cache_writes_have_their_own_price() -> None:
    table = PriceTable({"c": ModelPrice(3, 15, cache_write="3.75", cache_write_1h=6)})
    usage = Usage(provider="anthropic", model="c", input_tokens=3_000, cache_write_tokens=3_000,
                  cache_write_1h_tokens=1_000)  # fmt: skip
    # 2 000*3.75 + 1 000*6 = 13 500 per million
    assert table.cost_usd(usage) == Decimal("0.0135")


def test_a_dated_snapshot_is_priced_as_its_model() -> None:
    table = PriceTable({"claude-sonnet-4-5": ModelPrice(3, 15), "gpt-4o": ModelPrice(2.5, 10)})
    for model in ("claude-sonnet-4-5-20250929", "gpt-4o-2024-08-06"):
        assert table.cost_usd(Usage(provider="x", model=model, input_tokens=10**6)) is not None
    assert table.cost_usd(Usage(provider="x", model="gpt-4o-mini", input_tokens=1)) is None


def test_the_bundled_table_loads_and_prices_known_models() -> None:
    table = PriceTable.bundled()
    assert len(table) > 30
    usage = Usage(provider="openai", model="gpt-4o-mini", input_tokens=1_000_000,
                  cache_read_tokens=400_000, output_tokens=1_000_000)  # fmt: skip
    # 600 000*0.15 + 400 000*0.075 + 1 000 000*0.60 = 90 000 + 30 000 + 600 000 per million
    assert table.cost_usd(usage) == Decimal("0.72")


ROW = '"model": "m", "input": 1, "output": 1'
BAD_FILES = [
    ('{"prices": [{"model": "m", "input": 1}]}',
     "row 0 (m): 'output' (USD per million tokens) is required"),
    ('{"prices": [{' + ROW + ', "cached": 1}]}', "unknown fields ['cached']"),
    ('{"prices": [{"model": "m", "input": "x", "output": 1}]}',
     "ModelPrice.input must be a number"),
    ('{"prices": [{' + ROW + ', "effective": "June"}]}', "ModelPrice.effective must be a date"),
    ('{"prices": {}}', "a 'prices' list of rows"),
    ('{"version": 2, "prices": []}', "version 2 is not supported"),
    ("{not json", "is not valid JSON"),
    ('{"prices": [{' + ROW + ', "above_input_tokens": 5}]}', "no base price"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "words"), BAD_FILES)
def test_bad_price_files_name_the_file_row_and_field(tmp_path: Any, text: str, words: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        PriceTable.from_file(path)
    assert words in str(raised.value)
    assert "prices.json" in str(raised.value)


def test_a_missing_price_file_says_so(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="cannot read price file"):
        PriceTable.from_file(tmp_path / "nope.yaml")


def test_tracker_reads_the_price_file_named_by_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_tokens.testing import InMemoryMetrics

    path = tmp_path / "prices.json"
    path.write_text('{"prices": [{"model": "house-model", "input": "1", "output": "2"}]}')
    monkeypatch.setenv("OTEL_TOKENS_PRICE_FILE", str(path))
    metrics = InMemoryMetrics()
    metrics.tracker.record(Usage(provider="x", model="house-model", input_tokens=10**6))
    metrics.tracker.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=10**6))
    assert metrics.value("llm.usage.cost", model="house-model") == 1.0
    assert metrics.value("llm.usage.cost", model="gpt-4o-mini") == 0.15  # bundled, kept


def test_every_bundled_row_names_its_source_and_the_day_it_took_effect() -> None:
    import json
    from datetime import date
    from importlib import resources

    rows = json.loads(resources.files("otel_tokens").joinpath("prices.json").read_text())["prices"]
    assert len(rows) > 50
    for row in rows:
        where = f"{row['model']} {row.get('effective')}"
        assert isinstance(row.get("source"), str) and len(row["source"]) > 10, where
        assert date.fromisoformat(row["effective"]) <= date(2026, 12, 31), where
        assert isinstance(row.get("provider"), str) and row["provider"], where


def test_price_lookups_are_remembered_within_a_bound_that_client_chosen_names_cannot_grow() -> None:
    import tracemalloc

    table = PriceTable.bundled()
    priced = Usage(provider="openai", model="gpt-4o-2024-08-06", input_tokens=1_000)
    first = table.cost_pico(priced)
    assert first is not None and table.cost_pico(priced) == first  # remembered, same answer
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(20_000):  # a flood of made-up names, some of them huge
        model = f"m-{n}" if n % 100 else "x" * 100_000 + str(n)
        assert table.cost_pico(Usage(provider="openai", model=model, input_tokens=1)) is None
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 2_000_000  # about 4096 short names at most: not 20 MB of long ones
    assert table.cost_pico(priced) == first
