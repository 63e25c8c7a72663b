"""Turn a `Usage` into a bounded set of attribute sets ("series") with their running totals.

Memory is bounded three ways: label values are cut to a length, models outside an optional
allow-list become "other", and once `max_series` attribute sets exist every new one goes to a
few overflow series (one per provider and operation, for the first `OVERFLOW_GROUPS` of them,
then one for all the rest). Series, once admitted, are kept: cumulative counters must not vanish.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from otel_tokens._base import names as n
from otel_tokens._base.text import safe_label, safe_text
from otel_tokens._base.usage import Usage
from otel_tokens._base.warn import WarnOnce
from otel_tokens._core.conventions import MODALITY, UNKNOWN_MODALITY

if TYPE_CHECKING:
    from otel_tokens._core.histogram_points import PendingPoints
    from otel_tokens._core.sdk_merge import Keys

#: error.type must look like a class of failure (`timeout`, `http_500`, `openai.RateLimitError`);
#: anything else (a raw message, an address) would make a new series per failure.
_ERROR_TYPE_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*")

Attributes = dict[str, Any]

#: Overflow series that keep their provider and operation; records of any other pair go to one
#: last overflow series without them. `setup.MAX_SERIES` leaves room for all of them.
OVERFLOW_GROUPS = 8


class Series:
    """One attribute set and its running totals; touched only by the tracker's one consumer."""

    __slots__ = (
        "attributes",
        "cache_premium_pico",
        "cache_read_tokens",
        "cache_saved_pico",
        "cache_write_tokens",
        "cost_pico",
        "counter_keys",
        "input_attributes",
        "input_tokens",
        "output_attributes",
        "output_tokens",
        "points",
        "priced",
        "reasoning_tokens",
        "requests",
        "system_tokens",
        "token_attributes",
        "unpriced_tokens",
    )

    def __init__(self, attributes: Attributes, latest: bool = False) -> None:
        self.attributes = attributes
        if latest:  # one histogram per direction, and counters of tokens by modality
            self.input_attributes = self.output_attributes = attributes
            self.token_attributes = {**attributes, MODALITY: UNKNOWN_MODALITY}
        else:
            self.input_attributes = {**attributes, n.TOKEN_TYPE: "input"}
            self.output_attributes = {**attributes, n.TOKEN_TYPE: "output"}
            self.token_attributes = attributes
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.system_tokens = 0
        self.requests = 0
        self.cost_pico = 0
        self.cache_saved_pico = 0
        self.cache_premium_pico = 0
        self.priced = False
        self.unpriced_tokens = 0
        #: Histogram points not yet handed to the SDK, by slot (`sdk_histograms.SLOTS`).
        self.points: list[PendingPoints | None] = [None] * 5
        #: What each counter's totals are set on in the SDK under (`sdk_counters`).
        self.counter_keys: dict[str, Keys] = {}


class SeriesTable:
    """Find or admit the series of each `Usage`, never holding more than `max_series` of them.

    Args:
        max_series: the most attribute sets kept; more go to the overflow series.
        max_label_length: label values longer than this are cut to it.
        models: when given, models not in it are reported as "other".
        opt_in: which of `_names.OPT_IN_ATTRIBUTES` to attach.
        fingerprint: turns an API key into its fingerprint (needed when `llm.api_key.id` is in).
        warn: the tracker's once-per-kind warner.
        latest: name attributes as the GenAI conventions' main branch does (`conventions`).
    """

    def __init__(
        self,
        *,
        latest: bool = False,
        max_series: int,
        max_label_length: int,
        models: frozenset[str] | None,
        opt_in: frozenset[str],
        fingerprint: Callable[[str], str] | None,
        warn: WarnOnce,
    ) -> None:
        self._max_series = max_series
        self._max_label_length = max_label_length
        self._models = models
        self._with_provider_uuid = n.PROVIDER_UUID in opt_in
        self._with_rule_uuid = n.RULE_UUID in opt_in
        self._with_service_tier = n.SERVICE_TIER in opt_in
        self._fingerprint = fingerprint if n.API_KEY_ID in opt_in else None
        self._warn = warn
        self._latest = latest
        self._series: dict[tuple[tuple[str, Any], ...], Series] = {}
        # Raw label tuple → series, so the common case skips sanitising. Bounded separately,
        # since many raw tuples can share one series (cut labels, "other" models).
        self._by_raw: dict[tuple[object, ...], Series] = {}
        self._max_raw = 2 * max_series
        #: Overflow series by (provider, operation) label, then the last one, once they exist.
        self._overflow: dict[tuple[str, str] | None, Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def all(self) -> Iterable[Series]:
        """Every admitted series, then the overflow series that exist."""
        yield from self._series.values()
        yield from self._overflow.values()

    def overflow(self) -> Iterable[Series]:
        """The overflow series that exist: one per provider and operation, and the last one
        (without them) once `OVERFLOW_GROUPS` pairs have theirs."""
        return self._overflow.values()

    def series_for(self, usage: Usage) -> Series:
        """The series `usage` counts on (maybe the overflow series)."""
        raw = (
            usage.provider,
            usage.operation,
            usage.request_model,
            usage.model,
            usage.status,
            usage.streamed,
            usage.error_type,
            usage.scenario,
            usage.user_tier,
            usage.team,
            usage.server_address,
            usage.server_port,
            usage.usage_problem,
            usage.provider_uuid if self._with_provider_uuid else None,
            usage.rule_uuid if self._with_rule_uuid else None,
            usage.service_tier if self._with_service_tier else None,
            usage.api_key if self._fingerprint is not None else None,
            usage.api_key_id if self._fingerprint is not None else None,
        )
        series = self._by_raw.get(raw)
        if series is not None:
            return series
        attributes = self._attributes(usage)
        key = tuple(attributes.items())
        series = self._series.get(key)
        if series is None:
            series = self._admit(key, attributes)
        if len(self._by_raw) < self._max_raw and not self._has_long_value(raw):
            self._by_raw[raw] = series
        return series

    def _admit(self, key: tuple[tuple[str, Any], ...], attributes: Attributes) -> Series:
        if len(self._series) < self._max_series:
            series = self._series[key] = Series(attributes, self._latest)
            return series
        self._warn(
            "series_overflow",
            "otel_tokens: %d attribute sets reached the series cap (max_series=%d); new ones "
            "are recorded on overflow series (%s=true, keeping only the provider and the "
            "operation) and counted on otel_tokens.series.overflow. Raise max_series, set a "
            "model allow-list, or drop a high-cardinality label (first one over the cap: %r)",
            self._max_series,
            self._max_series,
            n.OVERFLOW,
            attributes,
        )
        return self._overflow_series(attributes[n.PROVIDER], attributes[n.OPERATION])

    def _overflow_series(self, provider: str, operation: str) -> Series:
        groups = self._overflow
        group: tuple[str, str] | None = (provider, operation)
        series = groups.get(group)
        if series is not None:
            return series
        if len(groups) - (None in groups) >= OVERFLOW_GROUPS:
            group = None
            series = groups.get(None)
            if series is not None:
                return series
        labels = {} if group is None else {n.PROVIDER: provider, n.OPERATION: operation}
        series = groups[group] = Series({n.OVERFLOW: True, **labels}, self._latest)
        return series

    def limit_attributes(self, usage: Usage) -> Attributes:
        """The attributes a response's rate-limit headroom is reported with: the provider,
        its server, the model asked for (limits are per model), and the key id when opted in."""
        assert usage.request_model is not None  # Usage.__post_init__ fills it in
        attributes: Attributes = {
            n.PROVIDER: self._label(n.PROVIDER, usage.provider),
            n.REQUEST_MODEL: self._model(n.REQUEST_MODEL, usage.request_model),
        }
        if usage.server_address:
            attributes[n.SERVER_ADDRESS] = self._label(n.SERVER_ADDRESS, usage.server_address)
            if usage.server_port is not None:
                attributes[n.SERVER_PORT] = int.__int__(usage.server_port)  # an exact int
        if self._fingerprint is not None and usage.api_key_id:
            attributes[n.API_KEY_ID] = self._label(n.API_KEY_ID, usage.api_key_id)
        return attributes

    def drop_attributes(self, provider: str, model: str | None) -> Attributes:
        """The provider and model attributes of dropped records, bounded like any label."""
        attributes = {n.PROVIDER: self._label(n.PROVIDER, provider)}
        if model is not None:
            attributes[n.RESPONSE_MODEL] = self._model(n.RESPONSE_MODEL, model)
        return attributes

    def _has_long_value(self, raw: tuple[object, ...]) -> bool:
        limit = self._max_label_length
        return any(isinstance(v, str) and len(v) > limit for v in raw)

    def _label(self, name: str, value: str) -> str:
        """`value` as a label every exporter can take: an exact str, cut to length, with
        lone surrogates and control characters replaced (warned once per attribute)."""
        limit = self._max_label_length
        safe = safe_label(value, limit)
        if len(value) > limit:
            self._warn(
                ("label_cut", name),
                "otel_tokens: %s values longer than %d characters are cut to that length "
                "(first one: %r...); raise max_label_length if that is wrong",
                name,
                limit,
                safe[:40],
            )
        if safe != value[:limit]:
            self._warn(
                ("label_unsafe", name),
                "otel_tokens: a %s value held characters no exporter can take (lone "
                "surrogates, NUL or other control characters); they are replaced by "
                "U+FFFD (first one: %r)",
                name,
                value[:40],
            )
        return safe

    def _model(self, name: str, value: str) -> str:
        if self._models is not None and value not in self._models:
            return n.OTHER_MODEL
        return self._label(name, value)

    def _error_type(self, usage: Usage) -> str | None:
        if usage.status == "success":
            return None
        value = usage.error_type
        if not value:
            return n.OTHER_ERROR if usage.status == "error" else None
        if _ERROR_TYPE_SHAPE.fullmatch(value) is None:
            self._warn(
                "error_type_shape",
                "otel_tokens: error_type should name a class of failure such as 'timeout' or "
                "'http_500', not a message; recorded %r as %r",
                value[:80],
                n.OTHER_ERROR,
            )
            return n.OTHER_ERROR
        return self._label(n.ERROR_TYPE, value)

    def _attributes(self, usage: Usage) -> Attributes:
        assert usage.request_model is not None  # Usage.__post_init__ fills it in
        attributes: Attributes = {
            n.PROVIDER: self._label(n.PROVIDER, usage.provider),
            n.OPERATION: self._label(n.OPERATION, usage.operation),
            n.REQUEST_MODEL: self._model(n.REQUEST_MODEL, usage.request_model),
            n.RESPONSE_MODEL: self._model(n.RESPONSE_MODEL, usage.model),
            n.STATUS: safe_text(usage.status),  # one of STATUSES, maybe as a str subclass
            n.STREAMING: usage.streamed,
        }
        error_type = self._error_type(usage)
        if error_type:
            attributes[n.ERROR_TYPE] = error_type
        optional = (
            (n.SCENARIO, usage.scenario),
            (n.USER_TIER, usage.user_tier),
            (n.TEAM, usage.team),
            (n.SERVER_ADDRESS, usage.server_address),
            (n.USAGE_PROBLEM, usage.usage_problem),
            (n.PROVIDER_UUID, usage.provider_uuid if self._with_provider_uuid else None),
            (n.RULE_UUID, usage.rule_uuid if self._with_rule_uuid else None),
            (n.SERVICE_TIER, usage.service_tier if self._with_service_tier else None),
        )
        for name, value in optional:
            if value:
                attributes[name] = self._label(name, value)
        if usage.server_address and usage.server_port is not None:
            attributes[n.SERVER_PORT] = int.__int__(usage.server_port)  # an exact int
        if self._fingerprint is not None:
            # A caller that fingerprinted the key itself (the HTTP transports) never held
            # the raw key in a Usage; its fingerprint came from this tracker's secret.
            if usage.api_key_id:
                attributes[n.API_KEY_ID] = self._label(n.API_KEY_ID, usage.api_key_id)
            elif usage.api_key:
                attributes[n.API_KEY_ID] = self._fingerprint(usage.api_key)
        return attributes
