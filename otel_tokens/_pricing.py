"""Prices per model and the cost of a `Usage`, in integer pico-dollars so that sums never drift."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, DecimalException

from otel_tokens._usage import Usage

#: Costs are kept as integer pico-dollars (1e-12 USD): every price quoted per million tokens
#: with up to six decimals is then a whole number per token, and sums are exact.
PICO_PER_USD = 10**12
_PICO_PER_TOKEN_PER_USD_PER_MILLION = 10**6

#: No model costs more than this per million tokens; a larger number is a unit mistake.
_MAX_USD_PER_MILLION = 1_000_000

PriceValue = Decimal | str | int | float


def _to_decimal(name: str, value: PriceValue) -> Decimal:
    if isinstance(value, bool):
        msg = f"ModelPrice.{name} must be a number of USD per million tokens, got {value!r}"
        raise ValueError(msg)
    try:
        # str() first so that 2.5 means 2.5, not the binary float nearest to it.
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (DecimalException, TypeError, ValueError):
        msg = f"ModelPrice.{name} must be a number of USD per million tokens, got {value!r}"
        raise ValueError(msg) from None
    if not number.is_finite() or number < 0:
        msg = f"ModelPrice.{name} must be a finite price >= 0 USD per million tokens, got {value!r}"
        raise ValueError(msg)
    if number > _MAX_USD_PER_MILLION:
        msg = (
            f"ModelPrice.{name} must be at most {_MAX_USD_PER_MILLION:,} USD per million "
            f"tokens, got {value!r}"
        )
        raise ValueError(msg)
    if (number * _PICO_PER_TOKEN_PER_USD_PER_MILLION) % 1 != 0:
        msg = f"ModelPrice.{name} has more than 6 decimals of USD per million tokens: {value!r}"
        raise ValueError(msg)
    return number


def _pico_per_token(price: Decimal) -> int:
    return int(price * _PICO_PER_TOKEN_PER_USD_PER_MILLION)


@dataclass(frozen=True)
class ModelPrice:
    """What one model costs, in USD per million tokens of each class.

    Cache reads and writes default to the input price and reasoning to the output price,
    which is how providers bill when they quote no separate price.

    Args:
        input: uncached input tokens.
        output: output tokens other than reasoning.
        cache_read: input tokens read from the prompt cache.
        cache_write: input tokens written to the prompt cache.
        reasoning: reasoning tokens, where they are priced apart from output.

    Raises:
        ValueError: a price that is negative, not a number or finer than 1e-6 USD per million.

    Example:
        >>> ModelPrice(input="2.50", output="10", cache_read="1.25").input
        Decimal('2.50')
    """

    input: PriceValue
    output: PriceValue
    cache_read: PriceValue | None = None
    cache_write: PriceValue | None = None
    reasoning: PriceValue | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_read", "cache_write", "reasoning"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _to_decimal(name, value))

    def pico_rates(self) -> tuple[int, int, int, int, int]:
        """Pico-dollars per token: (input, cache read, cache write, output, reasoning)."""
        assert isinstance(self.input, Decimal) and isinstance(self.output, Decimal)
        rates = [_pico_per_token(self.input), _pico_per_token(self.output)]
        cache_read, cache_write, reasoning = (
            _pico_per_token(v) if isinstance(v, Decimal) else None
            for v in (self.cache_read, self.cache_write, self.reasoning)
        )
        return (
            rates[0],
            rates[0] if cache_read is None else cache_read,
            rates[0] if cache_write is None else cache_write,
            rates[1],
            rates[1] if reasoning is None else reasoning,
        )


class PriceTable:
    """Prices by model name; a model it does not know is unpriced, never free.

    Args:
        prices: model name → its price. A `Usage` is priced by its response model, or by
            its request model when the response model is a dated snapshot of it
            ("gpt-4o-mini-2024-07-18" answering "gpt-4o-mini"); never by a different model
            that a router chose, which would be a wrong price rather than no price.

    Raises:
        ValueError: a key that is not a non-empty str, or a value that is not a ModelPrice.

    Example:
        >>> table = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60")})
        >>> table.cost_usd(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1000))
        Decimal('0.00015')
    """

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._rates: dict[str, tuple[int, int, int, int, int]] = {}
        for model, price in prices.items():
            if not isinstance(model, str) or not model:
                msg = f"PriceTable keys must be model names (non-empty str), got {model!r}"
                raise ValueError(msg)
            if not isinstance(price, ModelPrice):
                msg = f"PriceTable[{model!r}] must be a ModelPrice, got {price!r}"
                raise ValueError(msg)
            self._rates[model] = price.pico_rates()

    def cost_pico(self, usage: Usage) -> int | None:
        """Cost of `usage` in pico-dollars, or None when its model has no price."""
        rates = self._rates.get(usage.model)
        requested = usage.request_model
        if rates is None and requested is not None and usage.model.startswith(requested):
            rates = self._rates.get(requested)
        if rates is None:
            return None
        rate_in, rate_read, rate_write, rate_out, rate_reasoning = rates
        uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        visible_output = usage.output_tokens - usage.reasoning_tokens
        return (
            uncached * rate_in
            + usage.cache_read_tokens * rate_read
            + usage.cache_write_tokens * rate_write
            + visible_output * rate_out
            + usage.reasoning_tokens * rate_reasoning
        )

    def cost_usd(self, usage: Usage) -> Decimal | None:
        """Cost of `usage` in USD, exact, or None when its model has no price."""
        pico = self.cost_pico(usage)
        return None if pico is None else Decimal(pico) / PICO_PER_USD
