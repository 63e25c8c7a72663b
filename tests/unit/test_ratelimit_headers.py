"""Rate-limit headers to readings: every documented format, and garbage dropped, never raised."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_tokens._base import ratelimit
from otel_tokens._base.ratelimit import KINDS, RateLimits, Reading, read_rate_limits

#: 30 s before Anthropic's reset and retry-after's HTTP-date in the tables below.
NOW = datetime(2026, 12, 3, 17, 39, 30, tzinfo=timezone.utc).timestamp()
HTTP_NOW = datetime(2026, 10, 21, 7, 27, 30, tzinfo=timezone.utc).timestamp()


def one(name: str, value: str, now: float = NOW) -> RateLimits | None:
    return read_rate_limits([(name, value)], now)


def reading(name: str, value: str, now: float = NOW) -> Reading | None:
    """The only reading one header gives, or None when it gives nothing."""
    limits = one(name, value, now)
    if limits is None:
        return None
    assert limits.retry_after_s is None
    (only,) = limits.readings
    return only


def retry_after(headers: list[tuple[str, str]], now: float = HTTP_NOW) -> float | None:
    limits = read_rate_limits(headers, now)
    if limits is None:
        return None
    assert limits.readings == ()
    return limits.retry_after_s


# ---- OpenAI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("120ms", 0.12),
        ("0.5s", 0.5),
        ("1h2m3.5s", 3723.5),
        ("17ms", 0.017),
        ("0s", 0.0),
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("1m30s", 90.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),  # micro sign, as Go writes it
        ("250\u03bcs", 0.00025),  # Greek mu, which Go accepts too
        ("1500ns", 1.5e-6),
        ("1s500ms", 1.5),
        ("168h", 604800.0),  # seven days: the longest accepted
        ("20", 20.0),  # a bare number is seconds
        ("1.5", 1.5),
        ("0", 0.0),
        ("  6m0s\t", 360.0),
    ],
)
def test_openai_reset_durations(value: str, seconds: float) -> None:
    got = reading("x-ratelimit-reset-tokens", value)
    assert got == Reading("tokens", None, None, seconds)


@pytest.mark.parametrize(
    "value",
    [
        "5x", "m", "s", "ms", "1h-2m", "--1s", "-1s", "+1s", "-0s", "1 s", "1S", "1H", "1.5.5s",
        "1e3s", "1e3", "nan", "NaN", "inf", "-inf", "1e400", "999999999999999999999h",
        "9" * 60 + "h", "168h0m1s", "604801", "\u0661s", "\u0661", "1s\x00", "\x001s", "",
        "   ", "None", "null", "0x10", "1_000", "1,5s", "1s,2s", "P1D", "s1", ".", ".s", "1d",
    ],
)  # fmt: skip
def test_openai_reset_garbage_is_ignored(value: str) -> None:
    assert one("x-ratelimit-reset-requests", value) is None


def test_openai_full_header_set_of_a_200_response() -> None:
    headers = [
        ("date", "Thu, 03 Dec 2026 17:39:30 GMT"),
        ("content-type", "application/json"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("access-control-expose-headers", "X-Request-ID"),
        ("openai-organization", "user-abc123"),
        ("openai-processing-ms", "412"),
        ("openai-project", "proj_abc123"),
        ("openai-version", "2020-10-01"),
        ("x-envoy-upstream-service-time", "415"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "29999986"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "0s"),
        ("x-ratelimit-limit-tokens-usage-based", "5000000"),
        ("x-ratelimit-remaining-tokens-usage-based", "4999000"),
        ("x-ratelimit-reset-tokens-usage-based", "1h"),
        ("x-ratelimit-limit-project-tokens", "1"),
        ("x-ratelimit-remaining-project-tokens", "0"),
        ("x-request-id", "req_0123456789abcdef"),
        ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
        ("cf-cache-status", "DYNAMIC"),
        ("set-cookie", "__cf_bm=abc; path=/; expires=Thu, 03-Dec-26 18:09:30 GMT"),
        ("x-content-type-options", "nosniff"),
        ("server", "cloudflare"),
        ("cf-ray", "8e1a2b3c4d5e6f70-AMS"),
        ("alt-svc", 'h3=":443"; ma=86400'),
    ]
    assert read_rate_limits(headers, NOW) == RateLimits(
        readings=(
            Reading("requests", 10000.0, 9999.0, 0.006),
            Reading("tokens", 30000000.0, 29999986.0, 0.0),
        ),
        retry_after_s=None,
    )


def test_openai_429_with_retry_after_ms() -> None:
    headers = [
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "1m12.3s"),
        ("retry-after", "73"),
        ("retry-after-ms", "72300"),
    ]
    assert read_rate_limits(headers, NOW) == RateLimits(
        (Reading("tokens", 30000.0, 0.0, 72.3),), 72.3
    )


# ---- Anthropic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2026-12-03T17:40:00Z", 30.0),
        ("2026-12-03T17:40:00.5Z", 30.5),
        ("2026-12-03T17:40:00.250Z", 30.25),
        ("2026-12-03T17:40:00.123456789Z", 30.123456789),
        ("2026-12-03T17:40:00+00:00", 30.0),
        ("2026-12-03T17:40:00-00:00", 30.0),
        ("2026-12-03T18:40:00+01:00", 30.0),
        ("2026-12-03T12:40:00-05:00", 30.0),
        ("2026-12-04T03:10:00+09:30", 30.0),
        ("2026-12-03t17:40:00z", 30.0),
        ("2026-12-03 17:40:00Z", 30.0),
        ("2026-12-03T17:39:60Z", 30.0),  # a leap second
        ("2026-12-03T17:39:30Z", 0.0),  # now
        ("2026-12-03T17:39:00Z", 0.0),  # passed: 0, not negative
        ("2020-01-01T00:00:00Z", 0.0),
        ("2026-12-10T17:39:30Z", 604800.0),  # seven days: the longest accepted
        (" 2026-12-03T17:40:00Z ", 30.0),
    ],
)
def test_anthropic_reset_timestamps(value: str, seconds: float) -> None:
    got = reading("anthropic-ratelimit-tokens-reset", value)
    assert got == Reading("tokens", None, None, seconds)


@pytest.mark.parametrize(
    "value",
    [
        "2026-13-03T17:40:00Z", "2026-02-30T17:40:00Z", "2026-00-10T17:40:00Z",
        "2026-12-03T24:00:00Z", "2026-12-03T17:60:00Z", "2026-12-03T17:40:61Z",
        "0000-01-01T00:00:00Z", "2026-12-03T17:40:00", "2026-12-03", "2026-12-03T17:40Z",
        "2026-12-03T17:40:00+24:00", "2026-12-03T17:40:00+01:60", "2026-12-03T17:40:00+0100",
        "2026-12-03T17:40:00.Z", "2026-12-03T17:40:00ZZ", "26-12-03T17:40:00Z",
        "\uff12\uff10\uff12\uff16-12-03T17:40:00Z", "2026-12-03T17:40:00Z\x00",
        "2026-12-10T17:39:31Z",  # a moment over seven days ahead
        "9999-12-31T23:59:59Z", "1796319600", "30", "6m0s", "", "null",
        "Thu, 03 Dec 2026 17:40:00 GMT",
    ],
)  # fmt: skip
def test_anthropic_reset_garbage_is_ignored(value: str) -> None:
    assert one("anthropic-ratelimit-requests-reset", value) is None


def test_anthropic_full_header_set_all_four_kinds() -> None:
    headers = [
        ("date", "Thu, 03 Dec 2026 17:39:30 GMT"),
        ("content-type", "application/json"),
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", "2026-12-03T17:39:31Z"),
        ("anthropic-ratelimit-tokens-limit", "480000"),
        ("anthropic-ratelimit-tokens-remaining", "479000"),
        ("anthropic-ratelimit-tokens-reset", "2026-12-03T17:39:31.5Z"),
        ("anthropic-ratelimit-input-tokens-limit", "400000"),
        ("anthropic-ratelimit-input-tokens-remaining", "399000"),
        ("anthropic-ratelimit-input-tokens-reset", "2026-12-03T17:39:32Z"),
        ("anthropic-ratelimit-output-tokens-limit", "80000"),
        ("anthropic-ratelimit-output-tokens-remaining", "80000"),
        ("anthropic-ratelimit-output-tokens-reset", "2026-12-03T17:39:30Z"),
        ("anthropic-ratelimit-unified-status", "allowed"),
        ("anthropic-ratelimit-unified-reset", "1796319600"),
        ("request-id", "req_011CV1abcdefghijklmnop"),
        ("anthropic-organization-id", "0b1c2d3e-0000-4000-8000-000000000000"),
        ("via", "1.1 google"),
        ("cf-ray", "8e1a2b3c4d5e6f70-AMS"),
        ("server", "cloudflare"),
    ]
    assert read_rate_limits(headers, NOW) == RateLimits(
        readings=(
            Reading("requests", 4000.0, 3999.0, 1.0),
            Reading("tokens", 480000.0, 479000.0, 1.5),
            Reading("input_tokens", 400000.0, 399000.0, 2.0),
            Reading("output_tokens", 80000.0, 80000.0, 0.0),
        ),
        retry_after_s=None,
    )


def test_anthropic_429_with_retry_after() -> None:
    headers = [
        ("anthropic-ratelimit-output-tokens-remaining", "0"),
        ("anthropic-ratelimit-output-tokens-reset", "2026-12-03T17:39:47Z"),
        ("retry-after", "17"),
    ]
    assert read_rate_limits(headers, NOW) == RateLimits(
        (Reading("output_tokens", None, 0.0, 17.0),), 17.0
    )


# ---- Limits and remainders ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "count"),
    [
        ("0", 0.0),
        ("60", 60.0),
        ("150000", 150000.0),
        ("007", 7.0),
        ("1000000000000000", 1e15),  # the largest accepted
        (" 42 ", 42.0),
        (" " * 62 + "42", 42.0),  # 64 characters: still read
    ],
)
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("x-ratelimit-limit-requests", "requests"),
        ("x-ratelimit-limit-tokens", "tokens"),
        ("anthropic-ratelimit-requests-limit", "requests"),
        ("anthropic-ratelimit-input-tokens-limit", "input_tokens"),
        ("anthropic-ratelimit-output-tokens-limit", "output_tokens"),
    ],
)
def test_limits(name: str, kind: str, value: str, count: float) -> None:
    assert reading(name, value) == Reading(kind, count, None, None)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("x-ratelimit-remaining-requests", "requests"),
        ("x-ratelimit-remaining-tokens", "tokens"),
        ("anthropic-ratelimit-tokens-remaining", "tokens"),
        ("anthropic-ratelimit-input-tokens-remaining", "input_tokens"),
        ("anthropic-ratelimit-output-tokens-remaining", "output_tokens"),
    ],
)
def test_remaining(name: str, kind: str) -> None:
    assert reading(name, "123") == Reading(kind, None, 123.0, None)


COUNT_GARBAGE = [
    "-1", "-0", "+5", "1.5", "1.", "1e3", "nan", "NaN", "inf", "Infinity", "1e400",
    "1000000000000001", "9" * 64, "9" * 5000, "\u0661\u0662", "\uff11\uff12", "12\x0034",
    "12\x00", "", "   ", "None", "null", "true", "0x10", "1_000", "1,000", "1 000",
    " " * 63 + "42",  # 65 characters: not read, though it would be valid stripped
]  # fmt: skip


@pytest.mark.parametrize("value", COUNT_GARBAGE)
@pytest.mark.parametrize(
    "name", ["x-ratelimit-remaining-tokens", "anthropic-ratelimit-requests-limit"]
)
def test_count_garbage_is_ignored(name: str, value: str) -> None:
    assert one(name, value) is None


def test_remaining_above_limit_is_kept_as_sent() -> None:
    headers = [("x-ratelimit-limit-requests", "100"), ("x-ratelimit-remaining-requests", "150")]
    assert read_rate_limits(headers, NOW) == RateLimits(
        (Reading("requests", 100.0, 150.0, None),), None
    )


# ---- retry-after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 3 ", 3.0),
        ("604800", 604800.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", 30.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-26 07:28:00 GMT", 30.0),  # RFC 850
        ("Wed Oct 21 07:28:00 2026", 30.0),  # asctime
        ("Wed Oct  1 07:28:00 2026", 0.0),  # asctime, a day under ten; passed
        ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),  # passed: 0, not negative
        ("Wed, 28 Oct 2026 07:27:30 GMT", 604800.0),
    ],
)
def test_retry_after(value: str, seconds: float) -> None:
    assert retry_after([("retry-after", value)]) == seconds


def test_an_asctime_retry_after_is_gmt_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset() is Unix only")
    monkeypatch.setenv("TZ", "EST+05")  # a POSIX zone string: needs no tz database
    time.tzset()
    try:
        assert time.timezone == 5 * 3600
        assert retry_after([("retry-after", "Wed Oct 21 07:28:00 2026")]) == 30.0
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    "value",
    [
        "-1", "+1", "nan", "inf", "1e400", "1e3", "604801", "9" * 64, "\u0661\u0662", "",
        "soon", "null", "5x", "1s", "1 2", "Wed, 32 Oct 2026 07:28:00 GMT",
        "Wed, 21 Oct 2026 25:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 XYZ",
        "Wed, 21 Oct 2026 07:28:00 +0200", "Wed, 21 Oct 2026 07:28:00",
        "Wed, 28 Oct 2026 07:27:31 GMT",  # over seven days ahead
        "Wed, 21 Oct 99999 07:28:00 GMT", "2026-10-21T07:28:00Z",
        "Wed, 21 Oct 2026 07:28:00 GMT\x00",
    ],
)  # fmt: skip
def test_retry_after_garbage_is_ignored(value: str) -> None:
    assert retry_after([("retry-after", value)]) is None


@pytest.mark.parametrize(
    ("value", "seconds"), [("20", 0.02), ("1500", 1.5), ("0.5", 0.0005), ("0", 0.0)]
)
def test_retry_after_ms(value: str, seconds: float) -> None:
    assert retry_after([("retry-after-ms", value)]) == seconds


@pytest.mark.parametrize("value", ["-5", "abc", "nan", "1e3", "604800001", "\u0661"])
def test_retry_after_ms_garbage_is_ignored(value: str) -> None:
    assert retry_after([("retry-after-ms", value)]) is None


@pytest.mark.parametrize(
    "headers",
    [
        [("retry-after", "5"), ("retry-after-ms", "1234")],
        [("retry-after-ms", "1234"), ("retry-after", "5")],
        [("retry-after-ms", "1234"), ("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")],
    ],
)
def test_retry_after_ms_wins_over_retry_after(headers: list[tuple[str, str]]) -> None:
    assert retry_after(headers) == 1.234


def test_retry_after_counts_when_retry_after_ms_is_garbage() -> None:
    assert retry_after([("retry-after-ms", "soon"), ("retry-after", "5")]) == 5.0


# ---- Names, repeats, order ------------------------------------------------------------


def test_names_in_any_case() -> None:
    headers = [
        ("X-RateLimit-Limit-Requests", "10"),
        ("X-RATELIMIT-RESET-REQUESTS", "1s"),
        ("Anthropic-RateLimit-Output-Tokens-Remaining", "7"),
        ("ANTHROPIC-RATELIMIT-OUTPUT-TOKENS-RESET", "2026-12-03T17:39:40Z"),
        ("Retry-After-Ms", "250"),
    ]
    assert read_rate_limits(headers, NOW) == RateLimits(
        (Reading("requests", 10.0, None, 1.0), Reading("output_tokens", None, 7.0, 10.0)), 0.25
    )


def test_a_name_that_lowercases_into_ascii_is_not_a_header_name() -> None:
    kelvin = "x-ratelimit-limit-to\u212aens"  # KELVIN SIGN: its lower() is "k"
    assert kelvin.lower() == "x-ratelimit-limit-tokens"
    assert one(kelvin, "5") is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["100", "200"], 200.0),
        (["100", "garbage"], 100.0),
        (["100", "-1", ""], 100.0),
        (["garbage", "300"], 300.0),
        (["100", "9" * 100], 100.0),
    ],
)
def test_the_last_valid_value_of_a_repeated_header_wins(values: list[str], expected: float) -> None:
    headers = [("x-ratelimit-limit-requests", value) for value in values]
    assert read_rate_limits(headers, NOW) == RateLimits(
        (Reading("requests", expected, None, None),), None
    )


def test_readings_come_in_kinds_order_whatever_the_header_order() -> None:
    headers = [
        ("anthropic-ratelimit-output-tokens-limit", "4"),
        ("anthropic-ratelimit-input-tokens-limit", "3"),
        ("anthropic-ratelimit-tokens-limit", "2"),
        ("anthropic-ratelimit-requests-limit", "1"),
    ]
    limits = read_rate_limits(headers, NOW)
    assert limits is not None
    assert tuple(r.kind for r in limits.readings) == KINDS
    assert tuple(r.limit for r in limits.readings) == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    "name",
    [
        "x-ratelimit-limit-tokens-usage-based",
        "x-ratelimit-limit-project-tokens",
        "x-ratelimit-limit-input-tokens",  # an OpenAI name for an Anthropic kind
        "x-ratelimit-limit",
        "x-ratelimit-limit-requests ",
        "anthropic-ratelimit-unified-5h-utilization",
        "anthropic-ratelimit-tokens",
        "ratelimit-limit",
        "retry-after-s",
        "x-retry-after",
    ],
)
def test_other_names_are_ignored(name: str) -> None:
    assert one(name, "5") is None


def test_only_garbage_gives_none() -> None:
    headers = [
        ("x-ratelimit-limit-requests", "lots"),
        ("x-ratelimit-reset-tokens", "-1s"),
        ("anthropic-ratelimit-tokens-reset", "tomorrow"),
        ("retry-after", "later"),
    ]
    assert read_rate_limits(headers, NOW) is None


def test_no_headers_gives_none() -> None:
    assert read_rate_limits([], NOW) is None


# ---- Hostile input --------------------------------------------------------------------


def test_a_one_megabyte_value_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = ratelimit._value

    def counting(parse: Any, raw: str, now: float) -> float | None:
        calls.append(raw)
        return real(parse, raw, now)

    monkeypatch.setattr(ratelimit, "_value", counting)
    headers = [
        ("x-ratelimit-remaining-requests", "1" * 1_000_000),
        ("x-ratelimit-reset-requests", " " * 1_000_000 + "1s"),
        ("retry-after", "9" * 1_000_000),
        ("x-ratelimit-limit-requests", "10"),
    ]
    assert read_rate_limits(headers, NOW) == RateLimits(
        (Reading("requests", 10.0, None, None),), None
    )
    assert calls == ["10"]


def test_a_one_megabyte_name_is_skipped_before_it_is_lowercased() -> None:
    lowered: list[int] = []

    class Name(str):
        def lower(self) -> str:
            lowered.append(len(self))
            return str(self).lower()

    long_name = Name("x-ratelimit-limit-requests" + " " * 1_000_000)
    assert read_rate_limits([(long_name, "5"), (Name("Retry-After"), "1")], NOW) == RateLimits(
        (), 1.0
    )
    assert lowered == [len("retry-after")]


def test_ten_thousand_unrelated_headers_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = ratelimit._value

    def counting(parse: Any, raw: str, now: float) -> float | None:
        calls.append(raw)
        return real(parse, raw, now)

    monkeypatch.setattr(ratelimit, "_value", counting)
    unrelated = [(f"x-custom-{i}", str(i)) for i in range(5_000)]
    unrelated += [(f"x-ratelimit-limit-thing-{i}", str(i)) for i in range(5_000)]
    assert read_rate_limits(unrelated, NOW) is None
    assert calls == []
    headers = [*unrelated, ("x-ratelimit-limit-tokens", "5"), ("retry-after", "2")]
    assert read_rate_limits(headers, NOW) == RateLimits((Reading("tokens", 5.0, None, None),), 2.0)
    assert calls == ["5", "2"]


@pytest.mark.parametrize(
    "bad",
    [
        (b"x-ratelimit-limit-requests", b"100"),
        ("x-ratelimit-limit-requests", b"100"),
        (b"x-ratelimit-limit-requests", "100"),
        (None, "100"),
        ("x-ratelimit-limit-requests", None),
        ("x-ratelimit-limit-requests", 100),
        ("x-ratelimit-limit-requests", 100.0),
        (123, 456),
        ("x-ratelimit-limit-requests",),
        ("x-ratelimit-limit-requests", "100", "200"),
        "ab",
        None,
        5,
    ],
)
def test_items_that_are_not_two_strings_are_skipped(bad: object) -> None:
    headers = cast(list[tuple[str, str]], [bad, ("x-ratelimit-limit-tokens", "7")])
    assert read_rate_limits(headers, NOW) == RateLimits((Reading("tokens", 7.0, None, None),), None)


def test_headers_raising_midway_keep_what_was_read() -> None:
    def broken() -> Iterator[tuple[str, str]]:
        yield ("x-ratelimit-limit-requests", "10")
        yield ("retry-after", "3")
        raise RuntimeError("connection reset while reading headers")

    assert read_rate_limits(broken(), NOW) == RateLimits(
        (Reading("requests", 10.0, None, None),), 3.0
    )


def test_headers_raising_at_once_give_none() -> None:
    class Broken:
        def __iter__(self) -> Iterator[tuple[str, str]]:
            raise OSError("gone")

    assert read_rate_limits(cast(Any, Broken()), NOW) is None
    assert read_rate_limits(cast(Any, None), NOW) is None


def test_a_name_whose_methods_raise_ends_the_reading_quietly() -> None:
    class Hostile(str):
        def lower(self) -> str:
            raise RuntimeError("no")

    headers = [("x-ratelimit-limit-requests", "1"), (Hostile("retry-after"), "2")]
    assert read_rate_limits(headers, NOW) == RateLimits(
        (Reading("requests", 1.0, None, None),), None
    )


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_a_broken_now_gives_no_absolute_times_but_durations_still_work(now: float) -> None:
    headers = [
        ("anthropic-ratelimit-tokens-limit", "100"),
        ("anthropic-ratelimit-tokens-reset", "2026-12-03T17:40:00Z"),
        ("anthropic-ratelimit-requests-reset", "2026-12-03T17:40:00Z"),
        ("x-ratelimit-reset-requests", "1s"),
        ("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT"),
    ]
    assert read_rate_limits(headers, now) == RateLimits(
        (Reading("requests", None, None, 1.0), Reading("tokens", 100.0, None, None)), None
    )
    assert retry_after([("retry-after", "4")], now) == 4.0


NAMES = sorted(ratelimit._SLOTS)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*NAMES, *(n.upper() for n in NAMES), "x-ratelimit-other"]),
            st.text(max_size=70) | st.from_regex(r"[0-9.hmsun:TZ+ -]{0,30}", fullmatch=True),
        ),
        max_size=20,
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_values_give_finite_readings_in_range_or_none(
    headers: list[tuple[str, str]], now: float
) -> None:
    limits = read_rate_limits(headers, now)
    if limits is None:
        return
    assert limits.readings or limits.retry_after_s is not None
    kinds = [r.kind for r in limits.readings]
    assert kinds == sorted(set(kinds), key=KINDS.index)
    for r in limits.readings:
        assert (r.limit, r.remaining, r.reset_s) != (None, None, None)
        for count in (r.limit, r.remaining):
            assert count is None or (count == int(count) and 0 <= count <= 1e15)
        assert r.reset_s is None or 0 <= r.reset_s <= 604800
    assert limits.retry_after_s is None or 0 <= limits.retry_after_s <= 604800
