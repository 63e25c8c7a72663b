"""Where the tests' files are, wherever the module asking lives under tests/."""

from __future__ import annotations

from pathlib import Path

#: The tests/ folder.
TESTS = Path(__file__).resolve().parent.parent
#: The repository's root (README.md, benchmarks/, otel_tokens/).
ROOT = TESTS.parent
#: The providers' documented payloads (sources in tests/payloads/SOURCES.md).
PAYLOADS = TESTS / "payloads"
