"""Warnings that say a thing once per kind, so a bad input in a loop does not flood the log."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("otel_tokens")

_MAX_KINDS = 1024


class WarnOnce:
    """Log a warning the first time each key is seen; remember at most a bounded number of keys."""

    def __init__(self) -> None:
        self._seen: set[object] = set()
        self._lock = threading.Lock()

    def __call__(self, key: object, message: str, *args: object, exc_info: bool = False) -> None:
        if key in self._seen:
            return
        with self._lock:
            if key in self._seen or len(self._seen) >= _MAX_KINDS:
                return
            self._seen.add(key)
            if len(self._seen) == _MAX_KINDS:
                message += "; this is the last new kind of warning this tracker logs"
        logger.warning(message, *args, exc_info=exc_info)
