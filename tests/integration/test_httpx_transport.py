"""The real openai and anthropic SDKs, and plain httpx, through MeteredTransport to a local
server that answers with the providers' documented payloads; metrics are checked against
numbers worked out by hand (tests/payloads/SOURCES.md)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from otel_tokens.httpx import AsyncMeteredTransport, MeteredTransport
from otel_tokens.testing import InMemoryMetrics
from tests.helpers.fake_providers import FakeProviders

KEY = "sk-test-0123456789abcdef"
SECRET = "a-deployment-secret-of-32-bytes!"
# The Anthropic fixtures are documented claude-sonnet-4-5 responses, a model the SDK now
# warns about when asked for.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The model 'claude-sonnet-4-5' is deprecated:DeprecationWarning"
)
_opened: list[httpx2.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def _http_client(transport: MeteredTransport) -> httpx2.Client:
    client = httpx2.Client(transport=transport)
    _opened.append(client)
    return client


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProviders]:
    with FakeProviders() as running:
        yield running


@pytest.fixture
def metrics() -> InMemoryMetrics:
    return InMemoryMetrics(opt_in_attributes=["llm.api_key.id"], api_key_secret=SECRET)


def openai_client(server: FakeProviders, metrics: InMemoryMetrics) -> openai.OpenAI:
    transport = MeteredTransport(metrics.tracker, transport=httpx2.HTTPTransport())
    return openai.OpenAI(
        api_key=KEY, base_url=server.base_url + "/v1", max_retries=0,
        http_client=_http_client(transport),
    )  # fmt: skip


def anthropic_client(server: FakeProviders, metrics: InMemoryMetrics) -> anthropic.Anthropic:
    transport = MeteredTransport(metrics.tracker, transport=httpx2.HTTPTransport())
    return anthropic.Anthropic(
        api_key=KEY, base_url=server.base_url, max_retries=0,
        http_client=_http_client(transport),
    )  # fmt: skip


def counters(metrics: InMemoryMetrics, **labels: Any) -> tuple[float | None, ...]:
    names = ("input_tokens", "output_tokens", "cache_read.input_tokens",
             "cache_write.input_tokens", "reasoning.output_tokens")  # fmt: skip
    return tuple(metrics.value(f"llm.usage.{n}", **labels) for n in names)


def test_openai_chat_through_the_real_sdk(server: FakeProviders, metrics: InMemoryMetrics) -> None:
    client = openai_client(server, metrics)
    reply = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.usage is not None and reply.usage.prompt_tokens == 2463  # the caller's data intact
    labels = {"model": "gpt-4.1-2025-04-14", "request_model": "gpt-4.1", "provider": "openai"}
    assert counters(metrics, **labels) == (2463, 891, 1920, 0, 448)
    # gpt-4.1 (bundled): 543 uncached * $2 + 1920 cached * $0.50 + 891 output * $8 per million
    assert metrics.value("llm.usage.cost", **labels) == pytest.approx(0.009174, abs=1e-12)
    assert metrics.value("llm.requests", **labels, status="success", streaming=False) == 1
    assert metrics.value("llm.requests", server_address="127.0.0.1") == 1
    assert metrics.histogram("gen_ai.client.operation.duration", **labels).count == 1


def test_the_raw_key_never_reaches_the_metrics(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    from otel_tokens._base.fingerprint import KeyFingerprinter

    openai_client(server, metrics).embeddings.create(model="text-embedding-3-small", input="x")
    (point,) = metrics.points("llm.requests")
    assert point.attributes["llm.api_key.id"] == KeyFingerprinter(SECRET)(KEY)
    assert KEY not in repr(metrics.metrics())
    assert metrics.value("llm.usage.input_tokens", operation="embeddings") == 37


def test_openai_cache_write_tokens(server: FakeProviders, metrics: InMemoryMetrics) -> None:
    openai_client(server, metrics).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}], prompt_cache_key="k"
    )
    assert counters(metrics) == (15342, 517, 12032, 3186, 211)


def test_openai_stream_with_usage(server: FakeProviders, metrics: InMemoryMetrics) -> None:
    stream = openai_client(server, metrics).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text  # the caller got every chunk
    assert counters(metrics, streaming=True) == (1362, 8, 1152, 0, 0)
    assert metrics.value("llm.requests", status="success", streaming=True) == 1
    ttft = metrics.histogram("gen_ai.client.operation.time_to_first_chunk")
    assert ttft.count == 1


def test_openai_stream_without_usage_is_flagged(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    stream = openai_client(server, metrics).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    list(stream)
    assert metrics.value("llm.requests", status="success", usage_problem="missing") == 1


def test_openai_responses_api_plain_and_streamed(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    client = openai_client(server, metrics)
    client.responses.create(model="gpt-5.6", input="hi")
    assert counters(metrics, streaming=False) == (5231, 1378, 4096, 1024, 1024)
    list(client.responses.create(model="gpt-5.6", input="hi", stream=True))
    assert counters(metrics, streaming=True) == (3187, 8, 2944, 0, 0)


def test_anthropic_messages_through_the_real_sdk(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    client = anthropic_client(server, metrics)
    client.messages.create(model="claude-sonnet-4-5", max_tokens=100,
                           messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    labels = {"provider": "anthropic", "streaming": False}
    assert counters(metrics, **labels) == (16832, 761, 12032, 4488, 0)
    # bundled claude-sonnet-4-5: 312*$3 + 12032*$0.30 + 3400*$3.75 + 1088*$6 + 761*$15 per M
    assert metrics.value("llm.usage.cost", **labels) == pytest.approx(0.0352386, abs=1e-12)
    hello = [{"role": "user", "content": "hi"}]
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=100, messages=hello
    ) as stream:
        assert "Canberra" in stream.get_final_text()
    assert counters(metrics, provider="anthropic", streaming=True) == (8244, 187, 6144, 2048, 0)


def test_async_clients_through_async_transport(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    async def main() -> None:
        transport = AsyncMeteredTransport(metrics.tracker, transport=httpx2.AsyncHTTPTransport())
        async with httpx2.AsyncClient(transport=transport) as http:
            oai = openai.AsyncOpenAI(api_key=KEY, base_url=server.base_url + "/v1",
                                     max_retries=0, http_client=http)  # fmt: skip
            ant = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.base_url,
                                           max_retries=0, http_client=http)  # fmt: skip
            await oai.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
            )
            stream = await ant.messages.create(
                model="claude-sonnet-4-5", max_tokens=10, stream=True,
                messages=[{"role": "user", "content": "hi"}],
            )  # fmt: skip
            async for _ in stream:
                pass

    asyncio.run(main())
    assert counters(metrics, provider="openai") == (2463, 891, 1920, 0, 448)
    assert counters(metrics, provider="anthropic") == (8244, 187, 6144, 2048, 0)
    assert metrics.value("llm.requests") == 2


def test_long_streams_through_the_real_sdks_sync_and_async(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    """Streams many times longer than what the transport reads at once (its chunks are let
    go unread but for the closing events) give the same numbers, and every byte to the caller."""
    long = {"x-test-behavior": "long"}
    hello = [{"role": "user", "content": "hi"}]
    chunks = openai_client(server, metrics).chat.completions.create(
        model="gpt-4.1", messages=hello, stream=True, stream_options={"include_usage": True},
        extra_headers=long,
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 5_000
    assert counters(metrics, provider="openai") == (1362, 8, 1152, 0, 0)

    async def main() -> int:
        transport = AsyncMeteredTransport(metrics.tracker, transport=httpx2.AsyncHTTPTransport())
        async with httpx2.AsyncClient(transport=transport) as http:
            client = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.base_url,
                                              max_retries=0, http_client=http)  # fmt: skip
            stream = await client.messages.create(
                model="claude-sonnet-4-5", max_tokens=10, stream=True, messages=hello,
                extra_headers=long,
            )  # fmt: skip
            return sum([1 async for event in stream if event.type == "content_block_delta"])

    assert asyncio.run(main()) > 1000
    assert counters(metrics, provider="anthropic") == (8244, 187, 6144, 2048, 0)
    assert metrics.value("llm.requests", status="success") == 2


def test_the_model_of_a_long_prompt_is_found_without_parsing_it(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    prompt = 'a long "document", with a "model": "decoy" in it. ' * 8000  # ~400 KB
    openai_client(server, metrics).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": prompt}],
        metadata={"model": "another-decoy"},
    )  # fmt: skip
    assert metrics.value("llm.requests", request_model="gpt-4.1") == 1


def test_plain_httpx_gets_httpx_responses_with_unchanged_bytes(server: FakeProviders) -> None:
    metrics = InMemoryMetrics()
    url = server.base_url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    with httpx.Client() as plain:
        expected = plain.post(url, json={}).content
    with httpx.Client(
        transport=MeteredTransport(metrics.tracker, transport=httpx.HTTPTransport())
    ) as c:
        response = c.post(url, json={}, headers={"x-goog-api-key": KEY})
        assert isinstance(response, httpx.Response)
        assert response.content == expected
        c.post(server.base_url + "/v1beta/models/gemini-2.5-flash:generateContent", json={})
    labels = {"provider": "gcp.gemini", "operation": "generate_content"}
    assert counters(metrics, **labels, streaming=True) == (1024, 806, 0, 0, 795)
    assert counters(metrics, **labels, streaming=False) == (4408, 1578, 3072, 0, 1187)


def test_default_transport_is_httpx2(server: FakeProviders, metrics: InMemoryMetrics) -> None:
    with httpx2.Client(transport=MeteredTransport(metrics.tracker)) as client:
        response = client.post(server.base_url + "/v1/embeddings", json={"model": "m"})
    assert isinstance(response, httpx2.Response)
    assert metrics.value("llm.usage.input_tokens", request_model="m") == 37


def test_gzip_json_is_read(server: FakeProviders, metrics: InMemoryMetrics) -> None:
    with httpx2.Client(transport=MeteredTransport(metrics.tracker)) as client:
        client.post(server.base_url + "/v1/chat/completions", json={"model": "gpt-4.1"},
                    headers={"x-test-behavior": "gzip"})  # fmt: skip
    assert counters(metrics) == (2463, 891, 1920, 0, 448)


def test_rate_limited_request_is_one_error(server: FakeProviders, metrics: InMemoryMetrics) -> None:
    client = openai_client(server, metrics)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-test-behavior": "429"},
        )  # fmt: skip
    assert metrics.value("llm.requests", status="error", error_type="rate_limited") == 1
    assert metrics.value("llm.requests") == 1


def test_connection_failure_is_one_error(metrics: InMemoryMetrics) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    client = openai.OpenAI(
        api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0,
        http_client=_http_client(MeteredTransport(metrics.tracker)),
    )  # fmt: skip
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "x"}])
    assert metrics.value("llm.requests", status="error", error_type="ConnectError",
                         request_model="gpt-4.1") == 1  # fmt: skip


def test_a_stream_the_caller_abandons_is_canceled_with_usage_so_far(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    client = anthropic_client(server, metrics)
    stream = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, stream=True,
        messages=[{"role": "user", "content": "hi"}], extra_headers={"x-test-behavior": "slow"},
    )  # fmt: skip
    for event in stream:
        if event.type == "content_block_delta":
            break
    stream.close()
    labels = {"status": "canceled", "usage_problem": "partial"}
    assert metrics.value("llm.requests", **labels) == 1
    assert metrics.value("llm.usage.input_tokens", **labels) == 8244
    assert metrics.value("llm.requests") == 1


def test_a_connection_dropped_mid_stream_is_one_error(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    client = anthropic_client(server, metrics)
    with pytest.raises(Exception):  # noqa: B017 - whichever error the SDK raises
        stream = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=100, stream=True,
            messages=[{"role": "user", "content": "hi"}], extra_headers={"x-test-behavior": "drop"},
        )  # fmt: skip
        list(stream)
    assert metrics.value("llm.requests", status="error") == 1
    assert metrics.value("llm.requests") == 1


def test_requests_that_are_not_llm_calls_are_not_recorded(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    openai_client(server, metrics).models.list()
    assert metrics.points("llm.requests") == []


def test_per_request_labels_come_from_the_request_extensions(
    server: FakeProviders, metrics: InMemoryMetrics
) -> None:
    from otel_tokens._base.fingerprint import KeyFingerprinter

    transport = MeteredTransport(metrics.tracker, scenario="openai")
    with httpx2.Client(transport=transport) as client:
        client.post(
            server.base_url + "/v1/embeddings", json={"model": "m"},
            extensions={"otel_tokens": {"user_tier": "pro", "team": "search",
                                        "api_key": "caller-key"}},
        )  # fmt: skip
    (point,) = metrics.points("llm.requests")
    assert point.attributes["llm.user.tier"] == "pro"
    assert point.attributes["llm.team"] == "search"
    assert point.attributes["llm.scenario"] == "openai"
    assert point.attributes["llm.api_key.id"] == KeyFingerprinter(SECRET)("caller-key")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"tracker": object()}, "needs a TokenTracker, got object"),
        ({"transport": object()}, "must have a handle_request() method"),
        ({"scenario": ""}, "scenario= must be a non-empty str or None, got ''"),
    ],
)
def test_bad_settings_raise_at_setup(kwargs: dict[str, Any], words: str) -> None:
    options: dict[str, Any] = {"tracker": InMemoryMetrics().tracker, **kwargs}
    with pytest.raises(ValueError) as raised:
        MeteredTransport(**options)
    assert words in str(raised.value)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize("failure", ["429", "refused"])
def test_a_streamed_request_that_fails_before_streaming_is_still_streamed(
    server: FakeProviders, metrics: InMemoryMetrics, sdk: str, failure: str
) -> None:
    """The request asked for a stream: its failure belongs with the streamed requests
    (`llm.streaming=true`), whether the answer was an error body or no answer at all."""
    base_url = server.base_url
    if failure == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base_url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    headers = {"x-test-behavior": failure}
    http_client = _http_client(MeteredTransport(metrics.tracker))
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(Exception):  # noqa: B017 - RateLimitError or APIConnectionError
        if sdk == "openai":
            oai = openai.OpenAI(api_key=KEY, base_url=base_url + "/v1", max_retries=0,
                                http_client=http_client)  # fmt: skip
            list(oai.chat.completions.create(model="gpt-4.1", messages=messages,  # type: ignore[arg-type]
                                             stream=True, extra_headers=headers))  # fmt: skip
        else:
            client = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0,
                                         http_client=http_client)  # fmt: skip
            list(client.messages.create(model="claude-sonnet-4-5", max_tokens=10, stream=True,
                                        messages=messages, extra_headers=headers))  # type: ignore[arg-type]  # fmt: skip
    assert metrics.value("llm.requests", status="error", streaming=True) == 1
    assert metrics.value("llm.requests") == 1


def test_cache_economics_of_real_sdk_responses_match_the_hand_computed_figures(
    server: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payloads' cache tokens at the bundled prices, worked out by hand."""
    monkeypatch.delenv("OTEL_TOKENS_PRICE_FILE", raising=False)
    metrics = InMemoryMetrics()
    anthropic_client(server, metrics).messages.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    openai_client(server, metrics).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
    )
    # claude-sonnet-4-5 ($3 input, $0.30 read, $3.75 5-minute and $6 1-hour writes): 12,032
    # read, 3,400 written for 5 minutes and 1,088 for an hour.
    claude = {"model": "claude-sonnet-4-5-20250929"}
    assert metrics.value("llm.usage.cache_savings", **claude) == pytest.approx(0.0324864)
    assert metrics.value("llm.usage.cache_write_premium", **claude) == pytest.approx(0.005814)
    # gpt-4.1 ($2 input, $0.50 cached, writes free): 1,920 cached.
    gpt = {"model": "gpt-4.1-2025-04-14"}
    assert metrics.value("llm.usage.cache_savings", **gpt) == pytest.approx(0.00288)
    assert metrics.value("llm.usage.cache_write_premium", **gpt) == 0
