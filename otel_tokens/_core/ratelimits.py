"""The last rate-limit headroom each provider reported, as observable gauges.

Every response of a provider that sends rate-limit headers says how much of each limit is
left and when it is whole again (`_base.ratelimit` reads them). The board keeps the newest
reading per label set (provider, server, model asked for, kind, and the key id when opted in)
and reports it at each collection:

- `llm.ratelimit.limit` and `llm.ratelimit.remaining`, by `llm.ratelimit.kind` (`requests`,
  `tokens`, `input_tokens`, `output_tokens`): once a reading's reset time has passed, the
  provider has replenished the limit, so remaining is reported as the limit again;
- `llm.ratelimit.reset`: seconds until then, and with kind `retry_after` the seconds a 429
  asked the client to wait.

A label set not heard from for `STALE_S` is forgotten (its headroom is no longer known), and
at most `MAX_SETS` are kept, the one heard from longest ago making room for a new one: a
provider or a proxy cannot grow it without bound, nor keep new limits out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from opentelemetry.metrics import Observation

from otel_tokens._base import names as n
from otel_tokens._base.ratelimit import RateLimits
from otel_tokens._base.usage import Usage
from otel_tokens._base.warn import WarnOnce

#: Seconds after its last reading that a label set is dropped.
STALE_S = 600.0
#: The most label sets kept (each is one series on each gauge).
MAX_SETS = 256
#: `llm.ratelimit.kind` of the wait a `retry-after` header asked for.
RETRY_AFTER = "retry_after"

#: Turns a `Usage` into the bounded attributes its provider's limits are reported with.
Labeller = Callable[[Usage], dict[str, Any]]


class _Entry(NamedTuple):
    limit: float | None
    remaining: float | None
    reset_at: float | None  # time.monotonic() when the limit is whole again
    seen_at: float


class RateLimitBoard:
    """The newest headroom per label set; written by the consumer, read by collections.

    Args:
        labeller: the attributes of a response's limits (cut and allow-listed like labels).
        warn: the tracker's once-per-kind warner.
        clock: `time.monotonic`, or a test's.
    """

    def __init__(
        self, labeller: Labeller, warn: WarnOnce, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._labeller = labeller
        self._warn = warn
        self._clock = clock
        self._entries: dict[tuple[tuple[str, Any], ...], _Entry] = {}
        self._lock = threading.Lock()

    def update(self, usage: Usage, limits: RateLimits) -> None:
        """Keep what one response of `usage`'s provider said about its limits."""
        now = self._clock()
        base = self._labeller(usage)
        fresh: list[tuple[tuple[tuple[str, Any], ...], _Entry]] = []
        for reading in limits.readings:
            reset_at = None if reading.reset_s is None else now + reading.reset_s
            key = tuple({**base, n.RATELIMIT_KIND: reading.kind}.items())
            fresh.append((key, _Entry(reading.limit, reading.remaining, reset_at, now)))
        if limits.retry_after_s is not None:
            key = tuple({**base, n.RATELIMIT_KIND: RETRY_AFTER}.items())
            fresh.append((key, _Entry(None, None, now + limits.retry_after_s, now)))
        evicted = None
        with self._lock:
            entries = self._entries
            for key, entry in fresh:
                if key not in entries and len(entries) >= MAX_SETS:
                    self._forget_stale(now)
                    if len(entries) >= MAX_SETS:  # the one heard from longest ago makes room
                        evicted = min(entries, key=lambda k: entries[k].seen_at)
                        del entries[evicted]
                entries[key] = entry
        if evicted is not None:  # logged outside the lock: a collection never waits on a log
            self._warn_full(evicted)

    def _forget_stale(self, now: float) -> None:
        entries = self._entries
        for key in [k for k, e in entries.items() if now - e.seen_at > STALE_S]:
            del entries[key]

    def _warn_full(self, key: tuple[tuple[str, Any], ...]) -> None:
        self._warn(
            "ratelimit_full",
            "otel_tokens: rate-limit headroom is kept for %d label sets at most; past that the "
            "one heard from longest ago is forgotten (first one: %r). A model allow-list "
            "bounds them",
            MAX_SETS,
            dict(key),
        )

    def observations(self) -> tuple[list[Observation], list[Observation], list[Observation]]:
        """(limit, remaining, reset) observations of every label set still fresh."""
        now = self._clock()
        with self._lock:
            self._forget_stale(now)
            entries = list(self._entries.items())
        limits: list[Observation] = []
        remaining: list[Observation] = []
        resets: list[Observation] = []
        for key, entry in entries:
            attributes = dict(key)
            left = None if entry.reset_at is None else max(0.0, entry.reset_at - now)
            if entry.limit is not None:
                limits.append(Observation(entry.limit, attributes))
            # Past its reset the limit is whole again: the provider said so.
            value = entry.limit if left == 0 and entry.limit is not None else entry.remaining
            if value is not None:
                remaining.append(Observation(value, attributes))
            if left is not None:
                resets.append(Observation(left, attributes))
        return limits, remaining, resets
