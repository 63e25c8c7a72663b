"""The HTTP transport in the setups and faults a gateway meets: plain httpx with no inner
transport, the other library's transport, huge bodies, failed streams."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest

from otel_tokens.httpx import AsyncMeteredTransport, MeteredTransport
from otel_tokens.testing import InMemoryMetrics
from tests.helpers.fake_providers import FakeProviders


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProviders]:
    with FakeProviders() as running:
        yield running


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_the_one_line_setup_works_with_either_library(server: FakeProviders, library: type) -> None:
    metrics = InMemoryMetrics()
    with library.Client(transport=MeteredTransport(metrics.tracker)) as client:
        response = client.post(server.base_url + "/v1/embeddings", json={"model": "m"})
    assert isinstance(response, library.Response)
    assert response.status_code == 200
    assert metrics.value("llm.requests", status="success", request_model="m") == 1
    assert metrics.value("llm.usage.input_tokens", request_model="m") == 37


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_the_one_line_setup_works_with_either_async_library(
    server: FakeProviders, library: type
) -> None:
    metrics = InMemoryMetrics()

    async def call() -> object:
        async with library.AsyncClient(transport=AsyncMeteredTransport(metrics.tracker)) as c:
            return await c.post(server.base_url + "/v1/embeddings", json={"model": "m"})

    response = asyncio.run(call())
    assert isinstance(response, library.Response)
    assert metrics.value("llm.requests", status="success", request_model="m") == 1


def test_one_transport_serves_clients_of_both_libraries(server: FakeProviders) -> None:
    metrics = InMemoryMetrics()
    transport = MeteredTransport(metrics.tracker)
    with httpx.Client(transport=transport) as old, httpx2.Client(transport=transport) as new:
        assert isinstance(old.post(server.base_url + "/v1/embeddings", json={}), httpx.Response)
        assert isinstance(new.post(server.base_url + "/v1/embeddings", json={}), httpx2.Response)
    assert metrics.value("llm.requests", status="success") == 2


@pytest.mark.parametrize(
    ("client_library", "transport_library"), [(httpx, httpx2), (httpx2, httpx)],
    ids=["httpx_client_httpx2_transport", "httpx2_client_httpx_transport"],
)  # fmt: skip
def test_the_other_librarys_transport_is_refused_with_the_fix(
    server: FakeProviders, client_library: type, transport_library: type
) -> None:
    metrics = InMemoryMetrics()
    transport = MeteredTransport(metrics.tracker, transport=transport_library.HTTPTransport())
    with (
        client_library.Client(transport=transport) as client,
        pytest.raises(TypeError, match=rf"pass transport={client_library.__name__}\.HTTPTransport"),
    ):
        client.post(server.base_url + "/v1/embeddings", json={})
    assert metrics.value("llm.requests") == 0  # a setup mistake, not an LLM request


def _openai(server: FakeProviders, metrics: InMemoryMetrics, base_url: str | None = None) -> Any:
    import openai

    client = httpx2.Client(transport=MeteredTransport(metrics.tracker))
    return openai.OpenAI(api_key="sk-test", base_url=base_url or server.base_url + "/v1",
                         max_retries=0, http_client=client)  # fmt: skip


@pytest.mark.parametrize("stream", [True, False])
def test_a_failed_request_keeps_whether_it_asked_to_stream(
    server: FakeProviders, stream: bool
) -> None:
    import anthropic
    import openai

    metrics = InMemoryMetrics()
    with pytest.raises(openai.RateLimitError):
        _openai(server, metrics).chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}], stream=stream,
            extra_headers={"x-test-behavior": "429"},
        )  # fmt: skip
    claude = anthropic.Anthropic(
        api_key="sk-test", base_url=server.base_url, max_retries=0,
        http_client=httpx2.Client(transport=MeteredTransport(metrics.tracker)),
    )  # fmt: skip
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model="claude-sonnet-4-5", max_tokens=10, stream=stream,
            messages=[{"role": "user", "content": "hi"}], extra_headers={"x-test-behavior": "429"},
        )  # fmt: skip
    gemini = "streamGenerateContent?alt=sse" if stream else "generateContent"
    with httpx2.Client(transport=MeteredTransport(metrics.tracker)) as client:
        client.post(f"{server.base_url}/v1beta/models/gemini-2.5-flash:{gemini}", json={},
                    headers={"x-test-behavior": "429"})  # fmt: skip
    assert metrics.value("llm.requests", error_type="rate_limited", streaming=stream) == 3
    assert metrics.value("llm.requests", streaming=not stream) == 0


def test_a_stream_whose_connection_fails_is_labelled_streamed() -> None:
    import socket

    import openai

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = InMemoryMetrics()
    client = _openai(None, metrics, base_url=f"http://127.0.0.1:{port}/v1")  # type: ignore[arg-type]
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert metrics.value("llm.requests", status="error", streaming=True) == 1


def test_a_key_in_the_extension_as_bytes_gets_the_same_id_as_the_same_key_as_str(
    server: FakeProviders,
) -> None:
    metrics = InMemoryMetrics(opt_in_attributes=["llm.api_key.id"], api_key_secret="s" * 32)
    with httpx2.Client(transport=MeteredTransport(metrics.tracker)) as client:
        for key in ("sk-caller-1", b"sk-caller-1"):  # ASGI servers hand headers over as bytes
            client.post(server.base_url + "/v1/embeddings", json={"model": "m"},
                        extensions={"otel_tokens": {"api_key": key}})  # fmt: skip
    [point] = metrics.points("llm.requests")
    assert point.value == 2 and point.attributes["llm.api_key.id"]
