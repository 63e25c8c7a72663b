"""Warnings that say a thing once per kind, so a bad input in a loop does not flood the log."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("otel_tokens")


class WarnOnce:
    """Log a warning the first time each key is seen.

    Args:
        limit: the most keys remembered, for keys that come from data (model names); None for
            keys that come from a fixed set in the code. Past the limit one last warning says
            so and later new keys are not logged.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._limit = limit
        self._seen: set[object] = set()
        self._lock = threading.Lock()

    def __call__(self, key: object, message: str, *args: object, exc_info: bool = False) -> None:
        if key in self._seen:
            return
        with self._lock:
            if key in self._seen or (self._limit is not None and len(self._seen) >= self._limit):
                return
            self._seen.add(key)
            if self._limit is not None and len(self._seen) == self._limit:
                message += " (later ones of this kind are not logged)"
        logger.warning(message, *args, exc_info=exc_info)
