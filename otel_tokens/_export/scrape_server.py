"""The HTTP endpoint Prometheus scrapes, built to stay up whoever connects to it.

prometheus_client's server starts a thread per connection, waits forever for a client that
never sends its request, queues five connections before refusing more, and collects once
per scrape, so 200 scrapes at once meant 200 collections one after the other. Here one
thread owns every socket (non-blocking, each with a deadline), so a thousand idle or
slow connections cost a descriptor and a buffer each, never a thread; and one renderer
thread collects once for every scrape that is waiting, so scrapes that arrive together
share one collection. A scrape is always answered from a collection that began after its
request arrived, so it never sees data older than itself.

The endpoint shares its process's file descriptors with the gateway it lives in, so it
holds at most a quarter of them, and when the process runs out it stops accepting for a
moment instead of spinning. A rendering that fails because of one series (a label value no
encoder can take) is done again family by family, leaving out only what cannot be encoded,
so one hostile value never fails a whole scrape.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from otel_tokens._base.warn import WarnOnce
from otel_tokens._export.scrape_http import Reply, Scrape, gzip_accepted, make_reply, parse_head
from otel_tokens._export.scrape_render import Renderer

#: Connections held open at once, at most (and at most a quarter of the process's file
#: descriptors); past it the oldest one not being answered goes.
MAX_CONNECTIONS = 1024
#: How long a client may take to send its request once connected (or after its last
#: response, on a kept-alive connection, once it began sending a new one).
REQUEST_TIMEOUT_S = 10.0
#: How long a kept-alive connection may wait idle for its next request.
IDLE_TIMEOUT_S = 120.0
#: How long a client may take to read its response.
WRITE_TIMEOUT_S = 30.0
#: How long a scrape waits for its collection before its connection is closed (longer than
#: any Prometheus scrape timeout: a collection that takes this long is stuck).
RENDER_TIMEOUT_S = 60.0
#: How long accepting pauses when the process is out of file descriptors.
_ACCEPT_PAUSE_S = 0.5
#: The most bytes of request headers taken; a longer request is refused.
MAX_REQUEST_BYTES = 16 * 1024
#: Connections the kernel queues before this thread accepts them.
BACKLOG = 1024
_RECV_BYTES = 64 * 1024
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


def _connection_cap() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 4))


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: list[memoryview] = field(default_factory=list)
    keep_alive: bool = True
    waiting: bool = False  # for a rendering
    head_only: bool = False


class ScrapeServer:
    """Serve `registry` over HTTP for Prometheus, on two threads whatever the load.

    Args:
        host: the address to listen on.
        port: the port; 0 picks a free one.
        registry: a prometheus_client registry (anything with `collect()`).
        reader: the OpenTelemetry `PrometheusMetricReader` in `registry`, whose
            collections are then written directly (`scrape_encode`), if given.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, host: str, port: int, registry: Any, reader: Any = None) -> None:
        self._warn = WarnOnce(limit=64)
        self._rendering = Renderer(registry, self._warn, reader)
        self._cap = _connection_cap()
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
        self._accepting_again: float | None = None  # when out of descriptors
        self._connections: dict[int, _Connection] = {}
        self._keys = itertools.count(1)
        self._closed = False
        # The renderer's side: scrapes waiting for the next collection, answers ready.
        self._render_lock = threading.Condition()
        self._waiting: list[Scrape] = []
        self._answers: list[tuple[int, Reply]] = []
        self._loop = threading.Thread(target=self._serve, name="otel_tokens-scrapes", daemon=True)
        self._renderer = threading.Thread(
            target=self._render_loop, name="otel_tokens-scrape-render", daemon=True
        )
        self._loop.start()
        self._renderer.start()

    def close(self) -> None:
        """Stop serving and close every connection. Idempotent; waits a moment for both
        threads (a collection under way finishes on its own)."""
        if self._closed:
            return
        self._closed = True
        with self._render_lock:
            self._render_lock.notify_all()
        self._wake()
        self._loop.join(2)
        self._renderer.join(2)

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
        soonest = min((c.deadline for c in self._connections.values()), default=now + 1.0)
        if self._accepting_again is not None:
            soonest = min(soonest, self._accepting_again)
        for selected, events in self._selector.select(min(max(0.0, soonest - now), 1.0)):
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
        if self._accepting_again is not None and now >= self._accepting_again:
            self._accepting_again = None
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        for key, connection in list(self._connections.items()):
            if connection.deadline <= now:
                self._drop(key)

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the kernel keeps the rest queued; the listener,
                    # still readable, would otherwise wake this thread without end.
                    self._selector.unregister(self._listener)
                    self._accepting_again = time.monotonic() + _ACCEPT_PAUSE_S
                self._warn(
                    ("accept", exc.errno),
                    "otel_tokens: the metrics endpoint cannot accept connections: %s",
                    exc,
                )
                return
            if len(self._connections) >= self._cap:
                self._make_room()
            sock.setblocking(False)
            key = next(self._keys)
            self._connections[key] = _Connection(sock, time.monotonic() + REQUEST_TIMEOUT_S)
            self._selector.register(sock, selectors.EVENT_READ, key)

    def _make_room(self) -> None:
        """Close the connection that has waited longest without being answered (an idle
        one first, else one waiting for a stuck collection), so a flood of connections can
        never lock a real scraper out nor take all the process's descriptors."""
        idle = [(c.waiting, c.deadline, k) for k, c in self._connections.items() if not c.outbox]
        if idle:
            self._drop(min(idle)[2])
        self._warn(
            "too_many",
            "otel_tokens: the metrics endpoint holds %d connections, its most; it closes the "
            "oldest idle one for each new one",
            self._cap,
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
        """Take the next whole request from the connection's inbox, if there is one."""
        inbox = connection.inbox
        ends = [(at, len(end)) for end in _HEAD_ENDS if (at := inbox.find(end)) >= 0]
        if not ends:
            if len(inbox) > MAX_REQUEST_BYTES:
                self._answer(key, make_reply(431, b"request headers too large\n"), close=True)
            return
        end, size = min(ends)
        head = bytes(inbox[:end])
        del inbox[: end + size]
        request = parse_head(head)
        if request is None:
            self._answer(key, make_reply(400, b"bad request\n"), close=True)
            return
        method, headers, keep_alive = request
        connection.keep_alive = keep_alive
        if headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
            self._answer(key, make_reply(413, b"a scrape has no body\n"), close=True)
        elif method == "OPTIONS":
            self._answer(key, make_reply(200, b"", [("Allow", "OPTIONS, GET, HEAD")]))
        elif method not in ("GET", "HEAD"):
            self._answer(key, make_reply(405, b"use GET\n", [("Allow", "OPTIONS, GET, HEAD")]))
        else:
            connection.waiting = True
            connection.head_only = method == "HEAD"
            connection.deadline = time.monotonic() + RENDER_TIMEOUT_S
            self._selector.unregister(connection.sock)  # nothing to read until answered
            scrape = Scrape(key, headers.get("accept", ""), gzip_accepted(headers))
            with self._render_lock:
                self._waiting.append(scrape)
                self._render_lock.notify()

    def _take_answers(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_end.recv(4096):
                pass
        with self._render_lock:
            answers, self._answers = self._answers, []
        for key, reply in answers:
            connection = self._connections.get(key)
            if connection is None:  # closed, or timed out, while it waited
                continue
            connection.waiting = False
            try:
                self._selector.register(connection.sock, selectors.EVENT_WRITE, key)
                self._answer(key, reply, registered=True)
            except OSError:  # the client went away while it waited
                self._drop(key)

    def _answer(
        self, key: int, reply: Reply, *, close: bool = False, registered: bool = False
    ) -> None:
        """Queue `reply` on the connection; it is sent when the socket can take it, so a
        client that pipelines many requests is answered one turn at a time."""
        connection = self._connections[key]
        if close:
            connection.keep_alive = False
        kept = b"Connection: keep-alive\r\n\r\n" if connection.keep_alive else (
            b"Connection: close\r\n\r\n"
        )  # fmt: skip
        connection.outbox = [memoryview(reply.head + kept)]
        if reply.body and not connection.head_only:
            connection.outbox.append(memoryview(reply.body))
        connection.head_only = False
        connection.deadline = time.monotonic() + WRITE_TIMEOUT_S
        if not registered:
            self._selector.modify(connection.sock, selectors.EVENT_WRITE, key)

    def _write(self, key: int) -> None:
        connection = self._connections[key]
        outbox = connection.outbox
        if outbox:
            try:
                sent = connection.sock.sendmsg(outbox)
            except (BlockingIOError, InterruptedError):
                return
            while outbox and sent >= len(outbox[0]):
                sent -= len(outbox.pop(0))
            if outbox:
                outbox[0] = outbox[0][sent:]
                return
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
            try:
                answers = self._rendering.render(scrapes)
            except Exception as exc:  # never let one collection stop the renderer
                self._warn(("render", type(exc).__name__), "otel_tokens: a scrape failed: %r", exc)
                failed = make_reply(500, f"rendering failed: {type(exc).__name__}\n".encode())
                answers = [(scrape.key, failed) for scrape in scrapes]
            with self._render_lock:
                self._answers.extend(answers)
            self._wake()
