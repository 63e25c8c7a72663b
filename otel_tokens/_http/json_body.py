"""Read a JSON response body for its usage: whole when it was kept whole, else only the
top-level keys that matter, found in the two ends that were kept."""

from __future__ import annotations

import json
import re
from typing import Any

#: Top-level keys worth finding in a large JSON body (usage is at its end in every API).
_LARGE_BODY_KEYS = {
    "openai": (b"usage", b"model", b"object"),
    "anthropic": (b"usage", b"model"),
    "gemini": (b"usageMetadata", b"modelVersion"),
    "bedrock": (b"usage",),
}


def parse_body(body: bytes, wire: str, *, whole: bool) -> Any:
    """A JSON response body of API `wire`, parsed; only its top-level usage and model keys
    when `body` is not the `whole` body (its two ends). None when it cannot be read."""
    if not body:
        return None
    if whole:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
            return None
    found: dict[str, Any] = {}
    for key in _LARGE_BODY_KEYS[wire]:
        value = _find_top_level(body, key, last=key.startswith(b"usage"))
        if value is not None:
            found[key.decode()] = value
    return found or None


def _find_top_level(body: bytes, key: bytes, *, last: bool) -> Any:
    # Inside JSON strings quotes are escaped, so `"key":` outside a string is a key; usage
    # blocks come last in every API's body and model names near the start.
    pattern = re.compile(b'"' + key + rb'"\s*:\s*')
    matches = list(pattern.finditer(body)) if last else [pattern.search(body)]
    for match in reversed(matches) if last else matches:
        if match is None:
            continue
        end = len(body) if last else match.end() + 4096
        try:
            text = body[match.end() : end].decode("utf-8", "ignore")
            value, _ = json.JSONDecoder().raw_decode(text)
        except (ValueError, RecursionError):
            continue
        return value
    return None
