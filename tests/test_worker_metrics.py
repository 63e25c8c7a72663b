"""Worker files and their sum, in one process: names, merging rules, bad input, fork.

The end-to-end proof with gunicorn and a real Prometheus is in test_workers.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from otel_tokens import Telemetry, Usage, WorkerMetricsServer, configure
from otel_tokens._worker_metrics import RETIRED, WorkerDirectory, WorkerFileExporter

ROOT = Path(__file__).resolve().parent.parent
OWN = {"target_info", "otel_tokens_worker_processes"}


def _usages() -> list[Usage]:
    return [
        Usage(provider="openai", model="gpt-4o-mini", input_tokens=120, output_tokens=30,
              cache_read_tokens=100, latency_s=0.4, streamed=True, time_to_first_token_s=0.1),
        Usage(provider="anthropic", model="claude-sonnet-4-5", input_tokens=900,
              output_tokens=0, status="error", error_type="timeout", latency_s=30.0),
        Usage(provider="openai", model="unknown-model", input_tokens=7, output_tokens=3,
              latency_s=1.2, scenario="chat", user_tier="free"),
    ]  # fmt: skip


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.name not in OWN
    }


def _record(options: dict[str, Any], times: int = 1) -> Telemetry:
    """A configured process that recorded `_usages()` `times` times."""
    telemetry = configure(service_name="parity", **options)
    tracker = telemetry.tracker()
    for _ in range(times):
        for usage in _usages():
            tracker.record(usage)
    tracker.flush()
    return telemetry


def test_the_summed_endpoint_names_every_series_as_a_single_process_endpoint_does(
    tmp_path: Path,
) -> None:
    single = _record({"exporters": "prometheus", "prometheus_port": 0})
    worker = _record({"exporters": "prometheus", "prometheus_multiproc_dir": tmp_path})
    try:
        expected = _scrape(str(single.prometheus_url))
    finally:
        single.shutdown()
    worker.shutdown()
    with WorkerMetricsServer(tmp_path, port=0) as server:
        summed = _scrape(server.url)
    assert summed == expected
    assert any(name == "llm_usage_input_tokens_total" for name, _ in summed)


def test_workers_add_up_and_exited_ones_are_folded_into_one_file(tmp_path: Path) -> None:
    for _ in range(3):  # three workers that ran and exited
        _record({"exporters": "prometheus", "prometheus_multiproc_dir": tmp_path}).shutdown()
    alive = _record({"exporters": "prometheus", "prometheus_multiproc_dir": tmp_path}, times=2)
    alive.force_flush()
    try:
        with WorkerMetricsServer(tmp_path, port=0) as server:
            first = _scrape(server.url)
            again = _scrape(server.url)
            with urllib.request.urlopen(server.url, timeout=10) as response:
                text = response.read().decode()
        files = sorted(p.name for p in tmp_path.glob("*.json"))
    finally:
        alive.shutdown()
    requests = sum(v for (name, _), v in first.items() if name == "llm_requests_total")
    assert requests == 5 * len(_usages())
    assert again == pytest.approx(first)  # folding changed nothing served (but float order)
    assert "otel_tokens_worker_processes" in text and "} 1.0" in text.split("worker_processes")[-1]
    assert len(files) == 2 and RETIRED in files  # the living worker's file and the fold


def _state(kind: str, points: list[list[object]], monotonic: bool = True) -> dict[str, object]:
    metric = {"scope": "s", "scope_version": "1", "name": "m", "description": "", "unit": "",
              "kind": kind, "monotonic": monotonic, "points": points}  # fmt: skip
    return {"format": "otel_tokens.worker-metrics/1", "resource": {}, "metrics": [metric]}


def _write(directory: Path, name: str, state: dict[str, object]) -> None:
    (directory / f"otel_tokens-{name}.json").write_text(json.dumps(state))


def _only_points(directory: WorkerDirectory) -> list[list[object]]:
    (points,) = directory.merged().metrics.values()
    return list(points.values())


def test_gauges_keep_the_newest_value_and_exited_up_down_sums_are_dropped(tmp_path: Path) -> None:
    _write(tmp_path, "1-a", _state("gauge", [[{"k": "x"}, 0, 200, 5.0]], monotonic=False))
    _write(tmp_path, "2-b", _state("gauge", [[{"k": "x"}, 0, 100, 9.0]], monotonic=False))
    (point,) = _only_points(WorkerDirectory(tmp_path))
    assert point[3] == 5.0  # written at 200, after the 9.0 at 100
    for data_file in tmp_path.glob("otel_tokens-*"):
        data_file.unlink()
    (tmp_path / RETIRED).unlink()
    _write(tmp_path, "3-c", _state("sum", [[{}, 0, 1, 4]], monotonic=False))
    assert WorkerDirectory(tmp_path).merged().metrics == {}  # its process is gone (no lock)


def test_histograms_with_other_buckets_are_left_out_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def histogram(bounds: list[float], buckets: list[int]) -> dict[str, object]:
        return _state("histogram", [[{}, 5, 9, sum(buckets), 3.0, bounds, buckets, 0.5, 2.0]])

    _write(tmp_path, "1-a", histogram([1.0], [1, 2]))
    _write(tmp_path, "2-b", histogram([1.0], [4, 0]))
    _write(tmp_path, "3-c", histogram([1.0, 2.0], [1, 1, 1]))
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        (point,) = _only_points(WorkerDirectory(tmp_path))
    assert point[3:7] == [7, 6.0, [1.0], [5, 2]]
    assert "1 histogram point(s)" in caplog.text and "other bucket bounds" in caplog.text


def test_a_damaged_file_is_left_out_with_a_warning_and_the_rest_is_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, "1-a", _state("sum", [[{}, 0, 1, 4]]))
    (tmp_path / "otel_tokens-2-b.json").write_text('{"format": "otel_tokens.worker-met')
    (tmp_path / "otel_tokens-3-c.json").write_text('{"format": "something else"}')
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        (point,) = _only_points(WorkerDirectory(tmp_path))
    assert point[3] == 4
    assert "otel_tokens-2-b.json" in caplog.text and "otel_tokens-3-c.json" in caplog.text


def test_an_exporter_writes_nothing_after_shutdown(tmp_path: Path) -> None:
    exporter = WorkerFileExporter(tmp_path)
    provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)],
        resource=Resource({"service.instance.id": "one"}),
    )
    provider.get_meter("t").create_counter("c").add(3)
    provider.shutdown()  # exports a last time, then releases the worker's lock
    (data_file,) = tmp_path.glob("otel_tokens-*.json")
    WorkerDirectory(tmp_path).merged()  # folds the exited worker's file
    assert not data_file.exists()
    assert exporter.export(None).name == "FAILURE"  # type: ignore[arg-type]
    assert not data_file.exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    script = f"""
import os
from otel_tokens import Usage, configure
t = configure(exporters="prometheus", prometheus_multiproc_dir={str(tmp_path)!r})
tracker = t.tracker()
pid = os.fork()
tracker.record(Usage(provider="openai", model="gpt-4o", input_tokens=1 if pid else 10))
tracker.flush()
t.shutdown()
if pid:
    os.waitpid(pid, 0)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert len(list(tmp_path.glob("otel_tokens-*.json"))) == 2
    merged = WorkerDirectory(tmp_path).merged()
    inputs = [
        point[3]
        for key, points in merged.metrics.items()
        if key[2] == "llm.usage.input_tokens"
        for point in points.values()
    ]
    assert sum(inputs) == 11


def test_a_directory_that_cannot_be_written_fails_at_setup_naming_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(blocked / "sub"))
    with pytest.raises(ValueError, match=r"PROMETHEUS_MULTIPROC_DIR '.*a-file/sub' cannot hold"):
        configure(exporters="prometheus")
    with pytest.raises(ValueError, match=r"the worker metrics directory '.*a-file/sub' cannot"):
        WorkerMetricsServer(blocked / "sub", port=0)


def test_serve_metrics_without_a_directory_says_what_to_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "otel_tokens", "serve-metrics", "--port", "0"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "give --dir or set PROMETHEUS_MULTIPROC_DIR" in done.stderr
