"""One snapshot of every counter per collection, however many callbacks the SDK calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from otel_tokens._core.handoff import Handoff


class CounterSnapshots:
    """Serve each counter's callback from one snapshot of them all, taken by the first
    callback of each collection.

    The SDK calls each callback once per collection, one collection at a time: the first
    callback of a collection (whichever instrument it is) folds the queue and reads every
    counter at once, so that one export never mixes two moments.

    Args:
        handoff: the tracker's queue, folded before each snapshot (under its consumer lock).
        take: reads every counter's observations, by counter name.
    """

    def __init__(
        self, handoff: Handoff[Any], take: Callable[[], dict[str, list[Observation]]]
    ) -> None:
        self._handoff = handoff
        self._take = take
        self._observations: dict[str, list[Observation]] = {}
        self._served: set[str] | None = None

    def callback(self, name: str) -> Callable[[CallbackOptions], list[Observation]]:
        """The callback of counter `name`."""

        def observe(options: CallbackOptions) -> list[Observation]:
            return self.observe(name)

        return observe

    def observe(self, name: str) -> list[Observation]:
        """Counter `name`'s observations in the collection under way."""
        served = self._served
        if served is None or name in served:
            self._observations = self._handoff.drain_then(self._take)
            served = self._served = set()
        served.add(name)
        return self._observations[name]
