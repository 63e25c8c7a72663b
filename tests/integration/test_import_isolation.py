"""What importing the package pulls in, seen from a fresh interpreter: the core needs only
opentelemetry-api, and the normalizers import no provider SDK. (Split out of
tests/unit/test_public_api.py and test_providers.py: each runs a Python subprocess.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_core_imports_and_records_without_the_sdk() -> None:
    script = textwrap.dedent("""
        import sys
        for name in ("opentelemetry.sdk", "prometheus_client", "grpc"):
            sys.modules[name] = None  # as if not installed
        from opentelemetry.metrics import NoOpMeter
        from otel_tokens import TokenTracker, Usage
        tracker = TokenTracker(NoOpMeter("core-only"))
        tracker.record(Usage(provider="openai", model="gpt-4o", input_tokens=1))
        with tracker.track(provider="openai", model="gpt-4o") as req:
            req.input_tokens = 2
        tracker.flush()
        print("ok")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_normalizing_does_not_import_any_provider_sdk() -> None:
    import subprocess
    import sys

    code = (
        "import sys, otel_tokens.providers as p\n"
        "p.from_openai({'usage': {'prompt_tokens': 1}})\n"
        "bad = [m for m in ('openai', 'anthropic', 'google.genai', 'boto3', 'httpx', 'httpx2')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
