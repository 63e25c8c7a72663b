"""What the GenAI semantic conventions ask of client metrics, through the real openai and
anthropic SDKs against a local server: `server.port` beside `server.address`, the time per
output chunk of streams, the operation names, the opt-in OpenAI service tier."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from otel_tokens.httpx import MeteredTransport
from otel_tokens.testing import InMemoryMetrics
from tests.helpers.fake_providers import FakeProviders

KEY = "sk-test-conventions-0123456789"
MESSAGES: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[FakeProviders]:
    with FakeProviders() as running:
        yield running


def _openai(base_url: str, metrics: InMemoryMetrics) -> openai.OpenAI:
    http_client = httpx2.Client(transport=MeteredTransport(metrics.tracker))
    return openai.OpenAI(api_key=KEY, base_url=base_url + "/v1", max_retries=0,
                         http_client=http_client)  # fmt: skip


def test_server_port_is_set_wherever_server_address_is(server: FakeProviders) -> None:
    metrics = InMemoryMetrics()
    _openai(server.base_url, metrics).chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    port = int(server.base_url.rsplit(":", 1)[1])
    for name in ("llm.requests", "gen_ai.client.operation.duration", "gen_ai.client.token.usage"):
        points = metrics.points(name)
        assert points, name
        for point in points:
            attributes = dict(point.attributes or {})
            assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", port)


def test_a_stream_records_its_time_per_output_chunk(server: FakeProviders) -> None:
    metrics = InMemoryMetrics()
    http_client = httpx2.Client(transport=MeteredTransport(metrics.tracker))
    client = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0,
                                 http_client=http_client)  # fmt: skip
    stream = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, stream=True, messages=MESSAGES,
        extra_headers={"x-test-behavior": "slow"},  # 50 ms between events
    )  # fmt: skip
    for _ in stream:
        pass
    (point,) = metrics.points("gen_ai.client.operation.time_per_output_chunk")
    assert point.count == 1  # type: ignore[union-attr]  # one point per request
    assert 0.04 <= point.sum <= 0.5  # type: ignore[union-attr]  # the server's 50 ms gaps
    duration = metrics.histogram("gen_ai.client.operation.duration")
    first = metrics.histogram("gen_ai.client.operation.time_to_first_chunk")
    assert point.sum < duration.sum - first.sum  # type: ignore[union-attr]  # a mean, not the total


def test_a_plain_response_has_no_time_per_output_chunk(server: FakeProviders) -> None:
    metrics = InMemoryMetrics()
    _openai(server.base_url, metrics).chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert metrics.points("gen_ai.client.operation.time_per_output_chunk") == []


@pytest.mark.parametrize("streamed", [False, True])
def test_the_openai_service_tier_is_an_opt_in_attribute(
    server: FakeProviders, streamed: bool
) -> None:
    plain, opted = (
        InMemoryMetrics(),
        InMemoryMetrics(opt_in_attributes=["openai.response.service_tier"]),
    )
    for metrics in (plain, opted):
        client = _openai(server.base_url, metrics)
        if streamed:
            options: Any = {"include_usage": True}
            list(client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, stream=True,
                                                stream_options=options))  # fmt: skip
        else:
            client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert "openai.response.service_tier" not in (plain.points("llm.requests")[0].attributes or {})
    assert opted.value("llm.requests", {"openai.response.service_tier": "default"}) == 1


def test_the_operation_of_a_request_that_got_no_answer_comes_from_its_path() -> None:
    metrics = InMemoryMetrics()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    client = _openai(base_url, metrics)
    with pytest.raises(openai.APIConnectionError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.APIConnectionError):
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x")
    assert metrics.value("llm.requests", operation="embeddings", status="error") == 1
    assert metrics.value("llm.requests", operation="text_completion", status="error") == 1


def test_an_error_answer_keeps_the_operation_of_its_endpoint(server: FakeProviders) -> None:
    """A 429 body has no `object` field to say what it answers: the path says it."""
    metrics = InMemoryMetrics()
    client = _openai(server.base_url, metrics)
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="text-embedding-3-small", input="x",
                                 extra_headers={"x-test-behavior": "429"})  # fmt: skip
    client.embeddings.create(model="text-embedding-3-small", input="x")
    assert metrics.value("llm.requests", operation="embeddings", status="error") == 1
    assert metrics.value("llm.requests", operation="embeddings") == 2


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.x.ai", "x_ai"),
        ("api.groq.com", "groq"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.deepseek.com", "deepseek"),
        ("api.moonshot.ai", "moonshot_ai"),
        ("api.cohere.com", "cohere"),
        ("api.perplexity.ai", "perplexity"),
        ("my-resource.openai.azure.com", "azure.ai.openai"),
        ("my-project.services.ai.azure.com", "azure.ai.inference"),
        ("us-south.ml.cloud.ibm.com", "ibm.watsonx.ai"),
        ("aiplatform.googleapis.com", "gcp.vertex_ai"),
        ("vllm.internal", "openai"),  # an unknown host: its wire format's owner
    ],
)
def test_providers_get_the_names_the_conventions_list(host: str, provider: str) -> None:
    from otel_tokens._http.route import recognise

    route = recognise("POST", host, "/v1/chat/completions", query="", headers={}, body=None,
                      port=443)  # fmt: skip
    assert route is not None
    assert (route.provider, route.server_port, route.operation) == (provider, 443, "chat")
