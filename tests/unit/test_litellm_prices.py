"""LiteLLM's price map as price-file rows: exact decimals, long-context tiers as second rows,
one warning per thing not expressed, and hostile input refused with a warning, never a crash."""

from __future__ import annotations

import json
import os
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_tokens import PriceTable, Usage
from otel_tokens._pricing.litellm import DEFAULT_SOURCE, from_litellm, per_million

SAMPLE = Path(__file__).parents[1] / "payloads" / "litellm_prices_sample.json"
#: The litellm wheel whose whole price file the round trip reads (`.ci/run` downloads one);
#: the test skips without it. The package never depends on litellm.
WHEEL = Path(os.environ.get("OTEL_TOKENS_LITELLM_WHEEL") or "/nonexistent/litellm.whl")
MEMBER = "litellm/model_prices_and_context_window_backup.json"


def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text("utf-8"))
    return data


def rows_of(rows: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    return [row for row in rows if row["model"] == model]


def warned(warnings: list[str], model: str) -> list[str]:
    return [w for w in warnings if w.startswith(f"{model!r}: ")]


def table_of(rows: list[dict[str, Any]], tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"version": 1, "prices": rows}), "utf-8")
    return PriceTable.from_file(path)


def test_claude_sonnet_4_5_has_its_cache_prices_exactly() -> None:
    rows, _ = from_litellm(sample())
    assert rows_of(rows, "claude-sonnet-4-5") == [
        {
            "model": "claude-sonnet-4-5", "provider": "anthropic", "input": "3", "output": "15",
            "cache_read": "0.3", "cache_write": "3.75", "cache_write_1h": "6",
            "source": "https://platform.claude.com/docs/en/about-claude/pricing",
        }
    ]  # fmt: skip


def test_a_long_context_tier_is_a_second_row() -> None:
    rows, _ = from_litellm(sample())
    base, tier = rows_of(rows, "gemini/gemini-2.5-pro")
    assert "above_input_tokens" not in base
    assert (base["input"], base["output"], base["cache_read"]) == ("1.25", "10", "0.125")
    assert tier["above_input_tokens"] == 200_000
    assert (tier["input"], tier["output"], tier["cache_read"]) == ("2.5", "15", "0.25")
    # The 1-hour write of a Bedrock Claude is repriced above 200k too; a 272k tier is read.
    bedrock = rows_of(rows, "anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert [(r.get("above_input_tokens", 0), r["cache_write_1h"]) for r in bedrock] == [
        (0, "6"), (200_000, "12")
    ]  # fmt: skip
    assert [r.get("above_input_tokens", 0) for r in rows_of(rows, "azure_ai/gpt-6-astra")] == [
        0, 272_000
    ]  # fmt: skip


def test_the_tier_prices_requests_above_its_threshold(tmp_path: Path) -> None:
    rows, _ = from_litellm(sample())
    table = table_of(rows, tmp_path)

    def cost(tokens: int) -> Decimal | None:
        return table.cost_usd(Usage(provider="gemini", model="gemini/gemini-2.5-pro",
                                    input_tokens=tokens))  # fmt: skip

    assert cost(200_000) == Decimal("0.25")  # 200k at 1.25 USD/M: not above the threshold
    assert cost(200_001) == Decimal("0.5000025")  # at 2.5 USD/M


def test_batch_priority_and_flex_prices_are_warnings_naming_model_and_field() -> None:
    _, warnings = from_litellm(sample())
    gemini = warned(warnings, "gemini/gemini-2.5-pro")
    assert (
        "'gemini/gemini-2.5-pro': input_cost_per_token_batches: a batch price, not expressible "
        "in a price file: not imported"
    ) in gemini
    assert any("output_cost_per_token_above_200k_tokens_priority: a priority price" in w
               for w in gemini)  # fmt: skip
    assert any("input_cost_per_token_flex: a flex price" in w for w in gemini)
    assert any("search_context_cost_per_query: a per-query cost" in w for w in gemini)
    assert any("fedramp_uplift_multiplier: a price multiplier" in w
               for w in warned(warnings, "gpt-4o"))  # fmt: skip


def test_entries_it_cannot_price_are_skipped_with_a_warning() -> None:
    rows, warnings = from_litellm(sample())
    models = {row["model"] for row in rows}
    image = "1024-x-1024/50-steps/bedrock/amazon.nova-canvas-v1:0"
    assert warned(warnings, image) == [
        f"{image!r}: mode 'image_generation' is not token-priced (chat, completion, responses, "
        "embedding): skipped"
    ]
    assert "mode 'audio_transcription'" in warned(warnings, "whisper-1")[0]
    assert "no per-token price for output_cost_per_token" in warned(
        warnings, "mistral/mistral-embed")[0]  # fmt: skip
    assert warned(warnings, "sample_spec") == [
        "'sample_spec': LiteLLM's description of its format, not a model: skipped"
    ]
    for gone in (image, "whisper-1", "mistral/mistral-embed", "sample_spec",
                 "bedrock/claude-opus-latest", "dashscope/qwen-flash"):  # fmt: skip
        assert gone not in models


def test_a_price_finer_than_a_micro_dollar_per_million_refuses_the_model() -> None:
    rows, warnings = from_litellm({"m": entry(input_cost_per_token=1.00000001e-07)})
    assert not rows_of(rows, "m")
    assert any(
        "input_cost_per_token = 1.00000001e-07: 0.100000001 USD per million tokens is finer "
        "than 1e-6"
        in w
        and w.endswith("model not imported")
        for w in warned(warnings, "m")
    )


def test_a_price_that_is_float_noise_is_read_as_its_micro_dollar_price() -> None:
    rows, warnings = from_litellm(sample())
    model = "databricks/databricks-claude-sonnet-4-1"
    (row,) = rows_of(rows, model)
    assert (row["input"], row["output"]) == ("2.99999", "15.00002")
    assert any("2.9999900000000002e-06 read as 2.99999" in w for w in warned(warnings, model))


def test_what_the_rows_keep() -> None:
    rows, _ = from_litellm(sample())
    assert rows_of(rows, "azure/gpt-4o")[0]["provider"] == "azure"  # the key stays the model
    assert rows_of(rows, "dashscope/qwen-turbo")[0]["reasoning"] == "0.5"
    # deepseek's cache-hit price equals its cache read price: read, not warned about
    assert rows_of(rows, "deepseek/deepseek-chat")[0]["cache_read"] == "0.028"
    assert all("effective" not in row for row in rows)  # LiteLLM has no dates: "always"
    assert rows == sorted(rows, key=lambda r: (r["model"], r.get("above_input_tokens", 0)))
    rows, _ = from_litellm({"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}})
    assert rows == [{"model": "m", "input": "1", "output": "2", "source": DEFAULT_SOURCE}]


def test_every_sample_row_loads(tmp_path: Path) -> None:
    rows, _ = from_litellm(sample())
    table = table_of(rows, tmp_path)
    assert len(table) == len({row["model"] for row in rows}) == 10
    usage = Usage(provider="anthropic", model="claude-sonnet-4-5", input_tokens=1_000_000,
                  cache_read_tokens=500_000, output_tokens=1000)  # fmt: skip
    assert table.cost_usd(usage) == Decimal("1.5") + Decimal("0.15") + Decimal("0.015")


def test_float_noise_is_read_as_the_price_it_stands_for_and_said() -> None:
    noisy = entry(input_cost_per_token=1.0000000000000001e-07,
                  output_cost_per_token=2.9999900000000002e-06)  # fmt: skip
    rows, warnings = from_litellm({"m": noisy})
    assert (rows[0]["input"], rows[0]["output"]) == ("0.1", "2.99999")
    assert sum("(float noise)" in w for w in warnings) == 2
    assert per_million(1.0000000000000001e-07) == "0.1"
    with pytest.raises(ValueError, match="finer than 1e-6"):
        per_million(1.00000001e-07)  # a real tenth of a micro-dollar more, not noise


@pytest.mark.parametrize(
    ("value", "text"),
    [(3e-06, "3"), (3.75e-06, "3.75"), (1.25e-07, "0.125"), (2.8e-08, "0.028"), (0, "0"),
     (0.0, "0"), (-0.0, "0"), (1e-12, "0.000001"), (1.5e-12, None), (1e-13, None),
     (1.0000000000000001e-07, "0.1"), (1.00000001e-07, None), (2, None)],
)  # fmt: skip
def test_per_token_prices_become_exact_prices_per_million(value: float, text: str | None) -> None:
    if text is None:
        with pytest.raises(ValueError, match=r"finer than 1e-6|above 1,000,000"):
            per_million(value)
    else:
        assert per_million(value) == text


def entry(**prices: object) -> dict[str, object]:
    return {"mode": "chat", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, **prices}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"m": "not an entry"}, "'m': the entry is str, not an object: skipped"),
        ({"m": None}, "'m': the entry is NoneType, not an object: skipped"),
        ({"m": entry(input_cost_per_token="3e-6")},
         "'m': input_cost_per_token = '3e-6': a price is a number of USD per token, not str; "
         "model not imported"),
        ({"m": entry(output_cost_per_token=float("nan"))},
         "'m': output_cost_per_token = nan: a price must be a finite number; model not imported"),
        ({"m": entry(cache_read_input_token_cost=float("inf"))},
         "'m': cache_read_input_token_cost = inf: a price must be a finite number; "
         "model not imported"),
        ({"m": entry(input_cost_per_token=-1e-6)},
         "'m': input_cost_per_token = -1e-06: a price must not be negative; model not imported"),
        ({"m": entry(input_cost_per_token=1e-12, output_cost_per_token=1.5e-12)},
         "'m': output_cost_per_token = 1.5e-12: 0.0000015 USD per million tokens is finer than "
         "1e-6, which a price file holds; model not imported"),  # 1e-12 is 0.000001: fine
        ({"m": entry(output_cost_per_token=True)},
         "'m': output_cost_per_token = True: a price is a number of USD per token, not bool; "
         "model not imported"),
        ({"m": entry(input_cost_per_token=10**5000)},
         "'m': input_cost_per_token = <int>: a price above 1,000,000 USD per million tokens is "
         "a unit mistake; model not imported"),
        ({"m": entry(mode=["chat"])}, "'m': mode ['chat'] is not token-priced"),
        ({"m": entry(price_per_vibe=1)},
         "'m': price_per_vibe: a field this importer does not know, not expressible"),
        ({"m": entry(input_cost_per_token_above_0k_tokens=1e-6)},
         "'m': input_cost_per_token_above_0k_tokens: a field this importer does not know"),
        ({"m": entry(input_cost_per_token_cache_hit=5e-7)},
         "'m': input_cost_per_token_cache_hit: a cache-hit price other than"),
        ({"m": entry(output_cost_per_token_above_200k_tokens=3e-6)},
         None),  # a tier of output only: input keeps its base price in the tier
        ({"7" * 5000: entry()}, "'" + "7" * 76 + "...: a model name must be a string of 1 to "
         "256 characters: skipped"),
        ({"": entry()}, "'': a model name must be a string of 1 to 256 characters: skipped"),
        ({7: entry()}, "7: a model name must be a string of 1 to 256 characters: skipped"),
    ],
)  # fmt: skip
def test_hostile_input_is_a_warning_never_a_crash(data: Any, expected: str | None) -> None:
    rows, warnings = from_litellm(data)
    if expected is None:
        assert warnings == []
        assert [(r["input"], r["output"]) for r in rows] == [("1", "2"), ("1", "3")]
        return
    assert len(warnings) == 1
    assert warnings[0].startswith(expected)
    assert len(warnings[0]) < 300  # a huge name or value is cut in the message
    refused = warnings[0].endswith(("skipped", "model not imported"))
    assert bool(rows) is not refused


def test_a_map_that_is_not_a_mapping_is_an_error() -> None:
    with pytest.raises(ValueError, match="JSON object of model -> entry, got list"):
        from_litellm([])  # type: ignore[arg-type]


def test_a_zero_fee_per_unit_is_this_packages_price() -> None:
    free = entry(input_cost_per_image=0.0, search_context_cost_per_query={"low": 0.0})
    rows, warnings = from_litellm({"m": free})
    assert warnings == [] and len(rows) == 1
    _, warnings = from_litellm({"m": entry(input_cost_per_audio_token=0.0)})
    assert warnings == ["'m': input_cost_per_audio_token: a price of audio tokens apart from "
                        "text, not expressible in a price file: not imported"]  # fmt: skip


@pytest.mark.skipif(
    not WHEEL.is_file(),
    reason="set OTEL_TOKENS_LITELLM_WHEEL to a litellm wheel (pip download --no-deps litellm) "
    "to convert its whole price file",
)
def test_every_row_of_the_real_litellm_file_loads(tmp_path: Path) -> None:
    with zipfile.ZipFile(WHEEL) as wheel:
        data = json.loads(wheel.read(MEMBER))
    rows, warnings = from_litellm(data)
    table = table_of(rows, tmp_path)
    models = {row["model"] for row in rows}
    assert len(table) == len(models) > 3000
    assert table.models == models
    for name, item in data.items():  # every entry is either priced or warned about
        assert name in models or warned(warnings, name), name
        if name in models:  # exact, or float noise said to be read as its micro-dollar price
            want = Decimal(repr(item["input_cost_per_token"])) * 10**6
            got = table.prices(name)[0].input
            assert got == want or (
                abs(got - want) < Decimal("0.000001")
                and any(
                    "input_cost_per_token" in w and "(float noise)" in w
                    for w in warned(warnings, name)
                )
            ), name
