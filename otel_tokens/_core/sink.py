"""The sink: where a tracker and its custom meters send what they record besides the
instruments (a `UsageLedger`), seen from the core as the few methods it calls.

The core never imports the ledger and the ledger never learns what feeds it: the ledger
implements this protocol, the tracker is handed one. Whoever holds rows on their way to
the sink (a tracker's queue) registers a drain with `add_source`, so that the sink's own
`flush()` and `close()` write them too and nothing accepted is lost when the sink alone
is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

from otel_tokens._base.fingerprint import KeyFingerprinter
from otel_tokens._base.meters import MeterEvent, MeterSpec
from otel_tokens._base.usage import Usage


class BudgetPoint(NamedTuple):
    """One budget as the budget gauges report it."""

    #: llm.budget.scope, llm.budget.subject, llm.budget.period and llm.budget.unit.
    attributes: dict[str, str]
    spent: float
    remaining: float
    #: Seconds until it runs out at the last hour's rate; None: not before it resets.
    exhaustion_s: float | None


@runtime_checkable
class UsageSink(Protocol):
    """What the core asks of a usage ledger."""

    def add(self, usage: Usage, cost_pico: int | None, at_us: int) -> None:
        """Queue a checked `usage` whose cost (pico-dollars, None if unpriced) is known,
        which happened at `at_us` (UTC microseconds); never raises."""

    def put_event(self, event: MeterEvent) -> None:
        """Queue a checked custom meter event; never raises."""

    def define(self, spec: MeterSpec) -> MeterSpec:
        """Store a custom meter's definition and return the stored one.

        Raises:
            ValueError: the sink holds another definition under the same name.
        """

    def drops(self) -> dict[str, int]:
        """Rows not written, by reason."""

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write what is queued; True when all of it is written (or dropped, counted)."""

    def share_keys(self, theirs: KeyFingerprinter | None) -> KeyFingerprinter | None:
        """The one fingerprinter for the sink and for what feeds it: `theirs` if the sink
        had none, else the sink's own.

        Raises:
            ValueError: `theirs` makes other key ids than the sink's are made with.
        """

    def budget_points(self) -> list[BudgetPoint]:
        """Where each budget stands, from memory; never raises."""

    def add_source(self, drain: Callable[[], object]) -> None:
        """Call `drain()` first whenever the sink flushes or closes (it holds rows bound
        for the sink, such as a tracker's queue)."""
