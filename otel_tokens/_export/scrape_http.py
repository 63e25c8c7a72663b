"""The little HTTP/1.1 a scrape endpoint speaks: a request's head parsed, a reply built."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """A response: its status line and headers (without Connection), and its body."""

    status: int
    head: bytes
    body: bytes


@dataclass(frozen=True)
class Scrape:
    """What one waiting request asked for."""

    key: int
    accept: str
    gzip: bool


def parse_head(head: bytes) -> tuple[str, dict[str, str], bool] | None:
    """The method, headers (lower-case names) and keep-alive of a request, or None. Lines
    may end in CRLF or a bare LF; a header with a control character refuses the request."""
    try:
        lines = [line.rstrip("\r") for line in head.decode("latin-1").split("\n")]
        method, _target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        value = value.strip()
        if value and not value.isprintable():
            return None
        headers[name.strip().lower()] = value
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return method, headers, keep_alive


def gzip_accepted(headers: dict[str, str]) -> bool:
    from prometheus_client.exposition import gzip_accepted

    return bool(gzip_accepted(headers.get("accept-encoding", "")))


_REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error"}  # fmt: skip


def make_reply(status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if status != 200 and not any(name == "Content-Type" for name, _ in headers):
        lines.append("Content-Type: text/plain; charset=utf-8")
    lines.append(f"Content-Length: {len(body)}")
    return Reply(status, ("\r\n".join(lines) + "\r\n").encode("latin-1"), body)
