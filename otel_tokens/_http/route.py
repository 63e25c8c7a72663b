"""Which LLM API an outgoing HTTP request calls: wire format, provider, model, key.

Recognised from the request alone (host, path, headers, body) so that the transport can
meter the response as it streams. Requests that are not LLM calls (model lists, file
uploads, token counting) get no route and pass through unmetered.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

#: Host suffix → `gen_ai.provider.name`.
_PROVIDER_BY_HOST = (
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.inference"),
    (".inference.ai.azure.com", "azure.ai.inference"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    (".amazonaws.com", "aws.bedrock"),
    ("api.deepseek.com", "deepseek"),
    ("api.groq.com", "groq"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.moonshot.ai", "moonshot_ai"),
    ("api.moonshot.cn", "moonshot_ai"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    (".ml.cloud.ibm.com", "ibm.watsonx.ai"),
)
#: What a server on an unknown host (vLLM, a local proxy) is called: its wire format's owner.
_PROVIDER_BY_WIRE = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "bedrock": "aws.bedrock",
}
_GEMINI_PATH = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")
_BEDROCK_PATH = re.compile(r"/model/([^/]+)/(converse|converse-stream)$")
_AZURE_DEPLOYMENT = re.compile(r"/deployments/([^/]+)/")
_OPENAI_ENDPOINTS = ("/chat/completions", "/completions", "/responses", "/embeddings")
#: Bodies larger than this are searched for "model" instead of parsed whole.
_PARSE_LIMIT = 256 * 1024
_MODEL_KEY = re.compile(rb'"model"\s*:\s*"')


@dataclass(frozen=True, slots=True)
class Route:
    """An LLM call: how to read its response and what is known before it arrives."""

    wire: str  # "openai", "anthropic", "gemini" or "bedrock"
    provider: str
    #: The model named in the path (Gemini, Bedrock, an Azure deployment), if any.
    path_model: str | None
    server_address: str | None
    #: The upstream's port: the URL's, or its scheme's default.
    server_port: int | None
    #: A secret: never in the repr (the transport hands on only its fingerprint).
    api_key: str | None = field(repr=False)
    #: The response is a stream this package cannot read (Bedrock's binary event stream).
    unreadable_stream: bool = False
    #: The request's body, where OpenAI and Anthropic requests name their model (and whose
    #: prompt is the caller's business: not in the repr either).
    body: bytes | None = field(default=None, repr=False)
    #: The path says the response streams (Gemini's streamGenerateContent, Bedrock's
    #: converse-stream); OpenAI and Anthropic say so in the body.
    stream_path: bool = False
    #: `gen_ai.operation.name` as the path says it (the response may say more precisely).
    operation: str = "chat"

    def asked_to_stream(self) -> bool:
        """Whether the request asked for a streamed response (off the request path too:
        the body may be long)."""
        if self.stream_path:
            return True
        if not self.body or self.wire not in ("openai", "anthropic"):
            return False
        try:
            return _body_streams(self.body)
        except Exception:  # RecursionError from a deeply nested body, and the like
            return False

    def request_model(self) -> str | None:
        """The model the request asked for. Finding it in a body of many kilobytes takes
        time, so the transports call this off the request path."""
        if self.body and self.wire in ("openai", "anthropic"):
            try:
                model = _body_model(self.body)
            except Exception:  # RecursionError from a deeply nested body, and the like
                model = None
            if model is not None:
                return model
        return self.path_model


def recognise(
    method: str,
    host: str,
    path: str,
    *,
    query: str,
    headers: Mapping[str, str],
    body: bytes | None,
    port: int | None = None,
) -> Route | None:
    """The route of a request, or None when it is not an LLM call we meter."""
    if method != "POST":
        return None
    wire, model, unreadable = _wire(path, headers)
    if wire is None:
        return None
    if model is None and wire == "openai":
        deployment = _AZURE_DEPLOYMENT.search(path)
        model = unquote(deployment.group(1)) if deployment else None
    return Route(
        wire=wire,
        provider=_provider(host, wire),
        path_model=model,
        server_address=host or None,
        server_port=port if host else None,
        api_key=_api_key(headers, query),
        unreadable_stream=unreadable,
        body=body or None,
        stream_path=path.rstrip("/").endswith((":streamGenerateContent", "/converse-stream")),
        operation=_operation(wire, path),
    )


def _operation(wire: str, path: str) -> str:
    """The conventions' operation name for an endpoint."""
    path = path.rstrip("/")
    if wire == "gemini":
        return "generate_content"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        return "text_completion"
    if wire == "anthropic" and path.endswith("/complete"):
        return "text_completion"
    return "chat"


def _wire(path: str, headers: Mapping[str, str]) -> tuple[str | None, str | None, bool]:
    path = path.rstrip("/")
    gemini = _GEMINI_PATH.search(path)
    if gemini:
        return "gemini", unquote(gemini.group(1)), False
    bedrock = _BEDROCK_PATH.search(path)
    if bedrock:
        return "bedrock", unquote(bedrock.group(1)), bedrock.group(2) == "converse-stream"
    if path.endswith("/messages"):
        return "anthropic", None, False
    if path.endswith(_OPENAI_ENDPOINTS):
        return "openai", None, False
    if "anthropic-version" in headers and path.endswith("/complete"):
        return "anthropic", None, False
    return None, None, False


@functools.lru_cache(maxsize=256)
def _provider(host: str, wire: str) -> str:
    host = host.lower()
    for suffix, provider in _PROVIDER_BY_HOST:
        if host == suffix.lstrip(".") or host.endswith(suffix):
            return provider
    return _PROVIDER_BY_WIRE[wire]


def _body_model(body: bytes) -> str | None:
    if len(body) <= _PARSE_LIMIT:
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        model = parsed.get("model") if isinstance(parsed, dict) else None
        return model if isinstance(model, str) and model else None
    # A long prompt: find the top-level "model" string without parsing the whole body.
    # Inside JSON strings quotes are escaped, so a bare `"model": "` is a key.
    for match in _MODEL_KEY.finditer(body):
        try:
            window = body[match.end() - 1 : match.end() + 512].decode("utf-8", "ignore")
            value, _ = json.JSONDecoder().raw_decode(window)
        except ValueError:
            continue
        if isinstance(value, str) and value:
            return value
    return None


_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')


def _body_streams(body: bytes) -> bool:
    if len(body) <= _PARSE_LIMIT:
        try:
            parsed = json.loads(body)
        except ValueError:
            return False
        return isinstance(parsed, dict) and parsed.get("stream") is True
    # A long prompt: a bare `"stream": true` is a key, since quotes inside strings are escaped.
    return _STREAM_TRUE.search(body) is not None


def _api_key(headers: Mapping[str, str], query: str) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "bearer" and credential:
            return credential.strip()
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return value
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "key" and value:
            return unquote(value)
    return None
