"""Meter every LLM call a client makes, by wrapping its HTTP transport (httpx or httpx2).

    import httpx2, openai
    from otel_tokens.httpx import MeteredTransport

    http_client = httpx2.Client(transport=MeteredTransport(tracker))
    client = openai.OpenAI(http_client=http_client)      # or anthropic.Anthropic(...)

The transport recognises the provider from the request, lets the response through
unchanged and undelayed while it reads the usage (JSON or SSE), and records exactly one
`Usage` per request: when the body ends, when the caller closes it early (`canceled`),
or when the connection fails (`error`). Per-request labels (the gateway's caller, tier,
scenario) go in the request's extensions: `extensions={"otel_tokens": {"user_tier": "pro"}}`.
Neither httpx nor httpx2 is imported until a transport is built.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from otel_tokens._base.usage import Usage
from otel_tokens._core.hooks import recording_hooks
from otel_tokens._core.tracker import TokenTracker
from otel_tokens._http.libraries import (
    DefaultTransports,
    check_installed,
    mismatch,
)
from otel_tokens._http.meter import ResponseMeter, error_type_of_exception
from otel_tokens._http.route import Route, recognise
from otel_tokens._http.streams import AsyncStream, SyncStream, wrap_stream
from otel_tokens.providers import UNKNOWN_MODEL, UsageFields

__all__ = ["AsyncMeteredTransport", "MeteredTransport"]

#: The request extension that carries per-request `Usage` fields.
EXTENSION = "otel_tokens"
_LABELS = ("scenario", "user_tier", "provider_uuid", "rule_uuid", "provider")
_PER_REQUEST = frozenset({*_LABELS, "team", "api_key", "system_tokens", "request_id"})


def _check_labels(labels: Mapping[str, str | None]) -> dict[str, str]:
    checked = {}
    for name, value in labels.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            msg = f"MeteredTransport {name}= must be a non-empty str or None, got {value!r}"
            raise ValueError(msg)
        checked[name] = value
    return checked


#: The port a URL without one goes to.
_DEFAULT_PORTS = {"https": 443, "http": 80}


class _Base:
    def __init__(
        self,
        tracker: TokenTracker,
        transport: Any,
        *,
        provider: str | None,
        scenario: str | None,
        user_tier: str | None,
        provider_uuid: str | None,
        rule_uuid: str | None,
        asynchronous: bool,
    ) -> None:
        if not isinstance(tracker, TokenTracker):
            msg = f"MeteredTransport needs a TokenTracker, got {type(tracker).__name__}"
            raise ValueError(msg)
        self._hooks = recording_hooks(tracker)
        self._transport = transport
        self._defaults: DefaultTransports | None = None
        if transport is None:
            check_installed()
            self._defaults = DefaultTransports(asynchronous)
        else:
            method = "handle_async_request" if asynchronous else "handle_request"
            if not callable(getattr(transport, method, None)):
                msg = (
                    f"transport= must have a {method}() method (an httpx or httpx2 "
                    f"{'Async' if asynchronous else ''}HTTPTransport), got "
                    f"{type(transport).__name__}"
                )
                raise ValueError(msg)
        self._checked: set[type] = set()  # request types known to suit the given transport
        self._labels = _check_labels(
            {"provider": provider, "scenario": scenario, "user_tier": user_tier,
             "provider_uuid": provider_uuid, "rule_uuid": rule_uuid}
        )  # fmt: skip

    def _inner(self, request: Any) -> Any:
        """The transport that sends `request`."""
        if self._defaults is not None:
            return self._defaults.for_request(request)
        kind = type(request)
        if kind not in self._checked:
            problem = mismatch(self._transport, request)
            if problem is not None:
                raise TypeError(problem)
            self._checked.add(kind)
        return self._transport

    def _transports(self) -> list[Any]:
        """Every transport this one sends through (to close them)."""
        return self._defaults.made() if self._defaults is not None else [self._transport]

    def _route(self, request: Any) -> Route | None:
        try:
            url = request.url
            try:
                body: bytes | None = request.content
            except Exception:  # a streamed upload not read yet: the model stays unknown
                body = None
            query = url.query
            port = url.port or _DEFAULT_PORTS.get(url.scheme)
            return recognise(
                request.method,
                url.host,
                url.path,
                query=query.decode("ascii", "replace") if isinstance(query, bytes) else str(query),
                headers=request.headers,
                body=body,
                port=port,
            )
        except Exception:
            return None

    def _fields(self, route: Route, request: Any) -> UsageFields:
        # The path names the operation; an error body, which has no `object`, could not.
        fields: dict[str, Any] = {
            "provider": route.provider, "operation": route.operation, **self._labels,
        }  # fmt: skip
        if route.server_address:
            fields["server_address"] = route.server_address
            if route.server_port is not None:
                fields["server_port"] = route.server_port
        api_key = route.api_key
        extra = request.extensions.get(EXTENSION) if hasattr(request, "extensions") else None
        if isinstance(extra, Mapping):
            for name, value in extra.items():
                if name == "api_key":  # bytes too: ASGI servers hand headers over so
                    api_key = _text_key(value)
                elif name in _PER_REQUEST:
                    fields[name] = value
        # The raw key goes no further than here: the tracker gets its keyed fingerprint.
        if api_key:
            key_id = self._hooks.key_id(api_key)
            if key_id is not None:
                fields["api_key_id"] = key_id
        result: UsageFields = fields  # type: ignore[assignment]
        return result

    def _record_failure(
        self, route: Route, request: Any, started: float, exc: BaseException
    ) -> None:
        with contextlib.suppress(Exception):  # metering must never break the caller's request
            status = "error" if isinstance(exc, Exception) else "canceled"
            values: dict[str, Any] = {
                "latency_s": max(0.0, time.perf_counter() - started),
                **self._fields(route, request),
                "status": status,
                "error_type": error_type_of_exception(exc) if status == "error" else None,
            }
            self._hooks.record_later(partial(_failure_usage, route, values))

    def _metered(
        self, route: Route, request: Any, response: Any, started: float, mixin: type
    ) -> Any:
        """`response` with its byte stream replaced by one that meters it."""
        with contextlib.suppress(Exception):  # metering must never break the caller's request
            response.stream = wrap_stream(
                response, self._meter(route, request, response, started), mixin
            )
        return response

    def _meter(self, route: Route, request: Any, response: Any, started: float) -> ResponseMeter:
        headers = response.headers
        return ResponseMeter(
            self._hooks.record_later,
            route=route,
            started=started,
            status_code=int(response.status_code),
            content_type=headers.get("content-type", ""),
            content_encoding=headers.get("content-encoding", ""),
            fields=self._fields(route, request),
            headers=_header_pairs(headers),
            rate_limits=self._hooks.rate_limits,
        )


def _header_pairs(headers: Any) -> Any:
    """The response's header pairs as they are now, for the consumer to read rate limits from:
    the caller owns the headers object and may change it (a gateway strips or rewrites the
    provider's headers). A copy of the raw (bytes) pairs costs about a microsecond."""
    raw = getattr(headers, "raw", None)
    if isinstance(raw, list):
        return raw  # httpx and httpx2 build this list afresh on each access
    return list(headers.multi_items() if hasattr(headers, "multi_items") else headers.items())


def _text_key(value: object) -> str | None:
    """An API key given as str or bytes, as str (the same key either way gets one id)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    return None


def _failure_usage(route: Route, values: dict[str, Any]) -> Usage:
    """The `Usage` of a request that got no response (made on the consumer thread)."""
    model = route.request_model()
    return Usage(model=model or UNKNOWN_MODEL, request_model=model,
                 streamed=route.asked_to_stream(), **values)  # fmt: skip


class MeteredTransport(_Base):
    """An httpx/httpx2 transport that records the token usage of every LLM call through it.

    Args:
        tracker: where each request's `Usage` goes.
        transport: the transport to wrap (`httpx2.HTTPTransport()`, `httpx.HTTPTransport()`,
            ...); its library decides the response type, so it must be the client's. None:
            the default transport of the client's own library (httpx for an `httpx.Client`,
            httpx2 for an `httpx2.Client`), made on the first request.
        provider: `gen_ai.provider.name` for every request, instead of the one recognised
            from the host (for a self-hosted vLLM, say).
        scenario: `llm.scenario` of every request.
        user_tier: `llm.user.tier` of every request.
        provider_uuid: the gateway's upstream id.
        rule_uuid: the gateway's routing rule id.

    Raises:
        ValueError: a tracker that is not a TokenTracker, a transport without
            `handle_request()`, or an empty label.
        ImportError: no transport given and neither httpx2 nor httpx installed.

    A transport of the other library than the client's (an httpx2 transport in an httpx
    client) raises TypeError on the first request, naming the transport to pass instead.

    Example:
        >>> import httpx2
        >>> from opentelemetry.metrics import NoOpMeter
        >>> from otel_tokens import TokenTracker
        >>> transport = MeteredTransport(TokenTracker(NoOpMeter("gw")), scenario="openai")
        >>> client = httpx2.Client(transport=transport)
    """

    def __init__(
        self,
        tracker: TokenTracker,
        transport: Any = None,
        *,
        provider: str | None = None,
        scenario: str | None = None,
        user_tier: str | None = None,
        provider_uuid: str | None = None,
        rule_uuid: str | None = None,
    ) -> None:
        super().__init__(
            tracker, transport, provider=provider, scenario=scenario, user_tier=user_tier,
            provider_uuid=provider_uuid, rule_uuid=rule_uuid, asynchronous=False,
        )  # fmt: skip

    def handle_request(self, request: Any) -> Any:
        """Send `request` through the wrapped transport, metering its response.

        Raises:
            TypeError: the wrapped transport is of the other library than the client's.
        """
        inner = self._inner(request)
        route = self._route(request)
        if route is None:
            return inner.handle_request(request)
        started = time.perf_counter()
        try:
            response = inner.handle_request(request)
        except BaseException as exc:
            self._record_failure(route, request, started, exc)
            raise
        return self._metered(route, request, response, started, SyncStream)

    def close(self) -> None:
        """Close the wrapped transport (or the default ones made)."""
        for transport in self._transports():
            transport.close()

    def __enter__(self) -> MeteredTransport:
        enter = getattr(self._transport, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._defaults is not None:
            self.close()
            return
        exit_ = getattr(self._transport, "__exit__", None)
        if exit_ is not None:
            exit_(*exc_info)


class AsyncMeteredTransport(_Base):
    """The asynchronous `MeteredTransport`, for `httpx.AsyncClient` / `httpx2.AsyncClient`.

    Args:
        tracker: where each request's `Usage` goes.
        transport: the async transport to wrap; None: the default async transport of the
            client's own library, made on the first request.
        provider: `gen_ai.provider.name` for every request instead of the recognised one.
        scenario: `llm.scenario` of every request.
        user_tier: `llm.user.tier` of every request.
        provider_uuid: the gateway's upstream id.
        rule_uuid: the gateway's routing rule id.

    Raises:
        ValueError: a tracker that is not a TokenTracker, a transport without
            `handle_async_request()`, or an empty label.
        ImportError: no transport given and neither httpx2 nor httpx installed.
    """

    def __init__(
        self,
        tracker: TokenTracker,
        transport: Any = None,
        *,
        provider: str | None = None,
        scenario: str | None = None,
        user_tier: str | None = None,
        provider_uuid: str | None = None,
        rule_uuid: str | None = None,
    ) -> None:
        super().__init__(
            tracker, transport, provider=provider, scenario=scenario, user_tier=user_tier,
            provider_uuid=provider_uuid, rule_uuid=rule_uuid, asynchronous=True,
        )  # fmt: skip

    async def handle_async_request(self, request: Any) -> Any:
        """Send `request` through the wrapped transport, metering its response.

        Raises:
            TypeError: the wrapped transport is of the other library than the client's.
        """
        inner = self._inner(request)
        route = self._route(request)
        if route is None:
            return await inner.handle_async_request(request)
        started = time.perf_counter()
        try:
            response = await inner.handle_async_request(request)
        except BaseException as exc:
            self._record_failure(route, request, started, exc)
            raise
        return self._metered(route, request, response, started, AsyncStream)

    async def aclose(self) -> None:
        """Close the wrapped transport (or the default ones made)."""
        for transport in self._transports():
            await transport.aclose()

    async def __aenter__(self) -> AsyncMeteredTransport:
        enter = getattr(self._transport, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._defaults is not None:
            await self.aclose()
            return
        exit_ = getattr(self._transport, "__aexit__", None)
        if exit_ is not None:
            await exit_(*exc_info)
