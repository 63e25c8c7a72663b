"""`PriceTable`: prices by model, read from the bundled table or a price file, and what a
`Usage` costs."""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from otel_tokens._base.usage import Usage
from otel_tokens._pricing.files import read_bundled, read_file
from otel_tokens._pricing.prices import (
    _EPOCH_ORDINAL,
    _SECONDS_PER_DAY,
    PICO_PER_USD,
    ModelPrice,
    Rates,
    _Period,
    _periods,
)

if TYPE_CHECKING:
    from datetime import date


def _today() -> int:
    return _EPOCH_ORDINAL + int(time.time() // _SECONDS_PER_DAY)


class PriceTable:
    """Prices by model name; a model it does not know is unpriced, never free.

    Args:
        prices: model name → its price, or its prices over time and long-context tiers.
            A `Usage` is priced by its response model; failing that, by the response model
            without a date suffix ("gpt-4o-2024-08-06" → "gpt-4o"); failing that, by its
            request model when the response model is a snapshot of it. Gemini's `models/`
            prefix and Vertex AI's `@YYYYMMDD` or `@default` suffix are dropped first when
            the name itself has no price ("claude-sonnet-4-5@20250929" → "claude-sonnet-4-5").
            Never by a
            different model that a router chose: that would be a wrong price, not no price.

    Raises:
        ValueError: a key that is not a non-empty str, a value that is not a ModelPrice
            (or a list of them), or two prices for one model, day and tier.

    Example:
        >>> table = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60")})
        >>> table.cost_usd(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1000))
        Decimal('0.00015')
    """

    def __init__(self, prices: Mapping[str, ModelPrice | Sequence[ModelPrice]]) -> None:
        self._periods: dict[str, tuple[_Period, ...]] = {}
        for model, price in prices.items():
            if not isinstance(model, str) or not model:
                msg = f"PriceTable keys must be model names (non-empty str), got {model!r}"
                raise ValueError(msg)
            listed = [price] if isinstance(price, ModelPrice) else price
            if isinstance(listed, (str, bytes)) or not isinstance(listed, Sequence):
                msg = f"PriceTable[{model!r}] must be a ModelPrice or a list of them, got {price!r}"
                raise ValueError(msg)
            self._periods[model] = _periods(model, listed)
        #: `_find`'s answers by (model, request model): a record's model is looked up under
        #: up to six names. Bounded, since clients choose the names.
        self._found: dict[tuple[str, str | None], tuple[_Period, ...] | None] = {}
        self._sources: dict[str, tuple[ModelPrice, ...]] = {
            model: ((price,) if isinstance(price, ModelPrice) else tuple(price))
            for model, price in prices.items()
        }

    def __len__(self) -> int:
        return len(self._periods)

    def __repr__(self) -> str:
        return f"PriceTable(<{len(self)} models>)"

    @property
    def models(self) -> frozenset[str]:
        """The model names this table prices."""
        return frozenset(self._periods)

    def prices(self, model: str) -> tuple[ModelPrice, ...]:
        """Every price of `model` (all days and tiers), or () when it has none."""
        return self._sources.get(model, ())

    def with_overrides(self, other: PriceTable) -> PriceTable:
        """A table with `other`'s models added; a model both price takes `other`'s prices only.

        Args:
            other: the prices that win, such as a deployment's negotiated rates.
        """
        return PriceTable({**self._sources, **other._sources})

    @classmethod
    def bundled(cls) -> PriceTable:
        """The price table shipped with the package (read from disk, no network).

        Raises:
            ValueError: the bundled file is damaged (a bug: please report it).
        """
        global _bundled  # noqa: PLW0603 - a cache of an immutable value
        if _bundled is None:
            _bundled = _checked(*read_bundled())
        return _bundled

    @classmethod
    def from_file(cls, path: str | object) -> PriceTable:
        """Read a price table from a JSON or YAML file (see the README for its shape).

        Args:
            path: a `.json`, `.yaml` or `.yml` file.

        Raises:
            ValueError: the file is missing, unreadable or a row is wrong (its row and field
                are named).
            ImportError: a YAML file without PyYAML installed.
        """
        return _checked(*read_file(path))

    def rates(self, usage: Usage, day: int | None = None) -> Rates | None:
        """The rates `usage` is billed at on date ordinal `day` (today, UTC), or None."""
        periods = self._find(usage)
        if periods is None:
            return None
        if len(periods) == 1:
            return periods[0].rates_for(usage.input_tokens)
        if day is None:
            day = _today()
        # The price of the latest period started by `day`; the first one covers earlier days.
        index = max(0, bisect_right([p.starts for p in periods], day) - 1)
        return periods[index].rates_for(usage.input_tokens)

    def _find(self, usage: Usage) -> tuple[_Period, ...] | None:
        key = (usage.model, usage.request_model)
        found = self._found
        try:
            return found[key]
        except KeyError:
            pass
        periods = self._look_up(*key)
        if len(key[0]) + len(key[1] or "") > _MAX_FOUND_NAME:
            return periods  # not remembered: a few such names would hold megabytes
        if len(found) >= _MAX_FOUND:
            found.clear()  # a flood of new names: start again rather than grow
        found[key] = periods
        return periods

    def _look_up(self, model: str, requested: str | None) -> tuple[_Period, ...] | None:
        periods = self._periods
        for name in _names(model):
            found = periods.get(name)
            if found is not None:
                return found
        if requested is not None and model.startswith(requested):
            return periods.get(requested)
        return None

    def priced_as(self, model: str) -> str | None:
        """The name in this table that a response naming `model` is priced under, or None."""
        return next((name for name in _names(model) if name in self._periods), None)

    def cost_pico(self, usage: Usage, on: date | None = None) -> int | None:
        """Cost of `usage` in pico-dollars at the prices of day `on` (today, UTC), or None
        when its model has no price."""
        rates = self.rates(usage, None if on is None else on.toordinal())
        return None if rates is None else rates.cost(usage)

    def cost_usd(self, usage: Usage, on: date | None = None) -> Decimal | None:
        """Cost of `usage` in USD, exact, at the prices of day `on` (today, UTC), or None
        when its model has no price."""
        pico = self.cost_pico(usage, on)
        return None if pico is None else Decimal(pico) / PICO_PER_USD


#: The most (model, request model) pairs whose prices `PriceTable` remembers.
_MAX_FOUND = 4096
#: The longest model and request model names (together) it remembers.
_MAX_FOUND_NAME = 512


def _names(model: str) -> tuple[str, ...]:
    """The names `model` is priced under, in order: itself, without its date suffix, and the
    same two without Gemini's `models/` prefix and Vertex AI's `@version` suffix
    (`claude-sonnet-4-5@20250929`, `claude-opus-4-6@default`)."""
    names = [model]
    bare = model.removeprefix("models/")
    head, at, version = bare.rpartition("@")
    if at and head and (version == "default" or (len(version) == 8 and version.isdigit())):
        bare = head
    for name in (model, bare):
        undated = _without_date_suffix(name)
        names.extend(n for n in (name, undated) if n is not None and n not in names)
    return tuple(names)


def _without_date_suffix(model: str) -> str | None:
    """`gpt-4o-2024-08-06` → `gpt-4o`, `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`."""
    head, _, tail = model.rpartition("-")
    if head and len(tail) == 8 and tail.isdigit() and tail.startswith("20"):
        return head
    parts = model.rsplit("-", 3)
    if (
        len(parts) == 4
        and parts[0]
        and len(parts[1]) == 4
        and parts[1].startswith("20")
        and all(p.isdigit() and len(p) >= 2 for p in parts[1:])
    ):
        return parts[0]
    return None


_bundled: PriceTable | None = None


def _checked(rows: Mapping[str, list[ModelPrice]], where: str) -> PriceTable:
    """The table of a file's rows; an error names the file."""
    try:
        return PriceTable(rows)
    except ValueError as exc:
        msg = f"{where}: {exc}"
        raise ValueError(msg) from None
