"""The Prometheus endpoints under load: many scrapes at once, slow clients, hostile labels.

Both endpoints (one process's, and `serve-metrics`'s sum of worker files) are served by
`otel_tokens._export.scrape_server`, so each test runs against both.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from otel_tokens import Usage, WorkerMetricsServer, configure
from otel_tokens._export import scrape_server

REQUESTS = 37  # recorded before the scrapes; every scrape must show exactly these


def _usage(model: str = "gpt-4o-mini") -> Usage:
    return Usage(provider="openai", model=model, input_tokens=11, output_tokens=5, latency_s=0.2)


@pytest.fixture(params=["one_process", "worker_sum"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A URL serving REQUESTS recorded requests, and the tracker (None for the worker sum,
    whose worker has shut down after writing its file)."""
    if request.param == "one_process":
        telemetry = configure(exporters="prometheus", prometheus_port=0)
        tracker = telemetry.tracker()
        for _ in range(REQUESTS):
            tracker.record(_usage())
        tracker.flush()
        yield telemetry.prometheus_url, tracker
        telemetry.shutdown()
        return
    worker = configure(exporters="prometheus", prometheus_multiproc_dir=tmp_path)
    for _ in range(REQUESTS):
        worker.tracker().record(_usage())
    worker.shutdown()
    with WorkerMetricsServer(tmp_path, port=0) as server:
        yield server.url, None


def _get(url: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _requests_total(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llm_requests_total"
    )


def _server_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("otel_tokens-scrape"))


@pytest.mark.slow
def test_two_hundred_scrapes_at_once_are_all_served_with_exact_totals(endpoint: Any) -> None:
    url, _ = endpoint
    threads_before = _server_threads()
    start = threading.Barrier(200)

    def scrape(_: int) -> tuple[int, float]:
        start.wait()
        status, text = _get(url)
        return status, _requests_total(text) if status == 200 else -1.0

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(scrape, range(200)))
    assert [status for status, _ in results] == [200] * 200
    assert {total for _, total in results} == {REQUESTS}
    assert _server_threads() == threads_before == 2


def test_scrapes_that_arrive_together_share_one_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry = configure(exporters="prometheus", prometheus_port=0)
    try:
        tracker = telemetry.tracker()
        for _ in range(REQUESTS):
            tracker.record(_usage())
        tracker.flush()
        renderer = telemetry._prometheus._server._rendering  # type: ignore[union-attr]
        render, renders = renderer.render, []

        def slow_render(scrapes: list[Any]) -> Any:
            renders.append(len(scrapes))
            time.sleep(0.3)  # long enough for every scrape below to arrive meanwhile
            return render(scrapes)

        monkeypatch.setattr(renderer, "render", slow_render)
        start = threading.Barrier(40)

        def scrape(_: int) -> float:
            start.wait()
            return _requests_total(_get(telemetry.prometheus_url or "")[1])

        with ThreadPoolExecutor(40) as pool:
            totals = list(pool.map(scrape, range(40)))
        assert totals == [REQUESTS] * 40
        assert sum(renders) == 40 and len(renders) <= 4, renders
    finally:
        telemetry.shutdown()


@pytest.mark.slow
def test_five_hundred_slow_clients_do_not_stop_a_normal_scrape(endpoint: Any) -> None:
    url, _ = endpoint
    parts = urlsplit(url)
    threads_before = _server_threads()
    slow = []
    try:
        for _ in range(500):  # each sends half a request and then nothing, for ever
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        status, text = _get(url, timeout=30)
        assert status == 200
        assert _requests_total(text) == REQUESTS
        assert _server_threads() == threads_before == 2
    finally:
        for sock in slow:
            sock.close()


def test_a_client_that_never_finishes_its_request_is_cut_off(
    endpoint: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scrape_server, "REQUEST_TIMEOUT_S", 0.3)
    url, _ = endpoint
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert sock.recv(1) == b""  # the server closed it (a timeout here would raise)


def test_a_kept_alive_connection_gets_one_fresh_answer_per_scrape(endpoint: Any) -> None:
    url, tracker = endpoint
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        totals = []
        for _ in range(3):
            connection.request("GET", "/metrics", headers={"Accept-Encoding": "identity"})
            response = connection.getresponse()
            assert response.status == 200
            totals.append(_requests_total(response.read().decode()))
            if tracker is not None:
                tracker.record(_usage())
        expected = [REQUESTS + i for i in range(3)] if tracker is not None else [REQUESTS] * 3
        assert totals == expected  # a scrape never answers from a collection older than it
        connection.request("HEAD", "/metrics")
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        connection.request("POST", "/metrics", body=b"x")
        assert connection.getresponse().status == 413
    finally:
        connection.close()


def test_gzip_and_openmetrics_are_served_as_asked(endpoint: Any) -> None:
    url, _ = endpoint
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        assert response.getheader("Content-Encoding") == "gzip"
        import gzip

        assert _requests_total(gzip.decompress(response.read()).decode()) == REQUESTS
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        connection.request("GET", "/metrics", headers={"Accept": accept})
        response = connection.getresponse()
        assert response.getheader("Content-Type", "").startswith("application/openmetrics-text")
        assert response.read().decode().endswith("# EOF\n")
    finally:
        connection.close()


HOSTILE = ["\ud800", "a\udfffb", "nul\x00byte", "new\nline", "bell\x07", "\x9b[31m", "é漢字🙂"]


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v) for v in HOSTILE])
def test_no_label_value_ever_fails_a_scrape(value: str) -> None:
    telemetry = configure(exporters="prometheus", prometheus_port=0)
    try:
        tracker = telemetry.tracker()
        for usage in (
            Usage(provider="openai", model=value, input_tokens=1),
            Usage(provider=value, model="m", scenario=value, user_tier=value, input_tokens=1),
            Usage(provider="openai", model="m", status="error", error_type=value, input_tokens=1),
            Usage(provider="openai", model="m", server_address=value, input_tokens=1),
        ):
            tracker.record(usage)
        meter = tracker.custom_meter("tool.calls", unit="{call}", dimensions=["tool"])
        meter.record(1, dimensions={"tool": value})
        for _ in range(3):  # and every later scrape too
            status, text = _get(str(telemetry.prometheus_url))
            assert status == 200
            families = {f.name: f for f in text_string_to_metric_families(text)}
            assert _requests_total(text) == 4
            assert families["tool_calls"].samples[0].value == 1
            assert "\x00" not in text and "\ud800" not in text
    finally:
        telemetry.shutdown()


def test_a_family_that_cannot_be_encoded_is_left_out_and_the_rest_served() -> None:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.metrics_core import GaugeMetricFamily

    class Broken:
        def collect(self) -> Iterator[Any]:
            family = GaugeMetricFamily("broken_one", "a gauge whose value is not a number")
            family.add_metric([], object())  # type: ignore[arg-type]
            yield family

    registry = CollectorRegistry()
    Counter("fine", "a counter that is fine", registry=registry).inc(3)
    registry.register(Broken())  # type: ignore[arg-type]
    server = scrape_server.ScrapeServer("127.0.0.1", 0, registry)
    try:
        host, port = server.server_address[:2]
        status, text = _get(f"http://{host}:{port}/metrics")
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(text)}
        assert "fine" in names and "broken_one" not in names
    finally:
        server.close()


def test_a_label_from_outside_the_tracker_is_made_safe_at_the_endpoint_too() -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()  # a series no tracker chose: a worker file, say
    Counter("raw", "raw labels", ["model"], registry=registry).labels("\ud800\x00").inc()
    server = scrape_server.ScrapeServer("127.0.0.1", 0, registry)
    try:
        host, port = server.server_address[:2]
        status, text = _get(f"http://{host}:{port}/metrics")
        assert status == 200
        [sample] = [s for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "raw_total"]  # fmt: skip
        assert sample.labels == {"model": "\ufffd\ufffd"}
    finally:
        server.close()


def test_closing_the_server_frees_its_port_and_threads() -> None:
    from prometheus_client import CollectorRegistry

    before = _server_threads()
    server = scrape_server.ScrapeServer("127.0.0.1", 0, CollectorRegistry())
    port = server.server_address[1]
    assert _server_threads() == before + 2
    server.close()
    for _ in range(100):
        if _server_threads() == before:
            break
        time.sleep(0.05)
    assert _server_threads() == before
    again = scrape_server.ScrapeServer("127.0.0.1", port, CollectorRegistry())
    again.close()


def _raw_server() -> tuple[scrape_server.ScrapeServer, tuple[str, int]]:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("fine", "a counter", registry=registry).inc()
    server = scrape_server.ScrapeServer("127.0.0.1", 0, registry)
    return server, server.server_address[:2]


def _cpu_of_process_over(seconds: float) -> float:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_thousands_of_pipelined_requests_are_all_answered_without_spinning() -> None:
    server, address = _raw_server()
    try:
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(b"OPTIONS / HTTP/1.1\r\n\r\n" * 3000 + b"GET /metrics HTTP/1.1\r\n\r\n")
            received = b""
            while b"fine_total" not in received:  # the scrape after all 3,000
                chunk = sock.recv(1 << 16)
                assert chunk, received[-200:]
                received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 3001
        assert _cpu_of_process_over(1.0) < 0.5  # idle again, not spinning
        assert _get(f"http://{address[0]}:{address[1]}/metrics")[0] == 200
    finally:
        server.close()


def test_requests_with_bare_line_feeds_are_answered_and_control_characters_refused() -> None:
    server, address = _raw_server()
    try:
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\nHost: x\n\n")
            assert sock.recv(1 << 16).startswith(b"HTTP/1.1 200 OK")
        accept = b"application/openmetrics-text; version=1.0.0-\x0bInjected: yes"
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nAccept: " + accept + b"\r\n\r\n")
            answer = sock.recv(1 << 16)
        assert answer.startswith(b"HTTP/1.1 400") and b"Injected" not in answer
    finally:
        server.close()


def test_scrapes_waiting_on_a_stuck_collection_are_bounded() -> None:
    from prometheus_client import CollectorRegistry

    release = threading.Event()

    class Stuck:
        def collect(self) -> Iterator[Any]:
            release.wait(30)
            return iter(())

    registry = CollectorRegistry()
    registry.register(Stuck())  # type: ignore[arg-type]
    cap = scrape_server._connection_cap()
    server = scrape_server.ScrapeServer("127.0.0.1", 0, registry)
    clients = []
    try:
        for _ in range(cap + 50):  # each asks for a scrape and then hangs up
            sock = socket.create_connection(server.server_address[:2], timeout=10)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            clients.append(sock)
        for _ in range(200):
            if len(server._connections) <= cap:
                break
            time.sleep(0.02)
        assert len(server._connections) <= cap  # the oldest waiting ones made room
    finally:
        release.set()
        for sock in clients:
            sock.close()
        server.close()


FD_CHILD = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
from prometheus_client import CollectorRegistry
from otel_tokens._export.scrape_server import ScrapeServer
server = ScrapeServer("127.0.0.1", 0, CollectorRegistry())
print(server.server_address[1], flush=True)
sys.stdin.readline()  # the flood is on
time.sleep(0.5)
own = [open("/dev/null") for _ in range(20)]  # the gateway's own files still open
start = resource.getrusage(resource.RUSAGE_SELF)
time.sleep(1.0)
end = resource.getrusage(resource.RUSAGE_SELF)
print(end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime, flush=True)
"""


def test_a_flood_of_connections_leaves_the_process_descriptors_and_does_not_spin() -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    child = subprocess.Popen([sys.executable, "-c", FD_CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    flood = []
    try:
        port = int(child.stdout.readline())
        for _ in range(400):  # more than the child may hold open
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        child.stdin.write("go\n")
        child.stdin.flush()
        spent = child.stdout.readline()
        assert child.wait(30) == 0, child.stderr.read() if child.stderr else ""
    finally:
        child.kill()
        for sock in flood:
            sock.close()
    assert float(spent) < 0.5, spent  # and its socket thread was not spinning
