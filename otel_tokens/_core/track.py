"""`TokenTracker.track()`: time a request and record it on exit, with `with` or `async with`."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from otel_tokens._base.usage import Usage


class TrackedRequest:
    """One request being timed; set its token counts inside the block, it records itself on exit.

    The block's outcome sets the status: no exception is `success` (unless the block set
    `status`, or set `error_type`, which means `error`); an `Exception` is `error`, with the
    exception's class name as `error_type` unless the block set one; and a `BaseException`
    that is not an `Exception` (`asyncio.CancelledError`, `KeyboardInterrupt`,
    `GeneratorExit`) is `canceled`. The exception always propagates. Call `first_token()`
    when the first chunk of a stream arrives to measure time to first token.

    Example:
        >>> from opentelemetry.metrics import NoOpMeter
        >>> from otel_tokens import TokenTracker
        >>> tracker = TokenTracker(NoOpMeter("example"))
        >>> with tracker.track(provider="openai", model="gpt-4o-mini") as req:
        ...     req.input_tokens, req.output_tokens = 1200, 300
    """

    __slots__ = (
        "_finished",
        "_first_token_at",
        "_record",
        "_started",
        "api_key",
        "cache_read_tokens",
        "cache_write_tokens",
        "error_type",
        "input_tokens",
        "model",
        "operation",
        "output_tokens",
        "provider",
        "provider_uuid",
        "reasoning_tokens",
        "request_model",
        "rule_uuid",
        "scenario",
        "server_address",
        "status",
        "streamed",
        "system_tokens",
        "team",
        "user_tier",
    )

    def __init__(
        self,
        record: Callable[[Usage], None],
        *,
        provider: str,
        model: str,
        request_model: str | None,
        operation: str,
        streamed: bool,
        scenario: str | None,
        user_tier: str | None,
        team: str | None,
        provider_uuid: str | None,
        rule_uuid: str | None,
        api_key: str | None,
        server_address: str | None,
    ) -> None:
        self._record = record
        self.provider = provider
        self.model = model
        # What the client asked for is known now; `model` may change to what answered.
        self.request_model = model if request_model is None else request_model
        self.operation = operation
        self.streamed = streamed
        self.scenario = scenario
        self.user_tier = user_tier
        self.team = team
        self.provider_uuid = provider_uuid
        self.rule_uuid = rule_uuid
        self.api_key = api_key
        self.server_address = server_address
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.system_tokens = 0
        self.status = "success"
        self.error_type: str | None = None
        self._started = 0.0
        self._first_token_at: float | None = None
        self._finished = False

    def __repr__(self) -> str:
        return (
            f"TrackedRequest(provider={self.provider!r}, model={self.model!r}, "
            f"status={self.status!r}, input_tokens={self.input_tokens}, "
            f"output_tokens={self.output_tokens})"
        )

    def first_token(self) -> None:
        """Mark the arrival of the first content chunk (first call only); implies streaming."""
        if self._first_token_at is None:
            self._first_token_at = time.perf_counter()
            self.streamed = True

    def __enter__(self) -> TrackedRequest:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)

    async def __aenter__(self) -> TrackedRequest:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        ended = time.perf_counter()
        try:
            status, error_type = _outcome(self.status, self.error_type, exc)
        except Exception:  # a status whose == raises: record() judges it (and drops it)
            status, error_type = self.status, self.error_type
        ttft = None if self._first_token_at is None else self._first_token_at - self._started
        self._record(
            Usage(
                provider=self.provider,
                model=self.model,
                request_model=self.request_model,
                operation=self.operation,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                cache_read_tokens=self.cache_read_tokens,
                cache_write_tokens=self.cache_write_tokens,
                reasoning_tokens=self.reasoning_tokens,
                system_tokens=self.system_tokens,
                status=status,
                error_type=error_type,
                latency_s=ended - self._started,
                time_to_first_token_s=ttft,
                streamed=self.streamed,
                scenario=self.scenario,
                user_tier=self.user_tier,
                team=self.team,
                provider_uuid=self.provider_uuid,
                rule_uuid=self.rule_uuid,
                api_key=self.api_key,
                server_address=self.server_address,
            )
        )


def _outcome(
    status: str, error_type: str | None, exc: BaseException | None
) -> tuple[str, str | None]:
    """The status and error type of a block that set `status` and `error_type` and ended
    with `exc`."""
    if status == "success" and error_type:
        status = "error"  # naming the failure is how a block that does not raise fails
    if isinstance(exc, Exception):
        status = "error"
        error_type = error_type or type(exc).__name__
    elif exc is not None:
        status = "canceled"
    return status, error_type if status != "success" else None
