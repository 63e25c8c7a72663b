"""Periods of time as people type them (`today`, `7d`, `this-month`, `2026-11-01..2026-11-15`),
turned into half-open UTC ranges in a named time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

US_PER_S = 1_000_000
US_PER_HOUR = 3600 * US_PER_S

_RELATIVE = re.compile(r"^(\d+)([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
PERIOD_HELP = (
    "today, yesterday, this-month, last-month, all, Nh / Nd / Nw (the last N hours, days, "
    "weeks), or FROM..TO dates (YYYY-MM-DD, TO included)"
)


@dataclass(frozen=True)
class Period:
    """A half-open range of time [start_us, end_us) in UTC microseconds, and its zone."""

    start_us: int
    end_us: int
    zone: ZoneInfo | timezone

    def describe(self) -> str:
        """The period as `2026-11-16 00:00 .. 2026-11-23 00:00 UTC`."""
        start, end = (to_local(t, self.zone) for t in (self.start_us, self.end_us))
        name = getattr(self.zone, "key", None) or str(self.zone)
        return f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} {name}"


def zone_named(name: str | None) -> ZoneInfo | timezone:
    """The time zone called `name` (an IANA name such as `Europe/Paris`); UTC for None.

    Raises:
        ValueError: an unknown zone name.
    """
    if name is None or name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris' or 'UTC'"
        raise ValueError(msg) from exc


def to_us(moment: datetime) -> int:
    """`moment` (aware) as UTC microseconds since the epoch."""
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def to_local(us: int, zone: ZoneInfo | timezone) -> datetime:
    """UTC microseconds as a datetime in `zone`."""
    utc = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)
    return utc.astimezone(zone)


def midnight(day: date, zone: ZoneInfo | timezone) -> int:
    """The UTC microseconds at which `day` begins in `zone`."""
    return to_us(datetime(day.year, day.month, day.day, tzinfo=zone))


def parse_period(text: str, zone: ZoneInfo | timezone, *, now: datetime | None = None) -> Period:
    """The period `text` names, in `zone`, as of `now` (default: the current time).

    Args:
        text: see PERIOD_HELP.
        zone: where days and months begin.
        now: the present, for tests and replays.

    Raises:
        ValueError: text that names no period, or FROM after TO.
    """
    moment = (now or datetime.now(timezone.utc)).astimezone(zone)
    today = moment.date()
    spec = text.strip().lower()
    end_now = to_us(moment) + 1  # the current microsecond included
    if spec == "all":
        return Period(0, end_now, zone)
    if spec == "today":
        return Period(midnight(today, zone), end_now, zone)
    if spec == "yesterday":
        return Period(midnight(today - timedelta(days=1), zone), midnight(today, zone), zone)
    if spec == "this-month":
        return Period(midnight(today.replace(day=1), zone), end_now, zone)
    if spec == "last-month":
        first = today.replace(day=1)
        previous = (first - timedelta(days=1)).replace(day=1)
        return Period(midnight(previous, zone), midnight(first, zone), zone)
    relative = _RELATIVE.match(spec)
    if relative:
        span = _UNITS[relative.group(2)] * int(relative.group(1))  # real time, not wall time
        return Period(end_now - 1 - span // timedelta(microseconds=1), end_now, zone)
    if ".." in spec:
        first_text, _, last_text = spec.partition("..")
        first, last = _date(first_text, text), _date(last_text, text)
        if last < first:
            msg = f"period {text!r} ends before it starts: write FROM..TO with FROM first"
            raise ValueError(msg)
        return Period(midnight(first, zone), midnight(last + timedelta(days=1), zone), zone)
    msg = f"unknown period {text!r}: use {PERIOD_HELP}"
    raise ValueError(msg)


def _date(part: str, whole: str) -> date:
    try:
        return date.fromisoformat(part.strip())
    except ValueError as exc:
        msg = f"period {whole!r} has a date that is not YYYY-MM-DD: {part.strip()!r}"
        raise ValueError(msg) from exc


def parse_before(text: str, zone: ZoneInfo | timezone, *, now: datetime | None = None) -> int:
    """A moment given as `90d` (that long ago) or a date `YYYY-MM-DD` (its midnight in
    `zone`), as UTC microseconds: what `prune --before` takes.

    Raises:
        ValueError: text that is neither.
    """
    moment = (now or datetime.now(timezone.utc)).astimezone(zone)
    spec = text.strip().lower()
    relative = _RELATIVE.match(spec)
    if relative:
        span = _UNITS[relative.group(2)] * int(relative.group(1))
        return to_us(moment) - span // timedelta(microseconds=1)
    try:
        return midnight(date.fromisoformat(spec), zone)
    except ValueError as exc:
        msg = f"unknown moment {text!r}: use Nd (N days ago), Nh, Nw, or a date YYYY-MM-DD"
        raise ValueError(msg) from exc


def bucket_starts(period: Period, size: str) -> list[int]:
    """The UTC microseconds where each local `size` ("day" or "hour") bucket inside the
    period begins, the period's start first."""
    starts = [period.start_us]
    local = to_local(period.start_us, period.zone)
    if size == "hour":
        mark = period.start_us
        while True:  # each next local hour, stepped in real time (DST shifts are honoured)
            later = to_local(mark + US_PER_HOUR, period.zone)
            mark = to_us(later.replace(minute=0, second=0, microsecond=0))
            if mark >= period.end_us:
                return starts
            starts.append(mark)
    day = local.date()
    while True:
        day += timedelta(days=1)
        mark_us = midnight(day, period.zone)
        if mark_us >= period.end_us:
            return starts
        starts.append(mark_us)
