"""A WSGI app for the many-workers tests: each request records one known usage.

Run under gunicorn with `tests/helpers/gunicorn_conf.py`, whose hooks call `start()` in each worker
after the fork and `stop()` when the worker exits. How the workers export is read from the
standard variables (`OTEL_METRICS_EXPORTER`, `PROMETHEUS_MULTIPROC_DIR`, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from otel_tokens import Telemetry, TokenTracker, Usage, configure

MODELS = ("gpt-4o-mini", "gpt-4.1", "o3")


class _Worker:
    telemetry: Telemetry | None = None
    tracker: TokenTracker | None = None


def usage_of(number: int) -> Usage:
    """The usage request `number` records: known, so the test can sum what it sent."""
    failed = number % 10 == 0
    return Usage(
        provider="openai",
        model=MODELS[number % len(MODELS)],
        input_tokens=100 + number % 7,
        output_tokens=0 if failed else 10 + number % 3,
        cache_read_tokens=number % 5,
        status="error" if failed else "success",
        error_type="timeout" if failed else None,
        latency_s=0.05 * (1 + number % 4),
    )


def start() -> None:
    """Configure this worker's exporters (gunicorn's post_fork hook)."""
    _Worker.telemetry = configure(service_name="otel-tokens-workers-test")
    _Worker.tracker = _Worker.telemetry.tracker()


def stop() -> None:
    """Export what is left (gunicorn's worker_exit hook)."""
    if _Worker.telemetry is not None:
        _Worker.telemetry.shutdown()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Records `usage_of(i)` for `?i=<i>`; answers with this worker's pid and instance id."""
    telemetry, tracker = _Worker.telemetry, _Worker.tracker
    assert telemetry is not None and tracker is not None, "start() runs in post_fork"
    number = int(parse_qs(environ["QUERY_STRING"])["i"][0])
    tracker.record(usage_of(number))
    body = f"{os.getpid()} {telemetry.service_instance_id}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
