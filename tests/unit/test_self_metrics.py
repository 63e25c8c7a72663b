"""The package's own metrics tell the truth: whose records are lost, where overflow goes, and
they exist at 0 before anything goes wrong, so that `increase()` sees the first drop."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_tokens import ModelPrice, PriceTable, Usage, UsageLedger
from otel_tokens._core import drops
from otel_tokens._core import tracker as _tracker
from otel_tokens.testing import InMemoryMetrics

DROPPED = "otel_tokens.records.dropped"
OVERFLOW = "otel_tokens.series.overflow"


def usage(**changes: object) -> Usage:
    fields: dict[str, object] = {"provider": "openai", "model": "gpt-4o", "input_tokens": 10}
    fields.update(changes)
    return Usage(**fields)  # type: ignore[arg-type]


def _dropped(metrics: InMemoryMetrics) -> dict[tuple[tuple[str, object], ...], float]:
    return {
        tuple(sorted(p.attributes.items())): p.value  # type: ignore[union-attr]
        for p in metrics.points(DROPPED)
    }


def test_every_self_metric_exists_at_zero_before_anything_happens() -> None:
    metrics = InMemoryMetrics()
    points = _dropped(metrics)
    assert points == {(("reason", reason),): 0 for reason in drops.RECORD_REASONS}
    (overflow,) = metrics.points(OVERFLOW)
    assert overflow.value == 0 and dict(overflow.attributes or {}) == {}  # type: ignore[union-attr]


def test_a_tracker_with_a_ledger_has_the_ledger_reasons_at_zero_too(tmp_path: Path) -> None:
    with UsageLedger(str(tmp_path / "usage.db")) as ledger:
        metrics = InMemoryMetrics(ledger=ledger)
        points = _dropped(metrics)
    for reason in drops.LEDGER_REASONS:
        assert points[(("reason", reason),)] == 0


def test_every_reason_the_code_drops_for_is_exported_from_the_start() -> None:
    """A reason missing from RECORD_REASONS would be born at its first drop, unseen by
    increase(): read every reason the package's source passes when it drops."""
    import re

    import otel_tokens

    root = Path(otel_tokens.__file__).parent
    said: set[str] = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        said.update(re.findall(r'Fault\(\s*"([a-z_]+)"', text))
        said.update(re.findall(r'(?:add_later|_drop|drops\.add)\(\s*"([a-z_]+)"', text))
    ledger_only = {"ledger_closed", "ledger_queue_full"}
    assert said - ledger_only <= set(drops.RECORD_REASONS), said - set(drops.RECORD_REASONS)
    assert len(said) >= 12  # the search found the code's reasons


def test_a_dropped_record_carries_its_provider_and_model() -> None:
    metrics = InMemoryMetrics()
    metrics.tracker.record(usage(provider="anthropic", model="claude-x", input_tokens=-1))
    metrics.tracker.record(usage(provider="anthropic", model="claude-x", output_tokens=-5))
    metrics.tracker.record(usage(provider="", model="m"))  # the provider is what is wrong
    points = _dropped(metrics)
    key = (
        ("gen_ai.provider.name", "anthropic"),
        ("gen_ai.response.model", "claude-x"),
        ("reason", "negative_tokens"),
    )
    assert points[key] == 2
    assert points[(("reason", "bad_label"),)] == 1  # no provider to name
    assert sum(points.values()) == 3


def test_a_dropped_records_labels_are_bounded_like_every_label() -> None:
    metrics = InMemoryMetrics(models=["gpt-4o"], max_label_length=16)
    metrics.tracker.record(usage(provider="p" * 500, model="secret-ft-model", input_tokens=-1))
    points = _dropped(metrics)
    key = (
        ("gen_ai.provider.name", "p" * 16),
        ("gen_ai.response.model", "other"),  # outside the allow-list, as on every metric
        ("reason", "negative_tokens"),
    )
    assert points[key] == 1


def test_labelled_drops_stop_at_their_cap_and_none_is_lost() -> None:
    metrics = InMemoryMetrics()
    count = drops.MAX_LABELLED + 40
    for i in range(count):
        metrics.tracker.record(usage(model=f"m-{i}", input_tokens=-1))
    points = _dropped(metrics)
    labelled = [k for k in points if len(k) > 1]
    assert len(labelled) == drops.MAX_LABELLED
    assert points[(("reason", "negative_tokens"),)] == 40
    assert metrics.value(DROPPED) == count


def test_names_that_share_a_label_share_one_labelled_set() -> None:
    """Client-chosen model names outside the allow-list are all "other": they must not use up
    the labelled sets that a real model's drops need later."""
    metrics = InMemoryMetrics(models=["gpt-4o"])
    for i in range(drops.MAX_LABELLED + 10):
        metrics.tracker.record(usage(model=f"garbage-{i}", input_tokens=-1))
    metrics.tracker.record(usage(model="gpt-4o", input_tokens=-1))
    points = _dropped(metrics)
    other = (("gen_ai.provider.name", "openai"), ("gen_ai.response.model", "other"),
             ("reason", "negative_tokens"))  # fmt: skip
    real = (("gen_ai.provider.name", "openai"), ("gen_ai.response.model", "gpt-4o"),
            ("reason", "negative_tokens"))  # fmt: skip
    assert (points[other], points[real]) == (drops.MAX_LABELLED + 10, 1)


def test_a_full_queue_drop_names_the_provider_without_logging_on_the_request_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_tracker, "QUEUE_CAPACITY", 4)
    metrics = InMemoryMetrics()
    with metrics.tracker._handoff._drain_lock:  # nothing folds, so the queue stays full
        for _ in range(10):
            metrics.tracker.record(usage(provider="gcp.gemini", model="gemini-2.5-pro"))
        assert caplog.records == []
    points = _dropped(metrics)
    key = (
        ("gen_ai.provider.name", "gcp.gemini"),
        ("gen_ai.response.model", "gemini-2.5-pro"),
        ("reason", "queue_full"),
    )
    assert points[key] == 6


def test_overflow_series_keep_provider_and_operation() -> None:
    metrics = InMemoryMetrics(max_series=1)
    metrics.tracker.record(usage())
    for tier in ("a", "b", "c"):
        metrics.tracker.record(usage(provider="anthropic", model="claude", user_tier=tier))
    metrics.tracker.record(usage(provider="anthropic", operation="embeddings"))
    overflow = {"otel.metric.overflow": True}
    requests = metrics.points("llm.requests", overflow)
    seen = sorted((sorted(dict(p.attributes or {}).items()), p.value) for p in requests)  # type: ignore[union-attr]
    assert seen == [
        (
            [
                ("gen_ai.operation.name", op),
                ("gen_ai.provider.name", "anthropic"),
                ("otel.metric.overflow", True),
            ],
            value,
        )
        for op, value in (("chat", 3), ("embeddings", 1))
    ]
    assert metrics.value(OVERFLOW, provider="anthropic", operation="chat") == 3
    assert metrics.value(OVERFLOW, provider="anthropic", operation="embeddings") == 1
    assert metrics.value(OVERFLOW) == 4


def test_overflow_beyond_its_groups_goes_to_one_last_series() -> None:
    from otel_tokens._core.series import OVERFLOW_GROUPS

    metrics = InMemoryMetrics(max_series=1)
    metrics.tracker.record(usage())
    for i in range(OVERFLOW_GROUPS + 5):
        metrics.tracker.record(usage(provider=f"provider-{i}"))
    requests = metrics.points("llm.requests", {"otel.metric.overflow": True})
    assert len(requests) == OVERFLOW_GROUPS + 1
    (last,) = [p for p in requests if "gen_ai.provider.name" not in (p.attributes or {})]
    assert last.value == 5  # type: ignore[union-attr]
    assert metrics.value(OVERFLOW, {}) == OVERFLOW_GROUPS + 5


def test_the_unpriced_warning_names_the_model_that_was_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prices = PriceTable({"gpt-4o": ModelPrice(input=1, output=1)})
    metrics = InMemoryMetrics(models=["gpt-4o"], prices=prices)
    metrics.tracker.record(usage(model="acme-private-7b"))
    metrics.metrics()
    (message,) = [r.getMessage() for r in caplog.records if "has no price" in r.getMessage()]
    assert "'acme-private-7b'" in message
    assert metrics.value("llm.usage.unpriced_tokens", model="other") == 10  # still bounded


def test_a_full_queue_of_usages_without_fields_still_counts_as_queue_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_tracker, "QUEUE_CAPACITY", 2)
    metrics = InMemoryMetrics()
    hollow = object.__new__(Usage)  # a Usage whose fields were never set
    with metrics.tracker._handoff._drain_lock:
        for _ in range(5):
            metrics.tracker.record(hollow)
    points = _dropped(metrics)
    assert points[(("reason", "queue_full"),)] == 3
    assert points[(("reason", "bad_label"),)] == 2  # the two queued: their fields are unreadable
    assert points[(("reason", "internal_error"),)] == 0  # not a bug of the package
