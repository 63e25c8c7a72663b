"""Turn any provider's response or stream into a `Usage` in the package's one meaning.

Each function takes the response as parsed JSON or as the provider SDK's object (no SDK is
imported here), never raises on bad data, and flags what it could not read on
`Usage.usage_problem`. Each stream accumulator folds events as they pass.

Example:
    >>> from otel_tokens.providers import from_anthropic
    >>> usage = from_anthropic({"model": "claude-haiku-4-5", "usage": {
    ...     "input_tokens": 20, "cache_read_input_tokens": 3000, "output_tokens": 90}},
    ...     scenario="claude_code")
    >>> usage.input_tokens, usage.cache_read_tokens
    (3020, 3000)
"""

from otel_tokens.providers._anthropic import from_anthropic
from otel_tokens.providers._bedrock import from_bedrock
from otel_tokens.providers._gemini import from_gemini
from otel_tokens.providers._openai import from_openai
from otel_tokens.providers._read import UNKNOWN_MODEL, UsageFields
from otel_tokens.providers._stream import (
    AnthropicStream,
    BedrockStream,
    GeminiStream,
    OpenAIStream,
    StreamAccumulator,
)

__all__ = [
    "UNKNOWN_MODEL",
    "AnthropicStream",
    "BedrockStream",
    "GeminiStream",
    "OpenAIStream",
    "StreamAccumulator",
    "UsageFields",
    "from_anthropic",
    "from_bedrock",
    "from_gemini",
    "from_openai",
]
