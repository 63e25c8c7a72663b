"""What a `UsageLedger` answers: usage and custom meters per key and period, and the
snapshots it writes and merges. The writing half is `ledger.py`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import IO

from otel_tokens._base.fingerprint import SECRET_ENV
from otel_tokens._base.meters import MeterSpec, MeterTotals
from otel_tokens._ledger.keys import LedgerKeys
from otel_tokens._ledger.periods import US_PER_HOUR, Period, parse_before, parse_period, zone_named
from otel_tokens._ledger.query import UsageTotals, check_groups, meter_query, query
from otel_tokens._ledger.snapshot import merge_snapshot, write_snapshot
from otel_tokens._ledger.store import Store


class MissingSecretError(ValueError):
    """An API key given to look up, in a ledger whose secret this process does not have."""


class LedgerReading:
    """The queries of a `UsageLedger`, which says what each one reads (see there)."""

    target: str
    _keys: LedgerKeys

    @property
    def _store(self) -> Store:
        raise NotImplementedError

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write everything queued so far (see `UsageLedger.flush`)."""
        raise NotImplementedError

    def define(self, spec: MeterSpec) -> MeterSpec:
        """Store a meter's definition (see `UsageLedger.define`)."""
        raise NotImplementedError

    def usage(
        self,
        period: str = "today",
        *,
        by: Sequence[str] = (),
        key_id: str | None = None,
        api_key: str | None = None,
        tz: str | None = None,
        team: str | None = None,
    ) -> list[UsageTotals]:
        """Usage over `period`, grouped by any of key, team, provider, model, scenario,
        status and day or hour.

        Args:
            period: `today`, `yesterday`, `24h`, `7d`, `30d`, `this-month`, `last-month`,
                `all`, or `FROM..TO` dates.
            by: what to group by; nothing gives one total.
            key_id: only this key's usage (its fingerprint).
            api_key: only this key's usage, given as the key itself.
            tz: the IANA time zone days and months begin in; UTC by default.
            team: only this team's usage (`Usage.team`; "" for requests without one).

        Raises:
            ValueError: an unknown period, group or time zone, or an api_key without a
                fingerprint secret.
        """
        check_groups(by)
        found = self._key_id(key_id, api_key)
        window = parse_period(period, zone_named(tz))
        return query(self._store, window, by, key_id=found, team=team)

    def period(self, period: str, *, tz: str | None = None) -> Period:
        """The period `period` names, for showing what a query covered."""
        return parse_period(period, zone_named(tz))

    def key_ids(self) -> list[str]:
        """Every key id with usage stored ("" for requests without a key)."""
        return self._store.key_ids()

    def reset(self, *, key_id: str | None = None, api_key: str | None = None,
              all_keys: bool = False) -> int:  # fmt: skip
        """Delete the usage of one key, or of all keys; how many requests were deleted.

        Raises:
            ValueError: neither a key nor all_keys given, or both.
        """
        found = self._key_id(key_id, api_key)
        if (found is None) == (not all_keys):
            msg = "reset needs a key (key_id= or api_key=) or all_keys=True, not both or neither"
            raise ValueError(msg)
        self.flush()
        return self._store.reset(found)

    def prune(self, before: str, *, tz: str | None = None) -> int:
        """Delete usage older than `before` (`90d`, or a date `YYYY-MM-DD`); how many
        requests were deleted. Hours are kept whole: the cut is rounded down to the hour.

        Raises:
            ValueError: `before` names no moment.
        """
        cut = parse_before(before, zone_named(tz))
        hour = cut // US_PER_HOUR
        self.flush()
        return self._store.prune(hour * US_PER_HOUR, hour)

    def meter_usage(
        self,
        name: str,
        period: str = "today",
        *,
        by: Sequence[str] = (),
        key_id: str | None = None,
        api_key: str | None = None,
        tz: str | None = None,
    ) -> list[MeterTotals]:
        """A custom meter's events over `period`, grouped by any of key, the meter's
        dimensions, and day or hour.

        Args:
            name: the meter.
            period: as for `usage()`.
            by: what to group by; nothing gives one total.
            key_id: only this key's events (its fingerprint).
            api_key: only this key's events, given as the key itself.
            tz: the IANA time zone days and months begin in; UTC by default.

        Raises:
            ValueError: no meter of that name, an unknown period, group or time zone.
        """
        specs = {spec.name: spec for spec in self._store.meters()}
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(specs) or "none yet"
            msg = f"the ledger {self.target!r} has no meter {name!r}: it has {known}"
            raise ValueError(msg)
        found = self._key_id(key_id, api_key)
        window = parse_period(period, zone_named(tz))
        return meter_query(self._store, spec, window, by, key_id=found)

    # Snapshots

    def export(
        self, file: str | os.PathLike[str] | IO[str], period: str = "all", *,
        tz: str | None = None,
    ) -> dict[str, int]:  # fmt: skip
        """Write a snapshot of the ledger (its meters, and its requests and events in
        `period`) as JSON Lines that `merge()` reads; what is queued is written first.

        Args:
            file: a path (created with 0600 permissions) or an open text file.
            period: as for `usage()`; `all` by default.
            tz: the IANA time zone the period's days begin in; UTC by default.

        Returns:
            How many meters, requests and events were written.

        Raises:
            ValueError: an unknown period or time zone.
            OSError: the file cannot be written.
        """
        window = None if period == "all" else parse_period(period, zone_named(tz))
        self.flush()
        if not isinstance(file, (str, os.PathLike)):
            return write_snapshot(self._store, file, window, self._keys.check)
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w", encoding="utf-8") as out:
            return write_snapshot(self._store, out, window, self._keys.check)

    def merge(self, file: str | os.PathLike[str] | IO[str]) -> dict[str, int]:
        """Add a snapshot that `export()` wrote, skipping the requests and events this
        ledger already holds (by their ids), so merging twice adds nothing the second time.

        Args:
            file: a path or an open text file.

        Returns:
            requests_added, requests_skipped, events_added, events_skipped and meters.

        Raises:
            ValueError: the file is not a snapshot or a line of it is damaged (what came
                before that line is merged; merging again after a fix is safe), it
                defines a meter differently from this ledger, or its key ids were made
                with another secret than this ledger's.
            OSError: the file cannot be read.
        """
        if isinstance(file, (str, os.PathLike)):
            with open(file, encoding="utf-8") as lines:
                return self._merge(lines, os.fspath(file))
        return self._merge(file, getattr(file, "name", "the snapshot"))

    def _merge(self, lines: Iterable[str], source: str) -> dict[str, int]:
        return merge_snapshot(self._store, lines, source, self.define, self._keys.accept)

    def _key_id(self, key_id: str | None, api_key: str | None) -> str | None:
        if api_key is None:
            return key_id
        fingerprint = self._keys.get()
        if fingerprint is None:
            msg = (
                f"the ledger {self.target!r} made its key ids with a secret this process was "
                f"not given, so an API key cannot be looked up: set {SECRET_ENV}, or look it "
                "up by its key id (key_id=, or --key-id on the command line)"
            )
            raise MissingSecretError(msg)
        return fingerprint(api_key)
