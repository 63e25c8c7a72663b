"""Request rows as the ledger's writer makes them (`REQUEST_COLUMNS` order), varied enough
that their hourly sums have many hours, keys, statuses and teams."""

from __future__ import annotations

import random
from typing import Any

from otel_tokens._ledger.schema import REQUEST_COLUMNS, US_PER_HOUR

Row = tuple[Any, ...]


def request_rows(count: int, seed: int) -> list[Row]:
    """Request rows over a few keys, models, statuses, teams and hours (one before 1970,
    where SQL's division and Python's floor differ), a third of them unpriced."""
    rng = random.Random(seed)
    base = 1_780_000_000 * 1_000_000
    rows = []
    for n in range(count):
        at_us = rng.choice([base, -3 * US_PER_HOUR // 2]) + rng.randrange(5 * US_PER_HOUR)
        values = {
            "uid": f"r{n}", "at_us": at_us, "key_id": rng.choice(["k1", "k2", ""]),
            "provider": "openai", "model": rng.choice(["gpt-4o", "o3", "\u00e9t\u00e9"]),
            "request_model": "m", "operation": "chat", "scenario": rng.choice(["", "rag"]),
            "user_tier": "", "status": rng.choice(["success", "error", "canceled"]),
            "error_type": None, "streamed": 0, "input_tokens": rng.randrange(10**6),
            "output_tokens": rng.randrange(10**4), "cache_read_tokens": rng.randrange(99),
            "cache_write_tokens": rng.randrange(99), "reasoning_tokens": rng.randrange(99),
            "system_tokens": rng.randrange(99),
            "cost_pico": None if rng.random() < 0.33 else rng.randrange(10**12),
            "latency_s": 0.5, "team": rng.choice(["", "", "blue", "red"]),
        }  # fmt: skip
        rows.append(tuple(values[name] for name in REQUEST_COLUMNS))
    return rows
