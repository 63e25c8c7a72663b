"""`configure()`: real exporters to real endpoints on 127.0.0.1, and the OTEL_* variables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator

import pytest

from otel_tokens import PriceTable, Telemetry, Usage, configure
from otel_tokens._base.ratelimit import RateLimits, Reading
from otel_tokens._core import conventions as conventions_module
from otel_tokens._core import instruments as spec
from tests.helpers.otlp_receiver import GrpcReceiver, HttpReceiver

USAGE = Usage(
    provider="openai", model="gpt-4o-mini", input_tokens=1200, output_tokens=300,
    cache_read_tokens=1000, latency_s=1.8, time_to_first_token_s=0.4, streamed=True,
    time_per_output_chunk_s=0.02,
)  # fmt: skip
ATTRS = {
    "gen_ai.provider.name": "openai",
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini",
    "llm.status": "success",
    "llm.streaming": True,
}

OTEL_VARS = [
    "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_EXPORTER_PROMETHEUS_HOST",
    "OTEL_EXPORTER_PROMETHEUS_PORT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_TOKENS_API_KEY_SECRET",
]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def telemetries() -> Iterator[list[Telemetry]]:
    made: list[Telemetry] = []
    yield made
    for telemetry in made:
        telemetry.shutdown()


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels`."""
    matches = []
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{key}="{value}"' in line for key, value in labels.items()):
            matches.append(float(line.rsplit(" ", 1)[1]))
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


@pytest.mark.parametrize("conventions", conventions_module.CHOICES)
def test_prometheus_endpoint_serves_every_metric_under_its_documented_name(
    telemetries: list[Telemetry], conventions: str
) -> None:
    telemetry = configure(exporters="prometheus", prometheus_port=0)
    telemetries.append(telemetry)
    assert telemetry.prometheus_url is not None
    assert telemetry.prometheus_url.startswith("http://127.0.0.1:")
    tracker = telemetry.tracker(conventions=conventions)
    tracker.record(USAGE)
    tracker.record(Usage(provider="x", model="model-without-a-price", input_tokens=7))
    limits = RateLimits((Reading("tokens", 30_000, 2_500, 360.0),), None)
    tracker._rate_limits(USAGE, limits)  # what a transport reads from a response's headers
    text = _scrape(telemetry.prometheus_url)

    samples = {line.split("{", 1)[0] for line in text.splitlines() if not line.startswith("#")}
    chosen = conventions_module.naming(conventions)
    for instrument in chosen.instruments():
        if instrument.kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                assert instrument.prometheus + suffix in samples, instrument.name
        else:
            assert instrument.prometheus in samples, instrument.name
    labels = {
        "gen_ai_response_model": "gpt-4o-mini",
        "llm_streaming": "true",
        "llm_status": "success",
    }
    assert _sample(text, "llm_ratelimit_remaining", llm_ratelimit_kind="tokens") == 2500
    assert _sample(text, "otel_tokens_records_dropped_total", reason="queue_full") == 0
    if conventions != "default":
        return  # the values under the other names: tests/unit/test_conventions_switch.py
    assert _sample(text, "llm_usage_input_tokens_total", **labels) == 1200
    assert _sample(text, "llm_usage_cache_read_input_tokens_total", **labels) == 1000
    bundled_cost = PriceTable.bundled().cost_usd(USAGE)
    assert bundled_cost is not None
    assert _sample(text, "llm_usage_cost_USD_total", **labels) == pytest.approx(float(bundled_cost))
    assert (
        _sample(
            text, "llm_usage_unpriced_tokens_total", gen_ai_response_model="model-without-a-price"
        )
        == 7
    )
    assert _sample(text, "llm_requests_total", **labels) == 1
    assert (
        _sample(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **labels) == 1200
    )
    assert _sample(text, "gen_ai_client_operation_duration_seconds_count", **labels) == 1
    assert _sample(text, "gen_ai_client_operation_time_to_first_chunk_seconds_sum", **labels) == 0.4
    assert 'service_instance_id="' + telemetry.service_instance_id in text  # target_info


def test_cost_is_served_under_its_documented_prometheus_name(telemetries: list[Telemetry]) -> None:
    from otel_tokens import ModelPrice, PriceTable

    telemetry = configure(exporters="prometheus", prometheus_port=0)
    telemetries.append(telemetry)
    prices = PriceTable(
        {"gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cache_read="0.075")}
    )
    telemetry.tracker(prices=prices).record(USAGE)
    text = _scrape(str(telemetry.prometheus_url))
    # 200*0.15 + 1000*0.075 + 300*0.60 = 285 per million tokens
    assert _sample(
        text, spec.COST.prometheus, gen_ai_response_model="gpt-4o-mini"
    ) == pytest.approx(0.000285)


def test_prometheus_port_in_use_fails_with_what_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            OSError, match=f"cannot serve Prometheus metrics on 127.0.0.1:{port}.*prometheus_port"
        ):
            configure(exporters="prometheus", prometheus_port=port)


def test_prometheus_address_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, telemetries: list[Telemetry]
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.2")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "0")
    telemetry = configure()
    telemetries.append(telemetry)
    assert str(telemetry.prometheus_url).startswith("http://127.0.0.2:")
    telemetry.tracker().record(USAGE)
    assert "llm_requests_total" in _scrape(str(telemetry.prometheus_url))


def _check_otlp_points(receiver: GrpcReceiver | HttpReceiver) -> None:
    points = receiver.wait_for("llm.usage.input_tokens")
    attrs = frozenset(ATTRS.items())
    assert points[("llm.usage.input_tokens", attrs)] == 1200
    assert points[("llm.usage.output_tokens", attrs)] == 300
    assert points[("llm.usage.cache_read.input_tokens", attrs)] == 1000
    assert points[("llm.requests", attrs)] == 1
    token_input = points[("gen_ai.client.token.usage", attrs | {("gen_ai.token.type", "input")})]
    assert token_input[:2] == (1, 1200.0)
    assert token_input[3] == spec.TOKEN_BUCKETS
    duration = points[("gen_ai.client.operation.duration", attrs)]
    assert duration[:2] == (1, 1.8) and duration[3] == spec.DURATION_BUCKETS
    assert points[("gen_ai.client.operation.time_to_first_chunk", attrs)][:2] == (1, 0.4)


@pytest.mark.parametrize(
    ("protocol", "receiver_class"), [("grpc", GrpcReceiver), ("http/protobuf", HttpReceiver)]
)
def test_otlp_export_reaches_a_receiver_with_exact_points(
    protocol: str, receiver_class: type[GrpcReceiver | HttpReceiver]
) -> None:
    receiver = receiver_class()
    try:
        telemetry = configure(
            exporters="otlp", otlp_protocol=protocol, otlp_endpoint=receiver.endpoint,
            service_name="gateway-test", otlp_headers={"x-tenant": "acme"},
        )  # fmt: skip
        telemetry.tracker().record(USAGE)
        telemetry.shutdown()  # the final export carries everything recorded
        _check_otlp_points(receiver)
        (resource, *_) = receiver.resources()
        assert resource["service.name"] == "gateway-test"
        assert resource["service.instance.id"] == telemetry.service_instance_id
        assert receiver.headers[0]["x-tenant"] == "acme"
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("protocol", "receiver_class"), [("grpc", GrpcReceiver), ("http/protobuf", HttpReceiver)]
)
def test_otlp_is_configured_from_the_standard_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
    telemetries: list[Telemetry],
    protocol: str,
    receiver_class: type[GrpcReceiver | HttpReceiver],
) -> None:
    receiver = receiver_class()
    try:
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-token=t0k3n")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
        telemetry = configure()
        telemetries.append(telemetry)
        telemetry.tracker().record(USAGE)
        _check_otlp_points(receiver)  # arrives by the periodic export, without a shutdown
        resource = receiver.resources()[0]
        assert resource["service.name"] == "from-env"
        assert resource["deployment.environment.name"] == "test"
        assert receiver.headers[0]["x-api-token"] == "t0k3n"
        telemetry.shutdown()  # while the receiver still listens: its final export lands
    finally:
        receiver.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_each_worker_process_gets_its_own_service_instance_id(telemetries: list[Telemetry]) -> None:
    parent = configure(exporters="none")
    telemetries.append(parent)
    assert len(parent.service_instance_id) == 36
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a pre-fork server's worker configures after the fork
        try:
            os.write(write, configure(exporters="none").service_instance_id.encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child_id = pipe.read()
    assert len(child_id) == 36 and child_id != parent.service_instance_id


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_using_a_telemetry_made_before_a_fork_warns_in_the_child(
    telemetries: list[Telemetry],
) -> None:
    telemetry = configure(exporters="none")
    telemetries.append(telemetry)
    pid = os.fork()
    if pid == 0:
        try:
            import logging

            warned: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda record: warned.append(record.getMessage())  # type: ignore[method-assign]
            logging.getLogger("otel_tokens").addHandler(handler)
            telemetry.tracker()
            os._exit(0 if any("Call configure() in each worker" in m for m in warned) else 1)
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_service_instance_id_from_the_environment_is_kept(
    monkeypatch: pytest.MonkeyPatch, telemetries: list[Telemetry]
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=worker-3")
    telemetry = configure(exporters="none")
    telemetries.append(telemetry)
    assert telemetry.service_instance_id == "worker-3"


def test_tracker_is_made_once_and_refuses_different_options_later(
    telemetries: list[Telemetry],
) -> None:
    telemetry = configure(exporters="none")
    telemetries.append(telemetry)
    tracker = telemetry.tracker(max_series=50)
    assert telemetry.tracker() is tracker
    assert telemetry.tracker(max_series=50) is tracker
    with pytest.raises(ValueError, match="already made with other options"):
        telemetry.tracker(max_series=60)


def test_recorded_usage_is_exported_at_interpreter_exit_without_a_shutdown_call() -> None:
    receiver = HttpReceiver()
    try:
        script = textwrap.dedent(f"""
            from otel_tokens import Usage, configure
            telemetry = configure(exporters="otlp", otlp_protocol="http/protobuf",
                                  otlp_endpoint="{receiver.endpoint}", export_interval_s=3600)
            telemetry.tracker().record(Usage(provider="openai", model="gpt-4o-mini",
                input_tokens=1200, output_tokens=300, cache_read_tokens=1000, latency_s=1.8,
                time_to_first_token_s=0.4, streamed=True))
        """)
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        _check_otlp_points(receiver)
    finally:
        receiver.close()


def test_console_exporter_prints_the_metrics_on_shutdown() -> None:
    script = textwrap.dedent("""
        from otel_tokens import Usage, configure
        telemetry = configure(exporters="console", export_interval_s=3600)
        telemetry.tracker().record(Usage(provider="openai", model="gpt-4o", input_tokens=7))
        telemetry.shutdown()
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "llm.usage.input_tokens"' in done.stdout


@pytest.mark.parametrize(
    ("kwargs", "env", "words"),
    [
        ({"exporters": "otlp,zipkin"}, {}, "exporters names unknown exporters ['zipkin']"),
        ({}, {"OTEL_METRICS_EXPORTER": "jaeger"},
         "OTEL_METRICS_EXPORTER names unknown exporters ['jaeger']"),
        ({"exporters": "otlp", "otlp_protocol": "http/json"}, {}, "otlp_protocol must be one of"),
        ({"exporters": "otlp"}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
         "OTEL_EXPORTER_OTLP_PROTOCOL must be one of ['grpc', 'http/protobuf'], got 'thrift'"),
        ({"exporters": "prometheus", "prometheus_port": 70000}, {},
         "prometheus_port must be a port number"),
        ({"exporters": "prometheus"}, {"OTEL_EXPORTER_PROMETHEUS_PORT": "http"},
         "OTEL_EXPORTER_PROMETHEUS_PORT must be a port number, got 'http'"),
        ({"exporters": "none", "export_interval_s": 0}, {},
         "export_interval_s must be a number of seconds > 0"),
        ({"exporters": "none"}, {"OTEL_METRIC_EXPORT_INTERVAL": "soon"},
         "OTEL_METRIC_EXPORT_INTERVAL must be a whole number of milliseconds > 0, got 'soon'"),
    ],
)  # fmt: skip
def test_bad_configuration_raises_naming_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], env: dict[str, str], words: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=None) as raised:
        configure(**kwargs)  # type: ignore[arg-type]
    assert words in str(raised.value)


@pytest.mark.parametrize(
    ("exporters", "module", "extra"),
    [
        ("prometheus", "opentelemetry.exporter.prometheus", "prometheus"),
        ("otlp", "opentelemetry.exporter.otlp.proto.http.metric_exporter", "otlp"),
    ],
)
def test_a_missing_extra_names_the_pip_install_to_run(
    monkeypatch: pytest.MonkeyPatch, exporters: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail, as if not installed
    with pytest.raises(ImportError, match=f"pip install 'otel_tokens\\[{extra}\\]'"):
        configure(exporters=exporters, prometheus_port=0)


def test_shutdown_exports_a_backlog_larger_than_one_collection_folds() -> None:
    from otel_tokens._core import tracker as _tracker

    receiver = HttpReceiver()
    try:
        telemetry = configure(
            exporters="otlp", otlp_protocol="http/protobuf", otlp_endpoint=receiver.endpoint,
            export_interval_s=3600,
        )  # fmt: skip
        tracker = telemetry.tracker()
        backlog = 12 * _tracker.BATCH_SIZE
        handoff = tracker._handoff
        with handoff._drain_lock:  # hold the consumer off: all of it is still queued
            for _ in range(backlog):
                tracker.record(Usage(provider="openai", model="gpt-4o", input_tokens=1))
            assert len(handoff) == backlog
        telemetry.shutdown()
        points = receiver.wait_for("llm.requests")
        requests = [v for (name, _), v in points.items() if name == "llm.requests"]
        tokens = [v for (name, _), v in points.items() if name == "llm.usage.input_tokens"]
        assert requests == [backlog] and tokens == [backlog]
    finally:
        receiver.close()


def test_exit_exports_a_large_backlog_from_a_provider_of_the_users_own() -> None:
    receiver = HttpReceiver()
    try:
        script = textwrap.dedent(f"""
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from otel_tokens import TokenTracker, Usage
            from otel_tokens._core import tracker as _tracker

            _tracker.BATCH_SIZE = 10**6  # the consumer thread is never woken: all stays queued
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint="{receiver.endpoint}/v1/metrics"),
                export_interval_millis=3_600_000,
            )
            provider = MeterProvider(metric_readers=[reader])  # shuts down at exit by itself
            tracker = TokenTracker(provider.get_meter("own"))
            for _ in range(6000):
                tracker.record(Usage(provider="openai", model="gpt-4o", input_tokens=1))
        """)
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        points = receiver.wait_for("llm.usage.input_tokens")
        tokens = [v for (name, _), v in points.items() if name == "llm.usage.input_tokens"]
        assert tokens == [6000]
    finally:
        receiver.close()
