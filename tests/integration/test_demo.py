"""`otel-tokens demo`: a bounded run that serves Prometheus while it runs and ends in a summary."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from otel_tokens import UsageLedger
from otel_tokens._demo.run import ACCUMULATORS, NORMALIZERS, PROFILES
from otel_tokens._demo.upstream import Tokens, response_body, stream_events

EXPECTED = (
    "gen_ai_client_token_usage_bucket",
    "gen_ai_client_operation_duration_seconds_bucket",
    "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
    "llm_usage_cost_USD_total",
    "llm_usage_unpriced_tokens_total",
    "llm_requests_total",
    "gen_ai_client_operation_time_per_output_chunk_seconds_bucket",
    "llm_usage_cache_savings_USD_total",
    "llm_ratelimit_remaining",
)


def _scrape_while_running(process: subprocess.Popen[str], url: str) -> str:
    """Scrape until every expected metric is served; the demo must still be running."""
    text = ""
    while process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = str(response.read().decode())
        except (urllib.error.URLError, ConnectionError):
            pass
        if all(name + "{" in text for name in EXPECTED):
            return text
        time.sleep(0.2)
    missing = [name for name in EXPECTED if name + "{" not in text]
    msg = f"the demo ended before {url} served {missing}"
    raise AssertionError(msg)


@pytest.mark.slow
def test_demo_serves_metrics_while_running_and_prints_a_summary(tmp_path: Path) -> None:
    ledger = tmp_path / "usage.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_tokens", "demo", "--duration", "4", "--port", "0",
         "--seed", "3", "--ledger", str(ledger)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        header = process.stdout.readline() + process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/metrics", header)
        assert url, header
        text = _scrape_while_running(process, url.group(0))
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert 'llm_status="success"' in text
    # The simulated OpenAI and Anthropic upstreams send rate-limit headers; the others none.
    gauges = [line for line in text.splitlines() if line.startswith("llm_ratelimit_remaining{")]
    headroom = {line.split('gen_ai_provider_name="', 1)[1].split('"', 1)[0] for line in gauges}
    assert headroom == {"openai", "anthropic"}

    lines = out.splitlines()
    (head,) = [line for line in lines if line.startswith("provider ")]
    assert head.split() == [
        "provider",
        "model",
        "requests",
        "ok",
        "error",
        "canceled",
        "input",
        "cache",
        "rd",
        "cache",
        "wr",
        "output",
        "reasoning",
        "cost",
        "USD",
    ]
    providers = ("openai", "anthropic", "gcp.gemini", "aws.bedrock", "vllm")
    rows = {line.split()[1]: line.split() for line in lines if line.startswith(providers)}
    assert {"gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"} <= set(rows)
    assert rows["Qwen/Qwen3-32B"][-1] == "unpriced"  # self-hosted: no price in the bundled table
    assert float(rows["claude-sonnet-4-5"][-1]) > 0  # priced by the bundled table
    total = next(line.split() for line in lines if line.startswith("total"))
    requests, ok, error, canceled = (int(v) for v in total[1:5])
    assert requests == ok + error + canceled and requests > 20
    assert error > 0 and canceled > 0  # ~3% fail and ~5% hang up; ~150 requests run
    assert "counted on llm.usage.unpriced_tokens, not as $0" in out

    # The ledger holds the same requests, per key, and the web searches.
    assert f"otel-tokens usage --ledger {ledger} --by key,model" in out
    with UsageLedger(ledger) as written:
        by_key = written.usage("all", by=["key"])
        assert sum(t.requests for t in by_key) == requests
        assert sum(t.failed for t in by_key) == error
        assert 2 <= len(by_key) <= 5 and all(len(t.group["key"]) == 16 for t in by_key)
        searches = written.meter_usage("web_search.calls", "all", by=["engine"])
        assert {t.group["engine"] for t in searches} <= {"bing", "brave", "google"}
        assert sum(t.events for t in searches) > 0


def test_demo_reports_a_port_in_use_and_exits_2() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "otel_tokens", "demo", "--duration", "1", "--port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"cannot serve Prometheus metrics on 127.0.0.1:{port}" in done.stderr


@pytest.mark.parametrize("args", [["--duration", "0"], ["--duration", "5", "--forever"]])
def test_demo_rejects_bad_arguments(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "otel_tokens", "demo", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "usage:" in done.stderr


def test_sigterm_ends_the_demo_with_a_summary(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_tokens",
            "demo",
            "--forever",
            "--port",
            "0",
            "--ledger",
            str(tmp_path / "usage.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        header = process.stdout.readline() + process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/metrics", header)
        assert url, header
        _scrape_while_running(process, url.group(0))
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert any(line.startswith("total ") for line in out.splitlines()), out


@pytest.mark.slow
def test_demo_also_pushes_otlp_when_asked() -> None:
    import os

    from tests.helpers.otlp_receiver import HttpReceiver

    receiver = HttpReceiver()
    try:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "otel_tokens", "demo", "--duration", "2", "--port", "0",
             "--otlp"],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        points = receiver.wait_for("llm.requests")
        pushed = sum(v for (name, _), v in points.items() if name == "llm.requests")
        total = next(line.split() for line in done.stdout.splitlines() if line.startswith("total"))
        assert pushed == int(total[1])  # the final push holds every request the summary counts
        assert receiver.resources()[0]["service.name"] == "otel-tokens-demo"
    finally:
        receiver.close()


TOKENS = Tokens(prompt=9000, cached=4096, written=2048, written_1h=512, answer=700, thinking=300)
#: What each response format can say: the counts it has no field for are given as 0.
REPORTS = {
    "openai": {"prompt", "cached", "written", "answer", "thinking"},
    "openai_embeddings": {"prompt"},
    "anthropic": {"prompt", "cached", "written", "written_1h", "answer"},
    "gemini": {"prompt", "cached", "answer", "thinking"},
    "bedrock": {"prompt", "cached", "written", "answer"},
}


@pytest.mark.parametrize("profile", PROFILES, ids=[p.model for p in PROFILES])
def test_the_simulated_upstreams_answer_what_the_normalizers_read_back(profile: Any) -> None:
    """The demo's bodies and stream events are in each provider's own meaning (Anthropic and
    Bedrock leave the cache out of input, Gemini leaves thoughts out of candidates); read
    with the package's normalizers they give back the counts they were made from."""
    said = REPORTS[profile.wire]
    tokens = Tokens(**{f: getattr(TOKENS, f) if f in said else 0 for f in Tokens.__annotations__})
    # Bedrock's response does not name its model; the others must say it themselves.
    named: dict[str, Any] = {"model": profile.answered_by} if profile.wire == "bedrock" else {}
    body = response_body(profile.wire, profile.answered_by, tokens)
    usages = [NORMALIZERS[profile.wire](body, **named)]
    if profile.wire in ACCUMULATORS:
        accumulator = ACCUMULATORS[profile.wire](**named)
        for event in stream_events(profile.wire, profile.answered_by, tokens):
            accumulator.feed(event)
        usages.append(accumulator.finish())
    for usage in usages:
        assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens,
                usage.cache_write_1h_tokens, usage.output_tokens, usage.reasoning_tokens) == (
                tokens.prompt, tokens.cached, tokens.written, tokens.written_1h, tokens.answer,
                tokens.thinking)  # fmt: skip
        assert usage.usage_problem is None and usage.model == profile.answered_by
