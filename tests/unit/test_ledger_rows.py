"""The ledger's request rows are plain tuples in `REQUEST_COLUMNS` order, which the garbage
collector stops tracking (a NamedTuple it tracks for as long as it lives: collecting the
rows of the batches in flight took a third of the writer's Python time)."""

from __future__ import annotations

import gc

from otel_tokens import PriceTable, Usage
from otel_tokens._ledger.rows import (
    AT_US,
    COST_PICO,
    INPUT_TOKENS,
    KEY_ID,
    OUTPUT_TOKENS,
    TEAM,
    UID,
    RequestFields,
    RowMaker,
    Slot,
)
from otel_tokens._ledger.schema import REQUEST_COLUMNS


def _no_drop(reason: str, why: str) -> None:
    raise AssertionError(f"dropped: {reason}: {why}")


def test_a_request_row_is_a_plain_tuple_the_collector_lets_go_of() -> None:
    usage = Usage(provider="openai", model="gpt-4o-mini", input_tokens=120, output_tokens=7,
                  api_key_id="k", request_id="r-1", team="search")  # fmt: skip
    maker = RowMaker(PriceTable.bundled(), lambda: None, _no_drop, "test")
    row = maker.request_row(usage, 1_700_000_000_000_000, Slot.UNCHECKED)
    assert row is not None and type(row) is tuple and len(row) == len(REQUEST_COLUMNS)
    gc.collect()
    assert not gc.is_tracked(row)  # texts and numbers only: nothing to collect
    named = RequestFields(*row)
    assert (row[UID], row[AT_US], row[KEY_ID], row[TEAM]) == ("r-1", named.at_us, "k", "search")
    assert (row[INPUT_TOKENS], row[OUTPUT_TOKENS]) == (120, 7) and row[COST_PICO] > 0
