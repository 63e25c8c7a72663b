"""Usage of streamed responses, folded from events as they pass and read once at the end.

An accumulator never holds the stream: `feed()` looks at one event and lets it go, so
the caller's events are neither buffered nor delayed. `feed_sse()` takes raw server-sent
events and parses only the few that carry usage (plus those before the first token), which
is what keeps metering a stream in the transport cheap.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from otel_tokens._base.usage import Usage
from otel_tokens.providers import _anthropic, _bedrock, _gemini, _openai
from otel_tokens.providers._read import Counts, UsageFields, build, get, text

if TYPE_CHECKING:
    from typing_extensions import Unpack

_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
_DELTA_FIELDS = ("content", "refusal", "tool_calls", "function_call", "reasoning_content",
                 "reasoning")  # fmt: skip


class StreamAccumulator:
    """Fold one streamed response's events into its `Usage`; never raises on bad events.

    Args:
        started: `time.perf_counter()` when the request was sent; defaults to now.
        **fields: any other `Usage` field (`request_model`, `scenario`, `api_key`, ...).
    """

    provider = "unknown"
    operation = "chat"
    #: Bytes in every raw event that carries usage, and in few others (`SSEParser.skip`).
    usage_marker = b'"usage"'

    def __init__(self, *, started: float | None = None, **fields: Unpack[UsageFields]) -> None:
        self._started = time.perf_counter() if started is None else started
        self._first: float | None = None
        self._after_first = 0  # events fed after the first content
        self._fields = fields
        self._counts = Counts()
        self._final = False
        self._model: str | None = None
        self._error_type: str | None = None

    @property
    def needs_every_event(self) -> bool:
        """Whether every event must still be fed, or only the stream's closing ones.

        Until the model and the first token are known every event matters. After that
        only the last few do: in every provider's protocol the final usage, an error and
        `[DONE]` close the stream. A reader of raw SSE may then skip the events between
        (`SSEParser.feed_tail()`), which is what keeps metering a long stream cheap.
        """
        return self._first is None or self._model is None

    @property
    def small_closing_events(self) -> bool:
        """Whether the events that close the stream are small (a few hundred bytes), so that
        a reader may keep only its last few chunks for them."""
        return True

    @property
    def final(self) -> bool:
        """Whether the event with the response's final usage has been seen."""
        return self._final

    @property
    def first_token_seen(self) -> bool:
        """Whether the first content has arrived."""
        return self._first is not None

    def first_token(self) -> None:
        """Mark the first content now, for events this class cannot recognise as content."""
        if self._first is None:
            self._first = time.perf_counter()

    def feed(self, event: object) -> None:
        """Fold one event: a parsed-JSON dict or the provider SDK's event object."""
        if self._first is not None:
            self._after_first += 1
        try:
            self._feed(event)
        except Exception:
            self._counts.malformed = True

    def feed_sse(self, event: str | None, data: bytes) -> None:
        """Fold one raw server-sent event (its `event:` name, if any, and its `data:`)."""
        if self._first is not None:
            self._after_first += 1
        try:
            self._feed_sse(event, data)
        except Exception:
            self._counts.malformed = True

    def finish(
        self,
        *,
        status: str = "success",
        error_type: str | None = None,
        at: float | None = None,
        request_model: str | None = None,
        chunks: int | None = None,
    ) -> Usage:
        """The `Usage` of the stream so far, with its latency, time to first token and mean
        time per output chunk.

        Args:
            status: `success` when the stream ended, `canceled` when the caller stopped
                reading, `error` when it failed; a success without the final usage event
                is flagged `partial` (some usage seen) or `missing` (none).
            error_type: the class of failure, for `error`.
            at: `time.perf_counter()` when the stream ended; defaults to now.
            request_model: the model the request asked for, when known only now.
            chunks: how many chunks came after the one with the first content; defaults to
                the events fed after it (a reader that skips events knows better).
        """
        if status == "success" and self._error_type is not None:
            status, error_type = "error", self._error_type  # the stream said it failed
        now = time.perf_counter() if at is None else at
        latency = max(0.0, now - self._started)
        ttft = None if self._first is None else min(latency, max(0.0, self._first - self._started))
        fields: UsageFields = {"streamed": True, "latency_s": latency, "status": status}
        if ttft is not None:
            fields["time_to_first_token_s"] = ttft
            after = self._after_first if chunks is None else chunks
            if after > 0:
                fields["time_per_output_chunk_s"] = (latency - ttft) / after
        if error_type is not None:
            fields["error_type"] = error_type
        fields.update(self._fields)
        if request_model is not None:
            fields["request_model"] = request_model
        try:
            self._before_finish()
        except Exception:
            self._counts.malformed = True
        return build(
            self._counts,
            provider=fields.get("provider", self.provider),
            model=self._model,
            operation=self.operation,
            fields=fields,
            final=self._final,
        )

    # What each provider family fills in.
    def _feed(self, event: object) -> None:
        raise NotImplementedError

    def _feed_sse(self, event: str | None, data: bytes) -> None:
        if data.strip() == b"[DONE]":
            return
        self._feed(json.loads(data))

    def _before_finish(self) -> None:
        """Parse whatever was kept raw for the end."""

    def _saw_error(self, error: object) -> None:
        """Remember a failure reported inside the stream (its provider-defined type)."""
        if self._error_type is None:
            self._error_type = text(error, "type", "status", "code") or "stream_error"

    def _saw_model(self, obj: object, *names: str) -> None:
        if self._model is None:
            self._model = text(obj, *names)


class OpenAIStream(StreamAccumulator):
    """Chat Completions chunks (with `stream_options={"include_usage": True}`, or no usage
    arrives) and Responses API events, from OpenAI or an OpenAI-compatible server."""

    provider = "openai"
    usage_marker = b'_tokens"'  # every chunk says "usage":null; a usage block has counts

    _responses_api = False

    def _feed(self, event: object) -> None:
        kind = text(event, "type")
        if kind is not None and kind.startswith("response."):
            self._responses_api = True
            self._feed_response_event(kind, event)
            return
        error = get(event, "error")
        if error is not None:
            self._saw_error(error)
            return
        self._saw_model(event, "model")
        self._counts.saw_service_tier(event)
        if self._first is None:
            for choice in get(event, "choices") or ():
                delta = get(choice, "delta")
                if any(get(delta, f) for f in _DELTA_FIELDS) or get(choice, "text"):
                    self.first_token()
                    break
        usage = get(event, "usage")
        if usage is not None:
            _openai.read_usage(usage, self._counts)
            self._final = True

    def _feed_response_event(self, kind: str, event: object) -> None:
        if kind.endswith(".delta"):
            self.first_token()
            return
        if kind in ("response.failed", "response.error"):
            self._saw_error(get(get(event, "response"), "error") or get(event, "error") or event)
        response = get(event, "response")
        if response is None:
            return
        self._saw_model(response, "model")
        self._counts.saw_service_tier(response)
        usage = get(response, "usage")
        if usage is not None:
            _openai.read_usage(usage, self._counts)
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self._final = True

    @property
    def small_closing_events(self) -> bool:
        # The Responses API closes with the whole response, its text included.
        return not self._responses_api

    def _feed_sse(self, event: str | None, data: bytes) -> None:
        if event is not None and event.startswith("response."):
            self._responses_api = True
            if event.endswith(".delta"):
                self.first_token()
            elif event in ("response.created", "response.completed", "response.incomplete",
                           "response.failed", "response.error"):  # fmt: skip
                self._feed(json.loads(data))
            return
        if self._first is None or self._model is None:
            super()._feed_sse(event, data)
        elif (b'"usage"' in data and not _NULL_USAGE.search(data)) or b'"error"' in data:
            self._feed(json.loads(data))


class AnthropicStream(StreamAccumulator):
    """Anthropic Messages events: `message_start` has the input side, `message_delta` the
    cumulative output (and, in newer API versions, input and cache again)."""

    provider = "anthropic"
    _PARSED = frozenset({"message_start", "message_delta", "error"})

    def _feed(self, event: object) -> None:
        kind = text(event, "type")
        if kind == "message_start":
            message = get(event, "message")
            self._saw_model(message, "model")
            usage = get(message, "usage")
            if usage is not None:
                _anthropic.read_usage(usage, self._counts)
        elif kind == "content_block_delta":
            self.first_token()
        elif kind == "message_delta":
            usage = get(event, "usage")
            if usage is not None:
                _anthropic.read_usage(usage, self._counts)
                self._final = True
        elif kind == "message_stop":
            self._final = self._final or self._counts.seen
        elif kind == "error":
            self._saw_error(get(event, "error"))

    def _feed_sse(self, event: str | None, data: bytes) -> None:
        if event == "content_block_delta":
            self.first_token()
        elif event == "message_stop":
            self._final = self._final or self._counts.seen
        elif event is None or event in self._PARSED:
            self._feed(json.loads(data))


class GeminiStream(StreamAccumulator):
    """Gemini `streamGenerateContent` chunks, each with the usage so far."""

    provider = "gcp.gemini"
    operation = _gemini.OPERATION
    usage_marker = b'"usageMetadata"'

    def __init__(self, *, started: float | None = None, **fields: Unpack[UsageFields]) -> None:
        super().__init__(started=started, **fields)
        self._last_raw: bytes | None = None

    def _feed(self, event: object) -> None:
        error = get(event, "error")
        if error is not None:
            self._saw_error(error)
            return
        self._saw_model(event, "modelVersion", "model_version")
        candidates = get(event, "candidates") or ()
        if self._first is None:
            for candidate in candidates:
                parts = get(get(candidate, "content"), "parts") or ()
                if any(get(p, "text") or get(p, "functionCall", "function_call") for p in parts):
                    self.first_token()
                    break
        metadata = _gemini.metadata_of(event)
        if metadata is not None:
            self._counts = Counts()  # each chunk carries the totals so far, not an increment
            _gemini.read_usage(metadata, self._counts)
        if any(get(c, "finishReason", "finish_reason") for c in candidates):
            self._final = self._counts.seen

    def _feed_sse(self, event: str | None, data: bytes) -> None:
        if (self._first is None or self._model is None or b'"finishReason"' in data
                or b'"error"' in data):  # fmt: skip
            self._last_raw = None
            super()._feed_sse(event, data)
        elif b'"usageMetadata"' in data:
            self._last_raw = data  # parsed at the end only if no later chunk says more

    def _before_finish(self) -> None:
        raw, self._last_raw = self._last_raw, None
        if raw is not None:
            self._feed(json.loads(raw))


class BedrockStream(StreamAccumulator):
    """Bedrock ConverseStream events as boto3 yields them (`contentBlockDelta`, `metadata`)."""

    provider = "aws.bedrock"

    def _feed(self, event: object) -> None:
        if get(event, "contentBlockDelta") is not None:
            self.first_token()
            return
        metadata = get(event, "metadata")
        usage = get(metadata, "usage")
        if usage is not None:
            _bedrock.read_usage(usage, self._counts)
            self._final = True
