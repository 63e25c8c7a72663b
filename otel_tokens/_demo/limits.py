"""The rate-limit headers the demo's simulated OpenAI and Anthropic upstreams send.

Each provider and model has a window of requests and tokens; every answer reports what is
left of it in the provider's own header format (OpenAI: durations such as `1.5s`;
Anthropic: RFC 3339 times), and the demo hands those headers to the tracker exactly as
`MeteredTransport` does, so the headroom gauges and the dashboard's panel have data.
gpt-4o-mini's token limit is set close to the demo's traffic, so its headroom runs low.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from otel_tokens._base.ratelimit import RateLimits, read_rate_limits
from otel_tokens._base.usage import Usage

#: Demo seconds per window: a provider's one minute, at the demo's time scale.
WINDOW_S = 3.0
#: (requests, tokens) per window by model; other models of a provider use its default.
_LIMITS = {
    "gpt-4o-mini": (100, 90_000),
    "openai": (100, 400_000),
    "anthropic": (50, 2_000_000),
}
#: Which header format each provider's upstream answers in.
_FORMATS = {"openai": "openai", "anthropic": "anthropic"}


class SimulatedLimits:
    """Per provider and model, the requests and tokens of the last window, as headers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._used: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def headers(self, provider: str, model: str, tokens: int) -> list[tuple[str, str]]:
        """The rate-limit headers of an answer that used `tokens`; none for providers
        whose upstream sends none."""
        form = _FORMATS.get(provider)
        if form is None:
            return []
        now = self._clock()
        with self._lock:
            window = self._used.setdefault((provider, model), deque())
            window.append((now, tokens))
            while window and window[0][0] <= now - WINDOW_S:
                window.popleft()
            requests, used = len(window), sum(t for _, t in window)
            reset_s = max(0.0, window[0][0] + WINDOW_S - now)
        limit_requests, limit_tokens = _LIMITS.get(model) or _LIMITS[provider]
        left = {"requests": (limit_requests, max(0, limit_requests - requests)),
                "tokens": (limit_tokens, max(0, limit_tokens - used))}  # fmt: skip
        if form == "openai":  # x-ratelimit-{part}-{kind}, the reset as a duration
            name, reset = "x-ratelimit-{part}-{kind}", f"{reset_s:.3f}s"
        else:  # anthropic-ratelimit-{kind}-{part}, the reset as an RFC 3339 time
            at = datetime.now(timezone.utc) + timedelta(seconds=reset_s)
            name = "anthropic-ratelimit-{kind}-{part}"
            reset = at.isoformat(timespec="seconds").replace("+00:00", "Z")
        return [
            (name.format(part=part, kind=kind), value)
            for kind, (limit, remaining) in left.items()
            for part, value in (
                ("limit", str(limit)),
                ("remaining", str(remaining)),
                ("reset", reset),
            )
        ]

    def report(self, usage: Usage, report: Callable[[Usage, RateLimits], None]) -> None:
        """Read the headers of `usage`'s answer as the transports do, and hand them on."""
        headers = self.headers(usage.provider, usage.request_model or usage.model,
                               usage.input_tokens + usage.output_tokens)  # fmt: skip
        limits = read_rate_limits(headers, time.time())
        if limits is not None:
            report(usage, limits)
