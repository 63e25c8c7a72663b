"""The ledger's commands, run as `otel-tokens ...` is: tables a person reads, JSON and CSV a
program reads, and prune, reset, export and import against SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from otel_tokens import ModelPrice, PriceTable, Usage, UsageLedger
from otel_tokens._cli.report import dollars, short
from otel_tokens.cli import main
from tests.conftest import SECRET

NOW = datetime.now(timezone.utc)
PRICES = PriceTable({"gpt-4o-mini": ModelPrice(input="0.15", output="0.60")})


@pytest.fixture
def filled(target: str) -> str:
    """A ledger with 1.2M input tokens on one key and 300k on another, and web searches."""
    with UsageLedger(target, prices=PRICES, api_key_secret=SECRET) as ledger:
        for key, tokens in (("sk-alice", 1_000_000), ("sk-alice", 200_000), ("sk-bob", 300_000)):
            ledger.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=tokens,
                                output_tokens=tokens // 10, api_key=key), at=NOW)  # fmt: skip
        ledger.record(Usage(provider="vllm", model="Qwen/Qwen3-32B", input_tokens=5000,
                            api_key="sk-bob"), at=NOW)  # fmt: skip
        ledger.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=9,
                            api_key="sk-bob"), at=NOW - timedelta(days=200))  # fmt: skip
        searches = ledger.custom_meter("web_search.calls", unit="{call}", aggregation="count",
                                       dimensions=["engine"])  # fmt: skip
        for engine in ("bing", "bing", "brave"):
            searches.record(dimensions={"engine": engine}, api_key="sk-alice", at=NOW)
    return target


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TOKENS_API_KEY_SECRET", SECRET)
    monkeypatch.delenv("OTEL_TOKENS_LEDGER", raising=False)


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0, "0"),
        (950, "950"),
        (12_345, "12.3k"),
        (1_200_000, "1.2M"),
        (3_400_000_000, "3.4B"),
        (123_456_789, "123M"),
        (0.5, "0.5"),
    ],
)
def test_numbers_are_short(number: float, text: str) -> None:
    assert short(number) == text


def test_money_reads_as_money() -> None:
    from decimal import Decimal

    assert dollars(Decimal("3.4087")) == "$3.41"
    assert dollars(Decimal("1234.5")) == "$1,234.50"
    assert dollars(Decimal("0.0042")) == "$0.0042"
    assert dollars(Decimal("0.00001")) == "<$0.0001"
    assert dollars(Decimal(0)) == "$0.00"


def test_usage_by_key_reads_well_in_a_terminal(
    filled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "usage", "--ledger", filled, "--by", "key,model")
    assert status == 0
    lines = out.splitlines()
    assert "UTC" in lines[0]
    heading = lines[2].split()
    assert heading[:6] == ["key", "model", "requests", "failed", "input", "output"]
    assert "canceled" not in heading and "reasoning" not in heading  # none: no column
    alice = next(line for line in lines if "gpt-4o-mini" in line and "1.2M" in line)
    # 1.2M input at $0.15/M + 120k output at $0.60/M = $0.18 + $0.072
    assert "$0.25" in alice.split()
    qwen = next(line for line in lines if "Qwen" in line)
    assert qwen.split()[-4:-2] == ["-", "5.0k"]  # no price: no $0, its tokens shown apart
    assert lines[-2].startswith("total") or lines[-1].startswith("unpriced")
    total = next(line for line in lines if line.startswith("total"))
    assert "1.5M" in total.split()  # the old request is outside today


def test_json_and_csv_hold_every_digit(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "usage", "--ledger", filled, "--by", "key", "--format", "json")
    assert status == 0
    rows = json.loads(out)["rows"]
    assert sorted(r["input_tokens"] for r in rows) == [305_000, 1_200_000]
    assert sum(int(r["cost_pico"]) for r in rows) == (1_500_000 * 150_000 + 150_000 * 600_000)
    status, out, _ = run(capsys, "usage", "--ledger", filled, "--period", "all", "--format", "csv")
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["requests"], row["input_tokens"], row["cost_usd"]) == ("5", "1505009", "0.31500135")


def test_one_key_and_a_meter(filled: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "usage", "--ledger", filled, "--key", "sk-bob", "--format",
                         "json")  # fmt: skip
    assert [r["requests"] for r in json.loads(out)["rows"]] == [2]
    status, out, _ = run(capsys, "usage", "--ledger", filled, "--meter", "web_search.calls",
                         "--by", "engine")  # fmt: skip
    assert status == 0
    assert [line.split()[:2] for line in out.splitlines()[4:]] == [["bing", "2"], ["brave", "1"]]
    status, out, _ = run(capsys, "meters", "--ledger", filled)
    assert out.startswith("web_search.calls  count of {call}  by engine")


def test_prune_reset_export_import(
    filled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "snap.jsonl"
    status, _, err = run(capsys, "export", "--ledger", filled, "-o", str(snapshot))
    assert (status, err.strip()) == (0, "exported 5 requests, 3 events and 1 meters")
    status, out, _ = run(capsys, "prune", "--ledger", filled, "--before", "90d")
    assert out.startswith("deleted 1 requests and events before 90d")
    status, out, _ = run(capsys, "reset", "--ledger", filled, "--key", "sk-alice")
    assert out.startswith("deleted 5 requests and events")  # 2 requests and 3 searches
    status, out, _ = run(capsys, "import", "--ledger", filled, str(snapshot))
    assert out.strip() == (f"{snapshot}: added 3 requests (2 already there) and 3 events "
                           "(0 already there)")  # fmt: skip
    status, out, _ = run(capsys, "usage", "--ledger", filled, "--period", "all", "--format",
                         "json")  # fmt: skip
    assert json.loads(out)["rows"][0]["requests"] == 5
    status, out, _ = run(capsys, "reset", "--ledger", filled, "--all")
    assert out.startswith("deleted 8 requests and events of every key")


def test_the_ledger_comes_from_the_environment_and_mistakes_say_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run(capsys, "usage")
    assert status == 2
    assert "pass --ledger PATH (or a postgresql:// URL) or set OTEL_TOKENS_LEDGER" in err
    missing = tmp_path / "typo.db"
    status, _, err = run(capsys, "usage", "--ledger", str(missing))
    assert (status, f"no ledger at '{missing}'" in err) == (2, True)
    assert not missing.exists()  # a typo does not create an empty ledger
    path = tmp_path / "usage.db"
    UsageLedger(path).close()
    monkeypatch.setenv("OTEL_TOKENS_LEDGER", str(path))
    status, out, _ = run(capsys, "usage", "--period", "7d")
    assert (status, out.strip().splitlines()[-1]) == (0, "no usage in this period")
    status, _, err = run(capsys, "usage", "--period", "last week")
    assert (status, "unknown period 'last week'" in err) == (2, True)
    status, _, err = run(capsys, "usage", "--by", "colour")
    assert "cannot group usage by 'colour'" in err
    status, _, err = run(capsys, "import", str(tmp_path / "absent.jsonl"))
    assert status == 2 and "No such file" in err


def test_the_installed_command_runs(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    with UsageLedger(path, prices=PRICES) as ledger:
        ledger.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=7))
    done = subprocess.run(
        [sys.executable, "-m", "otel_tokens", "usage", "--ledger", str(path), "--format", "csv"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith("1,1,0,0,7,")
