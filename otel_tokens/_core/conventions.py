"""Which names the instruments get: today's, or those of the GenAI conventions' main branch.

By default the instruments carry the names that backends and dashboards know today
(`gen_ai.client.token.usage`, `gen_ai.client.operation.*`, the package's `llm.usage.*`
counters). The conventions' own repository (open-telemetry/semantic-conventions-genai) has
since replaced them on its main branch, still in development: the token histogram by one
histogram per direction without `gen_ai.token.type` (PR #374), the operation histograms of
inference by `gen_ai.client.inference.*` (PR #521), and counters per token class with
`gen_ai.token.modality` (PR #374), which the `llm.usage.*` token counters mirror.

`conventions="gen_ai_latest_experimental"` (or the same word in `OTEL_SEMCONV_STABILITY_OPT_IN`,
the switch OpenTelemetry instrumentations use for such moves) gives those names instead, so a
deployment can move when its backends do. Only names and attributes change; the values are
the same. The package does not split tokens by modality, so `gen_ai.token.modality` is
`unknown` on every point (the conventions' value when it is not known).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import NamedTuple

from otel_tokens._base.warn import logger
from otel_tokens._core import instruments as spec
from otel_tokens._core.instruments import InstrumentSpec

DEFAULT = "default"
LATEST = "gen_ai_latest_experimental"
CHOICES = (DEFAULT, LATEST)
#: OpenTelemetry's switch for moving to newer conventions: a comma-separated list.
OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
MODALITY = "gen_ai.token.modality"
UNKNOWN_MODALITY = "unknown"

INFERENCE_INPUT_TOKENS = InstrumentSpec(
    "gen_ai.client.inference.operation.input_tokens", "histogram", "{token}",
    "Input tokens per inference request, cache included.",
    "gen_ai_client_inference_operation_input_tokens", spec.TOKEN_BUCKETS,
)  # fmt: skip
INFERENCE_OUTPUT_TOKENS = InstrumentSpec(
    "gen_ai.client.inference.operation.output_tokens", "histogram", "{token}",
    "Output tokens per inference request, reasoning included.",
    "gen_ai_client_inference_operation_output_tokens", spec.TOKEN_BUCKETS,
)  # fmt: skip

#: Default instrument → its name and Prometheus name under LATEST (the others keep theirs).
_RENAMED = {
    spec.OPERATION_DURATION: (
        "gen_ai.client.inference.duration", "gen_ai_client_inference_duration_seconds",
    ),
    spec.TIME_TO_FIRST_CHUNK: (
        "gen_ai.client.inference.time_to_first_chunk",
        "gen_ai_client_inference_time_to_first_chunk_seconds",
    ),
    spec.TIME_PER_OUTPUT_CHUNK: (
        "gen_ai.client.inference.time_per_output_chunk",
        "gen_ai_client_inference_time_per_output_chunk_seconds",
    ),
    spec.INPUT_TOKENS: (
        "gen_ai.client.inference.usage.input_tokens",
        "gen_ai_client_inference_usage_input_tokens_total",
    ),
    spec.OUTPUT_TOKENS: (
        "gen_ai.client.inference.usage.output_tokens",
        "gen_ai_client_inference_usage_output_tokens_total",
    ),
    spec.CACHE_READ_TOKENS: (
        "gen_ai.client.inference.usage.cache_read.input_tokens",
        "gen_ai_client_inference_usage_cache_read_input_tokens_total",
    ),
    spec.CACHE_WRITE_TOKENS: (
        "gen_ai.client.inference.usage.cache_write.input_tokens",
        "gen_ai_client_inference_usage_cache_write_input_tokens_total",
    ),
    spec.REASONING_TOKENS: (
        "gen_ai.client.inference.usage.reasoning.output_tokens",
        "gen_ai_client_inference_usage_reasoning_output_tokens_total",
    ),
}  # fmt: skip
#: The counters that carry `gen_ai.token.modality` under LATEST.
MODALITY_COUNTERS = frozenset(
    s.name for s in (spec.INPUT_TOKENS, spec.OUTPUT_TOKENS, spec.CACHE_READ_TOKENS,
                     spec.CACHE_WRITE_TOKENS, spec.REASONING_TOKENS)
)  # fmt: skip


class Naming(NamedTuple):
    """The instruments of one choice of conventions."""

    latest: bool
    input_tokens: InstrumentSpec  # the histogram input token counts go on
    output_tokens: InstrumentSpec  # and output ones (the same one by default)
    duration: InstrumentSpec
    time_to_first_chunk: InstrumentSpec
    time_per_output_chunk: InstrumentSpec
    #: Each usage counter's default spec (how the tracker knows it) and the one it gets.
    counters: tuple[tuple[InstrumentSpec, InstrumentSpec], ...]

    def instruments(self) -> tuple[InstrumentSpec, ...]:
        """Every instrument a tracker with this naming creates, in the README's order."""
        histograms = (self.input_tokens, self.output_tokens)[: 1 + self.latest]
        return (
            *histograms, self.duration, self.time_to_first_chunk, self.time_per_output_chunk,
            *(named for _, named in self.counters), *spec.RATELIMIT_GAUGES, *spec.SELF_COUNTERS,
        )  # fmt: skip


def _named(instrument: InstrumentSpec, latest: bool) -> InstrumentSpec:
    names = _RENAMED.get(instrument) if latest else None
    if names is None:
        return instrument
    return replace(instrument, name=names[0], prometheus=names[1])


def naming(conventions: str | None) -> Naming:
    """The instruments for `conventions`; None reads `OTEL_SEMCONV_STABILITY_OPT_IN`.

    Raises:
        ValueError: `conventions` is not one of CHOICES.
    """
    if conventions is None:
        words = {w.strip() for w in os.environ.get(OPT_IN_ENV, "").split(",")}
        conventions = LATEST if LATEST in words else DEFAULT
        if conventions == LATEST:  # set for other instrumentations too, maybe: say so once
            logger.info(
                "otel_tokens: %s holds %r, so the instruments take the GenAI conventions' "
                "newest names (gen_ai.client.inference.*); the shipped dashboard and rules use "
                "the default ones: pass conventions='default' to keep them",
                OPT_IN_ENV,
                LATEST,
            )
    if conventions not in CHOICES:
        msg = f"conventions must be one of {CHOICES}, got {conventions!r}"
        raise ValueError(msg)
    latest = conventions == LATEST
    return Naming(
        latest=latest,
        input_tokens=INFERENCE_INPUT_TOKENS if latest else spec.TOKEN_USAGE,
        output_tokens=INFERENCE_OUTPUT_TOKENS if latest else spec.TOKEN_USAGE,
        duration=_named(spec.OPERATION_DURATION, latest),
        time_to_first_chunk=_named(spec.TIME_TO_FIRST_CHUNK, latest),
        time_per_output_chunk=_named(spec.TIME_PER_OUTPUT_CHUNK, latest),
        counters=tuple((c, _named(c, latest)) for c in spec.USAGE_COUNTERS),
    )
