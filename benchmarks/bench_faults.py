"""The figures of the README's Reliability table, measured on this machine, on 127.0.0.1.

    python benchmarks/bench_faults.py [--quick]

Each part prints lines `name: value` and a short note:

- record(): the cost of `record()` + folding while the collector is healthy, down, stalled
  or answering 503, as a ratio to the healthy collector, in alternating rounds;
- shutdown: how long `Telemetry.shutdown()` (default timeout) and a whole process's exit
  take against each failing collector, over HTTP and gRPC;
- SIGKILL: the worst loss a SIGKILL could cause (the lag of the last durable row behind the
  recording, sampled all through the run) at 5,000, 20,000 and 50,000 requests a second, on
  SQLite and PostgreSQL, and what the kill at the end really lost;
- endpoint: 200 concurrent scrapes (served, with exact totals), and a scrape behind 500
  connections that never finish their request; the endpoint's threads;
- bad input: valid records lost beside a bad one, and failed scrapes after hostile labels;
- big body: the memory allocated while a 100 MB JSON body streams through the transport.

`--quick` runs each part at a small size (what tests/integration/test_bench_faults.py runs).
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from otel_tokens import Usage, configure  # noqa: E402

USAGE = Usage(provider="openai", model="gpt-4o-mini", input_tokens=12, output_tokens=3,
              latency_s=0.4)  # fmt: skip
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


# Collectors that fail


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    status = 200

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(self.status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Refuse(_Answer):
    status = 503


@contextmanager
def collector(kind: str) -> Iterator[str]:
    """An endpoint that is healthy (`ok`, answers 200 to anything), `down` (nothing listens),
    `stall` (accepts and never answers) or `refuse` (503)."""
    if kind == "down":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        return
    if kind == "stall":
        listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        try:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            listener.close()
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer if kind == "ok" else _Refuse)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def record_cost(rounds: int, records: int) -> None:
    """Microseconds per record() + fold, and nanoseconds per record() on the caller's
    thread alone, each failing collector against a healthy one."""
    kinds = ("ok", "down", "stall", "refuse")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    caller: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            with collector(kind) as endpoint:
                telemetry = configure(exporters="otlp", otlp_endpoint=endpoint,
                                      export_interval_s=0.05, otlp_timeout_s=0.5)  # fmt: skip
                tracker = telemetry.tracker()
                started = time.perf_counter()
                spent = 0.0
                for _ in range(records // 2000):
                    began = time.perf_counter()
                    for _ in range(2000):
                        tracker.record(USAGE)
                    spent += time.perf_counter() - began
                    tracker.flush()
                times[kind].append((time.perf_counter() - started) / records * 1e6)
                caller[kind].append(spent / records * 1e9)
                telemetry.shutdown(timeout_s=0.2)
    for name, unit, found in (("record() + fold", "us", times), ("record() alone", "ns", caller)):
        print(f"{name}, healthy collector: {statistics.median(found['ok']):.1f} {unit}")
        for kind in kinds[1:]:
            ratios = [t / h for t, h in zip(found[kind], found["ok"], strict=True)]
            print(f"{name}, collector {kind}: {statistics.median(found[kind]):.1f} {unit}, "
                  f"ratio to healthy {statistics.median(ratios):.2f}")  # fmt: skip


EXIT_CHILD = """
import sys, time
from otel_tokens import Usage, configure
telemetry = configure(exporters="otlp", otlp_protocol=sys.argv[2], otlp_endpoint=sys.argv[1],
                      export_interval_s=0.5)
tracker = telemetry.tracker()
for _ in range(10_000):
    tracker.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1))
print(time.time(), flush=True)  # and the interpreter exits, shutting the telemetry down
"""


def shutdown_times() -> None:
    """Seconds that shutdown() and a whole process's exit take, default timeout (5 s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OTEL_TOKENS_SHUTDOWN_TIMEOUT", None)
    for protocol in ("http/protobuf", "grpc"):
        for kind in ("down", "stall", "refuse"):
            with collector(kind) as endpoint:
                telemetry = configure(exporters="otlp", otlp_protocol=protocol,
                                      otlp_endpoint=endpoint, export_interval_s=0.5)  # fmt: skip
                telemetry.tracker().record(USAGE)
                started = time.perf_counter()
                flushed = telemetry.force_flush(timeout_s=2)
                flush_s = time.perf_counter() - started
                started = time.perf_counter()
                ok = telemetry.shutdown()
                shutdown_s = time.perf_counter() - started
                done = subprocess.run([sys.executable, "-c", EXIT_CHILD, endpoint, protocol],
                                      capture_output=True, text=True, env=env, check=False,
                                      timeout=120)  # fmt: skip
                exit_s = time.time() - float(done.stdout.split()[-1])
            print(f"collector {kind} ({protocol}): force_flush(2) = {flushed} in {flush_s:.2f} s,"
                  f" shutdown() = {ok} in {shutdown_s:.2f} s, exit after the last record "
                  f"{exit_s:.2f} s (code {done.returncode})")  # fmt: skip


SIGKILL_CHILD = """
import sys, time
from otel_tokens import Usage, UsageLedger
target, rate = sys.argv[1], int(sys.argv[2])
ledger = UsageLedger(target, api_key_secret="a-bench-secret-of-enough-bytes")
usages = [Usage(provider="openai", model="gpt-4o-mini", input_tokens=5, output_tokens=1,
                request_id=f"r{n:09d}") for n in range(rate * 12)]
start = time.time() + 0.3
print(f"start {start!r}", flush=True)
n = 0
while True:
    due = min(int((time.time() - start) * rate), len(usages))
    while n < due:
        ledger.record(usages[n])
        n += 1
    time.sleep(0.0005)
"""


def _count(target: str) -> int:
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target) as db:
            return int(db.execute("SELECT COUNT(*) FROM otel_tokens_requests").fetchone()[0])
    import sqlite3

    db = sqlite3.connect(target, timeout=30)
    try:
        return int(db.execute("SELECT COUNT(*) FROM otel_tokens_requests").fetchone()[0])
    finally:
        db.close()


@contextmanager
def _target(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield str(Path(directory) / "usage.db")
        return
    import psycopg

    schema = f"bench_faults_{os.getpid()}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def sigkill_loss(rates: list[int], run_s: float, backends: list[str]) -> None:
    """The lag of the last durable row behind the recording, sampled through the run (what a
    kill at that moment loses), and the loss of the kill at its end."""
    for backend in backends:
        for rate in rates:
            with _target(backend) as target:
                child = subprocess.Popen([sys.executable, "-c", SIGKILL_CHILD, target, str(rate)],
                                         stdout=subprocess.PIPE, text=True,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
                assert child.stdout is not None
                start = float(child.stdout.readline().split()[1])
                lags = []
                while time.time() < start + run_s:
                    now = time.time()
                    written = _count(target)
                    if now > start + 1.0:
                        lags.append(now - (start + written / rate))
                    time.sleep(0.02)
                killed = time.time()
                child.send_signal(signal.SIGKILL)
                child.wait(30)
                lost = killed - (start + _count(target) / rate)
            print(f"SIGKILL, {backend} at {rate:,}/s: worst lag {max(lags):.2f} s, median "
                  f"{statistics.median(lags):.2f} s; the kill lost {lost:.2f} s")  # fmt: skip


def _get(url: str, timeout: float = 60) -> tuple[int, str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _total(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "llm_requests_total")  # fmt: skip


def endpoint(scrapes: int, slow: int) -> None:
    """Concurrent scrapes and slow clients against one process's endpoint."""
    telemetry = configure(exporters="prometheus", prometheus_port=0)
    tracker = telemetry.tracker()
    for _ in range(100):
        tracker.record(USAGE)
    tracker.flush()
    url = str(telemetry.prometheus_url)
    barrier = threading.Barrier(scrapes)

    def scrape(_: int) -> tuple[int, float, float]:
        barrier.wait()
        started = time.perf_counter()
        status, text = _get(url)
        return status, _total(text) if status == 200 else -1, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(scrapes) as pool:
        results = list(pool.map(scrape, range(scrapes)))
    took = time.perf_counter() - started
    exact = sum(status == 200 and total == 100 for status, total, _ in results)
    slowest = max(seconds for _, _, seconds in results)
    print(f"{scrapes} concurrent scrapes: {exact}/{scrapes} served with exact totals in "
          f"{took:.2f} s (slowest {slowest:.2f} s)")  # fmt: skip
    parts = urlsplit(url)
    loris = []
    for _ in range(slow):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        loris.append(sock)
    started = time.perf_counter()
    status, text = _get(url)
    took = time.perf_counter() - started
    threads = sum(1 for t in threading.enumerate() if t.name.startswith("otel_tokens-scrape"))
    print(f"a scrape behind {slow} connections that never finish: HTTP {status}, exact "
          f"{_total(text) == 100}, {took * 1000:.0f} ms; endpoint threads: {threads}")  # fmt: skip
    for sock in loris:
        sock.close()
    telemetry.shutdown()


def bad_input() -> None:
    """Valid records lost beside bad ones; scrapes failed after hostile labels."""
    from dataclasses import replace

    from otel_tokens.testing import InMemoryMetrics

    metrics = InMemoryMetrics()
    for bad in (replace(USAGE, input_tokens=10**5000), replace(USAGE, model="\ud800")):
        for _ in range(100):
            metrics.tracker.record(USAGE)
        metrics.tracker.record(bad)
        for _ in range(100):
            metrics.tracker.record(USAGE)
    valid = metrics.value("llm.requests") - 1  # the surrogate one is valid, made safe
    print(f"valid records lost beside bad ones: {400 - valid:.0f} of 400")
    metrics.shutdown()
    telemetry = configure(exporters="prometheus", prometheus_port=0)
    tracker = telemetry.tracker()
    for value in ("\ud800", "nul\x00", "\x1b[31m", "a\nb", '\\"'):
        tracker.record(replace(USAGE, model=value, scenario=value, user_tier=value))
    failed = sum(_get(str(telemetry.prometheus_url))[0] != 200 for _ in range(20))
    print(f"failed scrapes after hostile labels: {failed} of 20")
    telemetry.shutdown()


class _Huge(BaseHTTPRequestHandler):
    """A chat completion of `size` bytes (the `x-size` header), its usage at the end."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        size = int(self.headers["x-size"])
        head = b'{"model": "gpt-4.1", "choices": [{"message": {"content": "'
        tail = b'"}}], "usage": {"prompt_tokens": 1234, "completion_tokens": 567}}'
        piece = b"x" * 65536
        count = size // len(piece)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(head) + len(piece) * count + len(tail)))
        self.end_headers()
        self.wfile.write(head)
        for _ in range(count):
            self.wfile.write(piece)
        self.wfile.write(tail)

    def log_message(self, *args: object) -> None:
        pass


def big_body(size: int) -> None:
    """The memory allocated while a huge JSON body streams through the transport."""
    import tracemalloc

    import httpx2

    from otel_tokens.httpx import MeteredTransport
    from otel_tokens.testing import InMemoryMetrics

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Huge)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metrics = InMemoryMetrics()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    with httpx2.Client(transport=MeteredTransport(metrics.tracker)) as client:
        tracemalloc.start()
        received = 0
        with client.stream("POST", url, json={}, headers={"x-size": str(size)}) as reply:
            for chunk in reply.iter_raw(65536):
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    metrics.tracker.flush()
    found = metrics.value("llm.usage.input_tokens") == 1234
    print(f"a {received / 1e6:.0f} MB JSON body: peak allocated {peak / 1024:.0f} KiB while it "
          f"streamed through, usage found {found}")  # fmt: skip
    metrics.shutdown()
    server.shutdown()
    server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--part", action="append", help="run only this part (repeatable)")
    args = parser.parse_args()
    logging.getLogger("otel_tokens").setLevel(logging.ERROR)  # the figures, not the warnings
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    parts: list[tuple[str, Callable[[], None]]] = [
        ("bad input", bad_input),
        ("big body", lambda: big_body(10_000_000 if args.quick else 100_000_000)),
        ("endpoint", lambda: endpoint(20 if args.quick else 200, 50 if args.quick else 500)),
        ("record()", lambda: record_cost(1 if args.quick else 5, 2_000 if args.quick else 40_000)),
        ("SIGKILL", lambda: sigkill_loss([2_000] if args.quick else [5_000, 20_000, 50_000],
                                         2.0 if args.quick else 6.0,
                                         ["sqlite"] if args.quick else ["sqlite", "postgres"])),
    ]  # fmt: skip
    if not args.quick:
        parts.append(("shutdown", shutdown_times))
    for name, run in parts:
        if args.part and name not in args.part:
            continue
        print(f"## {name}", flush=True)
        run()


if __name__ == "__main__":
    main()
