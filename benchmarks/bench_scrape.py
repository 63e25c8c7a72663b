"""How long one Prometheus scrape takes to render, with 1000 label sets on every instrument.

Records requests over 990 label sets (33 models x 6 scenarios x 5 user tiers, the most
one tracker keeps: `max_series` is at most 991) into a
tracker built by `configure(exporters="prometheus")`, then times, in one run:

- `today`: the endpoint's rendering as prometheus_client and the OTel exporter do it
  (collect the SDK, translate to prometheus_client families, encode with its
  `generate_latest`), split into those three parts;
- `prometheus_client alone`: its `generate_latest` on families already translated (the
  encoder's own cost, which no translation can go under);
- `endpoint`: what the endpoint does now, in the text format and in OpenMetrics (what
  Prometheus asks for first), each followed by a check that it is byte-identical to today's;
- scrapes at once: how many renderings 20 concurrent scrapes over HTTP cost.

Run from the repository root: python benchmarks/bench_scrape.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_tokens import ModelPrice, PriceTable, Telemetry, Usage, configure
from otel_tokens._core.setup import MAX_SERIES
from otel_tokens._export.scrape_http import Scrape

MODELS = [f"model-{n:02d}" for n in range(33)]
SCENARIOS = ["chat", "agent", "batch", "rag", "search", "code"]
TIERS = ["free", "pro", "team", "enterprise", "internal"]
PRICES = PriceTable(
    {m: ModelPrice(input="1", output="4", cache_read="0.5", cache_write="1.25") for m in MODELS}
)
OPENMETRICS = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8,text/plain;q=0.5"


def label_sets() -> list[Usage]:
    """One request for each of the 990 label sets, with every kind of token and timing."""
    return [
        Usage(
            provider="openai",
            model=model,
            input_tokens=1200 + n,
            output_tokens=300 + n,
            cache_read_tokens=100,
            cache_write_tokens=20,
            reasoning_tokens=40,
            latency_s=1.5,
            time_to_first_token_s=0.3,
            time_per_output_chunk_s=0.02,
            streamed=True,
            scenario=scenario,
            user_tier=tier,
        )
        for n, (model, scenario, tier) in enumerate(
            (m, s, t) for m in MODELS for s in SCENARIOS for t in TIERS
        )
    ]


def built() -> tuple[Telemetry, Any]:
    """A configured tracker that has seen every label set, and its endpoint's renderer."""
    telemetry = configure(exporters="prometheus", prometheus_port=0, prometheus_host="127.0.0.1")
    tracker = telemetry.tracker(prices=PRICES, max_series=MAX_SERIES)
    for usage in label_sets():
        tracker.record(usage)
    tracker.flush()
    return telemetry, telemetry._prometheus._server._rendering  # type: ignore[union-attr]


def timed(work: Callable[[], Any], rounds: int) -> float:
    """Median seconds of `work()` over `rounds` runs."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed renderings (default 5)")
    args = parser.parse_args()
    from prometheus_client.exposition import choose_encoder, generate_latest

    from otel_tokens._export.scrape_encode import Families
    from otel_tokens._export.scrape_render import _safe_families

    telemetry, renderer = built()
    try:
        registry = renderer._registry
        families = list(registry.collect())
        samples = sum(len(family.samples) for family in families)
        print(f"{len(label_sets())} label sets: {len(families)} families, {samples} samples")

        reader = telemetry._prometheus.reader  # type: ignore[union-attr]
        collect = timed(
            lambda: reader._collector._metrics_datas.clear() or reader.collect(), args.rounds
        )
        reader._collector._metrics_datas.clear()
        translate = timed(lambda: list(registry.collect()), args.rounds) - collect
        encode = timed(lambda: generate_latest(Families(_safe_families(families))), args.rounds)
        today = collect + translate + encode
        print(f"today:  collect {collect:.3f} s + translate {translate:.3f} s + "
              f"encode {encode:.3f} s = {today:.3f} s")  # fmt: skip
        alone = timed(lambda: generate_latest(Families(families)), args.rounds)
        print(f"prometheus_client alone, families already translated: {alone:.3f} s")

        worst, all_same = 0.0, True
        for name, accept in (("text", ""), ("OpenMetrics", OPENMETRICS)):
            scrape = [Scrape(1, accept, False)]
            now = timed(lambda scrape=scrape: renderer.render(scrape), args.rounds)  # type: ignore[misc]
            encoder = choose_encoder(accept)[0]
            usual = encoder(Families(_safe_families(registry.collect())))
            same = renderer.render(scrape)[0][1].body == usual
            worst, all_same = max(worst, now / today), all_same and same
            print(f"endpoint, {name}: {now:.3f} s  ({now / today:.2f} of today), "
                  f"{'byte-identical to' if same else 'DIFFERENT from'} today's")  # fmt: skip
        threads, renders = concurrent_scrapes(telemetry.prometheus_url or "", renderer)
        print(f"{threads} scrapes at once over HTTP: {renders} rendering(s)")
        print(f"identical = {all_same}, renderings for {threads} scrapes = {renders}")
        print(f"scrape / today = {worst:.2f}")
    finally:
        telemetry.shutdown()


def concurrent_scrapes(url: str, renderer: Any, threads: int = 20) -> tuple[int, int]:
    """How many renderings `threads` scrapes sent at once cost."""
    renders = [0]
    render = renderer.render

    def counting(scrapes: list[Scrape]) -> Any:
        renders[0] += 1
        return render(scrapes)

    renderer.render = counting
    barrier = threading.Barrier(threads)

    def scrape() -> None:
        barrier.wait()
        with urllib.request.urlopen(url, timeout=120) as response:
            response.read()

    workers = [threading.Thread(target=scrape) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    renderer.render = render
    return threads, renders[0]


if __name__ == "__main__":
    main()
