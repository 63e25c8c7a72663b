"""The public surface is small and pinned; the core needs only opentelemetry-api."""

from __future__ import annotations

import otel_tokens
import otel_tokens.testing


def test_public_names_are_pinned() -> None:
    assert otel_tokens.__all__ == [
        "Budget",
        "BudgetStatus",
        "CustomMeter",
        "MeterTotals",
        "ModelPrice",
        "PriceTable",
        "Telemetry",
        "TokenTracker",
        "TrackedRequest",
        "Usage",
        "UsageLedger",
        "UsageTotals",
        "WorkerMetricsServer",
        "__version__",
        "configure",
    ]
    assert otel_tokens.testing.__all__ == ["HistogramValue", "InMemoryMetrics"]
    for name in otel_tokens.__all__:
        assert getattr(otel_tokens, name) is not None


def test_usage_has_exactly_the_contract_fields() -> None:
    from dataclasses import fields

    assert [f.name for f in fields(otel_tokens.Usage)] == [
        "provider", "model", "request_model", "operation", "input_tokens", "output_tokens",
        "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
        "system_tokens", "status", "error_type", "latency_s", "time_to_first_token_s", "streamed",
        "scenario", "user_tier", "provider_uuid", "rule_uuid", "api_key", "api_key_id",
        "server_address", "usage_problem", "request_id", "time_per_output_chunk_s", "server_port",
        "service_tier", "team",
    ]  # fmt: skip


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("otel_tokens").joinpath("py.typed").is_file()


def test_the_other_public_faces_are_pinned() -> None:
    import otel_tokens.httpx
    import otel_tokens.providers
    from otel_tokens.cli import _parser, main

    assert otel_tokens.httpx.__all__ == ["AsyncMeteredTransport", "MeteredTransport"]
    assert otel_tokens.providers.__all__ == [
        "UNKNOWN_MODEL", "AnthropicStream", "BedrockStream", "GeminiStream", "OpenAIStream",
        "StreamAccumulator", "UsageFields", "from_anthropic", "from_bedrock", "from_gemini",
        "from_openai",
    ]  # fmt: skip
    assert callable(main)
    commands = next(a for a in _parser()._actions if a.dest == "command")
    assert list(commands.choices) == [  # type: ignore[arg-type]
        "demo", "serve-metrics", "usage", "meters", "prune", "reset", "export", "import", "prices",
        "budget",
    ]  # fmt: skip


def test_the_ledgers_methods_are_pinned() -> None:
    public = sorted(n for n in dir(otel_tokens.UsageLedger) if not n.startswith("_"))
    assert public == [
        "add", "add_source", "budget_points", "budget_statuses", "budgets", "close",
        "custom_meter", "define", "drops", "export", "flush", "key_ids", "merge", "meter_usage",
        "meters", "period", "prune", "put_event", "record", "remaining", "remove_budget",
        "reset", "set_budget", "share_keys", "usage",
    ]  # fmt: skip
