"""A bad record costs that record alone: the valid ones queued beside it all arrive."""

from __future__ import annotations

from dataclasses import replace

import pytest

from otel_tokens import Usage
from otel_tokens.testing import InMemoryMetrics

GOOD = Usage(provider="openai", model="gpt-4o", input_tokens=3, output_tokens=2, latency_s=0.5)


class _Unprintable(str):
    """A label whose repr raises, as any object a caller passes may."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class _ExplodingUsage(Usage):
    """A Usage whose token counts cannot be read, and whose repr raises too."""

    def __getattribute__(self, name: str) -> object:
        if name.endswith("_tokens"):
            raise RuntimeError(f"cannot read {name}")
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        raise RuntimeError("cannot show me")


BAD_ONES = {
    # Python refuses repr() of an int over 4,300 digits: the fault message used to raise.
    "int_of_5000_digits": replace(GOOD, input_tokens=10**5000),
    "negative_int_of_5000_digits": replace(GOOD, output_tokens=-(10**5000)),
    "latency_of_5000_digits": replace(GOOD, latency_s=10**5000),  # type: ignore[arg-type]
    "ttft_of_5000_digits": replace(GOOD, streamed=True, time_to_first_token_s=10**5000),  # type: ignore[arg-type]
    "label_whose_repr_raises": replace(GOOD, scenario=_Unprintable("x" * 10)),
    "status_whose_repr_raises": replace(GOOD, status=_Unprintable("weird")),
    "usage_whose_token_reads_raise": _ExplodingUsage(provider="openai", model="gpt-4o"),
}


@pytest.mark.parametrize("name", sorted(BAD_ONES))
def test_one_bad_record_between_two_hundred_good_ones_costs_only_itself(name: str) -> None:
    metrics = InMemoryMetrics()
    for _ in range(100):
        metrics.tracker.record(GOOD)
    metrics.tracker.record(BAD_ONES[name])
    for _ in range(100):
        metrics.tracker.record(GOOD)

    assert metrics.value("llm.requests") == 200 + (name == "label_whose_repr_raises")
    drops = {p.attributes["reason"]: p.value for p in metrics.points("otel_tokens.records.dropped")}
    assert drops["interrupted"] == 0, drops
    assert sum(drops.values()) == (name != "label_whose_repr_raises"), drops
    metrics.shutdown()


def test_the_drop_message_shows_a_huge_int_by_its_size(caplog: pytest.LogCaptureFixture) -> None:
    metrics = InMemoryMetrics()
    metrics.tracker.record(BAD_ONES["int_of_5000_digits"])
    assert metrics.value("otel_tokens.records.dropped", reason="too_many_tokens") == 1
    messages = [r.getMessage() for r in caplog.records]
    [message] = [m for m in messages if "dropped a usage record" in m]
    assert "input_tokens must be <= 1,000,000,000, got an int of 16610 bits" in message
    with pytest.raises(ValueError, match="an int of 16610 bits"):
        BAD_ONES["int_of_5000_digits"].validate()
    metrics.shutdown()


UNSAFE = "\ud800nul\x00ctl\x1b\x9b" + "x" * 300


def test_every_label_value_is_made_safe_where_its_series_is_chosen() -> None:
    metrics = InMemoryMetrics(max_label_length=64)
    labels = ("provider", "model", "request_model", "operation", "scenario", "user_tier",
              "server_address")  # fmt: skip
    metrics.tracker.record(
        Usage(**dict.fromkeys(labels, UNSAFE), status="error", error_type="http_" + UNSAFE)
    )
    [point] = metrics.points("llm.requests")
    values = [v for v in point.attributes.values() if isinstance(v, str)]
    assert len(values) == 9  # error.type is _OTHER: it does not look like a class of failure
    for value in values:
        assert type(value) is str
        value.encode("utf-8")  # a lone surrogate would raise here
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value), repr(value)
        assert len(value) <= 64
    assert point.attributes["gen_ai.response.model"].startswith("\ufffdnul\ufffdctl\ufffd\ufffd")
    metrics.shutdown()
