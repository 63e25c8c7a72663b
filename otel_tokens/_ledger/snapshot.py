"""Snapshots of a ledger: JSON Lines another ledger merges, skipping what it already holds.

The first line says what the file is; then come the custom meters' definitions, then one
line per request and per meter event, each an object with every column named, so a file
can be read (or filtered with `jq`) without this package. Rows keep their ids (the request
id or a generated one), which is how a merge knows what it already has.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import IO, Any, TypeVar

from otel_tokens._base.meters import MeterSpec
from otel_tokens._base.names import STATUSES
from otel_tokens._base.text import safe_text, shown
from otel_tokens._ledger.periods import Period
from otel_tokens._ledger.rows import EventRow, RequestRow
from otel_tokens._ledger.schema import EVENT_COLUMNS, REQUEST_COLUMNS, TOKEN_COLUMNS
from otel_tokens._ledger.store import Store

FORMAT = "otel_tokens.ledger"
VERSION = 1
METER_FIELDS = ("name", "unit", "aggregation", "dimensions", "currency", "description")
#: Rows written to the ledger in one transaction while merging.
MERGE_BATCH = 5_000
_MAX_ID = 256
_Row = TypeVar("_Row", RequestRow, EventRow)


def write_snapshot(
    store: Store, out: IO[str], period: Period | None, key_check: str | None
) -> dict[str, int]:
    """Write the ledger's meters, and its requests and events in `period` (all for None),
    to `out`; how many of each were written. `key_check` says which secret the key ids
    were made with (never the secret itself), so that a merge can refuse other ones."""
    start, end = (0, 2**62) if period is None else (period.start_us, period.end_us)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "period": None if period is None else period.describe(),
        "key_check": key_check,
    }
    out.write(json.dumps({"snapshot": header}) + "\n")
    counts = {"meters": 0, "requests": 0, "events": 0}
    for spec in store.meters():
        fields: dict[str, Any] = dict(zip(METER_FIELDS, spec.row(), strict=True))
        fields["dimensions"] = list(spec.dimensions)
        out.write(json.dumps({"meter": fields}) + "\n")
        counts["meters"] += 1
    for kind, rows, names in (
        ("request", store.requests(start, end), REQUEST_COLUMNS),
        ("event", store.events(start, end), EVENT_COLUMNS),
    ):
        for row in rows:
            out.write(json.dumps({kind: dict(zip(names, row, strict=True))}) + "\n")
            counts[f"{kind}s"] += 1
    return counts


class SnapshotError(ValueError):
    """A snapshot line that is not what `otel-tokens export` writes."""


def read_snapshot(lines: Iterable[str], source: str) -> Iterator[tuple[str, Any]]:
    """The items of a snapshot: ("snapshot", the check of its key secret or None), then
    ("meter", MeterSpec), ("request", row), ("event", row).

    Raises:
        SnapshotError: the file is not a snapshot, or a line of it is damaged.
    """
    number = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            item = json.loads(line)
        except ValueError as exc:
            msg = f"{where} is not JSON ({exc}): is this a snapshot `otel-tokens export` wrote?"
            raise SnapshotError(msg) from exc
        if not isinstance(item, dict) or len(item) != 1:
            msg = f"{where} is not one snapshot item, got {line[:80]!r}"
            raise SnapshotError(msg)
        [(kind, fields)] = item.items()
        if number == 1 or kind == "snapshot":
            _check_header(kind, fields, where)
            check = fields.get("key_check")
            yield "snapshot", check if isinstance(check, str) else None
            continue
        try:
            if kind == "meter":
                yield kind, _meter(fields)
            elif kind == "request":
                yield kind, _request_row(fields)
            elif kind == "event":
                yield kind, _event_row(fields)
            else:
                msg = f"unknown item {kind!r}"
                raise ValueError(msg)
        except (ValueError, TypeError, KeyError) as exc:
            msg = f"{where} is damaged: {exc}; nothing after it was merged"
            raise SnapshotError(msg) from exc
    if number == 0:
        msg = f"{source} is empty: a snapshot starts with a line naming its format"
        raise SnapshotError(msg)


def merge_snapshot(
    store: Store,
    lines: Iterable[str],
    source: str,
    define: Callable[[MeterSpec], MeterSpec],
    accept_keys: Callable[[str | None, str], None],
) -> dict[str, int]:
    """Add the snapshot in `lines` to `store`, skipping the rows it already holds.

    Args:
        store: the ledger's database.
        lines: the snapshot, as `write_snapshot` wrote it.
        source: the file, for messages.
        define: stores a meter's definition (raises on a different one).
        accept_keys: takes the check value of the secret the snapshot's key ids were made
            with (raises on another secret than the ledger's).

    Raises:
        ValueError: a damaged line (what came before it is merged), an event of a meter it
            does not define, another definition of a meter, or another key secret.
    """
    counts = dict.fromkeys(
        ("requests_added", "requests_skipped", "events_added", "events_skipped", "meters"), 0
    )
    meters = {spec.name for spec in store.meters()}
    requests: list[RequestRow] = []
    events: list[EventRow] = []

    def write_requests() -> None:
        _write(counts, "requests", requests, store.write)

    def write_events() -> None:
        _write(counts, "events", events, store.write_events)

    try:
        for kind, item in read_snapshot(lines, source):
            if kind == "snapshot":
                accept_keys(item, source)
            elif kind == "meter":
                meters.add(define(item).name)
                counts["meters"] += 1
            elif kind == "event":
                if item.meter not in meters:
                    msg = f"{source}: an event of meter {item.meter!r}, which it does not define"
                    raise ValueError(msg)
                events.append(item)
                if len(events) >= MERGE_BATCH:
                    write_events()
            else:
                requests.append(item)
                if len(requests) >= MERGE_BATCH:
                    write_requests()
    finally:
        write_requests()
        write_events()
    return counts


def _write(
    counts: dict[str, int], kind: str, rows: list[_Row], write: Callable[[Sequence[_Row]], int]
) -> None:
    """Write a batch of rows, count them as added and skipped, and empty it."""
    if rows:
        added = write(rows)
        counts[f"{kind}_added"] += added
        counts[f"{kind}_skipped"] += len(rows) - added
        rows.clear()


def _check_header(kind: str, fields: Any, where: str) -> None:
    if kind != "snapshot" or not isinstance(fields, dict) or fields.get("format") != FORMAT:
        msg = f"{where} does not start an {FORMAT} snapshot: write one with `otel-tokens export`"
        raise SnapshotError(msg)
    if fields.get("version") != VERSION:
        msg = (
            f"{where}: snapshot version {fields.get('version')!r} is not {VERSION}, the one "
            "this otel_tokens reads: merge it with the otel_tokens that wrote it"
        )
        raise SnapshotError(msg)


def _fields(fields: Any, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(fields, dict) or set(fields) != set(names):
        have = sorted(fields) if isinstance(fields, dict) else type(fields).__name__
        msg = f"its fields must be exactly {list(names)}, got {have}"
        raise ValueError(msg)
    return fields


def _text(fields: dict[str, Any], name: str, *, optional: bool = False, limit: int = 1024) -> None:
    value = fields[name]
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > limit:
        msg = f"{name} must be text of at most {limit} characters, got {shown(value)}"
        raise ValueError(msg)
    # Text an older ledger stored as it came (NUL, a lone surrogate) is stored safe here.
    fields[name] = safe_text(value)


def _integer(fields: dict[str, Any], name: str, *, optional: bool = False, low: int = 0) -> None:
    value = fields[name]
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**63:
        msg = f"{name} must be a whole number >= {low}, got {value!r}"
        raise ValueError(msg)


def _request_row(fields: Any) -> RequestRow:
    if isinstance(fields, dict) and "team" not in fields:  # written before teams were stored
        fields = {**fields, "team": ""}
    found = _fields(fields, REQUEST_COLUMNS)
    _text(found, "uid", limit=_MAX_ID)
    if not found["uid"]:
        msg = "uid must not be empty"
        raise ValueError(msg)
    for name in ("key_id", "provider", "model", "operation", "scenario", "user_tier", "team"):
        _text(found, name)
    for name in ("request_model", "error_type"):
        _text(found, name, optional=True)
    if found["status"] not in STATUSES:
        msg = f"status must be one of {sorted(STATUSES)}, got {found['status']!r}"
        raise ValueError(msg)
    for name in ("at_us", *TOKEN_COLUMNS):
        _integer(found, name)
    _integer(found, "cost_pico", optional=True)
    if found["streamed"] not in (0, 1):
        msg = f"streamed must be 0 or 1, got {found['streamed']!r}"
        raise ValueError(msg)
    latency = found["latency_s"]
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))
                                or not 0 <= latency < 1e9):  # fmt: skip
        msg = f"latency_s must be seconds >= 0 or null, got {latency!r}"
        raise ValueError(msg)
    return tuple(found[name] for name in REQUEST_COLUMNS)


def _event_row(fields: Any) -> EventRow:
    found = _fields(fields, EVENT_COLUMNS)
    _text(found, "uid", limit=_MAX_ID)
    for name in ("meter", "key_id", "d1", "d2", "d3", "d4"):
        _text(found, name)
    _integer(found, "at_us")
    _integer(found, "value_micro", low=-(2**63))
    return EventRow._make(found[name] for name in EVENT_COLUMNS)


def _meter(fields: Any) -> MeterSpec:
    found = _fields(fields, METER_FIELDS)
    dims = found["dimensions"]
    if not isinstance(dims, list):
        msg = f"dimensions must be a list, got {dims!r}"
        raise ValueError(msg)
    return MeterSpec(found["name"], found["unit"], found["aggregation"], tuple(dims),
                     found["currency"], found["description"])  # fmt: skip
