"""A fixed, realistic mix of gateway requests, shared by the benchmark and the tests."""

from __future__ import annotations

import random

from otel_tokens import ModelPrice, PriceTable, Usage

PRICES = PriceTable(
    {
        "gpt-4o": ModelPrice(input="2.50", output="10", cache_read="1.25"),
        "gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cache_read="0.075"),
        "o3-mini": ModelPrice(input="1.10", output="4.40", cache_read="0.55"),
        "claude-sonnet-4-5": ModelPrice(
            input="3", output="15", cache_read="0.30", cache_write="3.75"
        ),
        "gemini-2.5-flash": ModelPrice(input="0.30", output="2.50", cache_read="0.075"),
    }
)


#: The gateway surface each provider is reached through (keeps the series count realistic).
SCENARIOS = {
    "openai": "openai",
    "anthropic": "claude_code",
    "gcp.gemini": "openai",
    "aws.bedrock": "anthropic",
}


def mixed_usages(count: int, seed: int = 7) -> list[Usage]:
    """`count` requests over several providers and models, streamed and not, some failing."""
    rng = random.Random(seed)
    models = [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "o3-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("gcp.gemini", "gemini-2.5-flash"),
        ("aws.bedrock", "amazon.nova-pro-v1:0"),  # unpriced on purpose
    ]
    usages = []
    for _ in range(count):
        provider, model = rng.choice(models)
        streamed = rng.random() < 0.5
        status = rng.choices(["success", "error", "canceled"], [90, 7, 3])[0]
        input_tokens = rng.randint(10, 20_000)
        output_tokens = rng.randint(0, 2_000) if status != "error" else 0
        latency = round(rng.uniform(0.05, 30.0), 3)
        usages.append(
            Usage(
                provider=provider,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=rng.randint(0, input_tokens // 2),
                cache_write_tokens=rng.randint(0, input_tokens // 4)
                if provider == "anthropic"
                else 0,
                reasoning_tokens=rng.randint(0, output_tokens) if model == "o3-mini" else 0,
                status=status,
                error_type=rng.choice(["rate_limited", "timeout", "http_500"])
                if status == "error"
                else None,
                latency_s=latency,
                time_to_first_token_s=round(latency * rng.uniform(0.05, 0.5), 3)
                if streamed
                else None,
                time_per_output_chunk_s=round(rng.uniform(0.005, 0.08), 4) if streamed else None,
                streamed=streamed,
                scenario=SCENARIOS[provider],
                user_tier=rng.choice(["free", "pro", "enterprise"]),
            )
        )
    return usages
