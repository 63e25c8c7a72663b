"""Rate-limit readings from an LLM provider's HTTP response headers.

OpenAI sends `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (resets as Go-style
durations such as `6m0s`), Anthropic `anthropic-ratelimit-{kind}-{limit,remaining,reset}` for
requests, tokens, input and output tokens (resets as RFC 3339 timestamps), and both may send
`retry-after` (seconds or an HTTP-date) and OpenAI `retry-after-ms`. `read_rate_limits` turns
those into one `Reading` per kind: the window's limit, what remains, and the seconds until it
is replenished.

It runs on a background thread inside someone else's request path, and every value comes
from a server that may be broken or hostile, so it never raises and does bounded work: each
name is looked up whole in a table of the known names (any other header costs one lookup), a
value over `MAX_VALUE_CHARS` is skipped unread, and a value is read only if it matches a
strict ASCII pattern. What does not match (a sign, NaN, an exponent, a non-ASCII digit, a
wait over seven days, a count over 1e15) is dropped rather than guessed at; a broken headers
iterable ends the reading with what was read so far.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import date, timezone
from email.utils import parsedate_to_datetime
from fractions import Fraction
from typing import NamedTuple

#: The kinds of limit, in the order readings come in.
KINDS: tuple[str, ...] = ("requests", "tokens", "input_tokens", "output_tokens")
#: Longer values are skipped without being read: no real one comes near.
MAX_VALUE_CHARS = 64
#: Larger limits and remainders are garbage.
MAX_COUNT = 10**15
#: Longer waits (resets, retry-after) are garbage, not a real window: seven days.
MAX_WAIT_S = 7 * 24 * 3600


class Reading(NamedTuple):
    """One kind of limit as a response reported it; None where it sent no valid value."""

    kind: str  # one of KINDS
    limit: float | None  # the window's limit
    remaining: float | None  # what is left now (may exceed `limit`: kept as sent)
    reset_s: float | None  # seconds from `now` until the limit is fully replenished (>= 0)


class RateLimits(NamedTuple):
    """What one response's headers said about its rate limits."""

    readings: tuple[Reading, ...]  # one per kind with a valid value, in KINDS order
    retry_after_s: float | None  # from retry-after-ms, else retry-after: seconds from now


_Parser = Callable[[str, float], "float | None"]

#: A non-negative decimal: `12`, `1.5`, `1.`, `.5`; ASCII digits only, no sign, no exponent.
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_NUMBER_RE = re.compile(_NUMBER)
_COUNT_RE = re.compile(r"[0-9]+")
_UNIT = r"(?:h|ms|m|s|us|\u00b5s|\u03bcs|ns)"  # Go's units; µ as micro sign or Greek mu
_DURATION_RE = re.compile(rf"(?:{_NUMBER}{_UNIT})+")
_DURATION_PART_RE = re.compile(rf"({_NUMBER})({_UNIT})")
_UNIT_S = {
    "h": Fraction(3600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 10**3),
    "us": Fraction(1, 10**6),
    "\u00b5s": Fraction(1, 10**6),
    "\u03bcs": Fraction(1, 10**6),
    "ns": Fraction(1, 10**9),
}
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
#: RFC 9110's three HTTP-date forms: IMF-fixdate and RFC 850 (both in GMT), and asctime.
_HTTP_DATE_RE = re.compile(
    r"[A-Za-z]{3,9}, [0-9]{2}[ -][A-Za-z]{3}[ -][0-9]{2,4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
    r"|[A-Za-z]{3} [A-Za-z]{3} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4}"
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_WHITESPACE = " \t\r\n\f\v"


def _exact(number: str) -> Fraction:
    """The exact value of a string that matched `_NUMBER`."""
    whole, _, fraction = number.partition(".")
    scale = 10 ** len(fraction)
    return Fraction(int(whole or "0") * scale + int(fraction or "0"), scale)


def _wait(seconds: Fraction) -> float | None:
    """`seconds` as a float, or None when it is no real wait (negative, over seven days)."""
    return float(seconds) if 0 <= seconds <= MAX_WAIT_S else None


def _until(moment: Fraction, now: float) -> float | None:
    """Seconds from `now` to the epoch time `moment`: 0 once it has passed."""
    if not math.isfinite(now):
        return None
    return _wait(max(moment - Fraction(now), Fraction(0)))


def _count(text: str, now: float) -> float | None:
    """A limit or a remainder: a non-negative integer up to `MAX_COUNT`."""
    if _COUNT_RE.fullmatch(text) is None:
        return None
    count = int(text)  # at most MAX_VALUE_CHARS digits: far from int()'s own limit
    return float(count) if count <= MAX_COUNT else None


def _duration_s(text: str, now: float) -> float | None:
    """A Go-style duration (`6m0s`, `120ms`, `1h2m3.5s`) or a bare number of seconds."""
    if _NUMBER_RE.fullmatch(text) is not None:
        return _wait(_exact(text))
    if _DURATION_RE.fullmatch(text) is None:
        return None
    total = Fraction(0)
    for part in _DURATION_PART_RE.finditer(text):
        total += _exact(part[1]) * _UNIT_S[part[2]]
        if total > MAX_WAIT_S:
            return None
    return _wait(total)


def _rfc3339_s(text: str, now: float) -> float | None:
    """An RFC 3339 timestamp (`2026-12-03T17:40:00Z`), as seconds from `now`."""
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(group) for group in match.groups()[:6])
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        return None
    days = date(year, month, day).toordinal() - _EPOCH_DAY  # ValueError on 2026-02-30
    moment = Fraction(days * 86400 + hour * 3600 + minute * 60 + second)
    if match[7]:
        moment += _exact("." + match[7])
    if match[8]:
        offset_hours, offset_minutes = int(match[9]), int(match[10])
        if offset_hours > 23 or offset_minutes > 59:
            return None
        offset = offset_hours * 3600 + offset_minutes * 60
        moment += -offset if match[8] == "+" else offset
    return _until(moment, now)


def _retry_after_s(text: str, now: float) -> float | None:
    """`retry-after`: delta-seconds (a decimal too) or an HTTP-date, as seconds from `now`."""
    if _NUMBER_RE.fullmatch(text) is not None:
        return _wait(_exact(text))
    if _HTTP_DATE_RE.fullmatch(text) is None:
        return None
    moment = parsedate_to_datetime(text)  # ValueError on 32 Oct and the like
    if moment.tzinfo is None:  # asctime: GMT without saying so
        moment = moment.replace(tzinfo=timezone.utc)
    return _until(Fraction(moment.timestamp()), now)


def _retry_after_ms(text: str, now: float) -> float | None:
    """`retry-after-ms`: a non-negative number of milliseconds, as seconds."""
    if _NUMBER_RE.fullmatch(text) is None:
        return None
    return _wait(_exact(text) / 1000)


#: Where each value goes in the list `read_rate_limits` fills: kind i's limit, remaining
#: and reset at 3i, 3i+1 and 3i+2, then retry-after and retry-after-ms.
_RETRY_AFTER = 3 * len(KINDS)
_RETRY_AFTER_MS = _RETRY_AFTER + 1
_SLOTS: dict[str, tuple[int, _Parser]] = {
    "retry-after": (_RETRY_AFTER, _retry_after_s),
    "retry-after-ms": (_RETRY_AFTER_MS, _retry_after_ms),
}
for _i, _kind in enumerate(KINDS):
    _dashed = _kind.replace("_", "-")
    _SLOTS[f"anthropic-ratelimit-{_dashed}-limit"] = (3 * _i, _count)
    _SLOTS[f"anthropic-ratelimit-{_dashed}-remaining"] = (3 * _i + 1, _count)
    _SLOTS[f"anthropic-ratelimit-{_dashed}-reset"] = (3 * _i + 2, _rfc3339_s)
    if _kind in ("requests", "tokens"):
        _SLOTS[f"x-ratelimit-limit-{_kind}"] = (3 * _i, _count)
        _SLOTS[f"x-ratelimit-remaining-{_kind}"] = (3 * _i + 1, _count)
        _SLOTS[f"x-ratelimit-reset-{_kind}"] = (3 * _i + 2, _duration_s)
del _i, _kind, _dashed
_LONGEST_NAME = max(map(len, _SLOTS))


def _value(parse: _Parser, raw: str, now: float) -> float | None:
    """One header value read by `parse`, stripped; None for garbage, whatever it raises."""
    try:
        return parse(raw.strip(_WHITESPACE), now)
    except Exception:  # ValueError from date() and parsedate_to_datetime(), and anything else
        return None


def read_rate_limits(headers: Iterable[tuple[str, str]], now: float) -> RateLimits | None:
    """The rate limits a response's headers report, or None when they report none.

    A header that repeats counts with its last valid value; invalid values count as absent.

    >>> limits = read_rate_limits([("X-RateLimit-Reset-Tokens", "6m0s")], now=0.0)
    >>> limits.readings
    (Reading(kind='tokens', limit=None, remaining=None, reset_s=360.0),)
    >>> read_rate_limits([("content-type", "application/json")], now=0.0) is None
    True

    Args:
        headers: (name, value) pairs, names in any case, as httpx's `headers.multi_items()`.
            Pairs that are not two strings are skipped; if iterating raises, what was read
            before counts.
        now: The wall-clock time (`time.time()`) that absolute times (Anthropic's resets,
            an HTTP-date retry-after) are counted from; if NaN or infinite, they give None.

    Returns:
        One `Reading` per kind that had at least one valid value, in `KINDS` order, and the
        retry-after in seconds (`retry-after-ms` first); None when no rate-limit header had
        a valid value.
    """
    found: list[float | None] | None = None
    try:
        for item in headers:
            try:
                name, raw = item
            except Exception:  # not a pair
                continue
            if not isinstance(name, str) or len(name) > _LONGEST_NAME or not name.isascii():
                continue  # isascii: "K".lower() is "k", a header name is ASCII
            slot = _SLOTS.get(name.lower())
            if slot is None or not isinstance(raw, str) or len(raw) > MAX_VALUE_CHARS:
                continue
            number = _value(slot[1], raw, now)
            if number is not None:
                if found is None:
                    found = [None] * (_RETRY_AFTER_MS + 1)
                found[slot[0]] = number
    except Exception:  # a broken headers object: keep what it gave
        pass
    if found is None:
        return None
    readings = tuple(
        Reading(kind, *found[3 * i : 3 * i + 3])
        for i, kind in enumerate(KINDS)
        if any(value is not None for value in found[3 * i : 3 * i + 3])
    )
    retry_after = found[_RETRY_AFTER_MS]
    return RateLimits(readings, found[_RETRY_AFTER] if retry_after is None else retry_after)
