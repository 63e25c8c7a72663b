"""What a `TokenTracker` checks and builds at setup: one tracker per meter, its settings,
its price table and its histograms."""

from __future__ import annotations

import os
import threading
import weakref

from opentelemetry.metrics import Histogram, Meter

from otel_tokens._core import instruments as spec
from otel_tokens._core.conventions import Naming
from otel_tokens._core.sdk_histograms import Histograms
from otel_tokens._core.series import OVERFLOW_GROUPS
from otel_tokens._pricing.table import PriceTable

#: A JSON or YAML price file whose models override the bundled table, read at tracker setup.
PRICE_FILE_ENV = "OTEL_TOKENS_PRICE_FILE"


_meters_in_use: weakref.WeakSet[Meter] = weakref.WeakSet()
_meters_lock = threading.Lock()


def _new_meters_lock() -> None:
    global _meters_lock  # noqa: PLW0603 - a lock another thread held at a fork is lost for good
    _meters_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_meters_lock)


def claim_meter(meter: Meter) -> None:
    with _meters_lock:
        try:
            taken = meter in _meters_in_use
        except TypeError:  # a meter that cannot be weakly referenced: nothing to guard
            return
        if taken:
            msg = (
                f"meter {getattr(meter, 'name', meter)!r} already has a TokenTracker, and a "
                "second one's observable instruments would be silently ignored by the SDK: "
                "reuse the first tracker or get a meter with another name"
            )
            raise ValueError(msg)
        _meters_in_use.add(meter)


#: The SDK keeps 2000 series per instrument and the token histogram has two per attribute
#: set (input and output): past this, with the overflow series, the SDK's own overflow would
#: merge them, uncounted.
_SDK_SERIES = 2000
MAX_SERIES = _SDK_SERIES // 2 - (OVERFLOW_GROUPS + 1)
MAX_SERIES_WHY = (
    " (the SDK keeps 2000 series per instrument and gen_ai.client.token.usage has two per "
    "attribute set)"
)


def check_int(name: str, value: object, low: int, high: int, why: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        msg = f"{name} must be an int from {low} to {high}{why}, got {value!r}"
        raise ValueError(msg)
    return value


def price_table(prices: object) -> PriceTable:
    if isinstance(prices, PriceTable):
        return prices
    if prices is None:
        prices = os.environ.get(PRICE_FILE_ENV) or None
        if prices is None:
            return PriceTable.bundled()
    if isinstance(prices, (str, os.PathLike)):
        return PriceTable.bundled().with_overrides(PriceTable.from_file(prices))
    msg = f"prices must be a PriceTable or a price file path, got {type(prices).__name__}"
    raise ValueError(msg)


def create_histograms(meter: Meter, naming: Naming) -> Histograms:
    def create(instrument: spec.InstrumentSpec) -> Histogram:
        return meter.create_histogram(
            instrument.name,
            unit=instrument.unit,
            description=instrument.description,
            explicit_bucket_boundaries_advisory=list(instrument.buckets or ()),
        )

    specs = (
        naming.input_tokens,
        naming.output_tokens,
        naming.duration,
        naming.time_to_first_chunk,
        naming.time_per_output_chunk,
    )
    input_tokens = create(naming.input_tokens)
    output_tokens = create(naming.output_tokens) if naming.latest else input_tokens
    return Histograms(
        instruments=(input_tokens, output_tokens, *(create(s) for s in specs[2:])),
        boundaries=tuple(tuple(s.buckets or ()) for s in specs),
    )
