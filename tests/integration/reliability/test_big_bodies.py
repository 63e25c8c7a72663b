"""Huge responses through the transport: the caller gets every byte, the meter keeps a few
hundred KiB at most, and the usage is found where the provider puts it.

A 100 MB JSON body is served from 127.0.0.1 in 64 KiB writes, read through the real httpx2
client and `MeteredTransport`, and the memory the process allocates meanwhile is measured
with tracemalloc: without the bound, the meter held the body (up to 64 MiB) and then gave up.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest

from otel_tokens.httpx import MeteredTransport
from otel_tokens.testing import InMemoryMetrics

BODY_BYTES = 100 * 1024 * 1024
WRITE_BYTES = 64 * 1024
#: What the meter may allocate for one response, with httpx2's own buffers: far below the
#: body, which the caller streams through.
MEMORY_BOUND = 8 * 1024 * 1024

OPENAI_USAGE = {"prompt_tokens": 1234, "completion_tokens": 567,
                "prompt_tokens_details": {"cached_tokens": 1000}}  # fmt: skip
ANTHROPIC_USAGE = {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 300}


def _filler(size: int) -> bytes:
    """A JSON string's worth of text, with quotes and keys named like usage inside it."""
    unit = b'lorem \\"usage\\": {\\"prompt_tokens\\": 999999} ipsum '
    return (unit * (size // len(unit) + 1))[:size]


def _body(where: str) -> tuple[bytes, bytes, int]:
    """The head, and the middle piece and how often it repeats, of a body of about
    BODY_BYTES whose usage is at its end (OpenAI) or at its start (usage first, as a proxy or
    an SDK that orders keys may write Anthropic's); `_tail` is its end."""
    piece = _filler(WRITE_BYTES)
    if where == "end":
        head = (
            b'{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4.1", '
            b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "'
        )
    else:
        head = (
            b'{"usage": '
            + json.dumps(ANTHROPIC_USAGE).encode()
            + b', "id": "msg_1", "type": "message", "model": "claude-sonnet-4-5", '
            b'"content": [{"type": "text", "text": "'
        )
    return head, piece, BODY_BYTES // WRITE_BYTES


def _tail(where: str) -> bytes:
    if where == "end":
        return b'"}}], "usage": ' + json.dumps(OPENAI_USAGE).encode() + b"}"
    return b'"}], "stop_reason": "end_turn"}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        where = "end" if self.path.endswith("/chat/completions") else "start"
        head, piece, count = _body(where)
        tail = _tail(where)
        if self.headers.get("x-test-bomb") == "1":  # a few KiB that decode to 64 MiB
            data = self.server.bomb  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        compressed = self.headers.get("x-test-gzip") == "1"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if compressed:
            data = self.server.gzipped[where]  # type: ignore[attr-defined]
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            for at in range(0, len(data), WRITE_BYTES):
                self.wfile.write(data[at : at + WRITE_BYTES])
            return
        self.send_header("content-length", str(len(head) + len(piece) * count + len(tail)))
        self.end_headers()
        self.wfile.write(head)
        for _ in range(count):
            self.wfile.write(piece)
        self.wfile.write(tail)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _expected(where: str) -> tuple[str, int]:
    head, piece, count = _body(where)
    digest = hashlib.sha256(head)
    for _ in range(count):
        digest.update(piece)
    digest.update(_tail(where))
    return digest.hexdigest(), len(head) + len(piece) * count + len(_tail(where))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    running = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    running.daemon_threads = True
    running.gzipped = {}  # type: ignore[attr-defined]
    for where in ("end", "start"):
        head, piece, count = _body(where)
        body = head + piece * count + _tail(where)
        running.gzipped[where] = gzip.compress(body, compresslevel=1)  # type: ignore[attr-defined]
    running.bomb = gzip.compress(b"{" + b" " * (64 << 20) + b"}", 9, mtime=0)  # type: ignore[attr-defined]
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{running.server_address[1]}"
    running.shutdown()
    running.server_close()


def _read_through(
    url: str, path: str, *, compressed: bool, bomb: bool = False
) -> tuple[InMemoryMetrics, str, int, int]:
    """Stream one response through the transport: the metrics, the sha256 and length of
    what the caller got, and the peak memory allocated meanwhile."""
    metrics = InMemoryMetrics()
    headers = {"x-test-gzip": "1"} if compressed else {}
    if bomb:
        headers["x-test-bomb"] = "1"
    with httpx2.Client(transport=MeteredTransport(metrics.tracker)) as client:
        tracemalloc.start()
        try:
            digest, size = hashlib.sha256(), 0
            with client.stream("POST", url + path, json={"model": "m"}, headers=headers) as reply:
                for chunk in reply.iter_raw(WRITE_BYTES):  # the bytes as they came
                    digest.update(chunk)
                    size += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    metrics.tracker.flush()
    return metrics, digest.hexdigest(), size, peak


@pytest.mark.slow
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_100_mb_body_with_usage_at_its_end_is_read_in_bounded_memory(
    server: str, compressed: bool
) -> None:
    metrics, digest, size, peak = _read_through(server, "/v1/chat/completions",
                                                compressed=compressed)  # fmt: skip
    if not compressed:
        assert (digest, size) == _expected("end")  # the caller's bytes, unchanged
    assert peak < MEMORY_BOUND, peak
    assert metrics.value("llm.usage.input_tokens", model="gpt-4.1") == 1234
    assert metrics.value("llm.usage.output_tokens", model="gpt-4.1") == 567
    assert metrics.value("llm.usage.cache_read.input_tokens", model="gpt-4.1") == 1000
    assert metrics.value("llm.requests", usage_problem="missing") == 0
    metrics.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_100_mb_body_with_usage_at_its_start_is_read_in_bounded_memory(
    server: str, compressed: bool
) -> None:
    metrics, digest, size, peak = _read_through(server, "/v1/messages", compressed=compressed)
    if not compressed:
        assert (digest, size) == _expected("start")
    assert peak < MEMORY_BOUND, peak
    # Anthropic's input_tokens exclude cache reads: 10 + 300 in the package's meaning.
    assert metrics.value("llm.usage.input_tokens", model="claude-sonnet-4-5") == 310
    assert metrics.value("llm.usage.output_tokens", model="claude-sonnet-4-5") == 20
    metrics.shutdown()


def test_a_gzip_bomb_is_given_up_on_flagged_and_passed_on_unchanged(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_tokens._http import decoding as _http_decoding

    monkeypatch.setattr(_http_decoding, "MAX_DECODED_BYTES", 16 * 1024 * 1024)
    metrics, digest, size, peak = _read_through(
        server, "/v1/chat/completions", compressed=False, bomb=True
    )
    bomb = gzip.compress(b"{" + b" " * (64 << 20) + b"}", 9, mtime=0)
    assert (digest, size) == (hashlib.sha256(bomb).hexdigest(), len(bomb))
    assert peak < MEMORY_BOUND, peak
    assert metrics.value("llm.requests", usage_problem="missing") == 1
    metrics.shutdown()
