"""`otel-tokens demo`: gateway-like traffic through a real tracker, a live endpoint, a summary.

The upstream calls are simulated (no network, no provider account needed), but they answer
with bodies and stream events shaped as each provider documents them, and everything after
that is real: the package's normalizers and stream accumulators read them, the tracker
records and prices them with the bundled price table, a Prometheus endpoint serves them,
and the closing table is read back from the exported metrics, not from the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from otel_tokens._base.fingerprint import SECRET_ENV
from otel_tokens._base.usage import Usage
from otel_tokens._configure.configure import configure
from otel_tokens._configure.telemetry import Telemetry
from otel_tokens._core.custom_meter import CustomMeter
from otel_tokens._core.hooks import recording_hooks
from otel_tokens._core.tracker import TokenTracker
from otel_tokens._demo.limits import SimulatedLimits
from otel_tokens._demo.summary import Totals, progress, summary_table
from otel_tokens._demo.upstream import Tokens, error_body, response_body, stream_events
from otel_tokens._ledger.budgets import status_table
from otel_tokens._ledger.ledger import UsageLedger
from otel_tokens.providers import (
    AnthropicStream,
    BedrockStream,
    GeminiStream,
    OpenAIStream,
    StreamAccumulator,
    UsageFields,
    from_anthropic,
    from_bedrock,
    from_gemini,
    from_openai,
)

NORMALIZERS: dict[str, Callable[..., Usage]] = {
    "openai": from_openai, "openai_embeddings": from_openai, "anthropic": from_anthropic,
    "gemini": from_gemini, "bedrock": from_bedrock,
}  # fmt: skip
ACCUMULATORS: dict[str, type[StreamAccumulator]] = {
    "openai": OpenAIStream, "anthropic": AnthropicStream, "gemini": GeminiStream,
    "bedrock": BedrockStream,
}  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """A kind of request the demo gateway forwards."""

    provider: str
    model: str  # what the client asks for
    answered_by: str  # the model (snapshot) the response names
    wire: str  # the response format: a key of NORMALIZERS
    scenario: str
    weight: int
    prompt: tuple[int, int]
    answer: tuple[int, int]
    operation: str = "chat"
    streams: float = 0.6
    cache_read: float = 0.0  # share of requests that hit the prompt cache
    cache_write: float = 0.0  # share of requests that write it
    cache_1h: float = 0.0  # share of those writes cached for an hour
    reasoning: tuple[float, float] = (0.0, 0.0)  # share of the answer spent thinking
    server: str = ""


PROFILES = (
    Profile("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "openai", 30,
            (200, 6000), (20, 800), cache_read=0.35, server="api.openai.com"),
    Profile("openai", "gpt-4o", "gpt-4o-2024-08-06", "openai", "openai", 12, (500, 20000),
            (50, 1500), cache_read=0.4, server="api.openai.com"),
    Profile("openai", "o3-mini", "o3-mini-2025-01-31", "openai", "openai", 6, (300, 8000),
            (400, 6000), cache_read=0.3, reasoning=(0.5, 0.9), server="api.openai.com"),
    Profile("openai", "text-embedding-3-small", "text-embedding-3-small", "openai_embeddings",
            "openai", 8, (20, 2000), (0, 0), operation="embeddings", streams=0.0,
            server="api.openai.com"),
    Profile("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic",
            "claude_code", 20, (2000, 90000), (100, 4000), streams=0.9, cache_read=0.7,
            cache_write=0.25, cache_1h=0.3, server="api.anthropic.com"),
    Profile("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001", "anthropic",
            "anthropic", 8, (200, 10000), (20, 1000), cache_read=0.3, cache_write=0.1,
            server="api.anthropic.com"),
    Profile("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", "gemini", "openai", 10,
            (300, 30000), (50, 3000), cache_read=0.2, reasoning=(0.2, 0.6),
            server="generativelanguage.googleapis.com"),
    Profile("aws.bedrock", "amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0", "bedrock",
            "anthropic", 6, (300, 10000), (30, 1500), streams=0.3, cache_read=0.2,
            server="bedrock-runtime.us-east-1.amazonaws.com"),
    # A self-hosted model behind an OpenAI-compatible server: no list price, so its tokens
    # are counted as unpriced, never as $0.
    Profile("vllm", "Qwen/Qwen3-32B", "Qwen/Qwen3-32B", "openai", "openai", 5, (200, 8000),
            (20, 1200), server="vllm.internal"),
)  # fmt: skip

TIERS = (("free", 50), ("pro", 35), ("enterprise", 15))
#: The gateway's callers, by API key, and how much of the traffic each sends.
KEYS = (("sk-demo-acme", 40), ("sk-demo-globex", 25), ("sk-demo-initech", 20),
        ("sk-demo-hooli", 10), ("sk-demo-umbrella", 5))  # fmt: skip
#: Each caller's team (`Usage.team`), which budgets can be set on.
TEAMS = {"sk-demo-acme": "search", "sk-demo-globex": "support", "sk-demo-initech": "search",
         "sk-demo-hooli": "research", "sk-demo-umbrella": "research"}  # fmt: skip
#: The budgets the demo sets on a ledger that has none: (amount, options of set_budget). At
#: about a dollar a second, research's runs out within a minute and the others' do not.
BUDGETS = ((50, {"team": "search", "period": "day"}), (20, {"team": "support", "period": "day"}),
           (5, {"team": "research", "period": "day"}), (500, {"period": "24h"}),
           (50_000_000, {"unit": "tokens", "period": "month"}))  # fmt: skip
#: The fingerprint secret the demo uses when OTEL_TOKENS_API_KEY_SECRET is not set.
DEMO_SECRET = "otel-tokens-demo-secret-not-for-production"
#: Share of chat requests that also call a web search tool, metered by a custom meter.
WEB_SEARCH = 0.15
FAILURES = (("rate_limited", 0.025), ("timeout", 0.01), ("http_500", 0.008))
HANG_UP = 0.05
TIME_SCALE = 0.05  # simulated seconds → demo seconds: a 10 s answer takes 0.5 s here
#: The simulated upstreams' rate limits, reported in their answers' headers.
LIMITS = SimulatedLimits()


def _tokens(profile: Profile, rng: random.Random) -> Tokens:
    prompt = rng.randint(*profile.prompt)
    answer = rng.randint(*profile.answer)
    hit = rng.random() < profile.cache_read
    cached = prompt * rng.randint(5, 9) // 10 // 128 * 128 if hit else 0
    written = (prompt - cached) // 2 if rng.random() < profile.cache_write else 0
    written_1h = written if rng.random() < profile.cache_1h else 0
    thinking = int(answer * rng.uniform(*profile.reasoning))
    return Tokens(prompt, cached, written, written_1h, answer, thinking)


@dataclass(frozen=True)
class _Call:
    """One simulated upstream call: what it will answer, and how."""

    profile: Profile
    tokens: Tokens
    fields: UsageFields  # what the gateway knows of the request
    failure: str | None  # the error it fails with, if it does
    latency: float  # demo seconds


async def _one_request(tracker: TokenTracker, rng: random.Random, searches: CustomMeter) -> None:
    """Forward one simulated request and record what its response says it used."""
    profile = rng.choices(PROFILES, [p.weight for p in PROFILES])[0]
    tokens = _tokens(profile, rng)
    api_key = rng.choices([k for k, _ in KEYS], [w for _, w in KEYS])[0]
    fields: UsageFields = {
        "provider": profile.provider, "request_model": profile.model,
        "operation": profile.operation, "scenario": profile.scenario,
        "user_tier": rng.choices([t for t, _ in TIERS], [w for _, w in TIERS])[0],
        "server_address": profile.server or None, "api_key": api_key, "team": TEAMS[api_key],
        "system_tokens": rng.choice((0, 0, 0, 40, 120)),  # the gateway's own moderation call
    }  # fmt: skip
    if profile.operation == "chat" and rng.random() < WEB_SEARCH:
        engine = rng.choice(("bing", "brave", "google"))
        searches.record(dimensions={"engine": engine}, api_key=api_key)
    if profile.wire == "bedrock":  # Bedrock's response does not name the model
        fields["model"] = profile.answered_by
    failure = next((kind for kind, chance in FAILURES if rng.random() < chance), None)
    latency = 0.2 + tokens.answer / rng.uniform(40, 120) + tokens.prompt / 200_000  # simulated
    call = _Call(profile, tokens, fields, failure, latency * TIME_SCALE)
    if rng.random() < profile.streams:
        await _streamed(tracker, call, rng)
    else:
        await _whole(tracker, call, rng)


async def _whole(tracker: TokenTracker, call: _Call, rng: random.Random) -> None:
    wire, started = call.profile.wire, time.perf_counter()
    body: dict[str, Any] | None = None
    status, error_type = "canceled", call.failure  # canceled unless the wait below ends
    try:
        await asyncio.sleep(call.latency * (rng.uniform(0.05, 0.5) if call.failure else 1.0))
        if call.failure:
            status, body = "error", error_body(wire, call.failure)
        else:
            status, body = "success", response_body(wire, call.profile.answered_by, call.tokens)
    finally:
        elapsed = time.perf_counter() - started
        usage = NORMALIZERS[wire](
            body, status=status, error_type=error_type if status == "error" else None,
            latency_s=elapsed, **call.fields,
        )  # fmt: skip
        tracker.record(usage)
        LIMITS.report(usage, recording_hooks(tracker).rate_limits)


async def _streamed(tracker: TokenTracker, call: _Call, rng: random.Random) -> None:
    wire = call.profile.wire
    accumulator = ACCUMULATORS[wire](started=time.perf_counter(), **call.fields)
    status = "canceled"  # a client that hangs up keeps the usage that came
    try:
        if call.failure:  # refused before the stream began
            await asyncio.sleep(call.latency * rng.uniform(0.05, 0.5))
            status = "error"
            return
        events = stream_events(wire, call.profile.answered_by, call.tokens)
        await asyncio.sleep(call.latency * rng.uniform(0.1, 0.3))  # until the first token
        for event in events:
            accumulator.feed(event)
            await asyncio.sleep(call.latency * 0.6 / len(events))
        status = "success"
    finally:
        error_type = call.failure if status == "error" else None
        usage = accumulator.finish(status=status, error_type=error_type)
        tracker.record(usage)
        LIMITS.report(usage, recording_hooks(tracker).rate_limits)


async def _client(
    tracker: TokenTracker, rng: random.Random, stop: asyncio.Event, searches: CustomMeter
) -> None:
    while not stop.is_set():
        # Most clients wait as long as it takes; a few hang up early (a canceled request).
        patience = (rng.uniform(0.5, 8.0) if rng.random() < HANG_UP else 600.0) * TIME_SCALE
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_one_request(tracker, rng, searches), timeout=patience)
        await asyncio.sleep(rng.uniform(0.0, 0.02))


async def _run_traffic(
    telemetry: Telemetry,
    *,
    reader: Any,
    duration: float | None,
    concurrency: int,
    seed: int | None,
    out: TextIO,
) -> None:
    tracker = telemetry.tracker()  # made by run_demo, with the ledger
    searches = tracker.custom_meter(
        "web_search.calls", unit="{call}", aggregation="count", dimensions=["engine"],
        description="Web searches the gateway ran for tool calls.",
    )  # fmt: skip
    rng = random.Random(seed)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
        # `docker stop` sends SIGTERM: end as Ctrl-C does, with a summary and a final export.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    clients = [
        asyncio.create_task(_client(tracker, random.Random(rng.random()), stop, searches))
        for _ in range(concurrency)
    ]
    started = time.monotonic()
    interactive = out.isatty()
    last_line = 0.0
    try:
        while not stop.is_set() and (duration is None or time.monotonic() - started < duration):
            await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
            if interactive or elapsed - last_line >= 5:
                line = progress(Totals(reader), elapsed, duration, str(telemetry.prometheus_url))
                out.write(f"\r\x1b[2K{line}" if interactive else line + "\n")
                out.flush()
                last_line = elapsed
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        if interactive:
            out.write("\n")


def run_demo(
    *,
    duration: float | None = 15.0,
    host: str = "127.0.0.1",
    port: int = 9464,
    otlp: bool = False,
    concurrency: int = 16,
    seed: int | None = None,
    ledger: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Play gateway traffic through a tracker, serve it on Prometheus, print a summary.

    Args:
        duration: seconds to run; None runs until interrupted.
        host: the address of the Prometheus endpoint.
        port: its port (0 picks a free one).
        otlp: also push OTLP, configured by the standard OTEL_EXPORTER_OTLP_* variables.
        concurrency: simulated clients at once.
        seed: makes the traffic repeatable.
        ledger: the usage ledger to write too (a SQLite path or a postgresql:// URL);
            None: a new file in a temporary directory, kept for `otel-tokens usage`.
        out: where progress and the summary go.

    Raises:
        OSError: the port cannot be bound.
        ValueError: the ledger cannot be opened.
    """
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    target = ledger or os.path.join(tempfile.mkdtemp(prefix="otel-tokens-demo-"), "usage.db")
    secret = os.environ.get(SECRET_ENV) or DEMO_SECRET
    usage_ledger = UsageLedger(target, api_key_secret=secret)
    if not usage_ledger.budgets():  # a ledger of the user's own keeps its budgets
        for amount, options in BUDGETS:
            usage_ledger.set_budget(amount, **options)
    reader = InMemoryMetricReader()
    exporters = ["prometheus", "otlp"] if otlp else ["prometheus"]
    telemetry = configure(
        exporters=exporters,
        service_name="otel-tokens-demo",
        prometheus_host=host,
        prometheus_port=port,
        readers=[reader],
    )
    telemetry.tracker(ledger=usage_ledger, api_key_secret=secret)  # priced by the bundled table
    out.write(
        f"otel-tokens demo: simulated gateway traffic through a real TokenTracker\n"
        f"  Prometheus endpoint: {telemetry.prometheus_url}"
        + ("  (and OTLP push)" if otlp else "")
        + f"\n  usage ledger: {usage_ledger.target}"
        + ("\n  running until Ctrl-C\n" if duration is None else f"\n  running {duration:g}s\n")
    )
    out.flush()
    try:
        asyncio.run(
            _run_traffic(
                telemetry,
                reader=reader,
                duration=duration,
                concurrency=concurrency,
                seed=seed,
                out=out,
            )
        )
    except KeyboardInterrupt:
        out.write("\ninterrupted: summary of what was recorded so far\n")
    try:
        out.write("\n" + summary_table(Totals(reader)) + "\n")
        telemetry.tracker().flush()  # also writes the ledger
        where = ledger or usage_ledger.target
        statuses = sorted(usage_ledger.budget_statuses(), key=lambda s: s.budget.name)
        out.write(f"\nBudgets (llm.budget.* gauges; a gateway asks ledger.remaining()):\n"
                  f"{status_table(statuses)}\n")  # fmt: skip
        out.write(
            f"\nThe usage ledger holds every request by API key (fingerprinted). Try:\n"
            f"  otel-tokens usage --ledger {where} --by key,model\n"
            f"  otel-tokens usage --ledger {where} --by team\n"
            f"  otel-tokens budget list --ledger {where}\n"
            f"  otel-tokens usage --ledger {where} --meter web_search.calls --by engine\n"
        )
    finally:
        telemetry.shutdown()
        usage_ledger.close()
