"""Reach one instrument's aggregations inside the OpenTelemetry SDK, in every reader.

The tracker sums in-process what the SDK would sum, and adds the sums to the SDK's own
aggregations at collection (`sdk_histograms`, `sdk_counters`), where the SDK's views,
cardinality limits and temporalities still apply. That reads the SDK's internals, so it is
done only where they are the ones known here: an instrument of the SDK's own meter (a global
proxy's counts once it has one), on an enabled meter, aggregated by every reader as the
caller's `qualifies` accepts, and with a self-test, once per process, finding the merge
identical to the SDK's own recording. Anywhere else the caller records through the public API.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

_logger = logging.getLogger("otel_tokens")

Attributes = dict[str, Any]
#: (a reader's view instrument match, the attribute keys its view keeps, or None for all).
Match = tuple[Any, "frozenset[str] | None"]

#: Each self-test's answer in this process, by name.
_self_tests: dict[str, bool] = {}
_self_tests_lock = threading.RLock()
#: The self-tests being run, by the thread holding the lock.
_running: set[str] = set()


def _new_lock() -> None:
    global _self_tests_lock  # noqa: PLW0603 - a lock another thread held at a fork is lost
    _self_tests_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


class SdkAggregations:
    """One instrument's aggregations in every reader of its meter provider.

    Args:
        instrument: the instrument the tracker created (maybe a global proxy's).
        qualifies: whether a view instrument match of the SDK instrument can be merged into
            (it is given the SDK instrument and the match).
        self_test: (name, test) of the self-test that must pass before any merge.
    """

    def __init__(
        self,
        instrument: object,
        qualifies: Callable[[Any, Any], bool],
        self_test: tuple[str, Callable[[], bool]],
    ) -> None:
        self._instrument = instrument
        self._qualifies = qualifies
        self._self_test = self_test
        self._seen: tuple[object, object, bool] | None = None
        #: The SDK instrument being merged into, once `plan` found it can be.
        self.sdk_instrument: Any = None
        self.matches: list[Match] = []

    def _state(self) -> tuple[Any, Any, bool]:
        instrument: Any = self._instrument
        real = getattr(instrument, "_real_instrument", None)  # a global proxy's instrument
        if real is not None:
            instrument = real
        consumer = getattr(instrument, "_measurement_consumer", None)
        storages = getattr(consumer, "_reader_storages", None)
        enabled = getattr(instrument, "_is_enabled", None)
        return instrument, storages, bool(enabled is not None and enabled())

    def stale(self) -> bool:
        """Whether the instrument, its readers or its meter's state changed since `plan`."""
        seen = self._seen
        if seen is None:
            return True
        state = self._state()
        return state[0] is not seen[0] or state[1] is not seen[1] or state[2] != seen[2]

    def plan(self) -> bool:
        """Find the aggregations to merge into; False when the public API must be used."""
        self._seen = instrument, storages, enabled = self._state()
        self.matches = []
        self.sdk_instrument = None
        if not enabled or storages is None:
            return False
        try:
            matches = self._matches(instrument, storages)
        except Exception:  # the SDK's internals changed: its public API is always right
            _logger.debug("otel_tokens: cannot merge into the SDK", exc_info=True)
            return False
        if matches is None or not passes(*self._self_test):
            return False
        self.matches = matches
        self.sdk_instrument = instrument
        return True

    def _matches(self, instrument: Any, storages: Any) -> list[Match] | None:
        matches: list[Match] = []
        for storage in list(storages.values()):
            for match in storage._get_or_init_view_instrument_match(instrument):
                if not self._qualifies(instrument, match):
                    return None
                keys = match._view._attribute_keys
                matches.append((match, None if keys is None else frozenset(keys)))
        return matches

    def keys(self, attributes: Attributes) -> Keys:
        """What each reader aggregates `attributes` under: compute once per series and plan."""
        return Keys(self.matches, attributes)

    def each(self, keys: Keys) -> Iterator[tuple[Any, bool]]:
        """Each reader's aggregation of `keys`' attributes (made if missing, as a measurement
        would) and whether it was just made, with the match's lock held meanwhile: a delta
        collection swaps the aggregations under it."""
        for (match, _), (kept, key) in zip(self.matches, keys.keys, strict=True):
            with match._lock:
                created = key not in match._attributes_aggregation
                yield match._get_or_create_aggregation(key, kept), created

    def exemplar_filter(self) -> Any:
        """The meter provider's exemplar filter (after a `plan` that returned True)."""
        return self.sdk_instrument._measurement_consumer._sdk_config.exemplar_filter


class Keys:
    """The attributes each reader keeps of one series, and their hash, for one plan."""

    __slots__ = ("keys", "matches")

    def __init__(self, matches: list[Match], attributes: Attributes) -> None:
        from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes

        self.matches = matches
        self.keys = []
        for _, names in matches:
            kept = {k: v for k, v in attributes.items() if names is None or k in names}
            self.keys.append((kept, _hash_attributes(kept)))

    def current(self, aggregations: SdkAggregations) -> bool:
        """Whether these keys are for `aggregations`' present plan."""
        return self.matches is aggregations.matches


def passes(name: str, test: Callable[[], bool]) -> bool:
    """Whether self-test `name` passes on this SDK: run once per process, warned if not."""
    passed = _self_tests.get(name)
    if passed is not None:
        return passed
    with _self_tests_lock:  # others wait for the answer; the test's own plan() passes
        passed = _self_tests.get(name)
        if passed is not None:
            return passed
        if name in _running:
            return True
        _running.add(name)
        try:
            passed = bool(test())
        except Exception:
            _logger.debug("otel_tokens: self-test %s failed", name, exc_info=True)
            passed = False
        finally:
            _running.discard(name)
        _self_tests[name] = passed
        if not passed:
            _logger.warning(
                "otel_tokens: this OpenTelemetry SDK's %s are not the ones the tracker knows, "
                "so it records them through the SDK's API, which is slower",
                name,
            )
    return passed
