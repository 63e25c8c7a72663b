"""Several worker processes, exact totals: the two honest ways.

A real gunicorn runs `tests/helpers/worker_app.py` in 4 worker processes and recycles each after
MAX_REQUESTS requests, so workers exit and are replaced while traffic flows, as
`max_requests` does in production. Every request records a known usage, so the totals are
known exactly.

(a) Each worker pushes OTLP with its own `service.instance.id` to a receiver standing in for
    the collector: each instance's series only grows, and the instances add up to exactly
    what was sent.
(b) Each worker writes its totals to a shared directory, `otel-tokens serve-metrics` serves
    their sum, and a real Prometheus scrapes it every second: its totals are exact, and no
    series ever went back while workers were replaced.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from otel_tokens import Usage
from tests.conftest import ROOT
from tests.helpers.otlp_receiver import HttpReceiver
from tests.helpers.prometheus_server import WAIT_S, Prometheus, start_prometheus, stop
from tests.helpers.worker_app import usage_of

WORKERS = 4
MAX_REQUESTS = 40  # each worker is replaced after this many requests
ROUNDS = 6
PER_ROUND = 100  # requests per round; Prometheus scrapes between rounds
SENT = ROUNDS * PER_ROUND
EXPORT_INTERVAL_MS = 250

pytestmark = pytest.mark.slow


def _sum(field: str, numbers: range = range(SENT)) -> int:
    return sum(getattr(usage_of(number), field) for number in numbers)


def _by_model_and_status() -> Counter[tuple[str, str]]:
    usages: list[Usage] = [usage_of(number) for number in range(SENT)]
    return Counter((usage.model, usage.status) for usage in usages)


def _url_in_log(process: subprocess.Popen[bytes], log: Path, pattern: str) -> str:
    """The URL a starting server prints (the first group of `pattern`), once it has."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(pattern, log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.05)
    stop(process)
    pytest.fail(f"{process.args} did not start: {log.read_text()[-3000:]}")


class Gunicorn:
    """gunicorn serving the test app on a free 127.0.0.1 port with WORKERS workers."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "gunicorn", "--config", "tests/helpers/gunicorn_conf.py",
                    "--workers", str(WORKERS), "--max-requests", str(MAX_REQUESTS),
                    "--bind", "127.0.0.1:0", "--graceful-timeout", "20",
                    "tests.helpers.worker_app:app",
                ],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.url = _url_in_log(self.process, log, r"Listening at: (http://127\.0\.0\.1:\d+)")

    def send(self, numbers: range) -> list[tuple[int, str]]:
        """Request `?i=<number>` for each number, 4 at a time: (pid, instance id) of each."""

        def one(number: int) -> tuple[int, str]:
            with urllib.request.urlopen(f"{self.url}/?i={number}", timeout=30) as response:
                pid, instance = response.read().decode().split()
                return int(pid), instance

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one, numbers))

    def stop(self) -> None:
        """Graceful stop (SIGTERM): every worker finishes, runs worker_exit and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                pytest.fail(f"gunicorn did not stop: {self.log.read_text()[-3000:]}")
        assert self.process.returncode == 0, self.log.read_text()[-3000:]


def _run_rounds(gunicorn: Gunicorn, between: float) -> list[tuple[int, str]]:
    answered = []
    for round_number in range(ROUNDS):
        start = round_number * PER_ROUND
        answered += gunicorn.send(range(start, start + PER_ROUND))
        time.sleep(between)
    return answered


@pytest.mark.slow
def test_workers_pushing_otlp_each_with_its_own_instance_id_add_up_exactly(
    tmp_path: Path,
) -> None:
    receiver = HttpReceiver()
    try:
        gunicorn = Gunicorn(
            {
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_METRIC_EXPORT_INTERVAL": str(EXPORT_INTERVAL_MS),
            },
            tmp_path / "gunicorn.log",
        )
        try:
            answered = _run_rounds(gunicorn, between=2 * EXPORT_INTERVAL_MS / 1000)
        finally:
            gunicorn.stop()
        requests = receiver.totals_by_instance("llm.requests")
        input_tokens = receiver.totals_by_instance("llm.usage.input_tokens")
        durations = receiver.totals_by_instance("gen_ai.client.operation.duration")
    finally:
        receiver.close()

    per_instance = Counter(instance for _, instance in answered)
    assert len({pid for pid, _ in answered}) > WORKERS  # workers were replaced on the way
    assert len(per_instance) == len({pid for pid, _ in answered})  # an instance id each
    # Each worker's last export holds exactly the requests it answered...
    assert {i: totals[-1] for i, totals in requests.items() if totals[-1]} == per_instance
    assert {i: totals[-1] for i, totals in durations.items() if totals[-1]} == per_instance
    # ... its series only grew, export after export ...
    for series in (*requests.values(), *input_tokens.values()):
        assert series == sorted(series)
    # ... and the instances add up to what was sent.
    assert sum(totals[-1] for totals in requests.values()) == SENT
    assert sum(totals[-1] for totals in input_tokens.values()) == _sum("input_tokens")


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "the prometheus binary is not installed (Debian: apt-get install -y prometheus): "
            "the summed worker totals are checked through a real Prometheus"
        )
    return binary


class MetricsServer:
    """`otel-tokens serve-metrics --dir DIR --port 0`, as a sidecar runs it."""

    def __init__(self, directory: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "otel_tokens", "serve-metrics", "--dir", str(directory),
                 "--port", "0"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.url = _url_in_log(self.process, log, r"at (http://\S+/metrics)")


@pytest.fixture
def metrics_server(tmp_path: Path) -> Iterator[MetricsServer]:
    server = MetricsServer(tmp_path / "workers", tmp_path / "serve-metrics.log")
    yield server
    stop(server.process)
    assert server.process.returncode == 0, server.log.read_text()[-3000:]


def _range(prometheus: Prometheus, expr: str, start: float, end: float) -> list[float]:
    data = prometheus.get(
        "/api/v1/query_range", query=expr, start=str(start), end=str(end), step="0.5"
    )
    (series,) = data["result"]
    return [float(value) for _, value in series["values"]]


@pytest.mark.slow
def test_workers_writing_to_one_directory_give_prometheus_exact_totals_that_never_go_back(
    tmp_path: Path, prometheus_binary: str, metrics_server: MetricsServer
) -> None:
    directory = tmp_path / "workers"
    (tmp_path / "prometheus").mkdir()
    prometheus = start_prometheus(prometheus_binary, metrics_server.url, tmp_path / "prometheus")
    try:
        started = time.time()
        gunicorn = Gunicorn(
            {
                "OTEL_METRICS_EXPORTER": "prometheus",
                "PROMETHEUS_MULTIPROC_DIR": str(directory),
                "OTEL_METRIC_EXPORT_INTERVAL": str(EXPORT_INTERVAL_MS),
            },
            tmp_path / "gunicorn.log",
        )
        try:
            running = prometheus.eventually(
                lambda: prometheus.query("otel_tokens_worker_processes"),
                lambda result: bool(result) and float(result[0]["value"][1]) == WORKERS,
            )
            assert float(running[0]["value"][1]) == WORKERS, running
            answered = _run_rounds(gunicorn, between=1.5)  # a scrape or more between rounds
        finally:
            gunicorn.stop()
        assert len({pid for pid, _ in answered}) > WORKERS  # workers were replaced on the way

        done_at = prometheus.wait_for("sum(llm_requests_total)", SENT)
        assert prometheus.value("sum(llm_usage_input_tokens_total)") == _sum("input_tokens")
        assert prometheus.value("sum(llm_usage_output_tokens_total)") == _sum("output_tokens")
        assert prometheus.value("sum(llm_usage_cache_read_input_tokens_total)") == _sum(
            "cache_read_tokens"
        )
        assert prometheus.value("sum(gen_ai_client_operation_duration_seconds_count)") == SENT
        assert prometheus.value("sum(gen_ai_client_operation_duration_seconds_sum)") == (
            pytest.approx(sum(usage_of(n).latency_s or 0 for n in range(SENT)))
        )
        by_model = prometheus.values(
            "sum by (gen_ai_response_model, llm_status) (llm_requests_total)"
        )
        assert {
            (dict(labels)["gen_ai_response_model"], dict(labels)["llm_status"]): value
            for labels, value in by_model.items()
        } == _by_model_and_status()

        # Never back: not one series of a counter or a histogram count was ever reset, and
        # the total rose step by step through every worker's replacement.
        for name in (
            "llm_requests_total",
            "llm_usage_cost_USD_total",  # float sums: exact, so never lower after a fold
            "gen_ai_client_operation_duration_seconds_count",
            "gen_ai_client_operation_duration_seconds_sum",
        ):
            assert prometheus.value(f"max(resets({name}[10m]))") == 0, name
        totals = _range(prometheus, "sum(llm_requests_total)", started, done_at)
        assert totals == sorted(totals)
        assert len(set(totals)) > ROUNDS // 2  # seen on the way up, not only at the end

        # The exited workers' files were folded into one: the directory does not grow.
        prometheus.eventually(
            lambda: prometheus.value("otel_tokens_worker_processes"), lambda v: v == 0
        )
        assert sorted(p.name for p in directory.glob("*.json")) == ["retired.json"]
    finally:
        stop(prometheus.process)
