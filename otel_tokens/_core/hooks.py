"""What code outside the core that meters requests for a tracker (the HTTP transports) may
use of it, and nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from otel_tokens._base.ratelimit import RateLimits
from otel_tokens._base.usage import Usage
from otel_tokens._core.tracker import TokenTracker


class RecordingHooks(NamedTuple):
    """What code outside the core that meters requests for a tracker (the HTTP transports)
    needs of it, and nothing more."""

    #: Queue a `Usage` that the callable builds on the consumer thread, off the request path.
    record_later: Callable[[Callable[[], Usage]], None]
    #: The key id (keyed fingerprint) of an API key; None when the tracker has no secret.
    key_id: Callable[[str], str | None]
    #: Keep the rate-limit headroom a response reported, on the consumer thread.
    rate_limits: Callable[[Usage, RateLimits], None]


def recording_hooks(tracker: TokenTracker) -> RecordingHooks:
    """The hooks of `tracker` that the HTTP transports record through (they check that it
    is a TokenTracker, and say so in their own words)."""
    return RecordingHooks(tracker._record_later, tracker._key_id, tracker._rate_limits)
