"""The ledger's typed rows: what waits in its queue, and the database rows made of it.

Rows are made on the writer thread, never on the caller's: a queued usage is checked and
priced there when a tracker has not done it already, its API key fingerprinted, its texts
made storable.
"""

from __future__ import annotations

import enum
import functools
import itertools
import uuid
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any, Literal, NamedTuple

from otel_tokens._base.fingerprint import SECRET_ENV, KeyFingerprinter
from otel_tokens._base.meters import MeterEvent
from otel_tokens._base.text import is_safe, safe_label
from otel_tokens._base.usage import find_fault
from otel_tokens._base.warn import WarnOnce
from otel_tokens._ledger.schema import EVENT_COLUMNS, EVENT_DIMENSIONS, REQUEST_COLUMNS
from otel_tokens._pricing.table import PriceTable

US_PER_DAY = 86_400_000_000
#: The most characters of a text column a row keeps (ids, models, labels).
MAX_TEXT = 256


class Slot(enum.Enum):
    """What the cost slot of a queued entry holds besides a cost (`Writer.put`)."""

    #: A usage recorded on the ledger itself: the writer checks and prices it.
    UNCHECKED = "unchecked"
    #: A custom meter event, not a usage.
    EVENT = "event"


#: A queued usage's cost: pico-dollars, None when unpriced (a tracker checked and priced
#: it), or `Slot.UNCHECKED`.
UsageCost = int | Literal[Slot.UNCHECKED] | None
#: What a queued entry's cost slot holds.
QueuedCost = int | Slot | None


class RequestFields(NamedTuple):
    """The fields of a row of `otel_tokens_requests`, in `REQUEST_COLUMNS` order. The
    writer makes its rows as plain tuples of them (`RequestRow`) and reads them by the
    indexes below: the garbage collector stops tracking a plain tuple of texts and numbers
    at its first pass, never a NamedTuple, and collecting 20,000-row batches that outlive
    the young generations took a third of the writer's Python time."""

    uid: str
    at_us: int
    key_id: str
    provider: str
    model: str
    request_model: str
    operation: str
    scenario: str
    user_tier: str
    status: str
    error_type: str | None
    streamed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    system_tokens: int
    cost_pico: int | None
    latency_s: float | None
    team: str


class EventRow(NamedTuple):
    """One row of `otel_tokens_events`, in `EVENT_COLUMNS` order."""

    meter: str
    uid: str
    at_us: int
    key_id: str
    d1: str
    d2: str
    d3: str
    d4: str
    value_micro: int


#: Where the fields the writer and the budgets read sit in a request row.
UID, AT_US, KEY_ID, COST_PICO, INPUT_TOKENS, OUTPUT_TOKENS, TEAM = (
    REQUEST_COLUMNS.index(name)
    for name in ("uid", "at_us", "key_id", "cost_pico", "input_tokens", "output_tokens", "team")
)


#: A request row as the writer makes it: a plain tuple of `RequestFields`.
RequestRow = tuple[Any, ...]


if RequestFields._fields != REQUEST_COLUMNS or EventRow._fields != EVENT_COLUMNS:
    msg = "the ledger's row types and its schema's columns differ (a bug: please report it)"
    raise RuntimeError(msg)


class RowMaker:
    """Turns queued entries into database rows, on the writer thread.

    Args:
        prices: prices for usage recorded on the ledger itself (a tracker's carry a cost).
        fingerprinter: the ledger's fingerprinter, made when first needed; None when its
            key ids were made with a secret this process was not given.
        drop: counts and warns about an entry that cannot be stored: (reason, why).
        target: the ledger, for messages.
    """

    def __init__(
        self,
        prices: PriceTable,
        fingerprinter: Callable[[], KeyFingerprinter | None],
        drop: Callable[[str, str], None],
        target: str,
    ) -> None:
        self._prices = prices
        self._fingerprinter = fingerprinter
        self._drop = drop
        self._target = target
        self.start_afresh()

    def start_afresh(self) -> None:
        """A new id prefix: at start, and in a forked child, whose ids must differ."""
        self._warn = WarnOnce()
        # Rows without an id of their own get this writer's prefix and a running number:
        # unique, and added at one end of the uid index, which is twice as fast as random ids.
        self._uid_prefix = f"{uuid.uuid4().hex[:16]}-"
        self._uid_numbers = itertools.count(1)

    def request_row(self, usage: Any, at_us: int, cost_pico: UsageCost) -> RequestRow | None:
        """The database row of a queued usage; None if it is dropped (counted).

        Args:
            usage: what was recorded: a Usage when a tracker checked it, else anything
                (recorded on the ledger itself), which is checked here.
            at_us: when it happened, in UTC microseconds.
            cost_pico: its cost, or `Slot.UNCHECKED` to check and price it here.
        """
        if cost_pico is Slot.UNCHECKED:
            fault = find_fault(usage)
            if fault is not None:
                self._drop(fault.kind, fault.message)
                return None
            cost_pico = self._prices.cost_pico(usage, on=_utc_day(at_us // US_PER_DAY))
        key_id = usage.api_key_id
        if key_id is None and usage.api_key:
            key_id = self._key_of(usage.api_key)
        texts = storable(
            usage.request_id or self._new_uid(), key_id or "", usage.provider, usage.model,
            usage.request_model or usage.model, usage.operation, usage.scenario or "",
            usage.user_tier or "", usage.status, usage.error_type or "", usage.team or "",
        )  # fmt: skip
        uid, key, provider, model, request_model, operation, scenario, tier, status, error, team = (
            texts
        )
        return (
            uid, at_us, key, provider, model, request_model, operation, scenario, tier, status,
            error or None, int(usage.streamed), usage.input_tokens, usage.output_tokens,
            usage.cache_read_tokens, usage.cache_write_tokens, usage.reasoning_tokens,
            usage.system_tokens, cost_pico, usage.latency_s, team,
        )  # fmt: skip

    def event_row(self, event: MeterEvent) -> EventRow:
        """The database row of a queued custom meter event."""
        key_id = event.key_id
        if key_id is None and event.api_key:
            key_id = self._key_of(event.api_key)
        padding = ("",) * (len(EVENT_DIMENSIONS) - len(event.values))
        uid, key = storable(event.idempotency_key or self._new_uid(), key_id or "")
        d1, d2, d3, d4 = (*event.values, *padding)
        return EventRow(event.spec.name, uid, event.at_us, key, d1, d2, d3, d4, event.value_micro)

    def _new_uid(self) -> str:
        return f"{self._uid_prefix}{next(self._uid_numbers):012x}"

    def _key_of(self, api_key: str) -> str | None:
        fingerprint = self._fingerprinter()
        if fingerprint is None:
            self._warn(
                "no-secret",
                "otel_tokens: usage with an API key reached the ledger %r, whose key ids were "
                "made with a secret this process was not given, so it is stored without a "
                "key: set %s",
                self._target,
                SECRET_ENV,
            )
            return None
        return fingerprint(api_key)


def storable(*texts: str) -> tuple[str, ...]:
    """`texts` as every database stores them: exact str, no lone surrogate or NUL, at most
    MAX_TEXT characters. They come from callers and request bodies; one that could not be
    stored would fail the whole batch it is written in."""
    if is_safe("".join(texts)) and max(map(len, texts)) <= MAX_TEXT:
        return texts  # the common case, checked at once
    return tuple(safe_label(text, MAX_TEXT) for text in texts)


@functools.lru_cache(maxsize=64)
def _utc_day(number: int) -> date:
    """The UTC date of day `number` since the epoch (requests come in days, few at once)."""
    return datetime.fromtimestamp(number * 86_400, timezone.utc).date()
