"""The collector down, going down, flapping, stalling or refusing: recording goes on, memory
stays flat, exports resume with exact totals, and shutdown ends within its timeout.

The only timing checks are hang bounds several times the documented timeout: the old
behaviour (shutdown waiting out every retry, 8 to 20 s) fails them, noise does not.
`python benchmarks/bench_faults.py` measures the times themselves.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from otel_tokens import Telemetry, Usage, configure
from otel_tokens._export.exporting import resolve_otlp_timeout
from tests.conftest import ROOT
from tests.helpers.collector import FaultyCollector

USAGE = Usage(provider="openai", model="gpt-4o-mini", input_tokens=7, output_tokens=3)
#: The shutdown timeout the tests use, and how much longer than it they allow (a hang bound).
TIMEOUT_S = 1.0
HANG_BOUND_S = TIMEOUT_S + 4.0


def _wait(condition: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


@pytest.fixture
def collector() -> Iterator[FaultyCollector]:
    running = FaultyCollector()
    yield running
    running.close()


def _telemetry(endpoint: str, *, protocol: str = "http/protobuf") -> Telemetry:
    return configure(
        exporters="otlp", otlp_protocol=protocol, otlp_endpoint=endpoint,
        export_interval_s=0.1, otlp_timeout_s=0.5, shutdown_timeout_s=TIMEOUT_S,
    )  # fmt: skip


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stalled_listener() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # accepts connections (the kernel does) and never answers
    return listener


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("fault", ["down", "stall", "refuse"])
def test_a_failing_collector_never_reaches_the_caller_and_shutdown_ends_in_time(
    fault: str, protocol: str, collector: FaultyCollector
) -> None:
    stall = None
    if fault == "down":
        endpoint = f"http://127.0.0.1:{_dead_port()}"
    elif fault == "stall":
        stall = _stalled_listener()
        endpoint = f"http://127.0.0.1:{stall.getsockname()[1]}"
    else:  # 503 over HTTP; over gRPC the same server answers what gRPC cannot read
        collector.mode = "refuse"
        endpoint = collector.endpoint
    telemetry = _telemetry(endpoint, protocol=protocol)
    try:
        tracker = telemetry.tracker()
        for _ in range(2_000):
            tracker.record(USAGE)  # never raises, never waits on the exporter
        assert telemetry.force_flush(timeout_s=0.5) is False
        started = time.monotonic()
        assert telemetry.shutdown() is False
        assert time.monotonic() - started < HANG_BOUND_S
    finally:
        if stall is not None:
            stall.close()


def test_a_healthy_collector_gets_everything_at_shutdown_and_both_say_so(
    collector: FaultyCollector,
) -> None:
    telemetry = configure(exporters="otlp", otlp_endpoint=collector.endpoint,
                          export_interval_s=3600, shutdown_timeout_s=TIMEOUT_S)  # fmt: skip
    tracker = telemetry.tracker()
    for _ in range(10):
        tracker.record(USAGE)
    assert telemetry.force_flush() is True
    assert collector.total("llm.requests") == 10
    tracker.record(USAGE)
    assert telemetry.shutdown() is True
    assert collector.total("llm.requests") == 11


def test_export_resumes_with_exact_totals_after_the_collector_goes_down_and_returns(
    collector: FaultyCollector, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = _telemetry(collector.endpoint)
    tracker = telemetry.tracker()
    try:
        for _ in range(100):
            tracker.record(USAGE)
        _wait(lambda: collector.total("llm.requests") == 100)
        collector.mode = "down"
        for _ in range(250):
            tracker.record(USAGE)
        failures = collector.answered["ok"]
        _wait(lambda: any("failed" in r.getMessage() for r in caplog.records))
        collector.mode = "ok"
        _wait(lambda: collector.total("llm.requests") == 350)
        assert collector.answered["ok"] > failures
        assert collector.total("llm.usage.input_tokens") == 350 * 7
        said = [r.getMessage() for r in caplog.records if r.name == "otel_tokens"]
        assert sum("failed" in m for m in said) == 1, said  # once per outage
        _wait(lambda: any("works again" in r.getMessage() for r in caplog.records))
    finally:
        telemetry.shutdown()


@pytest.mark.slow
def test_a_flapping_collector_loses_nothing_and_logs_no_retry_noise(
    collector: FaultyCollector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    telemetry = _telemetry(collector.endpoint)
    tracker = telemetry.tracker()
    recorded = 0
    try:
        for cycle in range(12):  # ok, refuse, stall, down, ok, ... every 0.3 s
            collector.mode = ("ok", "refuse", "stall", "down")[cycle % 4]
            until = time.monotonic() + 0.3
            while time.monotonic() < until:
                tracker.record(USAGE)
                recorded += 1
                if recorded % 20 == 0:  # about 4,000 a second
                    time.sleep(0.005)
        collector.mode = "ok"
        _wait(lambda: collector.total("llm.requests") == recorded)
        assert collector.total("llm.usage.output_tokens") == 3 * recorded
    finally:
        telemetry.shutdown()
    noise = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]
    assert noise == []
    ours = [r.getMessage() for r in caplog.records if r.name == "otel_tokens"]
    kinds = ["failed" if " failed " in m else "again" for m in ours if "exporting metrics" in m]
    assert kinds and kinds[0] == "failed"
    assert all(a != b for a, b in itertools.pairwise(kinds)), kinds  # once per outage, each way


@pytest.mark.slow
def test_memory_stays_flat_through_a_long_outage() -> None:
    telemetry = _telemetry(f"http://127.0.0.1:{_dead_port()}")
    tracker = telemetry.tracker()
    try:

        def outage(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                for _ in range(20):  # 2,000 a second: well within what the consumer folds
                    tracker.record(USAGE)
                time.sleep(0.01)

        outage(1.0)  # warm up: every series and buffer exists
        tracemalloc.start()
        first, _ = tracemalloc.get_traced_memory()
        outage(3.0)  # about 30 failed exports of the same series
        last, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        telemetry.shutdown()
    assert last - first < 512 * 1024, (first, last)  # nothing piles up per failed export


@pytest.mark.parametrize(
    ("value", "seconds"), [("2000", 2.0), ("250", 0.25), ("100", 0.1), ("10", 10.0)]
)  # fmt: skip
def test_the_otlp_timeout_variable_is_read_in_milliseconds_as_the_spec_says(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str, seconds: float
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", value)
    assert resolve_otlp_timeout(None) == seconds
    # Under 100 it cannot mean milliseconds: written for the SDK, which reads seconds.
    looks_like_seconds = [
        r for r in caplog.records if "as the Python SDK reads it" in r.getMessage()
    ]
    assert bool(looks_like_seconds) == (value == "10")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "3000")
    assert resolve_otlp_timeout(None) == 3.0  # the per-signal variable first
    assert resolve_otlp_timeout(1.5) == 1.5  # an argument over both


def test_an_export_to_a_stalled_collector_gives_up_after_the_timeout_in_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")  # 0.3 s; the SDK would wait 300 s
    stall = _stalled_listener()
    telemetry = configure(
        exporters="otlp", otlp_endpoint=f"http://127.0.0.1:{stall.getsockname()[1]}",
        export_interval_s=3600, shutdown_timeout_s=TIMEOUT_S,
    )  # fmt: skip
    try:
        telemetry.tracker().record(USAGE)
        [exporter] = telemetry._exporters
        worker = threading.Thread(target=telemetry.force_flush, kwargs={"timeout_s": 60})
        worker.start()
        worker.join(HANG_BOUND_S)  # one export, given up after 0.3 s, not 300 s
        assert not worker.is_alive()
        assert exporter.exports == 1 and not exporter.last_ok
    finally:
        telemetry.shutdown()
        stall.close()


@pytest.mark.parametrize("bad", ["soon", "-1", "0", "inf"])
def test_bad_timeouts_fail_at_setup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("OTEL_TOKENS_SHUTDOWN_TIMEOUT", bad)
    with pytest.raises(ValueError, match=f"OTEL_TOKENS_SHUTDOWN_TIMEOUT must be .* got '{bad}'"):
        configure(exporters="none")
    monkeypatch.delenv("OTEL_TOKENS_SHUTDOWN_TIMEOUT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", bad)
    with pytest.raises(ValueError, match=f"OTEL_EXPORTER_OTLP_TIMEOUT must be .* got '{bad}'"):
        configure(exporters="otlp")
    with pytest.raises(ValueError, match="shutdown_timeout_s must be"):
        configure(exporters="none", shutdown_timeout_s=0)


EXIT_CHILD = """
import sys
from otel_tokens import Usage, configure
telemetry = configure(exporters="otlp", otlp_endpoint=sys.argv[1], export_interval_s=0.2)
tracker = telemetry.tracker()
for _ in range(1000):
    tracker.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1))
print("recorded", flush=True)
"""  # and the interpreter exits, which shuts the telemetry down


@pytest.mark.parametrize("fault", ["down", "stall"])
def test_a_process_exits_within_the_timeout_whatever_the_collector_does(fault: str) -> None:
    stall = _stalled_listener() if fault == "stall" else None
    port = stall.getsockname()[1] if stall is not None else _dead_port()
    env = {**os.environ, "OTEL_TOKENS_SHUTDOWN_TIMEOUT": str(TIMEOUT_S), "PYTHONPATH": str(ROOT)}
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", EXIT_CHILD, f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        if stall is not None:
            stall.close()
    assert done.returncode == 0, done.stderr
    assert "recorded" in done.stdout
    assert took < HANG_BOUND_S + 2.0  # interpreter start and imports included
    assert "did not succeed within the shutdown timeout" in done.stderr
    assert "Transient error" not in done.stderr


def test_the_retry_filter_leaves_the_applications_own_exporters_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure(exporters="otlp", otlp_protocol="grpc").shutdown(timeout_s=0.1)
    grpc_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")
    with caplog.at_level(logging.WARNING):
        grpc_logger.warning(
            "Transient error %s encountered while exporting %s to %s, retrying in %.2fs.",
            "UNAVAILABLE",
            "traces",
            "x:4317",
            1.0,
        )
        grpc_logger.error("Failed to export %s to %s, error code: %s", "traces", "x", "E")
        grpc_logger.warning(
            "Transient error %s encountered while exporting %s to %s, retrying in %.2fs.",
            "UNAVAILABLE",
            "metrics",
            "x:4317",
            1.0,
        )
    said = [r.getMessage() for r in caplog.records if r.name == grpc_logger.name]
    assert len(said) == 2 and all("traces" in m for m in said), said


def test_a_collector_url_with_credentials_is_logged_without_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = f"http://user:hunter2@127.0.0.1:{_dead_port()}"
    telemetry = configure(exporters="otlp", export_interval_s=3600, shutdown_timeout_s=0.5,
                          otlp_endpoint=endpoint)  # fmt: skip
    try:
        telemetry.tracker().record(USAGE)
        telemetry.force_flush(timeout_s=0.3)
        [exporter] = telemetry._exporters
        assert "hunter2" not in exporter.where and "127.0.0.1" in exporter.where
    finally:
        telemetry.shutdown()
    assert not any("hunter2" in r.getMessage() for r in caplog.records)


def test_where_no_thread_can_start_at_exit_the_shutdown_runs_inline(
    monkeypatch: pytest.MonkeyPatch, collector: FaultyCollector
) -> None:
    telemetry = configure(exporters="otlp", otlp_endpoint=collector.endpoint,
                          export_interval_s=3600, shutdown_timeout_s=TIMEOUT_S)  # fmt: skip
    telemetry.tracker().record(USAGE)

    class Refused(threading.Thread):
        def start(self) -> None:  # as Python 3.12.0 and 3.12.1 do at exit
            raise RuntimeError("can't create new thread at interpreter shutdown")

    from types import SimpleNamespace

    from otel_tokens._base import shutdown as _shutdown

    monkeypatch.setattr(_shutdown, "threading", SimpleNamespace(Thread=Refused))
    assert telemetry.shutdown() is True  # exported all the same, on this thread
    assert collector.total("llm.requests") == 1
