"""Records the tracker could not record: counted by reason and by whose they were, warned once.

`otel_tokens.records.dropped` is what tells an operator that the other metrics under-count.
It says whose data is lost (`gen_ai.provider.name`, and `gen_ai.response.model` while the
count of such label sets is within `MAX_LABELLED`), and every reason this package knows is
exported at 0 from the start, so that `increase()` sees the first drop of each.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping

from opentelemetry.metrics import Observation

from otel_tokens._base import names as n
from otel_tokens._base.usage import Usage
from otel_tokens._base.warn import WarnOnce

#: Why a record is dropped: the faults `find_fault` names, and the tracker's own reasons.
RECORD_REASONS = (
    "not_usage",
    "bad_label",
    "bad_type",
    "negative_tokens",
    "too_many_tokens",
    "cache_exceeds_input",
    "reasoning_exceeds_output",
    "unknown_status",
    "error_type_on_success",
    "bad_latency",
    "bad_time_to_first_token",
    "bad_time_per_output_chunk",
    "invalid_event",
    "queue_full",
    "interrupted",
    "internal_error",
)
#: Why a tracker's ledger did not write a row (exported only when the tracker has a ledger).
LEDGER_REASONS = ("ledger_closed", "ledger_queue_full", "ledger_row_refused", "ledger_write_failed")

#: Label sets with a provider (and maybe a model) kept apart; drops of more go on the reason.
MAX_LABELLED = 64
#: Provider and model names longer than this are not kept at all: the label could not hold them.
_MAX_NAME = 1024

#: (reason, provider, model): provider and model are the caller's exact strings, or None.
_Key = tuple[str, str | None, str | None]
#: Turns a provider and a model (or None) into the attributes that name them.
Labeller = Callable[[str, str | None], dict[str, str]]


def ledger_drops(counts: Mapping[str, int]) -> Counter[str]:
    """A ledger's drops as reasons of their own ("ledger_write_failed", ...), every one of
    LEDGER_REASONS at 0 at least."""
    named = Counter(dict.fromkeys(LEDGER_REASONS, 0))
    for reason, count in counts.items():
        named[reason if reason.startswith("ledger_") else f"ledger_{reason}"] += count
    return named


def _whose(usage: object) -> tuple[str | None, str | None]:
    """The provider and model of a dropped record, when it is a `Usage` that has them as
    plain text; nothing else is trusted (the record was dropped for being wrong)."""
    if type(usage) is not Usage:
        return None, None
    # A Usage made without __init__ may lack its fields: nothing of it is known then.
    provider, model = getattr(usage, "provider", None), getattr(usage, "model", None)
    if type(provider) is not str or not provider or len(provider) > _MAX_NAME:
        return None, None
    if type(model) is not str or not model or len(model) > _MAX_NAME:
        return provider, None
    return provider, model


class Drops:
    """Records not recorded, by reason and whose: counted from any thread, warned once per reason.

    Args:
        warn: the tracker's once-per-kind warner.
        labeller: makes the provider and model attributes (cut, allow-listed) at collection.
    """

    def __init__(self, warn: WarnOnce, labeller: Labeller) -> None:
        self._warn = warn
        self._labeller = labeller
        self._counts: Counter[_Key] = Counter()
        self._labelled = 0
        self._unsaid: dict[str, str] = {}
        self._lock = threading.Lock()

    def _count(self, reason: str, usage: object, count: int, *, bounded: bool = False) -> None:
        provider, model = _whose(usage)
        if bounded and provider is not None:
            # Off the request path: key by the labels themselves, so that names that share a
            # label (cut, or "other" outside the allow-list) share one of the MAX_LABELLED sets.
            labels = self._labeller(provider, model)
            provider, model = labels[n.PROVIDER], labels.get(n.RESPONSE_MODEL)
        key: _Key = (reason, provider, model)
        with self._lock:
            counts = self._counts
            if provider is not None and key not in counts:
                if self._labelled >= MAX_LABELLED:
                    key = (reason, None, None)
                else:
                    self._labelled += 1
            counts[key] += count

    def add(
        self, reason: str, why: str, count: int = 1, *, usage: object = None, exc_info: bool = False
    ) -> None:
        """Count and warn now: for the consumer and collections, never the request path.

        Args:
            reason: the bounded reason label.
            why: a sentence for the log.
            count: how many records.
            usage: the dropped record, whose provider and model label the count.
            exc_info: log the exception being handled.
        """
        self._count(reason, usage, count, bounded=True)
        self._say(reason, why, exc_info=exc_info)

    def add_later(self, reason: str, why: str, usage: object = None) -> None:
        """Count now and leave the warning to the consumer: logging may block, `record()` not."""
        self._count(reason, usage, 1)
        with self._lock:
            self._unsaid.setdefault(reason, why)

    def say_pending(self) -> None:
        """Log the warnings `add_later()` left, once per reason."""
        if not self._unsaid:
            return
        with self._lock:
            unsaid, self._unsaid = self._unsaid, {}
        for reason, why in unsaid.items():
            self._say(reason, why)

    def _say(self, reason: str, why: str, *, exc_info: bool = False) -> None:
        self._warn(
            ("drop", reason),
            "otel_tokens dropped a usage record: %s. Drops are counted on "
            "otel_tokens.records.dropped{reason=%r}; this is logged once per reason",
            why,
            reason,
            exc_info=exc_info,
        )

    def observations(self, more: Counter[str] | None = None) -> list[Observation]:
        """Every count, each known reason at 0 at least, with `more` (the ledger's, by
        reason) added in."""
        self.say_pending()
        with self._lock:
            counts = list(self._counts.items())
        totals: dict[tuple[tuple[str, str], ...], int] = {
            ((n.DROP_REASON, reason),): 0 for reason in RECORD_REASONS
        }
        for (reason, provider, model), count in counts:
            labels = {n.DROP_REASON: reason}
            if provider is not None:
                labels.update(self._labeller(provider, model))
            key = tuple(labels.items())
            totals[key] = totals.get(key, 0) + count
        for reason, count in (more or {}).items():
            key = ((n.DROP_REASON, reason),)
            totals[key] = totals.get(key, 0) + count
        return [Observation(count, dict(key)) for key, count in totals.items()]
