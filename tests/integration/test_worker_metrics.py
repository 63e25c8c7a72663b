"""Worker files and their sum, in one process: names, merging rules, bad input, fork.

The end-to-end proof with gunicorn and a real Prometheus is in test_workers.py.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from otel_tokens import Telemetry, Usage, WorkerMetricsServer, configure
from otel_tokens._workers.directory import WorkerDirectory
from otel_tokens._workers.file_exporter import WorkerFileExporter
from otel_tokens._workers.files import RETIRED
from otel_tokens._workers.format import BOUNDS, BUCKETS, COUNT, FLOATY, VALUE, Merged, _served
from tests.conftest import ROOT

OWN = {"otel_tokens_worker_processes"}  # the summed endpoint's own gauge


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
    # target_info: the attributes every worker shares, so not a worker's instance id.
    (name, labels) = next(key for key in expected if key[0] == "target_info")
    shared = tuple(label for label in labels if label[0] != "service_instance_id")
    assert (name, shared) in summed and ("service_name", "parity") in shared
    del expected[(name, labels)]
    del summed[(name, shared)]
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
    assert again == first  # folding changed nothing that is served
    assert "otel_tokens_worker_processes" in text and "} 1.0" in text.split("worker_processes")[-1]
    assert len(files) == 2 and RETIRED in files  # the living worker's file and the fold


def _state(
    kind: str,
    points: list[list[Any]],
    monotonic: bool = True,
    description: str = "",
) -> dict[str, object]:
    """A worker file's content, from rows that hold their attributes (and a histogram's
    bounds) in place: `[attributes, start, time, value]`, or for a histogram
    `[attributes, start, time, count, sum, bounds, buckets, min, max]`."""
    attributes, bounds, rows = [], [], []
    for attrs, start, time, *rest in points:
        attributes.append(attrs)
        if kind == "histogram":
            count, total, edges, buckets, low, high = rest
            bounds.append(edges)
            rows.append([len(attributes) - 1, start, time, total, count, len(bounds) - 1,
                         buckets, low, high])  # fmt: skip
        else:
            rows.append([len(attributes) - 1, start, time, *rest])
    metric = {"scope": "s", "scope_version": "1", "name": "m", "description": description,
              "unit": "", "kind": kind, "monotonic": monotonic, "points": rows}  # fmt: skip
    return {"format": "otel_tokens.worker-metrics/2", "resource": {}, "attributes": attributes,
            "bounds": bounds, "metrics": [metric]}  # fmt: skip


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Writes a worker file as a worker would: `alive` ones hold their lock until the test
    ends, exited ones leave a lock file anyone can take."""
    held: list[int] = []

    def write(name: str, state: dict[str, object], *, alive: bool = False) -> None:
        (tmp_path / f"otel_tokens-{name}.json").write_text(json.dumps(state))
        descriptor = os.open(tmp_path / f"otel_tokens-{name}.lock", os.O_RDWR | os.O_CREAT)
        if alive:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            held.append(descriptor)
        else:
            os.close(descriptor)

    yield write
    for descriptor in held:
        os.close(descriptor)


def _only(merged: Merged) -> list[Any]:
    (points,) = merged.metrics.values()
    (point,) = points.values()
    return point


def _value(point: list[Any]) -> int | float:
    return _served(point[VALUE], point[FLOATY])


def _data_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("otel_tokens-*.json"))


def test_gauges_keep_the_value_written_last_and_exited_up_down_sums_are_dropped(
    tmp_path: Path, workers: Callable[..., None]
) -> None:
    workers("1-a", _state("gauge", [[{"k": "x"}, 0, 200, 5.0]], monotonic=False), alive=True)
    workers("2-b", _state("gauge", [[{"k": "x"}, 0, 100, 9.0]], monotonic=False), alive=True)
    merged = WorkerDirectory(tmp_path).merged()
    assert _value(_only(merged)) == 5  # exported at 200, after the 9.0 at 100
    assert merged.running == 2
    workers("3-c", _state("sum", [[{}, 0, 1, 4]], monotonic=False))  # exited
    workers("4-d", _state("sum", [[{}, 0, 1, 6]], monotonic=False), alive=True)
    merged = WorkerDirectory(tmp_path).merged()
    up_down = merged.metrics[("s", "1", "m", "sum", "", False)]
    assert [_value(p) for p in up_down.values()] == [6]  # the living worker's only


def test_histograms_with_other_buckets_add_up_on_the_bounds_both_have(
    tmp_path: Path, workers: Callable[..., None]
) -> None:
    def histogram(bounds: list[float], buckets: list[int]) -> dict[str, object]:
        return _state("histogram", [[{}, 5, 9, sum(buckets), 3.0, bounds, buckets, 0.5, 2.0]])

    workers("1-a", histogram([1, 4], [1, 2, 0]), alive=True)
    workers("2-b", histogram([1, 4], [4, 0, 1]), alive=True)
    workers("3-c", histogram([1, 2, 8], [1, 1, 1, 1]), alive=True)
    point = _only(WorkerDirectory(tmp_path).merged())
    assert (point[COUNT], _value(point), point[BOUNDS], point[BUCKETS]) == (12, 9.0, (1,), [6, 6])


def test_damaged_and_malformed_files_are_left_out_with_a_warning_and_the_rest_is_served(
    tmp_path: Path, workers: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    workers("1-a", _state("sum", [[{}, 0, 1, 4]]), alive=True)
    workers("2-b", {"format": "otel_tokens.worker-met"}, alive=True)
    (tmp_path / "otel_tokens-2-b.json").write_text('{"format": "otel_tokens.worker-met')
    workers("3-c", {"format": "something else"}, alive=True)
    workers("4-d", _state("sum", [[{}, 0, 1]]), alive=True)  # a value short
    workers("5-e", _state("histogram", [[{}, 0, 1, 9, 1.0, [1], [1, 1], 0, 1]]))  # 2 != 9
    workers("6-f", _state("sum", [[{}, 0, 1, float("inf")]]), alive=True)  # an overflow
    workers("7-g", _state("sum", [[{}, 0, 1, "q1/0"]]), alive=True)
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        merged = WorkerDirectory(tmp_path).merged()
    assert _value(_only(merged)) == 4
    for name in ("2-b", "3-c", "4-d", "5-e", "6-f", "7-g"):
        assert f"otel_tokens-{name}.json" in caplog.text


def test_sums_are_exact_so_folding_never_makes_a_float_total_go_back(
    tmp_path: Path, workers: Callable[..., None]
) -> None:
    costs = [0.1, 0.7, 0.2, 1e-9, 100.03, 0.3, 2.675, 1 / 3] * 3
    workers("0-live", _state("sum", [[{}, 0, 1, 0.1]]), alive=True)
    directory = WorkerDirectory(tmp_path)
    served = []
    for number, cost in enumerate(costs, start=1):
        workers(f"{number}-x", _state("sum", [[{}, 0, 1, cost]]))  # exited: folded next
        served.append(float(_value(_only(directory.merged()))))
        served.append(float(_value(_only(directory.merged()))))  # after the fold
    assert served == sorted(served)
    assert served[-1] == float(sum((Fraction(c) for c in [0.1, *costs]), Fraction(0)))
    assert _data_files(tmp_path) == ["otel_tokens-0-live.json"]


def test_a_fold_cut_short_counts_each_worker_once(
    tmp_path: Path, workers: Callable[..., None]
) -> None:
    workers("1-a", _state("sum", [[{}, 0, 1, 4]]))
    directory = WorkerDirectory(tmp_path)
    assert _value(_only(directory.merged())) == 4  # folded into retired.json, file deleted
    workers("1-a", _state("sum", [[{}, 0, 1, 4]]))  # as if the deletion never happened
    assert _value(_only(directory.merged())) == 4
    assert _data_files(tmp_path) == []


def test_a_worker_whose_lock_file_vanished_is_counted_once_and_never_folded(
    tmp_path: Path, workers: Callable[..., None]
) -> None:
    workers("1-a", _state("sum", [[{}, 0, 1, 4]]), alive=True)
    (tmp_path / "otel_tokens-1-a.lock").unlink()  # a tmp cleaner, say
    directory = WorkerDirectory(tmp_path)
    assert [_value(_only(directory.merged())) for _ in range(3)] == [4, 4, 4]
    assert _data_files(tmp_path) == ["otel_tokens-1-a.json"]


def test_an_unreadable_retired_file_is_never_overwritten_and_never_served_as_a_drop(
    tmp_path: Path, workers: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    workers("1-a", _state("sum", [[{}, 0, 1, 4]]))
    directory = WorkerDirectory(tmp_path)
    assert _value(_only(directory.merged())) == 4  # folded into retired.json
    workers("2-b", _state("sum", [[{}, 0, 1, 3]]), alive=True)
    (tmp_path / RETIRED).write_text('{"format": "otel_tokens.worker-metrics/2", "metr')
    workers("3-c", _state("sum", [[{}, 0, 1, 2]]))  # exited: not folded while retired is bad
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        assert _value(_only(directory.merged())) == 9  # retired.json as last read, 4
    assert "it counts as it was last read" in caplog.text
    assert (tmp_path / RETIRED).read_text().endswith('"metr')
    assert "otel_tokens-3-c.json" in _data_files(tmp_path)
    with pytest.raises(LookupError, match=r"retired\.json cannot be read"):
        WorkerDirectory(tmp_path).merged()  # a new reader never saw it: serves nothing


def test_a_changed_description_keeps_one_family(
    tmp_path: Path, workers: Callable[..., None]
) -> None:
    workers("1-a", _state("sum", [[{}, 0, 1, 4]], description="old words"))
    workers("2-b", _state("sum", [[{}, 0, 1, 3]], description="new words"), alive=True)
    merged = WorkerDirectory(tmp_path).merged()
    assert _value(_only(merged)) == 7
    assert [words for _, words in merged.descriptions.values()] == ["new words"]


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
        _value(point)
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


def test_a_directory_with_a_port_to_serve_on_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prometheus_host and prometheus_port do not apply"):
        configure(exporters="prometheus", prometheus_multiproc_dir=tmp_path, prometheus_port=0)


def test_a_histogram_without_min_and_max_is_summed(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    exporter = WorkerFileExporter(tmp_path)
    provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)],
        views=[View(instrument_name="h", aggregation=ExplicitBucketHistogramAggregation(
            boundaries=[1.0, 10.0], record_min_max=False))],
    )  # fmt: skip
    provider.get_meter("t").create_histogram("h").record(5.0)
    provider.shutdown()  # written with min and max as infinities: the SDK kept none
    point = _only(WorkerDirectory(tmp_path).merged())
    assert (point[COUNT], _value(point), point[BUCKETS]) == (1, 5.0, [0, 1, 0])


def test_the_lock_of_a_living_worker_is_never_found_unlocked(tmp_path: Path) -> None:
    exporter = WorkerFileExporter(tmp_path)
    provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)]
    )
    provider.get_meter("t").create_counter("c").add(3)
    provider.force_flush()
    (lock_file,) = tmp_path.glob("otel_tokens-*.lock")
    lock_file.unlink()  # a tmp cleaner, say
    provider.force_flush()  # the next write locks a new lock file, then puts it in place
    (lock_file,) = tmp_path.glob("otel_tokens-*.lock")
    descriptor = os.open(lock_file, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(descriptor)
    provider.shutdown()
