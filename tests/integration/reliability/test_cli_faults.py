"""The command line when its reader goes away and when its flags are wrong: quiet as a Unix
tool, and every error names the flag to change, never a Python argument."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_tokens import Usage, UsageLedger
from tests.conftest import ROOT, SECRET

CLI = [sys.executable, "-m", "otel_tokens"]


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger whose every listing is far more than a pipe holds (64 KiB)."""
    path = tmp_path_factory.mktemp("cli") / "usage.db"
    with UsageLedger(path, api_key_secret=SECRET) as ledger:
        for n in range(3000):
            ledger.record(Usage(provider="openai", model=f"model-{n % 50}", input_tokens=n + 1,
                                api_key=f"sk-{n}"))  # fmt: skip
    return path


def _piped(args: list[str]) -> tuple[int, str]:
    """Run the command into `head -c 1`, which exits at once; its exit status and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_TOKENS_API_KEY_SECRET": SECRET}
    command = subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert command.stdout is not None and command.stderr is not None
    head = subprocess.run(["head", "-c", "1"], stdin=command.stdout, capture_output=True,
                          check=True, timeout=60)  # fmt: skip
    command.stdout.close()  # only head holds the pipe's reading end now
    assert head.stdout
    errors = command.stderr.read().decode()
    return command.wait(60), errors


@pytest.mark.parametrize(
    "args",
    [
        ["usage", "--by", "key,model"],
        ["usage", "--by", "key", "--format", "json"],
        ["usage", "--by", "key,model", "--format", "csv"],
        ["export"],
    ],
    ids=["table", "json", "csv", "export"],
)
def test_a_reader_that_goes_away_ends_the_command_quietly(
    big_ledger: Path, args: list[str]
) -> None:
    status, errors = _piped([*args, "--ledger", str(big_ledger)])
    assert "Broken pipe" not in errors and "Traceback" not in errors, errors
    assert "error" not in errors, errors
    assert status == 141  # as a Unix tool killed by SIGPIPE: 128 + 13


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["serve-metrics", "--dir", ".", "--port", "99999"], "argument --port: must be a port"),
        (["demo", "--port", "-5"], "argument --port: must be a port"),
        (["demo", "--concurrency", "0"], "argument --concurrency: must be a whole number"),
        (["demo", "--duration", "0"], "argument --duration"),
    ],
)
def test_errors_name_the_flag_not_the_python_argument(
    args: list[str], words: str, tmp_path: Path
) -> None:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert words in done.stderr, done.stderr
    for python_name in ("prometheus_port", "prometheus_host", "api_key=", "key_id=", "_s "):
        assert python_name not in done.stderr, done.stderr


def test_looking_up_a_key_without_the_secret_names_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with UsageLedger(path, api_key_secret=SECRET) as ledger:
        ledger.record(Usage(provider="openai", model="m", api_key="sk-1"))
    env = {k: v for k, v in os.environ.items() if k != "OTEL_TOKENS_API_KEY_SECRET"}
    done = subprocess.run([*CLI, "usage", "--ledger", str(path), "--key", "sk-1"],
                          capture_output=True, text=True, check=False, timeout=60,
                          env={**env, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 2
    assert "set OTEL_TOKENS_API_KEY_SECRET" in done.stderr
    assert "--key-id" in done.stderr
    assert "sk-1" not in done.stderr


@pytest.mark.parametrize("command", [["demo", "--duration", "1"], ["serve-metrics", "--dir", "."]])
def test_a_port_in_use_names_the_flag(command: list[str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*CLI, *command, "--port", str(port)], capture_output=True,
                              text=True, cwd=tmp_path, check=False, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 2
    assert f"cannot serve Prometheus metrics on 127.0.0.1:{port}" in done.stderr
    assert "pass another --port (0 picks a free port)" in done.stderr, done.stderr
    assert "prometheus_port" not in done.stderr
