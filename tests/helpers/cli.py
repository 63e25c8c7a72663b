"""Running `otel-tokens` in the test's own process, as a user would type it."""

from __future__ import annotations

import pytest

from otel_tokens.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`otel-tokens ARGV...`: its exit status, standard output and standard error."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err
