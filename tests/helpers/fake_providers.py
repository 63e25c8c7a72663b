"""A local server that answers like OpenAI, Anthropic and Gemini, with the documented payloads.

It serves the files of tests/payloads/ (JSON bodies and raw SSE streams) on 127.0.0.1, so
tests can point the real openai and anthropic SDKs at it. The request header
`x-test-behavior` asks for failures: `429`, `gzip`, `slow` (a pause between events) or
`drop` (the connection closes halfway through the stream); and for `long` streams.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers.paths import PAYLOADS


def _events(name: str) -> list[bytes]:
    raw = (PAYLOADS / name).read_bytes().replace(b"\r\n", b"\n")
    return [block + b"\n\n" for block in raw.split(b"\n\n") if block.strip()]


#: In each stream, an event of content that `long_events` repeats to make the stream long.
_FILLER = {"openai_chat_stream.txt": 2, "openai_responses_stream.txt": 5,
           "anthropic_stream.txt": 4, "anthropic_stream_legacy_delta.txt": 4,
           "gemini_stream.txt": 1}  # fmt: skip
#: How long `long_events` makes a stream: many times what the transport reads at once.
LONG_STREAM_BYTES = 320 * 1024


def long_events(name: str) -> list[bytes]:
    """The events of stream `name` with one of its content events repeated in place until
    the stream is LONG_STREAM_BYTES long: the same usage, in a long stream."""
    events = _events(name)
    at = _FILLER[name]
    repeats = LONG_STREAM_BYTES // len(events[at]) + 1
    return events[:at] + [events[at]] * repeats + events[at + 1 :]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeProviders

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._json(200, {"object": "list", "data": []})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, dict(self.headers), body))
        behavior = self.headers.get("x-test-behavior", "")
        path = self.path.split("?", 1)[0]
        if behavior == "429":
            if path.endswith("/messages"):
                self._json(
                    429, json.loads((PAYLOADS / "anthropic_error_rate_limit.json").read_text())
                )
            else:
                self._json(429, json.loads((PAYLOADS / "openai_error_429.json").read_text()))
            return
        stream = bool(body.get("stream")) or ":streamGenerateContent" in path
        name = self._payload_name(path, body, stream)
        if name is None:
            self._json(404, {"error": {"type": "not_found"}})
        elif stream:
            self._stream(name, behavior, include_usage=_include_usage(path, body))
        else:
            self._json(200, json.loads((PAYLOADS / name).read_text()), gzipped=behavior == "gzip")

    def _payload_name(self, path: str, body: dict[str, Any], stream: bool) -> str | None:
        if path.endswith("/chat/completions"):
            if stream:
                return "openai_chat_stream.txt"
            if body.get("prompt_cache_key"):
                return "openai_chat_cache_write.json"
            return "openai_chat.json"
        if path.endswith("/responses"):
            return "openai_responses_stream.txt" if stream else "openai_responses.json"
        if path.endswith("/embeddings"):
            return "openai_embeddings.json"
        if path.endswith("/messages"):
            return "anthropic_stream.txt" if stream else "anthropic_message.json"
        if ":streamGenerateContent" in path:
            return "gemini_stream.txt"
        if ":generateContent" in path:
            return "gemini_generate.json"
        return None

    def _reply_headers(self) -> None:
        """The headers the request asked to get back (`x-test-reply-headers`, a JSON object):
        how tests make the server send rate-limit headers."""
        asked = self.headers.get("x-test-reply-headers")
        for name, value in (json.loads(asked) if asked else {}).items():
            try:
                self.send_header(name, value)
            except UnicodeEncodeError:  # as a server that sends UTF-8 bytes would
                self._headers_buffer.append(f"{name}: {value}\r\n".encode())

    def _json(self, status: int, obj: Any, *, gzipped: bool = False) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self._reply_headers()
        self.send_header("content-type", "application/json")
        if gzipped:
            data = gzip.compress(data)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, name: str, behavior: str, *, include_usage: bool) -> None:
        events = long_events(name) if "long" in behavior else _events(name)
        if not include_usage:
            events = [e for e in events if b'"usage":{' not in e]
        self.send_response(200)
        self._reply_headers()
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        if "drop" in behavior:
            self.send_header("connection", "close")
        self.end_headers()
        for index, event in enumerate(events):
            if "drop" in behavior and index == len(events) // 2:
                self.close_connection = True
                return  # no terminating chunk: the client sees the connection end early
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            except OSError:
                return  # the client hung up
            if "slow" in behavior:
                time.sleep(0.05)
        self.wfile.write(b"0\r\n\r\n")


def _include_usage(path: str, body: dict[str, Any]) -> bool:
    if not path.endswith("/chat/completions"):
        return True
    options = body.get("stream_options") or {}
    return bool(options.get("include_usage"))


class FakeProviders(ThreadingHTTPServer):
    """The server; `base_url` is where it listens, `requests` what it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeProviders:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()
