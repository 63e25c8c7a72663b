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
import importlib
import importlib.util
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import partial
from typing import Any

from otel_tokens._base.usage import Usage
from otel_tokens._core.tracker import TokenTracker
from otel_tokens._http.meter import LATER_BYTES, ResponseMeter, error_type_of_exception
from otel_tokens._http.route import Route, recognise
from otel_tokens.providers._read import UNKNOWN_MODEL, UsageFields

__all__ = ["AsyncMeteredTransport", "MeteredTransport"]

#: The request extension that carries per-request `Usage` fields.
EXTENSION = "otel_tokens"
_LABELS = ("scenario", "user_tier", "provider_uuid", "rule_uuid", "provider")
_PER_REQUEST = frozenset({*_LABELS, "api_key", "system_tokens", "request_id"})


#: The libraries whose transports can be wrapped, in the order a default is looked for.
_LIBRARIES = ("httpx2", "httpx")


def _library_of(obj: object) -> str | None:
    """ "httpx" or "httpx2" when `obj` is one of theirs (a request, a transport), else None."""
    name = type(obj).__module__.split(".", 1)[0]
    return name if name in _LIBRARIES else None


def _check_installed() -> None:
    for name in _LIBRARIES:
        if importlib.util.find_spec(name) is not None:
            return
    msg = (
        "MeteredTransport needs httpx2 or httpx when no transport= is given: "
        "pip install 'otel_tokens[httpx2]' (or [httpx]), or pass transport="
    )
    raise ImportError(msg)


class _Defaults:
    """The transport to use when none was given: the default one of the library of each
    request (an httpx client sends httpx requests, which only an httpx transport takes),
    made on first use, one per library."""

    def __init__(self, asynchronous: bool) -> None:
        self._asynchronous = asynchronous
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def for_request(self, request: object) -> Any:
        library = _library_of(request) or _LIBRARIES[0]
        transport = self._made.get(library)
        if transport is None:
            with self._lock:
                transport = self._made.get(library)
                if transport is None:
                    module = importlib.import_module(library)
                    make = module.AsyncHTTPTransport if self._asynchronous else module.HTTPTransport
                    transport = self._made[library] = make()
        return transport

    def made(self) -> list[Any]:
        with self._lock:
            return list(self._made.values())


def _mismatch(transport: object, request: object) -> str | None:
    """Why `transport` cannot take `request` (one library's transport, the other's request)."""
    mine, theirs = _library_of(transport), _library_of(request)
    if mine is None or theirs is None or mine == theirs:
        return None
    return (
        f"MeteredTransport wraps a {mine} transport ({type(transport).__name__}) but the client "
        f"sending through it is {theirs}'s, and {mine} transports cannot take {theirs} "
        f"requests: pass transport={theirs}.{type(transport).__name__}() or leave transport= "
        "unset to use the client's own library"
    )


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
        self._tracker = tracker
        self._transport = transport
        self._defaults: _Defaults | None = None
        if transport is None:
            _check_installed()
            self._defaults = _Defaults(asynchronous)
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
            problem = _mismatch(self._transport, request)
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
            return recognise(
                request.method,
                url.host,
                url.path,
                query=query.decode("ascii", "replace") if isinstance(query, bytes) else str(query),
                headers=request.headers,
                body=body,
            )
        except Exception:
            return None

    def _fields(self, route: Route, request: Any) -> UsageFields:
        fields: dict[str, Any] = {"provider": route.provider, **self._labels}
        if route.server_address:
            fields["server_address"] = route.server_address
        api_key = route.api_key
        extra = request.extensions.get(EXTENSION) if hasattr(request, "extensions") else None
        if isinstance(extra, Mapping):
            for name, value in extra.items():
                if name == "api_key":  # bytes too: ASGI servers hand headers over so
                    api_key = _text_key(value)
                elif name in _PER_REQUEST:
                    fields[name] = value
        # The raw key goes no further than here: the tracker gets its keyed fingerprint.
        fingerprint = self._tracker._fingerprint
        if api_key and fingerprint is not None:
            fields["api_key_id"] = fingerprint(api_key)
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
            self._tracker._record_later(partial(_failure_usage, route, values))

    def _metered(
        self, route: Route, request: Any, response: Any, started: float, mixin: type
    ) -> Any:
        """`response` with its byte stream replaced by one that meters it."""
        with contextlib.suppress(Exception):  # metering must never break the caller's request
            response.stream = _wrap_stream(
                response, self._meter(route, request, response, started), mixin
            )
        return response

    def _meter(self, route: Route, request: Any, response: Any, started: float) -> ResponseMeter:
        headers = response.headers
        return ResponseMeter(
            self._tracker._record_later,
            route=route,
            started=started,
            status_code=int(response.status_code),
            content_type=headers.get("content-type", ""),
            content_encoding=headers.get("content-encoding", ""),
            fields=self._fields(route, request),
        )


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


#: (metering mixin, library base class) → the class that combines them.
_stream_classes: dict[tuple[type, type], type] = {}


def _wrap_stream(response: Any, meter: ResponseMeter, mixin: type) -> Any:
    """Wrap `response.stream` in a subclass of its own library's byte-stream class, which
    httpx and httpx2 check with isinstance()."""
    name = "SyncByteStream" if mixin is _SyncStream else "AsyncByteStream"
    library = sys.modules.get(type(response).__module__.split(".", 1)[0])
    base = getattr(library, name, None)
    base = base if isinstance(base, type) else object
    cls = _stream_classes.get((mixin, base))
    if cls is None:
        cls = _stream_classes[(mixin, base)] = type("Metered" + name, (mixin, base), {})
    return cls(response.stream, meter)


class _SyncStream:
    def __init__(self, inner: Any, meter: ResponseMeter) -> None:
        self._inner = inner
        self._meter = meter
        # A response dropped without close() still records (as canceled) when collected.
        weakref.finalize(self, meter.on_close)

    def __iter__(self) -> Iterator[bytes]:
        meter = self._meter
        chunks = iter(self._inner)
        try:
            for chunk in chunks:
                meter.on_chunk(chunk)
                yield chunk
                if meter.later is not None:
                    break
            ring, later = meter.ring, meter.later
            if ring is not None:  # the rest of a stream of one event per chunk: its last ones
                keep = ring.append
                for chunk in chunks:
                    keep(chunk)
                    yield chunk
            elif later is not None:  # the rest of a long stream: kept and read many at a time
                keep, size = later.append, 0
                for chunk in chunks:
                    keep(chunk)
                    yield chunk
                    size += len(chunk)
                    if size >= LATER_BYTES:
                        size = 0
                        meter.on_later()
        except GeneratorExit:
            raise
        except BaseException as exc:
            meter.on_error(exc)
            raise
        meter.on_end()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._meter.on_close()


class _AsyncStream:
    def __init__(self, inner: Any, meter: ResponseMeter) -> None:
        self._inner = inner
        self._meter = meter
        weakref.finalize(self, meter.on_close)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        meter = self._meter
        chunks = aiter(self._inner)
        try:
            async for chunk in chunks:
                meter.on_chunk(chunk)
                yield chunk
                if meter.later is not None:
                    break
            ring, later = meter.ring, meter.later
            if ring is not None:  # as in _SyncStream
                keep = ring.append
                async for chunk in chunks:
                    keep(chunk)
                    yield chunk
            elif later is not None:
                keep, size = later.append, 0
                async for chunk in chunks:
                    keep(chunk)
                    yield chunk
                    size += len(chunk)
                    if size >= LATER_BYTES:
                        size = 0
                        meter.on_later()
        except GeneratorExit:
            raise
        except BaseException as exc:
            meter.on_error(exc)
            raise
        meter.on_end()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._meter.on_close()


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
        return self._metered(route, request, response, started, _SyncStream)

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
        return self._metered(route, request, response, started, _AsyncStream)

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
