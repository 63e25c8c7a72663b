"""`TokenTracker`: the one entry point for recording LLM usage as OpenTelemetry metrics."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from opentelemetry.context import get_current
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_tokens._base import names as n
from otel_tokens._base.fingerprint import SECRET_ENV, KeyFingerprinter
from otel_tokens._base.meters import meter_spec
from otel_tokens._base.ratelimit import RateLimits
from otel_tokens._base.usage import Usage
from otel_tokens._base.warn import WarnOnce
from otel_tokens._core import instruments as spec
from otel_tokens._core.aggregator import Aggregator, Later, Queued
from otel_tokens._core.collection_snapshot import CounterSnapshots
from otel_tokens._core.conventions import MODALITY_COUNTERS, naming
from otel_tokens._core.custom_meter import CustomMeter
from otel_tokens._core.drops import Drops, ledger_drops
from otel_tokens._core.gauges import create_gauges
from otel_tokens._core.handoff import Handoff
from otel_tokens._core.ratelimits import RateLimitBoard
from otel_tokens._core.sdk_counters import CounterFeed
from otel_tokens._core.series import SeriesTable
from otel_tokens._core.setup import (
    MAX_SERIES,
    MAX_SERIES_WHY,
    check_int,
    claim_meter,
    create_histograms,
    price_table,
)
from otel_tokens._core.sink import UsageSink
from otel_tokens._core.track import TrackedRequest
from otel_tokens._pricing.table import PriceTable

#: Records held between `record()` and the consumer; past it `record()` drops and counts.
#: A collection folds all of them first: about a second of work at most, whatever the load.
QUEUE_CAPACITY = 16_384
#: Records that wake the background consumer.
BATCH_SIZE = 512


class TokenTracker:
    """Record LLM token usage, cost and latency as OpenTelemetry metrics.

    `record()` only queues the `Usage` (under a microsecond, no I/O, no lock but a wake-up
    once per batch); one consumer, on a background thread or on the thread that collects
    metrics, checks it,
    adds it to bounded in-process totals and records its histogram points. Counters reach
    OpenTelemetry as observable counters and every collection first consumes what is
    queued, so exported data is the same as recording each instrument directly.

    Args:
        meter: the meter to create instruments on; one tracker per meter.
        prices: prices by model. None: the bundled table, with the models of the file
            named by OTEL_TOKENS_PRICE_FILE (JSON or YAML) overriding it when that is set.
            A path: the bundled table with that file's models overriding it. A
            `PriceTable`: exactly that table (`PriceTable({})` prices nothing).
        models: an allow-list of model names; others are reported as "other".
        max_series: the most attribute sets kept, at most 991; new ones beyond it go to
            overflow series that keep only the provider and the operation. The token
            histogram has two series per set (input and output), which keeps every
            instrument under the SDK's 2000 series.
        max_label_length: label values longer than this are cut.
        opt_in_attributes: any of "llm.provider.uuid", "llm.rule.uuid", "llm.api_key.id",
            "openai.response.service_tier".
        ledger: a `UsageLedger` that every recorded `Usage` is also written to, with the
            cost this tracker computed for it; `flush()` writes it too. Rows the ledger
            could not write are counted on `otel_tokens.records.dropped` too, with reasons
            `ledger_queue_full`, `ledger_write_failed`, ... The tracker and its ledger
            fingerprint keys with one secret: the tracker's, or else the ledger's (the one
            it was given, or the one it keeps).
        conventions: "default" (the names backends know today) or
            "gen_ai_latest_experimental" (the GenAI conventions' main branch:
            `gen_ai.client.inference.*`, with `gen_ai.token.modality`); None reads
            OTEL_SEMCONV_STABILITY_OPT_IN, where "gen_ai_latest_experimental" chooses the
            latter.
        api_key_secret: the per-deployment secret of the API key fingerprint; defaults to the
            OTEL_TOKENS_API_KEY_SECRET environment variable. Needed for "llm.api_key.id",
            unless a ledger provides one.

    Raises:
        ValueError: a setting out of range, an unknown opt-in attribute, "llm.api_key.id"
            without a secret, a secret other than the one the ledger's key ids are made
            with, a price file that cannot be read, or a meter that already has a tracker.

    Example:
        >>> from opentelemetry.sdk.metrics import MeterProvider
        >>> from otel_tokens import TokenTracker, Usage
        >>> tracker = TokenTracker(MeterProvider().get_meter("my-gateway"))
        >>> tracker.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1200,
        ...                      output_tokens=300, cache_read_tokens=1000, latency_s=1.8))
    """

    def __init__(
        self,
        meter: Meter,
        *,
        prices: PriceTable | str | os.PathLike[str] | None = None,
        models: Iterable[str] | None = None,
        max_series: int = 500,
        max_label_length: int = 128,
        opt_in_attributes: Iterable[str] = (),
        api_key_secret: bytes | str | None = None,
        ledger: UsageSink | None = None,
        conventions: str | None = None,
    ) -> None:
        chosen = naming(conventions)
        check_int("max_series", max_series, 1, MAX_SERIES, why=MAX_SERIES_WHY)
        check_int("max_label_length", max_label_length, 8, 1024)
        table = price_table(prices)
        allowed = None if models is None else frozenset(models)
        if allowed is not None and not all(isinstance(m, str) and m for m in allowed):
            msg = f"models must be non-empty str model names, got {sorted(map(repr, allowed))}"
            raise ValueError(msg)
        opt_in = frozenset(opt_in_attributes)
        unknown = opt_in - n.OPT_IN_ATTRIBUTES
        if unknown:
            msg = (
                f"unknown opt-in attributes {sorted(unknown)}: choose from "
                f"{sorted(n.OPT_IN_ATTRIBUTES)}"
            )
            raise ValueError(msg)
        if ledger is not None and not isinstance(ledger, UsageSink):
            msg = f"ledger must be a UsageLedger, got {type(ledger).__name__}"
            raise ValueError(msg)
        secret = api_key_secret if api_key_secret is not None else os.environ.get(SECRET_ENV)
        fingerprint = KeyFingerprinter(secret) if secret else None
        if ledger is not None:  # one fingerprinter for both, or one key gets two ids
            fingerprint = ledger.share_keys(fingerprint)
        if fingerprint is None and n.API_KEY_ID in opt_in:
            msg = (
                f"{n.API_KEY_ID} needs a secret to fingerprint keys with: pass api_key_secret= "
                f"or set {SECRET_ENV}"
            )
            raise ValueError(msg)
        self._ledger = ledger
        claim_meter(meter)
        self._meter = meter
        self._custom_meters: dict[str, CustomMeter] = {}
        self._custom_lock = threading.Lock()
        self._histograms = create_histograms(meter, chosen)
        self._prices = table
        self._fingerprint = fingerprint

        def new_table() -> SeriesTable:
            return SeriesTable(
                latest=chosen.latest,
                max_series=max_series,
                max_label_length=max_label_length,
                models=allowed,
                opt_in=opt_in,
                fingerprint=fingerprint,
                warn=self._warn,
            )

        self._new_table = new_table
        self._start_afresh()
        self._handoff: Handoff[Queued] = Handoff(
            self._consume,
            capacity=QUEUE_CAPACITY,
            batch_size=BATCH_SIZE,
            after_fork=self._start_afresh,
        )
        snapshots = CounterSnapshots(self._handoff, self._take_snapshot)
        if ledger is not None:  # the ledger's flush() and close() write what is queued here
            ledger.add_source(self._handoff.drain)
        observable = {
            known.name: meter.create_observable_counter(
                counter.name,
                callbacks=[snapshots.callback(known.name)],
                unit=counter.unit,
                description=counter.description,
            )
            for known, counter in (*chosen.counters, *((c, c) for c in spec.SELF_COUNTERS))
        }
        self._counter_feed = CounterFeed(
            {c.name: observable[c.name] for c in spec.USAGE_COUNTERS}
        )  # fmt: skip
        self._modality = MODALITY_COUNTERS if chosen.latest else frozenset()
        create_gauges(meter, self._limits_callback, ledger)

    def _start_afresh(self) -> None:
        """Empty totals; also what a forked child starts from, so it reports only its own
        requests (the SDK's own histogram state, which it also inherits, is not reset)."""
        self._warn = WarnOnce()
        table = self._new_table()
        self._drops = Drops(self._warn, table.drop_attributes)
        self._limits = RateLimitBoard(table.limit_attributes, self._warn)
        self._aggregator = Aggregator(
            table, self._histograms, self._prices, self._drops, self._warn, self._ledger
        )

    def record(self, usage: Usage) -> None:
        """Queue one finished request's usage to be recorded; never raises, never blocks.

        An invalid `usage` is dropped when it is consumed: counted on
        `otel_tokens.records.dropped` by reason and logged once per reason. A full queue
        (the consumer cannot keep up) drops the same way, with reason "queue_full".

        Args:
            usage: what the request used.
        """
        try:
            if not self._handoff.put((usage, get_current())):
                self._drops.add_later(
                    "queue_full",
                    f"the queue of {QUEUE_CAPACITY} records waiting to be aggregated is full",
                    usage,
                )
        except Exception:
            with contextlib.suppress(Exception):
                self._drops.add_later("internal_error", "queuing the record failed")

    def _record_later(self, make: Callable[[], Usage]) -> None:
        """Like `record`, but `make()` builds the `Usage` on the consumer thread."""
        self.record(cast(Usage, Later(make)))  # queued as is; the consumer knows a Later

    def _rate_limits(self, usage: Usage, limits: RateLimits) -> None:
        """Keep the rate-limit headroom a response of `usage` reported (consumer thread)."""
        self._limits.update(usage, limits)

    def _limits_callback(self, index: int) -> Callable[[CallbackOptions], list[Observation]]:
        def observe(options: CallbackOptions) -> list[Observation]:
            return self._limits.observations()[index]

        return observe

    def _key_id(self, api_key: str) -> str | None:
        """The keyed fingerprint of `api_key`; None without a secret to make it with."""
        fingerprint = self._fingerprint
        return None if fingerprint is None else fingerprint(api_key)

    def track(
        self,
        *,
        provider: str,
        model: str,
        request_model: str | None = None,
        operation: str = "chat",
        streamed: bool = False,
        scenario: str | None = None,
        user_tier: str | None = None,
        team: str | None = None,
        provider_uuid: str | None = None,
        rule_uuid: str | None = None,
        api_key: str | None = None,
        server_address: str | None = None,
    ) -> TrackedRequest:
        """Time a request in a `with` or `async with` block and record it when the block ends.

        Args:
            provider: who serves the request (`gen_ai.provider.name`).
            model: the model expected to answer; the block may set `req.model` to the
                model that did.
            request_model: the model the client asked for; defaults to `model`.
            operation: `gen_ai.operation.name`.
            streamed: whether the response is streamed (`req.first_token()` sets it too).
            scenario: the gateway's API surface that took the request.
            user_tier: a low-cardinality class of the caller.
            team: the caller's team (`llm.team`), low-cardinality too.
            provider_uuid: the gateway's upstream id.
            rule_uuid: the gateway's routing rule id.
            api_key: the caller's key; only its fingerprint is ever exported.
            server_address: the upstream host.

        Example:
            >>> from opentelemetry.metrics import NoOpMeter
            >>> tracker = TokenTracker(NoOpMeter("example"))
            >>> with tracker.track(provider="anthropic", model="claude-sonnet-4-5") as req:
            ...     req.input_tokens, req.output_tokens = 5000, 420
        """
        return TrackedRequest(
            self.record,
            provider=provider,
            model=model,
            request_model=request_model,
            operation=operation,
            streamed=streamed,
            scenario=scenario,
            user_tier=user_tier,
            team=team,
            provider_uuid=provider_uuid,
            rule_uuid=rule_uuid,
            api_key=api_key,
            server_address=server_address,
        )

    def flush(self) -> None:
        """Fold everything queued into the instruments now, on this thread.

        Collections do this themselves; a loop that replays stored usage faster than the
        consumer folds it calls this every few thousand records to keep the queue short.
        With a ledger, also writes what it has queued.
        """
        self._handoff.drain()
        if self._ledger is not None:
            self._ledger.flush()

    def custom_meter(
        self,
        name: str,
        *,
        unit: str,
        aggregation: str = "sum",
        dimensions: Sequence[str] = (),
        currency: str | None = None,
        description: str = "",
    ) -> CustomMeter:
        """Define a meter of usage other than tokens: an OpenTelemetry instrument named
        `name` on this tracker's meter (a counter for sum and count, a gauge for last),
        labelled by the meter's dimensions, and, with a ledger, the same meter in it,
        queryable per key like tokens (`UsageLedger.meter_usage()`).

        `record()` on the returned meter never raises; an event it cannot take is counted on
        `otel_tokens.records.dropped{reason="invalid_event"}`. Dimension values are cut to
        128 characters; the SDK caps each instrument's series (2000 by default).

        Args: as for `UsageLedger.custom_meter()`.

        Raises:
            ValueError: a definition that is not allowed, or one that differs from a meter
                of the same name on this tracker or in its ledger.

        Example:
            >>> from opentelemetry.metrics import NoOpMeter
            >>> tracker = TokenTracker(NoOpMeter("example"))
            >>> audio = tracker.custom_meter("audio.seconds", unit="s", dimensions=["model"])
            >>> audio.record(12.5, dimensions={"model": "whisper-1"})
        """
        spec = meter_spec(name, unit=unit, aggregation=aggregation, dimensions=dimensions,
                          currency=currency, description=description)  # fmt: skip
        with self._custom_lock:
            made = self._custom_meters.get(name)
            if made is not None:
                if not made.spec.same_as(spec):
                    msg = (
                        f"this tracker already has meter {name!r} as {made.spec.describe()}, "
                        f"not {spec.describe()}: use the same definition or another name"
                    )
                    raise ValueError(msg)
                return made
            if self._ledger is not None:
                spec = self._ledger.define(spec)
            make = self._meter.create_gauge if aggregation == "last" else self._meter.create_counter
            instrument = make(name, unit=unit, description=description)

            def drop(reason: str, why: str) -> None:
                self._drops.add_later(reason, why)

            made = CustomMeter(spec, sink=self._ledger, instrument=instrument, drop=drop)
            self._custom_meters[name] = made
            return made

    def _consume(self, batch: list[Queued]) -> None:
        self._aggregator.consume(batch)

    def _take_snapshot(self) -> dict[str, list[Observation]]:
        aggregator = self._aggregator
        aggregator.merge_histograms()  # before the SDK reads its histograms
        observations = {
            c.name: aggregator.counter_observations(
                c.name, self._counter_feed, tokens=c.name in self._modality
            )
            for c in spec.USAGE_COUNTERS
        }
        ledger = None if self._ledger is None else ledger_drops(self._ledger.drops())
        observations[spec.DROPPED.name] = self._drops.observations(ledger)
        observations[spec.OVERFLOWED.name] = aggregator.overflow_observations()
        return observations
