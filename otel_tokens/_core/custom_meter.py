"""`CustomMeter`: record events of a custom meter into a sink (the ledger) and as an
instrument."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from otel_tokens._base.meters import MeterEvent, MeterSpec, to_micro
from otel_tokens._base.text import shown
from otel_tokens._core.sink import UsageSink


class CustomMeter:
    """A named meter of usage other than tokens (web searches, images, audio seconds, tool
    calls). Made by `UsageLedger.custom_meter()` or `TokenTracker.custom_meter()`; see there.

    `record()` never raises: an event it cannot take is dropped, counted and warned about
    once, like a bad `Usage`.
    """

    def __init__(
        self,
        spec: MeterSpec,
        *,
        sink: UsageSink | None,
        instrument: Any = None,
        drop: Callable[[str, str], None],
    ) -> None:
        self.spec = spec
        self._sink = sink
        self._instrument = instrument
        self._add = None if instrument is None else getattr(instrument, "add", None)
        self._set = None if instrument is None else getattr(instrument, "set", None)
        self._drop = drop

    @property
    def name(self) -> str:
        """The meter's name."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"CustomMeter({self.spec.name!r}, {self.spec.describe()})"

    def record(
        self,
        value: float | Decimal = 1,
        *,
        dimensions: Mapping[str, object] | None = None,
        api_key: str | None = None,
        key_id: str | None = None,
        idempotency_key: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record one event; never raises.

        Args:
            value: the quantity (audio seconds, images, dollars); 1 for a count meter.
            dimensions: the value of each of the meter's dimensions; any left out are "".
            api_key: the caller's key; the ledger stores only its fingerprint.
            key_id: the key's fingerprint, when that is what the caller holds.
            idempotency_key: an id of the event (a request id, say): recording it again,
                here or on another replica, counts it once.
            at: when it happened (aware); default now.
        """
        try:
            spec = self.spec
            fault = spec.event_fault(value, dimensions) or _ids_fault(
                spec.name, api_key=api_key, key_id=key_id, idempotency_key=idempotency_key
            )
            if fault is not None:
                self._drop("invalid_event", fault)
                return
            values = spec.dimension_values(dimensions)
            if self._instrument is not None:
                attributes = dict(zip(spec.dimensions, values, strict=True))
                if self._add is not None:
                    self._add(float(value), attributes)
                elif self._set is not None:
                    self._set(float(value), attributes)
            if self._sink is not None:
                at_us = int((at.timestamp() if at is not None else time.time()) * 1_000_000)
                event = MeterEvent(spec, to_micro(value), values, key_id, api_key,
                                   idempotency_key, at_us)  # fmt: skip
                self._sink.put_event(event)
        except Exception:
            self._drop("internal_error", "recording a custom meter event failed (a bug)")


def _ids_fault(meter: str, **ids: object) -> str | None:
    """Why the key and idempotency key of an event cannot be taken; None if they can."""
    for name, value in ids.items():
        if value is not None and not isinstance(value, str):
            # A key is a secret: name its type, never the value.
            got = type(value).__name__ if name == "api_key" else shown(value)
            return f"meter {meter!r}: {name} must be a str or None, got {got}"
    return None
