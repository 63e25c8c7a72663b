"""Which HTTP library a transport or request belongs to (httpx or httpx2), and the default
transport of each, made on first use. Neither library is imported until one is needed."""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any

#: The libraries whose transports can be wrapped, in the order a default is looked for.
LIBRARIES = ("httpx2", "httpx")


def library_of(obj: object) -> str | None:
    """ "httpx" or "httpx2" when `obj` is one of theirs (a request, a transport), else None."""
    name = type(obj).__module__.split(".", 1)[0]
    return name if name in LIBRARIES else None


def check_installed() -> None:
    for name in LIBRARIES:
        if importlib.util.find_spec(name) is not None:
            return
    msg = (
        "MeteredTransport needs httpx2 or httpx when no transport= is given: "
        "pip install 'otel_tokens[httpx2]' (or [httpx]), or pass transport="
    )
    raise ImportError(msg)


class DefaultTransports:
    """The transport to use when none was given: the default one of the library of each
    request (an httpx client sends httpx requests, which only an httpx transport takes),
    made on first use, one per library."""

    def __init__(self, asynchronous: bool) -> None:
        self._asynchronous = asynchronous
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def for_request(self, request: object) -> Any:
        library = library_of(request) or LIBRARIES[0]
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


def mismatch(transport: object, request: object) -> str | None:
    """Why `transport` cannot take `request` (one library's transport, the other's request)."""
    mine, theirs = library_of(transport), library_of(request)
    if mine is None or theirs is None or mine == theirs:
        return None
    return (
        f"MeteredTransport wraps a {mine} transport ({type(transport).__name__}) but the client "
        f"sending through it is {theirs}'s, and {mine} transports cannot take {theirs} "
        f"requests: pass transport={theirs}.{type(transport).__name__}() or leave transport= "
        "unset to use the client's own library"
    )
