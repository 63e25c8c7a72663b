"""The HTTP endpoint Prometheus scrapes, built to stay up whoever connects to it.

prometheus_client's server starts a thread per connection, waits forever for a client that
never sends its request, queues five connections before refusing more, and collects once
per scrape, so 200 scrapes at once meant 200 collections one after the other. Here one
thread owns every socket (non-blocking, each with a deadline), so a thousand idle or
slow connections cost a descriptor and a buffer each, never a thread; and one renderer
thread collects once for every scrape that is waiting, so scrapes that arrive together
share one collection. A scrape is always answered from a collection that began after its
request arrived, so it never sees data older than itself.

A rendering that fails because of one series (a label value no encoder can take) is done
again family by family, leaving out only what cannot be encoded, so one hostile value
never fails a whole scrape.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from otel_tokens._text import safe_text
from otel_tokens._warn import WarnOnce

#: Connections held open at once; past it the oldest one still sending its request goes.
MAX_CONNECTIONS = 1024
#: How long a client may take to send its request once connected (or after its last
#: response, on a kept-alive connection, once it began sending a new one).
REQUEST_TIMEOUT_S = 10.0
#: How long a kept-alive connection may wait idle for its next request.
IDLE_TIMEOUT_S = 120.0
#: How long a client may take to read its response.
WRITE_TIMEOUT_S = 30.0
#: The most bytes of request headers taken; a longer request is refused.
MAX_REQUEST_BYTES = 16 * 1024
#: Connections the kernel queues before this thread accepts them.
BACKLOG = 1024
_RECV_BYTES = 64 * 1024
_OPENMETRICS_EOF = b"# EOF\n"

Encoder = Callable[[Any], bytes]


def _choose_encoder(accept: str) -> tuple[Encoder, str]:
    from prometheus_client.exposition import choose_encoder

    return choose_encoder(accept)


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: memoryview | None = None
    keep_alive: bool = True
    waiting: bool = False  # for a rendering
    head_only: bool = False


@dataclass(frozen=True)
class _Scrape:
    """What one waiting request asked for."""

    key: int
    accept: str
    gzip: bool


class _Families:
    """A collection's metric families, in the shape the encoders read (`collect()`)."""

    def __init__(self, families: Iterable[Any]) -> None:
        self._families = list(families)

    def collect(self) -> list[Any]:
        return self._families


class ScrapeServer:
    """Serve `registry` over HTTP for Prometheus, on two threads whatever the load.

    Args:
        host: the address to listen on.
        port: the port; 0 picks a free one.
        registry: a prometheus_client registry (anything with `collect()`).

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, host: str, port: int, registry: Any) -> None:
        self._registry = registry
        self._warn = WarnOnce(limit=64)
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._listener = socket.socket(family, kind, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(BACKLOG)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self.server_address: tuple[Any, ...] = self._listener.getsockname()
        self._waker, self._wake_end = socket.socketpair()
        self._waker.setblocking(False)
        self._wake_end.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_end, selectors.EVENT_READ, None)
        self._connections: dict[int, _Connection] = {}
        self._keys = itertools.count(1)
        self._closed = False
        # The renderer's side: scrapes waiting for the next collection, answers ready.
        self._render_lock = threading.Condition()
        self._waiting: list[_Scrape] = []
        self._answers: list[tuple[int, bytes]] = []
        self._loop = threading.Thread(target=self._serve, name="otel_tokens-scrapes", daemon=True)
        self._renderer = threading.Thread(
            target=self._render_loop, name="otel_tokens-scrape-render", daemon=True
        )
        self._loop.start()
        self._renderer.start()

    def close(self) -> None:
        """Stop serving and close every connection; waits for both threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._render_lock:
            self._render_lock.notify_all()
        self._wake()
        self._loop.join(5)
        self._renderer.join(5)

    # The socket thread

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full already: it will wake anyway
            self._waker.send(b"\0")

    def _serve(self) -> None:
        try:
            while not self._closed:
                try:
                    self._turn()
                except Exception as exc:  # never let one connection stop the endpoint
                    self._warn(
                        ("loop", type(exc).__name__),
                        "otel_tokens: the metrics endpoint hit an error and goes on: %r",
                        exc,
                    )
        finally:
            for key in list(self._connections):
                self._drop(key)
            self._selector.close()
            self._listener.close()
            self._wake_end.close()
            self._waker.close()

    def _turn(self) -> None:
        now = time.monotonic()
        deadlines = [c.deadline for c in self._connections.values() if not c.waiting]
        timeout = max(0.0, min(deadlines, default=now + 1.0) - now)
        for selected, events in self._selector.select(min(timeout, 1.0)):
            key = selected.data
            if selected.fileobj is self._listener:
                self._accept()
            elif selected.fileobj is self._wake_end:
                self._take_answers()
            elif key in self._connections:
                try:
                    if events & selectors.EVENT_READ:
                        self._read(key)
                    elif events & selectors.EVENT_WRITE:
                        self._write(key)
                except OSError:
                    self._drop(key)
        now = time.monotonic()
        for key, connection in list(self._connections.items()):
            if not connection.waiting and connection.deadline <= now:
                self._drop(key)

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the kernel keeps the rest queued
                self._warn(
                    ("accept", exc.errno),
                    "otel_tokens: the metrics endpoint cannot accept connections: %s",
                    exc,
                )
                return
            if len(self._connections) >= MAX_CONNECTIONS:
                self._make_room()
            sock.setblocking(False)
            key = next(self._keys)
            self._connections[key] = _Connection(sock, time.monotonic() + REQUEST_TIMEOUT_S)
            self._selector.register(sock, selectors.EVENT_READ, key)

    def _make_room(self) -> None:
        """Close the connection that has waited longest without finishing a request, so a
        flood of idle connections can never lock a real scraper out (the newcomer, which
        is kept, may be that scraper)."""
        idle = [(c.deadline, k) for k, c in self._connections.items() if c.outbox is None
                and not c.waiting]  # fmt: skip
        if idle:
            self._drop(min(idle)[1])
        self._warn(
            "too_many",
            "otel_tokens: the metrics endpoint holds %d connections, its most; it closes the "
            "oldest idle one for each new one",
            MAX_CONNECTIONS,
        )

    def _drop(self, key: int) -> None:
        connection = self._connections.pop(key, None)
        if connection is None:
            return
        with contextlib.suppress(Exception):
            self._selector.unregister(connection.sock)
        with contextlib.suppress(OSError):
            connection.sock.close()

    def _read(self, key: int) -> None:
        connection = self._connections[key]
        data = connection.sock.recv(_RECV_BYTES)
        if not data:
            self._drop(key)
            return
        if not connection.inbox:  # a request begins: it has REQUEST_TIMEOUT_S to arrive
            connection.deadline = min(connection.deadline, time.monotonic() + REQUEST_TIMEOUT_S)
        connection.inbox += data
        self._take_request(key, connection)

    def _take_request(self, key: int, connection: _Connection) -> None:
        end = connection.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(connection.inbox) > MAX_REQUEST_BYTES:
                self._answer(key, _response(431, b"request headers too large\n"), close=True)
            return
        head = bytes(connection.inbox[:end])
        del connection.inbox[: end + 4]
        request = _parse(head)
        if request is None:
            self._answer(key, _response(400, b"bad request\n"), close=True)
            return
        method, headers, keep_alive = request
        connection.keep_alive = keep_alive
        if headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
            self._answer(key, _response(413, b"a scrape has no body\n"), close=True)
        elif method == "OPTIONS":
            self._answer(key, _response(200, b"", [("Allow", "OPTIONS, GET, HEAD")]))
        elif method not in ("GET", "HEAD"):
            self._answer(key, _response(405, b"use GET\n", [("Allow", "OPTIONS, GET, HEAD")]))
        else:
            connection.waiting = True
            connection.head_only = method == "HEAD"
            self._selector.unregister(connection.sock)  # nothing to read until answered
            scrape = _Scrape(key, headers.get("accept", ""), _gzip(headers))
            with self._render_lock:
                self._waiting.append(scrape)
                self._render_lock.notify()

    def _take_answers(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_end.recv(4096):
                pass
        with self._render_lock:
            answers, self._answers = self._answers, []
        for key, response in answers:
            connection = self._connections.get(key)
            if connection is None:
                continue
            connection.waiting = False
            sent = response[: response.find(b"\r\n\r\n") + 4] if connection.head_only else response
            try:
                self._selector.register(connection.sock, selectors.EVENT_WRITE, key)
                self._answer(key, sent, registered=True)
            except OSError:  # the client went away while it waited
                self._drop(key)

    def _answer(
        self, key: int, response: bytes, *, close: bool = False, registered: bool = False
    ) -> None:
        connection = self._connections[key]
        if close:
            connection.keep_alive = False
        if not connection.keep_alive:
            response = response.replace(b"Connection: keep-alive\r\n", b"Connection: close\r\n", 1)
        connection.outbox = memoryview(response)
        connection.deadline = time.monotonic() + WRITE_TIMEOUT_S
        if not registered:
            self._selector.modify(connection.sock, selectors.EVENT_WRITE, key)
        self._write(key)

    def _write(self, key: int) -> None:
        connection = self._connections[key]
        outbox = connection.outbox
        if outbox is None:
            return
        try:
            sent = connection.sock.send(outbox)
        except (BlockingIOError, InterruptedError):
            return
        if sent < len(outbox):
            connection.outbox = outbox[sent:]
            return
        connection.outbox = None
        if not connection.keep_alive:
            self._drop(key)
            return
        connection.deadline = time.monotonic() + (
            REQUEST_TIMEOUT_S if connection.inbox else IDLE_TIMEOUT_S
        )
        self._selector.modify(connection.sock, selectors.EVENT_READ, key)
        if connection.inbox:  # a pipelined request already arrived
            self._take_request(key, connection)

    # The renderer thread

    def _render_loop(self) -> None:
        while True:
            with self._render_lock:
                while not self._waiting and not self._closed:
                    self._render_lock.wait()
                if self._closed:
                    return
                scrapes, self._waiting = self._waiting, []
            answers = self._render(scrapes)
            with self._render_lock:
                self._answers.extend(answers)
            self._wake()

    def _render(self, scrapes: list[_Scrape]) -> list[tuple[int, bytes]]:
        """One collection, encoded once for each format and compression asked for."""
        try:
            families = _Families(_safe_families(self._registry.collect()))
        except Exception as exc:
            self._warn(
                ("collect", type(exc).__name__),
                "otel_tokens: collecting metrics for a scrape failed: %r",
                exc,
                exc_info=True,
            )
            failed = _response(500, f"collecting metrics failed: {type(exc).__name__}\n".encode())
            return [(scrape.key, failed) for scrape in scrapes]
        responses: dict[tuple[str, bool], bytes] = {}
        answers = []
        for scrape in scrapes:
            which = (scrape.accept, scrape.gzip)
            response = responses.get(which)
            if response is None:
                response = responses[which] = self._encode(families, *which)
            answers.append((scrape.key, response))
        return answers

    def _encode(self, families: _Families, accept: str, compress: bool) -> bytes:
        try:
            encoder, content_type = _choose_encoder(accept)
            body = self._encoded(encoder, families)
        except Exception as exc:
            self._warn(("encode", type(exc).__name__), "otel_tokens: a scrape failed: %r", exc)
            return _response(500, f"encoding metrics failed: {type(exc).__name__}\n".encode())
        headers = [("Content-Type", content_type)]
        if compress:
            body = gzip.compress(body, compresslevel=6)
            headers.append(("Content-Encoding", "gzip"))
        return _response(200, body, headers)

    def _encoded(self, encoder: Encoder, families: _Families) -> bytes:
        """`families` encoded; if that fails, each family on its own, leaving out those
        that cannot be encoded (warned once per family)."""
        try:
            return encoder(families)
        except Exception as whole:
            first_error = whole
        parts: list[bytes] = []
        ends_with_eof = False
        for family in families.collect():
            try:
                part = encoder(_Families([family]))
            except Exception as exc:
                self._warn(
                    ("family", getattr(family, "name", "")),
                    "otel_tokens: metric %r cannot be encoded for Prometheus (%r) and is left "
                    "out of scrapes",
                    getattr(family, "name", "?"),
                    exc,
                )
                continue
            if part.endswith(_OPENMETRICS_EOF):
                part, ends_with_eof = part[: -len(_OPENMETRICS_EOF)], True
            parts.append(part)
        if not parts and not ends_with_eof:
            raise first_error
        return b"".join(parts) + (_OPENMETRICS_EOF if ends_with_eof else b"")


def _safe_families(families: Iterable[Any]) -> list[Any]:
    """The families with every label value and description made encodable (the tracker
    makes its own labels safe already; this covers any other source of a series)."""
    safe = []
    for family in families:
        with contextlib.suppress(Exception):  # a family without the usual shape: as it is
            family.documentation = safe_text(family.documentation)
            family.samples = [
                sample._replace(labels={k: safe_text(v) for k, v in sample.labels.items()})
                if any(not _is_safe(v) for v in sample.labels.values())
                else sample
                for sample in family.samples
            ]
        safe.append(family)
    return safe


def _is_safe(value: object) -> bool:
    return type(value) is str and value.isascii() and value.isprintable()


def _parse(head: bytes) -> tuple[str, dict[str, str], bool] | None:
    """The method, headers (lower-case names) and keep-alive of a request, or None."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, _target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return method, headers, keep_alive


def _gzip(headers: dict[str, str]) -> bool:
    accepted = headers.get("accept-encoding", "")
    return any(part.split(";")[0].strip().lower() == "gzip" for part in accepted.split(","))


_REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error"}  # fmt: skip


def _response(status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if status != 200 and not any(name == "Content-Type" for name, _ in headers):
        lines.append("Content-Type: text/plain; charset=utf-8")
    lines += [f"Content-Length: {len(body)}", "Connection: keep-alive", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body
