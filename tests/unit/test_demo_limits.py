"""The demo's simulated upstreams report their rate limits as the providers document them."""

from __future__ import annotations

from otel_tokens._base.ratelimit import read_rate_limits
from otel_tokens._demo.limits import WINDOW_S, SimulatedLimits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_window_fills_and_empties_and_the_headers_parse() -> None:
    clock = Clock()
    limits = SimulatedLimits(clock)
    limits.headers("openai", "gpt-4o-mini", 30_000)
    clock.now += 1
    headers = limits.headers("openai", "gpt-4o-mini", 50_000)
    parsed = read_rate_limits(headers, 0.0)
    assert parsed is not None
    tokens = {r.kind: r for r in parsed.readings}["tokens"]
    assert (tokens.limit, tokens.remaining) == (90_000, 10_000)
    assert tokens.reset_s == WINDOW_S - 1  # when the first answer leaves the window
    clock.now += WINDOW_S + 0.5  # both left
    parsed = read_rate_limits(limits.headers("openai", "gpt-4o-mini", 1_000), 0.0)
    assert parsed is not None
    assert {r.kind: r.remaining for r in parsed.readings} == {"requests": 99, "tokens": 89_000}


def test_anthropic_answers_in_its_own_format_and_gemini_sends_none() -> None:
    limits = SimulatedLimits()
    headers = dict(limits.headers("anthropic", "claude-sonnet-4-5", 1_000))
    assert headers["anthropic-ratelimit-tokens-remaining"] == "1999000"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert limits.headers("gcp.gemini", "gemini-2.5-flash", 1_000) == []
