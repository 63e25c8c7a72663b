"""`otel-tokens budget`: set, list and remove budgets in a real ledger (SQLite and
PostgreSQL), and list where each stands after a tracker wrote usage."""

from __future__ import annotations

import json

import pytest

from otel_tokens import Usage, UsageLedger
from tests.conftest import SECRET
from tests.helpers.cli import run


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TOKENS_LEDGER", raising=False)
    monkeypatch.setenv("OTEL_TOKENS_API_KEY_SECRET", SECRET)


def test_set_list_and_remove(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "budget", "set", "25", "--team", "search", "--period", "day",
                         "--ledger", target)  # fmt: skip
    assert (status, out.split(" in ")[0]) == (0, "set team 'search': 25 usd per day (UTC)")
    assert run(capsys, "budget", "set", "2000000", "--unit", "tokens", "--key", "sk-alice",
               "--period", "7d", "--ledger", target)[0] == 0  # fmt: skip
    with UsageLedger(target, api_key_secret=SECRET) as ledger:
        ledger.record(
            Usage(
                provider="openai",
                model="gpt-4o-mini",
                team="search",
                input_tokens=1_000_000,
                output_tokens=100_000,
                api_key="sk-alice",
            )
        )
    status, out, _ = run(capsys, "budget", "list", "--ledger", target)
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == ["budget", "spent", "remaining", "used",
                                                 "resets", "runs", "out", "in"]  # fmt: skip
    team = next(line for line in lines if line.startswith("team 'search'"))
    assert "0.21" in team and "24.79" in team and "1%" in team
    key = next(line for line in lines if line.startswith("key '"))
    assert "1100000" in key and "900000" in key and "rolling" in key
    status, out, _ = run(capsys, "budget", "list", "--format", "json", "--ledger", target)
    listed = {(r["scope"], r["unit"]): r for r in json.loads(out)}
    assert listed["team", "usd"]["spent"] == "0.21"
    assert listed["key", "tokens"]["remaining"] == "900000"
    assert run(capsys, "budget", "remove", "--team", "search", "--ledger", target)[:2] == (
        0, f"removed 1 budget(s) from {ledger.target}\n")  # fmt: skip
    status, out, _ = run(capsys, "budget", "remove", "--global", "--ledger", target)
    assert status == 1 and out.startswith("removed 0 budget(s)")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["set", "0", "--team", "t"], "amount must be a number above 0 and at most 1e12, got '0'"),
        (["set", "5", "--team", "t", "--period", "year"], "period must be day, week or month"),
        (["set", "5", "--team", "t", "--tz", "Mars/Base"], "unknown time zone 'Mars/Base'"),
    ],
)
def test_a_budget_that_cannot_be_set_says_why(
    argv: list[str], says: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "budget", *argv, "--ledger", f"{tmp_path}/usage.db")
    assert status == 2 and says in err


def test_list_without_a_ledger_says_where_to_point_it(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "budget", "list", "--ledger", f"{tmp_path}/missing.db")
    assert status == 2 and "no ledger at" in err and "`budget set` creates one" in err


def test_usage_by_team_on_the_command_line(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    with UsageLedger(target, api_key_secret=SECRET) as ledger:
        for team in ("search", "search", "support", None):
            ledger.record(Usage(provider="openai", model="gpt-4o-mini", team=team,
                                input_tokens=1000, output_tokens=100))  # fmt: skip
    status, out, err = run(capsys, "usage", "--by", "team", "--ledger", target)
    assert (status, err) == (0, "")
    cells = [line.split() for line in out.splitlines()]
    rows = {c[0]: c[1] for c in cells if c and c[0] in {"search", "support", "total"}}
    assert rows == {"search": "2", "support": "1", "total": "3"}  # no team: in none
    status, out, _ = run(capsys, "usage", "--team", "search", "--format", "json",
                         "--ledger", target)  # fmt: skip
    assert status == 0 and json.loads(out)["rows"][0]["requests"] == 2
    status, _, err = run(capsys, "usage", "--by", "team,model", "--ledger", target)
    assert status == 2 and "cannot also be grouped by or filtered to model" in err
