"""LiteLLM's price map (`model_prices_and_context_window.json`) as rows of a price file.

`from_litellm(data)` turns LiteLLM's per-token USD floats into this package's USD per
million tokens, as exact decimal strings (`Decimal(repr(float)) * 10**6`, normalized), and
returns every thing it cannot express as a warning that names the model and the field:
nothing is guessed and nothing is dropped silently.

What it reads, per entry:

- `input_cost_per_token`, `output_cost_per_token` (both required), `cache_read_input_token_cost`,
  `cache_creation_input_token_cost` (the 5-minute cache write),
  `cache_creation_input_token_cost_above_1hr` (the 1-hour cache write) and
  `output_cost_per_reasoning_token`;
- each of those with an `_above_<N>k_tokens` suffix: a long-context tier, written as a second
  row with `above_input_tokens: N*1000` (a class the tier does not reprice keeps its base
  price, as LiteLLM bills it);
- `litellm_provider` (the row's `provider`) and `source` (the row's `source`, else
  "litellm model_prices_and_context_window.json");
- `input_cost_per_token_cache_hit`, when it equals the cache read price (else a warning).

Fields that describe a model rather than price it (`max_input_tokens`, `supports_*`,
`deprecation_date`, ...) are skipped without a word. A per-unit fee of exactly 0 (per query,
image, second, ...) is skipped too: the package charges nothing for those, which is that
price. Everything else is a warning: batch, priority and flex prices, per-query, per-image,
per-second and per-character costs, audio/image/video token prices, price multipliers, and any
field this importer does not know. An entry is refused whole (with a warning) when its mode is
not chat, completion, responses or embedding, when it lacks input or output per-token prices,
when one of its prices is not a finite number >= 0, is finer than 1e-6 USD per million tokens
or above 1,000,000 USD per million, and for LiteLLM's `sample_spec`. A float within a few
units in the last place of a micro-dollar price (`1.0000000000000001e-07`, the noise of
arithmetic) is read as that price, with a warning that says so.

Two things to know before using the rows:

- Model names stay LiteLLM's keys (`azure/gpt-4o`, `gemini/gemini-2.5-pro`), but this
  package prices a `Usage` by its response model name as the provider returns it (`gpt-4o`,
  `gemini-2.5-pro`): a prefixed row prices nothing until it is renamed to that name.
- LiteLLM's map has no effective dates, so the rows carry no `effective`: they are priced
  "always", and a later price change needs a dated row of your own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from otel_tokens._pricing.files import FILE_VERSION, parse
from otel_tokens._pricing.table import PriceTable

DEFAULT_SOURCE = "litellm model_prices_and_context_window.json"
MODES = frozenset({"chat", "completion", "responses", "embedding"})
#: Longer model names are refused: no provider returns one, and they would flood labels.
MAX_MODEL_LENGTH = 256

#: LiteLLM's per-token price fields and the price classes they fill.
PRICE_FIELDS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "output_cost_per_reasoning_token": "reasoning",
}
_TIER = re.compile(
    r"(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost(?:_above_1hr)?)_above_([1-9][0-9]{0,5})k_tokens"
)
_CACHE_HIT = "input_cost_per_token_cache_hit"
#: Fields about a model, not its price.
_ABOUT = frozenset(
    {
        "litellm_provider", "mode", "source", "max_input_tokens", "max_output_tokens",
        "max_tokens", "deprecation_date", "deprecation_source", "successor_model", "metadata",
        "comment", "alias_of", "rpm", "tpm", "output_vector_size", "provider_specific_entry",
        "prompt_cache_min_tokens", "default_reasoning_effort", "reasoning_contexts",
        "reasoning_effort_levels", "reasoning_modes", "thinking_always_on",
        "thinking_on_by_default", "use_openai_responses_path", "uses_embed_content",
        "vertex_ai_audio_api", "gemini_audio_only_live", "gemini_native_audio",
        "supported_audio_formats", "supported_endpoints", "supported_modalities",
        "supported_output_modalities", "supported_regions", "audio_transcription_config",
        "rules",
    }
)  # fmt: skip
_ABOUT_PREFIXES = ("supports_", "token_count_", "bedrock_")
_TIERS_OF_SERVICE = (
    ("_batches", "a batch price"),
    ("_priority", "a priority price"),
    ("_flex", "a flex price"),
    ("_ultrafast", "an ultrafast-tier price"),
    ("_decisions", "a decisions-tier price"),
    ("_balanced", "a balanced-tier price"),
)
#: Fees per something other than a token: (part of the field's name, what it is).
_PER_UNIT = (
    ("per_query", "a per-query cost"),
    ("per_second", "a per-second cost"),
    ("per_character", "a per-character cost"),
    ("per_pixel", "a per-pixel cost"),
    ("per_page", "a per-page cost"),
    ("per_request", "a per-request cost"),
    ("per_session", "a per-session cost"),
    ("per_text_message", "a per-message cost"),
    ("per_1k_calls", "a per-call cost"),
    ("per_gb", "a storage cost"),
    ("per_unit", "a per-unit cost"),
    ("per_credit", "a per-credit cost"),
    ("per_image", "a per-image cost"),  # after the token prices: see _kind
)
_MODALITY_TOKENS = ("audio", "image", "video", "pixel", "dbu")
_MAX_PER_TOKEN = Decimal(1)  # USD per token: 1,000,000 USD per million, the package's limit
_MILLION = Decimal(10**6)
_MICRO = Decimal("0.000001")
#: How far from a micro-dollar price a float may be and still be taken as that price.
_NOISE_ULPS = 4


class RefusedPriceError(ValueError):
    """A price that cannot be written exactly; the message says why."""


def from_litellm(data: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a price file from LiteLLM's price map, and what could not be expressed.

    Args:
        data: model name -> entry, as `json.load` reads `model_prices_and_context_window.json`.

    Returns:
        The rows (sorted by model, then tier), each loadable by `PriceTable.from_file` once
        written as `{"version": 1, "prices": rows}`; and one warning per thing not
        expressed, naming the model and the field.

    Raises:
        ValueError: `data` is not a mapping.
    """
    if not isinstance(data, Mapping):
        msg = f"a LiteLLM price map is a JSON object of model -> entry, got {type(data).__name__}"
        raise ValueError(msg)
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for name, entry in data.items():
        made = _entry(name, entry, warnings)
        rows.extend(made)
    rows.sort(key=lambda row: (row["model"], row.get("above_input_tokens", 0)))
    return rows, warnings


def _entry(name: object, entry: object, warnings: list[str]) -> list[dict[str, Any]]:
    who = _shown(name)
    if name == "sample_spec":
        warnings.append(f"{who}: LiteLLM's description of its format, not a model: skipped")
        return []
    if not isinstance(name, str) or not name or len(name) > MAX_MODEL_LENGTH:
        warnings.append(
            f"{who}: a model name must be a string of 1 to {MAX_MODEL_LENGTH} characters: skipped"
        )
        return []
    if not isinstance(entry, Mapping):
        warnings.append(f"{who}: the entry is {type(entry).__name__}, not an object: skipped")
        return []
    mode = entry.get("mode")
    if mode is not None and (not isinstance(mode, str) or mode not in MODES):
        warnings.append(
            f"{who}: mode {_shown(mode)} is not token-priced (chat, completion, responses, "
            "embedding): skipped"
        )
        return []
    if entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
        missing = [f for f in ("input_cost_per_token", "output_cost_per_token") if f not in entry]
        warnings.append(
            f"{who}: no per-token price for {' and '.join(missing) or 'input and output'} "
            "(input_cost_per_token, output_cost_per_token): skipped"
        )
        return []
    base: dict[str, str] = {}
    tiers: dict[int, dict[str, str]] = {}
    refused = False
    for field, value in entry.items():
        if not isinstance(field, str):
            warnings.append(f"{who}: field {_shown(field)} is not a string: not imported")
            continue
        try:
            if field in PRICE_FIELDS:
                base[PRICE_FIELDS[field]] = per_million(value)
                _note_rounding(who, field, value, base[PRICE_FIELDS[field]], warnings)
                continue
            tier = _TIER.fullmatch(field)
            if tier is not None:
                above = int(tier.group(2)) * 1000
                price = tiers.setdefault(above, {})[PRICE_FIELDS[tier.group(1)]] = per_million(
                    value
                )
                _note_rounding(who, field, value, price, warnings)
                continue
        except RefusedPriceError as exc:
            warnings.append(f"{who}: {field} = {_shown(value)}: {exc}; model not imported")
            refused = True
            continue
        problem = _not_expressed(field, value, entry)
        if problem:
            warnings.append(f"{who}: {field}: {problem}")
    if refused:
        return []
    made = [_row(name, entry, base, 0)]
    for above, prices in sorted(tiers.items()):
        made.append(_row(name, entry, {**base, **prices}, above))
    try:
        PriceTable(parse({"version": FILE_VERSION, "prices": made}, "litellm"))
    except ValueError as exc:
        warnings.append(f"{who}: its rows do not load as a price table ({exc}): skipped")
        return []
    return made


def _note_rounding(who: str, field: str, value: object, price: str, warnings: list[str]) -> None:
    """Say so when a price was read as the micro-dollar price its float stands for."""
    if isinstance(value, float) and Decimal(repr(value)) * _MILLION != Decimal(price):
        warnings.append(f"{who}: {field} = {value!r} read as {price} USD per million (float noise)")


def _row(name: str, entry: Mapping[str, Any], prices: dict[str, str], above: int) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name}
    provider = entry.get("litellm_provider")
    if isinstance(provider, str) and provider:
        row["provider"] = provider
    for cls in PRICE_FIELDS.values():
        if cls in prices:
            row[cls] = prices[cls]
    if above:
        row["above_input_tokens"] = above
    source = entry.get("source")
    row["source"] = source if isinstance(source, str) and source else DEFAULT_SOURCE
    return row


def per_million(value: object) -> str:
    """A LiteLLM per-token USD price as an exact decimal string of USD per million tokens.

    Raises:
        RefusedPriceError: not a finite number >= 0, finer than 1e-6 USD per million, or above
            1,000,000 USD per million.

    Example:
        >>> per_million(3e-06), per_million(3.75e-06), per_million(1.25e-07)
        ('3', '3.75', '0.125')
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"a price is a number of USD per token, not {type(value).__name__}"
        raise RefusedPriceError(msg)
    if isinstance(value, float) and not math.isfinite(value):
        msg = "a price must be a finite number"
        raise RefusedPriceError(msg)
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if number < 0:
        msg = "a price must not be negative"
        raise RefusedPriceError(msg)
    if number > _MAX_PER_TOKEN:
        msg = "a price above 1,000,000 USD per million tokens is a unit mistake"
        raise RefusedPriceError(msg)
    million = (number * _MILLION).normalize()
    if million == 0:
        return "0"
    exponent = million.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        # Float noise from arithmetic (1.0000000000000001e-07 for $0.1 per million): the
        # micro-dollar price whose float is within a few units in the last place of this one.
        rounded = million.quantize(_MICRO).normalize()
        if rounded and isinstance(value, float) and _float_noise(value, rounded):
            return f"{rounded:f}"
        msg = f"{million:f} USD per million tokens is finer than 1e-6, which a price file holds"
        raise RefusedPriceError(msg)
    return f"{million:f}"


def _float_noise(value: float, rounded: Decimal) -> bool:
    """Whether `value` (USD per token) is `rounded` (USD per million) but for the last bits
    of a float."""
    return abs(float(rounded / _MILLION) - value) <= _NOISE_ULPS * math.ulp(value)


def _not_expressed(field: str, value: object, entry: Mapping[str, Any]) -> str | None:
    """Why a field other than the prices read is not imported, or None to skip it quietly."""
    if field in _ABOUT or field.startswith(_ABOUT_PREFIXES):
        return None
    if field == _CACHE_HIT:
        if value == entry.get("cache_read_input_token_cost"):
            return None
        return "a cache-hit price other than cache_read_input_token_cost: not imported"
    kind = _kind(field)
    if kind is not None and kind[1] and _is_zero(value):
        return None
    what = kind[0] if kind is not None else "a field this importer does not know"
    return f"{what}, not expressible in a price file: not imported"


def _kind(field: str) -> tuple[str, bool] | None:
    """What a field prices, and whether a zero of it is this package's price (a fee per
    something the package does not bill)."""
    for suffix, what in _TIERS_OF_SERVICE:
        if suffix in field:
            return what, False
    if "multiplier" in field:
        return "a price multiplier", False
    if field in ("tiered_pricing", "off_peak_pricing"):
        return "a pricing scheme", False
    for part in _MODALITY_TOKENS:
        if f"{part}_token" in field:
            return f"a price of {part} tokens apart from text", False
    for part, what in _PER_UNIT:
        if part in field:
            return what, True
    return None


def _is_zero(value: object) -> bool:
    if isinstance(value, Mapping):
        return all(_is_zero(v) for v in value.values())
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def _shown(value: object) -> str:
    """`value` for a message: its repr, cut to 80 characters."""
    try:
        text = repr(value)
    except Exception:  # a hostile object's repr must not stop the import
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else f"{text[:77]}..."
