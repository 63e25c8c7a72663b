"""The bundled table prices what users send and what the normalizers read: Bedrock, Vertex AI
and Gemini ids, the models in tests/payloads/, and the models the demo simulates."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from otel_tokens import PriceTable, Usage
from otel_tokens._demo.run import PROFILES
from otel_tokens._pricing.prices import ModelPrice
from otel_tokens.providers import (
    UNKNOWN_MODEL,
    AnthropicStream,
    GeminiStream,
    OpenAIStream,
    from_anthropic,
    from_bedrock,
    from_gemini,
    from_openai,
)
from tests.helpers.bundled_prices import READ_ON
from tests.helpers.paths import PAYLOADS

ROWS = json.loads(resources.files("otel_tokens").joinpath("prices.json").read_text())["prices"]
#: The Bedrock ids a Converse call names in its path (Converse responses carry no model):
#: SOURCES.md's request path, without and with its cross-region prefix.
BEDROCK_IDS = ("anthropic.claude-sonnet-4-5-20250929-v1:0",
               "us.anthropic.claude-sonnet-4-5-20250929-v1:0")  # fmt: skip
_READERS: dict[str, Any] = {"openai": from_openai, "deepseek": from_openai,
                            "anthropic": from_anthropic, "gemini": from_gemini}  # fmt: skip
_STREAMS: dict[str, Any] = {"openai": OpenAIStream, "anthropic": AnthropicStream,
                            "gemini": GeminiStream}  # fmt: skip


def usage(model: str, **fields: Any) -> Usage:
    return Usage(
        provider="p", model=model, input_tokens=100_000, **fields
    )  # under any long-context tier


def test_bundled_table_covers_at_least_300_models_across_the_providers() -> None:
    providers = {row["provider"] for row in ROWS}
    assert {"openai", "azure.ai.openai", "anthropic", "aws.bedrock", "gcp.gemini",
            "gcp.vertex_ai", "mistral_ai", "cohere", "deepseek", "x_ai", "groq",
            "together_ai"} <= providers  # fmt: skip
    assert len({row["model"] for row in ROWS}) >= 300


def test_every_bundled_row_parses_and_names_its_source_and_day() -> None:
    table = PriceTable.bundled()
    for row in ROWS:
        where = f"{row['model']} {row.get('effective')}"
        assert table.prices(row["model"]), where
        assert "https://" in row["source"] or "litellm" in row["source"], where
        assert date.fromisoformat(row["effective"]) <= date(2026, 12, 31), where
        assert row.get("note"), where  # what kind of day `effective` is
        ModelPrice(**{k: v for k, v in row.items()
                      if k not in ("model", "provider", "source", "note")})  # fmt: skip


def test_no_row_carries_the_day_the_map_was_read_unless_its_note_says_why() -> None:
    read_day = [row for row in ROWS if row["effective"] == READ_ON]
    for row in read_day:
        assert READ_ON in row["note"] and "not the day it took effect" in row["note"], row
    assert len(read_day) == 0  # tests/helpers/price_dates.py dated the 453 there were


def test_a_row_dated_by_a_litellm_release_is_dated_before_the_map_was_read() -> None:
    dated = [row for row in ROWS if "the upload day of litellm" in row["note"]]
    assert len(dated) == 453
    for row in dated:
        assert "2023-11-14" <= row["effective"] <= "2026-11-20", row  # litellm 1.0.0 .. 1.110.2


@pytest.mark.parametrize(
    ("sent", "priced_as"),
    [
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex AI's version suffix
        ("claude-opus-4-6@default", "claude-opus-4-6"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),  # Gemini's resource name
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),  # its own row wins over the alias
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ],
)
def test_ids_as_users_send_them_are_priced_as_the_model(sent: str, priced_as: str) -> None:
    table = PriceTable.bundled()
    assert table.priced_as(sent) == priced_as
    assert table.cost_usd(usage(sent)) == table.cost_usd(usage(priced_as))


def test_a_vertex_suffix_other_than_a_date_or_default_is_not_dropped() -> None:
    table = PriceTable({"m": ModelPrice(1, 2)})
    assert table.cost_usd(usage("m@001")) is None  # a version that may be priced otherwise
    assert table.cost_usd(usage("m@2025")) is None
    assert table.cost_usd(usage("m@20250929")) == Decimal("0.1")
    assert table.cost_usd(usage("models/m@default")) == Decimal("0.1")


def test_bedrock_region_prefixed_ids_have_their_own_rows_and_prices() -> None:
    table = PriceTable.bundled()
    base = table.cost_usd(usage("anthropic.claude-sonnet-4-5-20250929-v1:0"))
    assert base == Decimal("0.3")
    assert table.cost_usd(usage("global.anthropic.claude-sonnet-4-5-20250929-v1:0")) == base
    # A geographic cross-region profile costs 10% more (LiteLLM 1.110.2, AWS's page).
    assert table.cost_usd(usage("us.anthropic.claude-sonnet-4-5-20250929-v1:0")) == Decimal("0.33")
    assert table.cost_usd(usage("eu.anthropic.claude-sonnet-4-5-20250929-v1:0")) == Decimal("0.33")


def _payload_usages() -> list[tuple[str, Usage]]:
    """What the normalizers read out of every payload in tests/payloads/."""
    found: list[tuple[str, Usage]] = []
    for path in sorted(PAYLOADS.iterdir()):
        wire = path.name.split("_")[0]
        if "error" in path.name or path.suffix not in (".json", ".txt") or wire == "litellm":
            continue
        if wire == "bedrock":
            events = json.loads(path.read_text())
            body = events[-1]["metadata"] if isinstance(events, list) else events
            found += [(path.name, from_bedrock(body, model=m)) for m in BEDROCK_IDS]
        elif path.suffix == ".json":
            found.append((path.name, _READERS[wire](json.loads(path.read_text()))))
        else:
            stream = _STREAMS[wire]()
            for line in path.read_text().splitlines():
                data = line.removeprefix("data:").strip()
                if line.startswith("data:") and data.startswith("{"):
                    stream.feed(json.loads(data))
            found.append((path.name, stream.finish()))
    return found


def test_every_model_the_normalizers_read_from_the_payloads_is_priced() -> None:
    table = PriceTable.bundled()
    read = _payload_usages()
    assert len(read) >= 10
    unpriced = {(name, u.model) for name, u in read
                if u.model == UNKNOWN_MODEL or table.cost_pico(u) is None}  # fmt: skip
    assert not unpriced, unpriced
    models = {u.model for _, u in read}
    assert {"gpt-5.6-terra", "deepseek-v4-pro", "claude-sonnet-4-5-20250929"} <= models


def test_the_demo_prices_every_simulated_model_that_has_a_list_price() -> None:
    table = PriceTable.bundled()
    for profile in PROFILES:
        answered = Usage(provider=profile.provider, model=profile.answered_by,
                         request_model=profile.model, input_tokens=1000)  # fmt: skip
        cost = table.cost_pico(answered)
        if profile.provider == "vllm":  # self-hosted: no list price anywhere
            assert cost is None, profile.model
        else:
            assert cost is not None and cost > 0, profile.model
