"""Rate-limit headroom as gauges: the newest reading per provider, model and kind; whole again
after its reset; forgotten when stale; bounded however many label sets arrive."""

from __future__ import annotations

import pytest

from otel_tokens import Usage
from otel_tokens._base.ratelimit import RateLimits, Reading
from otel_tokens._base.warn import WarnOnce
from otel_tokens._core import ratelimits
from otel_tokens._core.ratelimits import RateLimitBoard
from otel_tokens.testing import InMemoryMetrics

USAGE = Usage(provider="openai", model="gpt-4.1-2025-04-14", request_model="gpt-4.1",
              server_address="api.openai.com", input_tokens=10)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _board(clock: Clock, labeller: object = None) -> RateLimitBoard:
    def labels(usage: Usage) -> dict[str, object]:
        return {"gen_ai.provider.name": usage.provider, "gen_ai.request.model": usage.request_model}

    return RateLimitBoard(labeller or labels, WarnOnce(), clock)  # type: ignore[arg-type]


def _by_kind(observations: list[object]) -> dict[str, float]:
    return {o.attributes["llm.ratelimit.kind"]: o.value for o in observations}  # type: ignore[attr-defined]


def test_the_newest_reading_per_kind_is_reported() -> None:
    clock = Clock()
    board = _board(clock)
    board.update(USAGE, RateLimits((Reading("requests", 500, 499, 0.12),
                                    Reading("tokens", 30_000, 29_000, 2.0)), None))  # fmt: skip
    clock.now += 0.05
    board.update(USAGE, RateLimits((Reading("tokens", 30_000, 12_000, 30.0),), None))
    limits, remaining, resets = board.observations()
    assert _by_kind(limits) == {"requests": 500, "tokens": 30_000}
    assert _by_kind(remaining) == {"requests": 499, "tokens": 12_000}
    assert _by_kind(resets) == {"requests": pytest.approx(0.07), "tokens": pytest.approx(30.0)}


def test_after_its_reset_a_limit_is_whole_again() -> None:
    clock = Clock()
    board = _board(clock)
    board.update(USAGE, RateLimits((Reading("tokens", 30_000, 100, 6.0),), None))
    clock.now += 6.5
    _limits, remaining, resets = board.observations()
    assert _by_kind(remaining) == {"tokens": 30_000}  # the provider said it is replenished
    assert _by_kind(resets) == {"tokens": 0}


def test_retry_after_is_a_reset_of_its_own_kind() -> None:
    clock = Clock()
    board = _board(clock)
    board.update(USAGE, RateLimits((), 20.0))
    clock.now += 5
    limits, remaining, resets = board.observations()
    assert (limits, remaining) == ([], [])
    assert _by_kind(resets) == {"retry_after": pytest.approx(15.0)}


def test_a_label_set_not_heard_from_is_forgotten() -> None:
    clock = Clock()
    board = _board(clock)
    board.update(USAGE, RateLimits((Reading("requests", 10, 1, None),), None))
    clock.now += ratelimits.STALE_S - 1
    assert len(board.observations()[1]) == 1  # no reset given: the last value stands
    clock.now += 2
    assert board.observations() == ([], [], [])


def test_label_sets_are_bounded_and_the_oldest_makes_room(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    board = RateLimitBoard(lambda u: {"gen_ai.request.model": u.request_model}, WarnOnce(), clock)
    for i in range(ratelimits.MAX_SETS + 50):
        clock.now += 0.001
        usage = Usage(provider="openai", model=f"m-{i}", input_tokens=1)
        board.update(usage, RateLimits((Reading("requests", 10, 5, None),), None))
    models = {o.attributes["gen_ai.request.model"] for o in board.observations()[0]}  # type: ignore[index]
    assert len(models) == ratelimits.MAX_SETS
    assert "m-0" not in models and f"m-{ratelimits.MAX_SETS + 49}" in models  # newest kept
    assert sum("rate-limit headroom" in r.getMessage() for r in caplog.records) == 1


def test_a_reading_without_a_limit_never_breaks_the_gauge() -> None:
    """Remaining and a reset but no limit header: past the reset there is no limit to report
    instead, so the last remaining stands (a None would fail the whole gauge's callback)."""
    clock = Clock()
    board = _board(clock)
    board.update(USAGE, RateLimits((Reading("tokens", None, 100, 0.001),), None))
    other = Usage(provider="anthropic", model="claude", input_tokens=1)
    board.update(other, RateLimits((Reading("requests", 50, 49, 60.0),), None))
    clock.now += 1
    _limits, remaining, _resets = board.observations()
    assert sorted(o.value for o in remaining) == [49, 100]
    metrics = InMemoryMetrics()
    metrics.tracker._rate_limits(USAGE, RateLimits((Reading("tokens", None, 100, 0.0),), None))
    assert [p.value for p in metrics.points("llm.ratelimit.remaining")] == [100]  # type: ignore[union-attr]


def test_the_tracker_reports_the_gauges_with_bounded_labels() -> None:
    metrics = InMemoryMetrics(models=["gpt-4.1"], max_label_length=16)
    hooks_usage = Usage(provider="p" * 40, model="secret-model", server_address="h",
                        input_tokens=1)  # fmt: skip
    metrics.tracker._rate_limits(hooks_usage, RateLimits((Reading("tokens", 100, 7, 9.0),), None))
    (point,) = metrics.points("llm.ratelimit.remaining")
    assert point.value == 7  # type: ignore[union-attr]
    assert dict(point.attributes or {}) == {
        "gen_ai.provider.name": "p" * 16,
        "gen_ai.request.model": "other",
        "server.address": "h",
        "llm.ratelimit.kind": "tokens",
    }
    (limit,) = metrics.points("llm.ratelimit.limit")
    assert limit.value == 100  # type: ignore[union-attr]
    (reset,) = metrics.points("llm.ratelimit.reset")
    assert 8.0 < reset.value <= 9.0  # type: ignore[union-attr]
