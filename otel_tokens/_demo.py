"""`otel-tokens demo`: gateway-like traffic through a real tracker, a live endpoint, a summary.

The upstream calls are simulated (no network, no provider account needed) but everything
after them is real: each request is timed by `tracker.track()`, recorded through the
package's pipeline, served on a Prometheus endpoint, and the closing table is read back
from the exported metrics, not from the simulator's own counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO

from otel_tokens import _instruments as spec
from otel_tokens import _names as n
from otel_tokens._configure import Telemetry, configure
from otel_tokens._pricing import ModelPrice, PriceTable
from otel_tokens._tracker import TokenTracker

#: List prices in USD per million tokens, for the demo only (the price table proper is its own
#: feature). Bedrock's Nova Pro is left out on purpose, to show unpriced tokens being counted.
DEMO_PRICES = PriceTable(
    {
        "gpt-4o": ModelPrice(input="2.50", output="10", cache_read="1.25"),
        "gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cache_read="0.075"),
        "o3-mini": ModelPrice(input="1.10", output="4.40", cache_read="0.55"),
        "text-embedding-3-small": ModelPrice(input="0.02", output="0"),
        "claude-sonnet-4-5": ModelPrice(
            input="3", output="15", cache_read="0.30", cache_write="3.75"
        ),
        "claude-haiku-4-5": ModelPrice(
            input="1", output="5", cache_read="0.10", cache_write="1.25"
        ),
        "gemini-2.5-flash": ModelPrice(input="0.30", output="2.50", cache_read="0.075"),
    }
)


@dataclass(frozen=True)
class Profile:
    """A kind of request the demo gateway forwards."""

    provider: str
    model: str
    scenario: str
    weight: int
    prompt: tuple[int, int]
    answer: tuple[int, int]
    operation: str = "chat"
    streams: float = 0.6
    cache_read: float = 0.0  # share of requests that hit the prompt cache
    cache_write: float = 0.0  # share of requests that write it
    reasoning: tuple[float, float] = (0.0, 0.0)  # share of the answer spent thinking
    server: str = ""


PROFILES = (
    Profile("openai", "gpt-4o-mini", "openai", 30, (200, 6000), (20, 800), cache_read=0.35,
            server="api.openai.com"),
    Profile("openai", "gpt-4o", "openai", 12, (500, 20000), (50, 1500), cache_read=0.4,
            server="api.openai.com"),
    Profile("openai", "o3-mini", "openai", 6, (300, 8000), (400, 6000), cache_read=0.3,
            reasoning=(0.5, 0.9), server="api.openai.com"),
    Profile("openai", "text-embedding-3-small", "openai", 8, (20, 2000), (0, 0),
            operation="embeddings", streams=0.0, server="api.openai.com"),
    Profile("anthropic", "claude-sonnet-4-5", "claude_code", 20, (2000, 90000), (100, 4000),
            streams=0.9, cache_read=0.7, cache_write=0.25, server="api.anthropic.com"),
    Profile("anthropic", "claude-haiku-4-5", "anthropic", 8, (200, 10000), (20, 1000),
            cache_read=0.3, cache_write=0.1, server="api.anthropic.com"),
    Profile("gcp.gemini", "gemini-2.5-flash", "openai", 10, (300, 30000), (50, 3000),
            cache_read=0.2, reasoning=(0.2, 0.6),
            server="generativelanguage.googleapis.com"),
    Profile("aws.bedrock", "amazon.nova-pro-v1:0", "anthropic", 6, (300, 10000), (30, 1500),
            streams=0.3, server="bedrock-runtime.us-east-1.amazonaws.com"),
)  # fmt: skip

TIERS = (("free", 50), ("pro", 35), ("enterprise", 15))
FAILURES = (("rate_limited", 0.025), ("timeout", 0.01), ("http_500", 0.008))
HANG_UP = 0.05
TIME_SCALE = 0.05  # simulated seconds → demo seconds: a 10 s answer takes 0.5 s here


class UpstreamError(Exception):
    """A simulated failure of the upstream provider."""


async def _one_request(tracker: TokenTracker, rng: random.Random) -> None:
    profile = rng.choices(PROFILES, [p.weight for p in PROFILES])[0]
    tier = rng.choices([t for t, _ in TIERS], [w for _, w in TIERS])[0]
    streamed = rng.random() < profile.streams
    prompt = rng.randint(*profile.prompt)
    answer = rng.randint(*profile.answer)
    latency = 0.2 + answer / rng.uniform(40, 120) + prompt / 200_000  # seconds, simulated
    async with tracker.track(
        provider=profile.provider,
        model=profile.model,
        operation=profile.operation,
        streamed=streamed,
        scenario=profile.scenario,
        user_tier=tier,
        server_address=profile.server or None,
    ) as req:
        req.model = profile.model + ("-2024-08-06" if profile.model == "gpt-4o" else "")
        for error_type, chance in FAILURES:
            if rng.random() < chance:
                await asyncio.sleep(rng.uniform(0.05, 1.0) * TIME_SCALE)
                req.error_type = error_type
                raise UpstreamError(error_type)
        req.input_tokens = prompt
        if rng.random() < profile.cache_read:
            req.cache_read_tokens = prompt * rng.randint(5, 9) // 10 // 128 * 128
        if rng.random() < profile.cache_write:
            req.cache_write_tokens = (prompt - req.cache_read_tokens) // 2
        if not streamed:
            await asyncio.sleep(latency * TIME_SCALE)
        else:
            await asyncio.sleep(latency * rng.uniform(0.1, 0.3) * TIME_SCALE)
            req.first_token()
            for chunk in range(1, 5):  # tokens arrive in chunks; a hang-up keeps what came
                req.output_tokens = answer * chunk // 4
                await asyncio.sleep(latency * 0.2 * TIME_SCALE)
        req.output_tokens = answer
        low, high = profile.reasoning
        req.reasoning_tokens = int(answer * rng.uniform(low, high))
        req.system_tokens = rng.choice((0, 0, 0, 40, 120))  # the gateway's own moderation call


async def _client(tracker: TokenTracker, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        # Most clients wait as long as it takes; a few hang up early (a canceled request).
        patience = (rng.uniform(0.5, 8.0) if rng.random() < HANG_UP else 600.0) * TIME_SCALE
        with contextlib.suppress(UpstreamError, TimeoutError):
            await asyncio.wait_for(_one_request(tracker, rng), timeout=patience)
        await asyncio.sleep(rng.uniform(0.0, 0.02))


def _human(number: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.1f}{suffix}"
    return f"{number:.0f}"


class Totals:
    """What the exported metrics say so far, per (provider, model)."""

    COLUMNS = ("requests", "success", "error", "canceled", "input", "cache_read", "cache_write",
               "output", "reasoning", "cost", "unpriced")  # fmt: skip
    _COUNTERS: ClassVar[dict[str, str]] = {
        spec.INPUT_TOKENS.name: "input",
        spec.CACHE_READ_TOKENS.name: "cache_read",
        spec.CACHE_WRITE_TOKENS.name: "cache_write",
        spec.OUTPUT_TOKENS.name: "output",
        spec.REASONING_TOKENS.name: "reasoning",
        spec.COST.name: "cost",
        spec.UNPRICED_TOKENS.name: "unpriced",
    }

    def __init__(self, reader: Any) -> None:
        self.rows: dict[tuple[str, str], dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(self.COLUMNS, 0.0)
        )
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    self._add(metric)

    def _add(self, metric: Any) -> None:
        column = self._COUNTERS.get(metric.name)
        if metric.name != spec.REQUESTS.name and column is None:
            return
        for point in metric.data.data_points:
            attrs = point.attributes
            row = self.rows[
                (
                    str(attrs.get(n.PROVIDER, "(overflow)")),
                    str(attrs.get(n.REQUEST_MODEL, "")),
                )
            ]
            if column is not None:
                row[column] += point.value
            else:
                row["requests"] += point.value
                row[str(attrs.get(n.STATUS, "success"))] += point.value

    def total(self, column: str) -> float:
        return sum(row[column] for row in self.rows.values())


def _progress(totals: Totals, elapsed: float, duration: float | None, url: str) -> str:
    clock = f"{elapsed:5.1f}s" + (f"/{duration:.0f}s" if duration else "")
    return (
        f"{clock}  requests {totals.total('requests'):.0f}  ok {totals.total('success'):.0f}  "
        f"error {totals.total('error'):.0f}  canceled {totals.total('canceled'):.0f}  "
        f"tokens in {_human(totals.total('input'))} out {_human(totals.total('output'))}  "
        f"cost ${totals.total('cost'):.2f}  scrape {url}"
    )


def summary_table(totals: Totals) -> str:
    """The closing table: requests by status and tokens by class, per provider and model."""
    header = ("provider", "model", "requests", "ok", "error", "canceled", "input", "cache rd",
              "cache wr", "output", "reasoning", "cost USD")  # fmt: skip
    lines = []
    for (provider, model), row in sorted(totals.rows.items()):
        lines.append(_row(provider, model, row))
    lines.append(_row("total", "", {c: totals.total(c) for c in Totals.COLUMNS}))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    rendered = [_render(header, widths), _render(tuple("-" * w for w in widths), widths)]
    rendered += [_render(line, widths) for line in lines[:-1]]
    rendered += [_render(tuple("-" * w for w in widths), widths), _render(lines[-1], widths)]
    unpriced = totals.total("unpriced")
    if unpriced:
        rendered.append(
            f"'unpriced': {_human(unpriced)} tokens of models with no price were counted on "
            f"{spec.UNPRICED_TOKENS.name}, not as $0."
        )
    return "\n".join(rendered)


def _row(provider: str, model: str, row: dict[str, float]) -> tuple[str, ...]:
    has_cost = row["cost"] > 0 or not row["unpriced"]
    cost = f"{row['cost']:.4f}" if has_cost else "unpriced"
    if has_cost and row["unpriced"]:
        cost += " +unpriced"
    return (provider, model, f"{row['requests']:.0f}", f"{row['success']:.0f}",
            f"{row['error']:.0f}", f"{row['canceled']:.0f}", _human(row["input"]),
            _human(row["cache_read"]), _human(row["cache_write"]), _human(row["output"]),
            _human(row["reasoning"]), cost)  # fmt: skip


def _render(cells: tuple[str, ...], widths: list[int]) -> str:
    left = 2  # provider and model read best left-aligned, numbers right-aligned
    return "  ".join(
        cell.ljust(width) if i < left else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()


async def _run_traffic(
    telemetry: Telemetry,
    *,
    reader: Any,
    duration: float | None,
    concurrency: int,
    seed: int | None,
    out: TextIO,
) -> None:
    tracker = telemetry.tracker(prices=DEMO_PRICES)
    rng = random.Random(seed)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
        # `docker stop` sends SIGTERM: end as Ctrl-C does, with a summary and a final export.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    clients = [
        asyncio.create_task(_client(tracker, random.Random(rng.random()), stop))
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
                line = _progress(Totals(reader), elapsed, duration, str(telemetry.prometheus_url))
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
        out: where progress and the summary go.

    Raises:
        OSError: the port cannot be bound.
    """
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    exporters = ["prometheus", "otlp"] if otlp else ["prometheus"]
    telemetry = configure(
        exporters=exporters,
        service_name="otel-tokens-demo",
        prometheus_host=host,
        prometheus_port=port,
        readers=[reader],
    )
    out.write(
        f"otel-tokens demo: simulated gateway traffic through a real TokenTracker\n"
        f"  Prometheus endpoint: {telemetry.prometheus_url}"
        + ("  (and OTLP push)" if otlp else "")
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
    finally:
        telemetry.shutdown()
