"""Rate-limit headroom through the real openai and anthropic SDKs: a local server sends the
providers' documented headers, MeteredTransport hands them to the consumer, and the gauges
show them with the provider, server, model and (opted in) key id."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from otel_tokens.httpx import MeteredTransport
from otel_tokens.testing import InMemoryMetrics
from tests.helpers.fake_providers import FakeProviders

KEY = "sk-test-ratelimit-0123456789"
SECRET = "a-test-secret-of-sixteen-bytes-or-more"

OPENAI_HEADERS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-reset-requests": "120ms",
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "2500",
    "x-ratelimit-reset-tokens": "6m0s",
}


def _anthropic_headers() -> dict[str, str]:
    reset = (datetime.now(timezone.utc) + timedelta(seconds=50)).isoformat().replace("+00:00", "Z")
    headers = {}
    for kind, limit, remaining in (
        ("requests", "50", "49"),
        ("tokens", "90000", "8000"),
        ("input-tokens", "40000", "3000"),
        ("output-tokens", "8000", "7000"),
    ):
        headers[f"anthropic-ratelimit-{kind}-limit"] = limit
        headers[f"anthropic-ratelimit-{kind}-remaining"] = remaining
        headers[f"anthropic-ratelimit-{kind}-reset"] = reset
    return headers


@pytest.fixture
def server() -> Any:
    with FakeProviders() as running:
        yield running


def _client(metrics: InMemoryMetrics) -> httpx2.Client:
    return httpx2.Client(transport=MeteredTransport(metrics.tracker))


def _gauges(metrics: InMemoryMetrics, name: str) -> dict[str, tuple[float, dict[str, Any]]]:
    return {
        p.attributes["llm.ratelimit.kind"]: (p.value, dict(p.attributes))  # type: ignore[index, union-attr]
        for p in metrics.points(name)
    }


def test_openai_headers_become_gauges_per_provider_server_and_model(
    server: FakeProviders,
) -> None:
    metrics = InMemoryMetrics()
    client = openai.OpenAI(api_key=KEY, base_url=server.base_url + "/v1", max_retries=0,
                           http_client=_client(metrics))  # fmt: skip
    client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-test-reply-headers": json.dumps(OPENAI_HEADERS)},
    )  # fmt: skip
    remaining = _gauges(metrics, "llm.ratelimit.remaining")
    assert {kind: value for kind, (value, _) in remaining.items()} == {
        "requests": 499,
        "tokens": 2500,
    }
    limits = _gauges(metrics, "llm.ratelimit.limit")
    assert limits["tokens"][0] == 30000 and limits["requests"][0] == 500
    value, attributes = _gauges(metrics, "llm.ratelimit.reset")["tokens"]
    assert 355 < value <= 360  # 6m0s, less the time since the response
    assert attributes == {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1",
        "server.address": "127.0.0.1",
        "server.port": int(server.base_url.rsplit(":", 1)[1]),
        "llm.ratelimit.kind": "tokens",
    }


def test_anthropic_headers_of_a_stream_give_all_four_kinds(server: FakeProviders) -> None:
    metrics = InMemoryMetrics(opt_in_attributes=["llm.api_key.id"], api_key_secret=SECRET)
    client = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0,
                                 http_client=_client(metrics))  # fmt: skip
    stream = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, stream=True,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-test-reply-headers": json.dumps(_anthropic_headers())},
    )  # fmt: skip
    for _ in stream:
        pass
    remaining = _gauges(metrics, "llm.ratelimit.remaining")
    assert {kind: value for kind, (value, _) in remaining.items()} == {
        "requests": 49,
        "tokens": 8000,
        "input_tokens": 3000,
        "output_tokens": 7000,
    }
    resets = _gauges(metrics, "llm.ratelimit.reset")
    assert all(40 < value <= 50 for value, _ in resets.values())
    key_ids = {a["llm.api_key.id"] for _, a in remaining.values()}
    assert len(key_ids) == 1 and KEY not in next(iter(key_ids))  # the key's fingerprint only
    assert metrics.value("llm.requests", provider="anthropic") == 1


def test_a_429_reports_its_retry_after(server: FakeProviders) -> None:
    metrics = InMemoryMetrics()
    client = openai.OpenAI(api_key=KEY, base_url=server.base_url + "/v1", max_retries=0,
                           http_client=_client(metrics))  # fmt: skip
    headers = {**OPENAI_HEADERS, "x-ratelimit-remaining-requests": "0", "retry-after": "20"}
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-test-behavior": "429", "x-test-reply-headers": json.dumps(headers)},
        )  # fmt: skip
    resets = _gauges(metrics, "llm.ratelimit.reset")
    assert 15 < resets["retry_after"][0] <= 20
    assert _gauges(metrics, "llm.ratelimit.remaining")["requests"][0] == 0
    assert metrics.value("llm.requests", status="error", error_type="rate_limited") == 1


@pytest.mark.parametrize(
    "garbage",
    [
        {"x-ratelimit-remaining-tokens": "-5", "x-ratelimit-reset-tokens": "soon"},
        {"x-ratelimit-limit-requests": "9" * 5000},
        {"anthropic-ratelimit-tokens-reset": "yesterday", "retry-after": "NaN"},
        {"x-ratelimit-remaining-requests": "\u0661\u0662"},  # Arabic-Indic digits
    ],
)
def test_garbage_headers_cost_only_themselves(
    server: FakeProviders, garbage: dict[str, str]
) -> None:
    metrics = InMemoryMetrics()
    with _client(metrics) as client:
        response = client.post(
            server.base_url + "/v1/chat/completions", json={"model": "gpt-4.1"},
            headers={"x-test-reply-headers": json.dumps(garbage)},
        )  # fmt: skip
    assert response.status_code == 200
    assert metrics.points("llm.ratelimit.remaining") == []
    assert metrics.points("llm.ratelimit.reset") == []
    assert metrics.value("llm.requests", status="success") == 1  # the usage is whole
    assert metrics.value("otel_tokens.records.dropped") == 0


def test_reading_the_headers_happens_off_the_request_path(server: FakeProviders) -> None:
    """The request thread only hands the headers object on; the parser runs when the
    consumer folds the record. With folding held back, the request ends unparsed."""
    from otel_tokens._http import meter

    calls: list[float] = []
    original = meter.read_rate_limits

    def spy(pairs: Any, now: float) -> Any:
        calls.append(now)
        return original(pairs, now)

    metrics = InMemoryMetrics()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(meter, "read_rate_limits", spy)
        with metrics.tracker._handoff._drain_lock, _client(metrics) as client:  # nothing folds
            response = client.post(
                server.base_url + "/v1/chat/completions", json={"model": "gpt-4.1"},
                headers={"x-test-reply-headers": json.dumps(OPENAI_HEADERS)},
            )  # fmt: skip
            assert response.status_code == 200
            assert calls == []  # the response is the caller's, and nothing was parsed for it
        metrics.metrics()
    assert len(calls) == 1
    assert _gauges(metrics, "llm.ratelimit.remaining")["tokens"][0] == 2500


def test_a_caller_rewriting_the_headers_afterwards_does_not_change_the_readings(
    server: FakeProviders,
) -> None:
    """Gateways strip or rewrite a provider's headers before answering their own clients: the
    readings are the provider's, taken when the response arrived."""
    metrics = InMemoryMetrics()
    with metrics.tracker._handoff._drain_lock, _client(metrics) as client:  # nothing folds yet
        response = client.post(
            server.base_url + "/v1/chat/completions", json={"model": "gpt-4.1"},
            headers={"x-test-reply-headers": json.dumps(OPENAI_HEADERS)},
        )  # fmt: skip
        response.headers["x-ratelimit-remaining-tokens"] = "999999"
        del response.headers["x-ratelimit-limit-tokens"]
    assert _gauges(metrics, "llm.ratelimit.remaining")["tokens"][0] == 2500
    assert _gauges(metrics, "llm.ratelimit.limit")["tokens"][0] == 30000
