"""Custom meters: usage other than tokens (web searches, images, audio seconds, tool calls),
defined once by name and recorded as events with a value, a few dimensions and a key.

A meter's definition is checked when it is made, so that recording only checks the event.
Values are kept as integer millionths, so sums are exact whatever the unit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NamedTuple

from otel_tokens._base.text import safe_label, shown

AGGREGATIONS = ("sum", "count", "last")
#: The most dimensions a meter may have (each is a column of the ledger's event tables).
MAX_DIMENSIONS = 4
#: Values are stored as integer millionths of the unit.
MICRO = 1_000_000
#: The largest value magnitude kept exactly (a signed 64-bit count of millionths).
MAX_VALUE = 9_000_000_000_000
#: Dimension values longer than this are cut.
MAX_DIMENSION_LENGTH = 128
_NAME = re.compile(r"[a-z][a-z0-9_.]{0,62}")
_DIMENSION = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CURRENCY = re.compile(r"[A-Z]{3}")
#: Names a query groups by already, so no dimension may take them.
RESERVED_DIMENSIONS = frozenset({"key", "day", "hour", "meter"})
#: Name prefixes of the tracker's own instruments, which no meter may take.
RESERVED_PREFIXES = ("gen_ai.", "llm.", "otel_tokens.")


@dataclass(frozen=True)
class MeterSpec:
    """What a custom meter is: its name, unit, aggregation, dimensions and currency.

    Raises:
        ValueError: a name, unit, aggregation, dimension or currency that is not allowed.
    """

    name: str
    unit: str
    aggregation: str = "sum"
    dimensions: tuple[str, ...] = ()
    currency: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            msg = (
                f"a meter name must be lower case letters, digits, '_' and '.', starting with "
                f"a letter, at most 63 characters (such as 'web_search.calls'), got {self.name!r}"
            )
            raise ValueError(msg)
        if self.name.startswith(RESERVED_PREFIXES):
            msg = f"meter name {self.name!r} takes a prefix of otel_tokens' own instruments {RESERVED_PREFIXES}: choose another name"  # noqa: E501
            raise ValueError(msg)
        if self.aggregation not in AGGREGATIONS:
            msg = f"meter {self.name!r}: aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}"  # noqa: E501
            raise ValueError(msg)
        if self.currency is not None and not (
            isinstance(self.currency, str) and _CURRENCY.fullmatch(self.currency)
        ):
            msg = f"meter {self.name!r}: currency must be an ISO 4217 code such as 'USD', got {self.currency!r}"  # noqa: E501
            raise ValueError(msg)
        if self.currency is not None and self.unit != self.currency:
            msg = f"meter {self.name!r}: a money meter's unit is its currency {self.currency!r}, got unit {self.unit!r}"  # noqa: E501
            raise ValueError(msg)
        if self.currency is not None and self.aggregation == "count":
            msg = f"meter {self.name!r}: a count meter counts events, so it cannot have a currency"
            raise ValueError(msg)
        if not isinstance(self.unit, str) or not 0 < len(self.unit) <= 63 or " " in self.unit:
            msg = f"meter {self.name!r}: unit must be a UCUM-style unit such as 's', '{{call}}' or 'USD', got {self.unit!r}"  # noqa: E501
            raise ValueError(msg)
        dims = self.dimensions
        if isinstance(dims, str) or not all(isinstance(d, str) for d in dims):
            msg = f"meter {self.name!r}: dimensions must be a list of names, got {dims!r}"
            raise ValueError(msg)
        object.__setattr__(self, "dimensions", tuple(dims))
        bad = [d for d in dims if not _DIMENSION.fullmatch(d) or d in RESERVED_DIMENSIONS]
        if bad or len(set(dims)) != len(dims) or len(dims) > MAX_DIMENSIONS:
            msg = (
                f"meter {self.name!r}: dimensions must be at most {MAX_DIMENSIONS} distinct "
                f"lower-case names, none of {sorted(RESERVED_DIMENSIONS)}, got {list(dims)!r}"
            )
            raise ValueError(msg)
        if not isinstance(self.description, str):
            msg = f"meter {self.name!r}: description must be a str, got {self.description!r}"
            raise ValueError(msg)

    def same_as(self, other: MeterSpec) -> bool:
        """Whether `other` defines the same meter (the description may differ)."""
        mine = (self.unit, self.aggregation, self.dimensions, self.currency)
        return mine == (other.unit, other.aggregation, other.dimensions, other.currency)

    def describe(self) -> str:
        """The definition in one line, for messages."""
        money = f", currency={self.currency!r}" if self.currency else ""
        return (
            f"unit={self.unit!r}, aggregation={self.aggregation!r}, "
            f"dimensions={list(self.dimensions)!r}{money}"
        )

    def event_fault(self, value: object, dimensions: Mapping[str, object] | None) -> str | None:
        """Why an event with `value` and `dimensions` cannot be recorded; None if it can."""
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            return f"meter {self.name!r}: value must be a number, got {shown(value)}"
        number: float | Decimal = value
        if self.aggregation == "count" and number != 1:
            return (
                f"meter {self.name!r} counts events, so its value is 1, got {shown(value)}: "
                "use a sum meter to add quantities"
            )
        if not _within(number, MAX_VALUE):
            return (
                f"meter {self.name!r}: value must be finite and at most {MAX_VALUE:.0e}, "
                f"got {shown(value)}"
            )
        if self.aggregation != "last" and float(number) < 0:
            return (
                f"meter {self.name!r} adds up values, so they cannot be negative, "
                f"got {shown(value)}"
            )
        if dimensions:
            unknown = [d for d in dimensions if d not in self.dimensions]
            if unknown:
                return (
                    f"meter {self.name!r} has dimensions {list(self.dimensions)!r}, "
                    f"got {shown(unknown)}"
                )
        return None

    def dimension_values(self, dimensions: Mapping[str, object] | None) -> tuple[str, ...]:
        """The event's value of each dimension, in order ("" where not given), cut to length."""
        found = dimensions or {}
        return tuple(
            safe_label(_as_text(found.get(name, "")), MAX_DIMENSION_LENGTH)
            for name in self.dimensions
        )

    def row(self) -> tuple[str, str, str, str, str | None, str]:
        """The definition as a row of `otel_tokens_meters`."""
        dims = ",".join(self.dimensions)
        return (self.name, self.unit, self.aggregation, dims, self.currency, self.description)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> MeterSpec:
        """The definition a row of `otel_tokens_meters` holds."""
        name, unit, aggregation, dims, currency, description = row
        split = tuple(dims.split(",")) if dims else ()
        return cls(name, unit, aggregation, split, currency or None, description or "")


def _within(number: float | Decimal, limit: int) -> bool:
    """Whether `number` is finite and at most `limit` in magnitude. Compared as it is: a
    huge int overflows a float, and a Decimal NaN cannot be compared."""
    if isinstance(number, Decimal) and not number.is_finite():
        return False
    return -limit <= number <= limit


def _as_text(value: object) -> str:
    """A dimension value as text: a str as it is, anything else as str() makes it, or shown
    when str() raises (an int of 5,000 digits does)."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return shown(value, MAX_DIMENSION_LENGTH)


def meter_spec(
    name: str,
    *,
    unit: str,
    aggregation: str,
    dimensions: Sequence[str],
    currency: str | None,
    description: str,
) -> MeterSpec:
    """The checked definition of a meter from the arguments of `custom_meter()`.

    Raises:
        ValueError: a definition that is not allowed.
    """
    if isinstance(dimensions, str):
        msg = f"meter {name!r}: dimensions must be a list of names, got {dimensions!r}"
        raise ValueError(msg)
    return MeterSpec(name, unit, aggregation, tuple(dimensions), currency, description)


def to_micro(value: float | Decimal) -> int:
    """`value` as integer millionths, rounded half to even."""
    if isinstance(value, int):
        return value * MICRO
    return int((Decimal(str(value)) if isinstance(value, float) else value).scaleb(6)
               .to_integral_value())  # fmt: skip


class MeterEvent(NamedTuple):
    """One checked event of a custom meter, on its way to the ledger."""

    spec: MeterSpec
    #: The value in millionths of the unit.
    value_micro: int
    #: The value of each of the meter's dimensions, in the order it defines them.
    values: tuple[str, ...]
    key_id: str | None
    #: The caller's key, fingerprinted on the ledger's writer thread (never stored).
    api_key: str | None
    idempotency_key: str | None
    #: When it happened, in UTC microseconds.
    at_us: int


@dataclass
class MeterTotals:
    """One group's events of a custom meter over a period.

    `value` is the sum for a sum meter, the number of events for a count meter, and the
    latest value for a last meter (the later event wins; at the same microsecond, the larger
    value).
    """

    meter: str
    unit: str
    aggregation: str
    group: dict[str, str] = field(default_factory=dict)
    events: int = 0
    value_micro: int = 0
    last_at_us: int | None = None
    currency: str | None = None

    @property
    def value(self) -> Decimal:
        """The meter's value for the group, exact, in its unit."""
        if self.aggregation == "count":
            return Decimal(self.events)
        return Decimal(self.value_micro).scaleb(-6).normalize()

    @property
    def last_at(self) -> datetime | None:
        """When the group's last event happened (UTC)."""
        if self.last_at_us is None:
            return None
        return datetime.fromtimestamp(self.last_at_us / 1_000_000, timezone.utc)

    def add(self, sums: Sequence[Any]) -> None:
        """Add one row of sums: events, value sum, last time, value at the last time."""
        events, total, last_at, last_value = sums
        self.events += int(events or 0)
        if self.aggregation != "last":
            self.value_micro += int(total or 0)
        elif last_at is not None and (
            self.last_at_us is None
            or (int(last_at), int(last_value)) > (self.last_at_us, self.value_micro)
        ):
            self.value_micro = int(last_value)
        if last_at is not None and (self.last_at_us is None or int(last_at) > self.last_at_us):
            self.last_at_us = int(last_at)
