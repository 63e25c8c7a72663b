"""How long shutting down may take, and calls that return within it whatever they wait on.

A gateway that exits must not hang on a collector that does not answer or a database that
stopped: `Telemetry.shutdown()`, a ledger's close at exit and `force_flush()` each give up
after one documented timeout, and say what they could not finish.
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from otel_tokens._base.warn import logger

#: Seconds a shutdown, a flush on exit, or a ledger's close at exit may take, at most.
DEFAULT_TIMEOUT_S = 5.0
#: The environment variable that sets it, in seconds.
TIMEOUT_ENV = "OTEL_TOKENS_SHUTDOWN_TIMEOUT"

T = TypeVar("T")
#: Of the timeout at interpreter exit, what is left for the interpreter's own teardown.
_EXIT_MARGIN_S = 0.25
_exit_started: float | None = None
_exit_lock = threading.Lock()


#: The order of the steps at interpreter exit: ledgers first (their rows are durable, and
#: closing one drains the trackers that feed it), then telemetry (the last export).
LEDGERS, TELEMETRY = 0, 1
_steps: dict[int, tuple[int, Callable[[], None]]] = {}
_handles = itertools.count()


def at_exit(step: Callable[[], None], order: int) -> int:
    """Run `step` at interpreter exit, among the package's steps in `order` (the newest
    first within one order, as atexit does); returns a handle for `cancel_at_exit`."""
    with _exit_lock:
        if not _steps and not _registered:
            atexit.register(_run_steps)
            _registered.append(True)
        handle = next(_handles)
        _steps[handle] = (order, step)
    return handle


def cancel_at_exit(handle: int) -> None:
    """Forget a step registered with `at_exit` (done already, say)."""
    with _exit_lock:
        _steps.pop(handle, None)


_registered: list[bool] = []


def _run_steps() -> None:
    with _exit_lock:
        steps = sorted(_steps.items(), key=lambda item: (item[1][0], -item[0]))
        _steps.clear()
    for _, (_, step) in steps:
        try:
            step()
        except Exception:
            logger.exception("otel_tokens: a step of interpreter exit failed")


def exit_budget(timeout_s: float) -> float:
    """The seconds left for one step of interpreter exit (telemetry, each ledger): every
    step that waits shares one timeout, counted from the first, so the whole exit ends
    within it however many there are."""
    global _exit_started  # noqa: PLW0603 - one clock for the one exit of the process
    with _exit_lock:
        now = time.monotonic()
        if _exit_started is None:
            _exit_started = now
        left = timeout_s - _EXIT_MARGIN_S - (now - _exit_started)
    return max(0.01, left)


def shutdown_timeout(value: float | None, source: str = "shutdown_timeout_s") -> float:
    """The timeout to use: `value`, else OTEL_TOKENS_SHUTDOWN_TIMEOUT, else 5 s.

    Raises:
        ValueError: a value that is not a number of seconds > 0, naming where it came from.
    """
    shown: object = value
    if value is None:
        raw = os.environ.get(TIMEOUT_ENV, "").strip()
        if not raw:
            return DEFAULT_TIMEOUT_S
        try:
            value, source, shown = float(raw), TIMEOUT_ENV, raw
        except ValueError:
            value, source, shown = math.nan, TIMEOUT_ENV, raw
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        msg = f"{source} must be a number of seconds > 0, got {shown!r}"
        raise ValueError(msg)
    return float(value)


def run_within(work: Callable[[], T], timeout_s: float, what: str) -> tuple[bool, T | None]:
    """Run `work` on a thread of its own and wait for it at most `timeout_s` seconds.

    Returns:
        (True, its result) when it finished in time; (False, None) when it did not, or
        raised (logged). A call that did not finish goes on on its daemon thread, which
        does not keep the interpreter from exiting.
    """
    outcome: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # reported below, on the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name=f"otel_tokens-{what}", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown" (3.12.0, 3.12.1)
        run()  # here, then: the SDK's own deadlines still bound it
        if failed:
            logger.warning("otel_tokens: %s failed: %r", what, failed[0], exc_info=failed[0])
            return False, None
        return True, outcome[0]
    thread.join(timeout_s)
    if thread.is_alive():
        return False, None
    if failed:
        logger.warning("otel_tokens: %s failed: %r", what, failed[0], exc_info=failed[0])
        return False, None
    return True, outcome[0]
