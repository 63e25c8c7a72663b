"""A model's price over time and tiers, and the rates a `Usage` is billed at, in integer
pico-dollars so that sums never drift."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, DecimalException
from typing import NamedTuple

from otel_tokens._base.usage import Usage

#: Costs are kept as integer pico-dollars (1e-12 USD): every price quoted per million tokens
#: with up to six decimals is then a whole number per token, and sums are exact.
PICO_PER_USD = 10**12
_PICO_PER_TOKEN_PER_USD_PER_MILLION = 10**6

#: No model costs more than this per million tokens; a larger number is a unit mistake.
_MAX_USD_PER_MILLION = 1_000_000
_SECONDS_PER_DAY = 86_400
#: date(1970, 1, 1).toordinal(): turns time.time() into a date ordinal without a datetime.
_EPOCH_ORDINAL = 719_163

PriceValue = Decimal | str | int | float
_CLASSES = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")


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


def _to_date(value: object) -> date | None:
    if value is None or (isinstance(value, date) and not hasattr(value, "hour")):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    msg = f"ModelPrice.effective must be a date or 'YYYY-MM-DD', got {value!r}"
    raise ValueError(msg)


def _pico_per_token(price: Decimal) -> int:
    return int(price * _PICO_PER_TOKEN_PER_USD_PER_MILLION)


class Rates(NamedTuple):
    """Pico-dollars per token of each class, defaults already filled in."""

    input: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    output: int
    reasoning: int

    def cost(self, usage: Usage) -> int:
        """What `usage` costs at these rates, in pico-dollars."""
        uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        write_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
        visible_output = usage.output_tokens - usage.reasoning_tokens
        return (
            uncached * self.input
            + usage.cache_read_tokens * self.cache_read
            + write_5m * self.cache_write
            + usage.cache_write_1h_tokens * self.cache_write_1h
            + visible_output * self.output
            + usage.reasoning_tokens * self.reasoning
        )

    def cache_economics(self, usage: Usage) -> tuple[int, int]:
        """What `usage`'s prompt cache saved and what it cost extra, in pico-dollars, both
        >= 0, against paying the full input price for every cached token.

        Reads save `input - cache_read` per token; writes cost `cache_write - input` (or
        `cache_write_1h - input`) more per token. A class priced the other way round (a
        write below the input price) counts on the other side. Savings minus the premium
        is the cache's net worth: negative when a prompt's writes never paid off.
        """
        write_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
        saved = premium = 0
        for tokens, rate in (
            (usage.cache_read_tokens, self.cache_read),
            (write_5m, self.cache_write),
            (usage.cache_write_1h_tokens, self.cache_write_1h),
        ):
            difference = tokens * (self.input - rate)
            if difference > 0:
                saved += difference
            else:
                premium -= difference
        return saved, premium


@dataclass(frozen=True)
class ModelPrice:
    """What one model costs, in USD per million tokens of each class, from a date on.

    A class without its own price is billed at the price providers use when they quote
    none: cache reads and writes at the input price, 1-hour cache writes at the (5-minute)
    cache write price, reasoning at the output price.

    Args:
        input: uncached input tokens.
        output: output tokens other than reasoning.
        cache_read: input tokens read from the prompt cache.
        cache_write: input tokens written to the prompt cache (the 5-minute cache, where a
            provider has two).
        cache_write_1h: input tokens written to the 1-hour cache.
        reasoning: reasoning tokens, where they are priced apart from output.
        effective: the day (UTC) this price took effect; None means "always". A later
            price of the same model replaces it from its own day on.
        above_input_tokens: a long-context tier: this price applies to requests whose
            input (cache included) is larger than this. 0 is the base price.

    Raises:
        ValueError: a price that is negative, not a number or finer than 1e-6 USD per
            million, a malformed date, or a negative tier.

    Example:
        >>> ModelPrice(input="2.50", output="10", cache_read="1.25").input
        Decimal('2.50')
    """

    input: PriceValue
    output: PriceValue
    cache_read: PriceValue | None = None
    cache_write: PriceValue | None = None
    cache_write_1h: PriceValue | None = None
    reasoning: PriceValue | None = None
    effective: date | str | None = None
    above_input_tokens: int = 0

    def __post_init__(self) -> None:
        for name in _CLASSES:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _to_decimal(name, value))
        object.__setattr__(self, "effective", _to_date(self.effective))
        tier = self.above_input_tokens
        if not isinstance(tier, int) or isinstance(tier, bool) or tier < 0:
            msg = f"ModelPrice.above_input_tokens must be an int >= 0, got {tier!r}"
            raise ValueError(msg)

    def rates(self) -> Rates:
        """Pico-dollars per token of each class, with the defaults filled in."""
        pico = {
            name: _pico_per_token(value) if isinstance(value, Decimal) else None
            for name in _CLASSES
            for value in (getattr(self, name),)
        }
        rate_in, rate_out = pico["input"], pico["output"]
        assert rate_in is not None and rate_out is not None  # required, checked above
        cache_write = pico["cache_write"]
        cache_write = rate_in if cache_write is None else cache_write
        cache_write_1h = pico["cache_write_1h"]
        return Rates(
            input=rate_in,
            cache_read=rate_in if pico["cache_read"] is None else pico["cache_read"],
            cache_write=cache_write,
            cache_write_1h=cache_write if cache_write_1h is None else cache_write_1h,
            output=rate_out,
            reasoning=rate_out if pico["reasoning"] is None else pico["reasoning"],
        )


class _Period(NamedTuple):
    """The prices of one model from one day on: tiers sorted by their input threshold."""

    starts: int  # date ordinal; 0 for "always"
    thresholds: tuple[int, ...]
    rates: tuple[Rates, ...]

    def rates_for(self, input_tokens: int) -> Rates:
        # Tier i applies above thresholds[i]; thresholds[0] is 0.
        return self.rates[max(0, bisect_right(self.thresholds, input_tokens - 1) - 1)]


def _periods(model: str, prices: Sequence[ModelPrice]) -> tuple[_Period, ...]:
    by_day: dict[int, dict[int, Rates]] = {}
    for price in prices:
        if not isinstance(price, ModelPrice):
            msg = f"PriceTable[{model!r}] must hold ModelPrice values, got {price!r}"
            raise ValueError(msg)
        starts = price.effective.toordinal() if isinstance(price.effective, date) else 0
        tiers = by_day.setdefault(starts, {})
        if price.above_input_tokens in tiers:
            msg = (
                f"PriceTable[{model!r}] has two prices from {price.effective or 'always'} above "
                f"{price.above_input_tokens} input tokens: keep one"
            )
            raise ValueError(msg)
        tiers[price.above_input_tokens] = price.rates()
    periods = []
    for starts, tiers in sorted(by_day.items()):
        if 0 not in tiers:
            day = date.fromordinal(starts) if starts else "always"
            msg = (
                f"PriceTable[{model!r}] has a long-context price from {day} but no base price "
                "(above_input_tokens=0) from that day: add one"
            )
            raise ValueError(msg)
        thresholds = tuple(sorted(tiers))
        periods.append(_Period(starts, thresholds, tuple(tiers[t] for t in thresholds)))
    if not periods:
        msg = f"PriceTable[{model!r}] has no price: give at least one ModelPrice"
        raise ValueError(msg)
    return tuple(periods)
