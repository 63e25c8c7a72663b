"""gunicorn settings for the many-workers tests: the hooks a gateway would use."""

from __future__ import annotations

from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    """Configure OpenTelemetry in the worker, after the fork: its own service.instance.id."""
    from tests.helpers import worker_app

    worker_app.start()


def worker_exit(server: Any, worker: Any) -> None:
    """Export the worker's last totals before it exits (gunicorn recycles workers too)."""
    from tests.helpers import worker_app

    worker_app.stop()
