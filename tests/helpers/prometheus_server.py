"""A real Prometheus server for tests: started on 127.0.0.1, queried through its HTTP API."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

WAIT_S = 30.0  # bound of every wait; each ends as soon as its condition holds


class PrometheusError(AssertionError):
    """Prometheus answered a query with an error (it did not parse, or failed)."""


class Prometheus:
    """A running Prometheus and its HTTP API."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def get(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            msg = f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
            raise PrometheusError(msg)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Each series of an instant query: its labels but the name (sorted), and value."""
        return {
            tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")): float(
                s["value"][1]
            )
            for s in self.query(expr)
        }

    def value(self, expr: str) -> float:
        (value,) = self.values(expr).values()
        return value

    def eventually(
        self, read: Callable[[], Any], done: Callable[[Any], bool], deadline: float | None = None
    ) -> Any:
        """`read()` once `done` holds of it, or its last value at `deadline` (a monotonic
        time; default WAIT_S from now), for the caller to assert on."""
        deadline = time.monotonic() + WAIT_S if deadline is None else deadline
        while True:
            value = read()
            if done(value) or time.monotonic() > deadline:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def wait_for(self, expr: str, expected: float) -> float:
        """Wait until `expr` is `expected`; Prometheus's time when it first was."""
        seen = self.eventually(lambda: self.query(expr), lambda r: _only_value(r) == expected)
        assert _only_value(seen) == expected, (expr, seen, self.log.read_text()[-3000:])
        return float(seen[0]["value"][0])

    def wait_for_rules(self, after: float) -> None:
        """Wait until every rule group has been evaluated a whole interval after `after`, so
        that alerts have seen recording rules that saw the data of `after`."""

        def evaluated() -> list[float]:
            groups = self.get("/api/v1/rules")["groups"]
            return [_seconds(group["lastEvaluation"]) for group in groups]

        seen = self.eventually(evaluated, lambda times: min(times) > after + 1.0)
        assert min(seen) > after + 1.0, (after, seen)


def _only_value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


def _seconds(rfc3339: str) -> float:
    """A Go RFC 3339 time (nanoseconds, any offset) as a Unix time."""
    match = re.fullmatch(r"([^.]+?)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert match is not None, rfc3339
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    whole = datetime.fromisoformat(match.group(1) + zone).timestamp()
    return whole + float(match.group(2) or 0)


def has_data(result: list[dict[str, Any]]) -> bool:
    """Non-empty, and at least one number (a ratio of two zero rates alone is NaN)."""
    return any(math.isfinite(float(s["value"][1])) for s in result)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_prometheus(
    binary: str, target_url: str, workdir: Path, rule_files: Sequence[Path] = ()
) -> Prometheus:
    """Prometheus on a free 127.0.0.1 port, scraping `target_url` every second."""
    target = urllib.parse.urlsplit(target_url)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "otel_tokens",
                "metrics_path": target.path,
                "static_configs": [{"targets": [target.netloc]}],
            }
        ],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log = workdir / "prometheus.log"
    for _ in range(3):  # another process may take the free port before Prometheus binds it
        port = _free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={workdir / f'data-{port}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + WAIT_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return prometheus
            except OSError:
                time.sleep(0.1)
        stop(process)
    pytest.fail(f"prometheus did not start: {log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
