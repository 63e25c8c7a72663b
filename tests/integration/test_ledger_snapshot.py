"""Snapshots: what one ledger exports another merges, once, whatever the backend; a damaged
snapshot says where it is damaged."""

from __future__ import annotations

import io
import json
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from otel_tokens import Usage, UsageLedger
from otel_tokens._ledger.schema import IDEMPOTENCY_WINDOW_US
from tests.conftest import SECRET

DAY = datetime(2026, 11, 10, 12, tzinfo=timezone.utc)


def _fill(ledger: UsageLedger) -> None:
    """Five requests over five days (two with request ids) and three meter events."""
    for day in range(5):
        ledger.record(
            Usage(provider="openai", model="gpt-4o-mini", input_tokens=100 * (day + 1),
                  output_tokens=7, api_key=f"sk-{day % 2}",
                  request_id=f"req-{day}" if day < 2 else None),
            at=DAY + timedelta(days=day),
        )  # fmt: skip
    images = ledger.custom_meter("images.generated", unit="{image}", dimensions=["size"])
    for day in range(3):
        images.record(
            day + 1, dimensions={"size": "1024"}, key_id="k", at=DAY + timedelta(days=day)
        )
    ledger.flush()


def _totals(ledger: UsageLedger) -> list[tuple[object, ...]]:
    rows = ledger.usage("all", by=["key", "day"])
    events = ledger.meter_usage("images.generated", "all", by=["size", "day"])
    return [(t.group, t.requests, t.input_tokens, t.cost_pico, t.last_at_us) for t in rows] + [
        (t.group, t.events, t.value) for t in events
    ]


@pytest.mark.slow
def test_a_snapshot_merges_into_another_ledger_once(tmp_path: Path, target: str) -> None:
    snapshot = tmp_path / "usage.jsonl"
    with UsageLedger(tmp_path / "source.db", api_key_secret=SECRET) as source:
        _fill(source)
        assert source.export(snapshot) == {"meters": 1, "requests": 5, "events": 3}
        want = _totals(source)
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
    with UsageLedger(target, api_key_secret=SECRET) as merged:
        merged.record(
            Usage(provider="openai", model="gpt-4o-mini", input_tokens=1, request_id="req-0"),
            at=DAY + timedelta(microseconds=IDEMPOTENCY_WINDOW_US // 2),
        )  # already there, within the idempotency window: the snapshot's is skipped
        merged.flush()
        first = merged.merge(snapshot)
        assert first == {"requests_added": 4, "requests_skipped": 1, "events_added": 3,
                         "events_skipped": 0, "meters": 1}  # fmt: skip
        again = merged.merge(snapshot)
        assert again == {"requests_added": 0, "requests_skipped": 5, "events_added": 0,
                         "events_skipped": 3, "meters": 1}  # fmt: skip
        merged.reset(all_keys=True)
        merged.merge(snapshot)
        assert _totals(merged) == want


def test_a_snapshot_of_a_period_holds_that_period_only(tmp_path: Path) -> None:
    with UsageLedger(tmp_path / "source.db", api_key_secret=SECRET) as source:
        _fill(source)
        out = io.StringIO()
        counts = source.export(out, "2026-11-11..2026-11-12")
    assert counts == {"meters": 1, "requests": 2, "events": 2}
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["snapshot"]["period"] == "2026-11-11 00:00 .. 2026-11-13 00:00 UTC"
    assert [line["request"]["input_tokens"] for line in lines if "request" in line] == [200, 300]


def _snapshot(*items: dict[str, object]) -> io.StringIO:
    header = {"snapshot": {"format": "otel_tokens.ledger", "version": 1}}
    return io.StringIO("".join(json.dumps(item) + "\n" for item in (header, *items)))


def _request(uid: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "uid": uid, "at_us": 1_762_776_000_000_000, "key_id": "k", "provider": "openai",
        "model": "gpt-4o-mini", "request_model": None, "operation": "chat", "scenario": "",
        "user_tier": "", "status": "success", "error_type": None, "streamed": 0,
        "input_tokens": 10, "output_tokens": 2, "cache_read_tokens": 0,
        "cache_write_tokens": 0, "reasoning_tokens": 0, "system_tokens": 0,
        "cost_pico": None, "latency_s": 0.5,
    }  # fmt: skip
    row.update(fields)
    return {"request": row}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"is empty"),
        ('{"rows": []}\n', r"line 1 does not start an otel_tokens.ledger snapshot"),
        ('{"snapshot": {"format": "otel_tokens.ledger", "version": 9}}\n', r"version 9 is not 1"),
    ],
)
def test_what_is_not_a_snapshot_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with UsageLedger(tmp_path / "usage.db") as ledger, pytest.raises(ValueError, match=message):
        ledger.merge(io.StringIO(text))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            _request("r2", input_tokens=-5),
            r"line 3 is damaged: input_tokens must be a whole number >= 0, got -5",
        ),
        (_request("r2", status="ok"), r"line 3 is damaged: status must be one of .*got 'ok'"),
        (_request("", status="success"), r"uid must not be empty"),
        ({"request": {"uid": "r2"}}, r"line 3 is damaged: its fields must be exactly"),
        (
            {
                "event": {
                    "meter": "nope",
                    "uid": "e",
                    "at_us": 1,
                    "key_id": "",
                    "d1": "",
                    "d2": "",
                    "d3": "",
                    "d4": "",
                    "value_micro": 1,
                }
            },
            r"meter 'nope', which it does not define",
        ),
    ],
)
def test_a_damaged_line_says_where_and_what_came_before_it_is_merged(
    tmp_path: Path, bad: dict[str, object], message: str
) -> None:
    with UsageLedger(tmp_path / "usage.db") as ledger:
        with pytest.raises(ValueError, match=message):
            ledger.merge(_snapshot(_request("r1"), bad, _request("r3")))
        assert ledger.usage("all")[0].requests == 1  # r1; merging again after a fix is safe
        text = "".join(json.dumps(x) + "\n" for x in (_request("r1"), _request("r3")))
        header = '{"snapshot": {"format": "otel_tokens.ledger", "version": 1}}\n'
        assert ledger.merge(io.StringIO(header + text))["requests_added"] == 1


def test_a_snapshot_defining_a_meter_differently_is_refused(tmp_path: Path) -> None:
    with UsageLedger(tmp_path / "usage.db") as ledger:
        ledger.custom_meter("images.generated", unit="{image}", aggregation="count")
        meter = {"name": "images.generated", "unit": "{image}", "aggregation": "sum",
                 "dimensions": [], "currency": None, "description": ""}  # fmt: skip
        with pytest.raises(ValueError, match=r"already defines meter 'images.generated'"):
            ledger.merge(_snapshot({"meter": meter}))
