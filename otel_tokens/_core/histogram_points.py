"""Histogram points of one series, summed in-process until a collection hands them to the SDK.

The SDK's `Histogram.record()` cleans, copies and hashes the attributes on every call; a series'
attributes are fixed, so the points are summed here the way the SDK's explicit-bucket
aggregation sums them (same bucket rule, same order of additions) and merged into it at
collection (`sdk_histograms`). Exemplars are kept the way the SDK's aligned-bucket reservoir
keeps them: the last sampled point of each bucket, and the last one that carried a span.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

from opentelemetry.context import Context

#: One exemplar: the point's value, when it was folded, and the context it was recorded in.
Offer = tuple[float, int, Context]


class PendingPoints:
    """The points one series put on one histogram since the last collection.

    Args:
        boundaries: the histogram's bucket boundaries, strictly increasing.
    """

    __slots__ = (
        "boundaries",
        "counts",
        "first_ns",
        "last",
        "maximum",
        "merge_keys",
        "minimum",
        "total",
        "traced",
    )

    def __init__(self, boundaries: Sequence[float]) -> None:
        self.boundaries = tuple(boundaries)
        self.counts = [0] * (len(self.boundaries) + 1)
        self.total: float = 0
        self.minimum: float = math.inf
        self.maximum: float = -math.inf
        #: When the first point since the last collection was folded; 0 while there is none.
        self.first_ns = 0
        #: The last sampled point of each bucket (by bucket index).
        self.last: dict[int, Offer] = {}
        #: The last sampled point of each bucket whose context held a span, where it is not
        #: the last point too: the SDK's reservoir keeps that point's span and trace ids.
        self.traced: dict[int, Offer] = {}
        #: What the merge into the SDK computes once per series (its hashed attributes).
        self.merge_keys: object = None

    def add(self, value: float, now_ns: int, exemplar: Context | None) -> None:
        """Count `value`, folded at `now_ns`; `exemplar` is its context when it was sampled."""
        index = bisect_left(self.boundaries, value)
        self.counts[index] += 1
        self.total += value
        # As min() and max() do: an equal value keeps the one already there.
        if value < self.minimum:  # noqa: PLR1730 - min() is slower
            self.minimum = value
        if value > self.maximum:  # noqa: PLR1730
            self.maximum = value
        if not self.first_ns:
            self.first_ns = now_ns
        if exemplar is not None:
            self.last[index] = (value, now_ns, exemplar)

    def add_mixed(self, value: float, now_ns: int, exemplar: Context | None, traced: bool) -> None:
        """`add`, where sampled points may lack a span (an exemplar filter other than the
        trace-based one): `traced` says whether `exemplar` holds one."""
        if exemplar is None:
            self.add(value, now_ns, None)
            return
        index = bisect_left(self.boundaries, value)
        before = self.last.get(index)
        self.add(value, now_ns, exemplar)
        if traced:
            self.traced.pop(index, None)  # the last point carries its own span
        elif before is not None and index not in self.traced:
            self.traced[index] = before  # maybe spanless too: then offering it changes nothing

    def clear(self) -> None:
        """Forget every point: they have been handed over."""
        self.counts = [0] * len(self.counts)
        self.total = 0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.first_ns = 0
        self.last.clear()
        self.traced.clear()
