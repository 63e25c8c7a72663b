"""`otel-tokens prices`: a model's rates and a request's exact cost, the models a real
ledger holds without a price, and a LiteLLM price map turned into a price file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_tokens import PriceTable, TokenTracker, Usage, UsageLedger
from otel_tokens.cli import main
from tests.conftest import SECRET
from tests.helpers.cli import run

SAMPLE = Path(__file__).parents[1] / "payloads" / "litellm_prices_sample.json"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TOKENS_LEDGER", raising=False)
    monkeypatch.delenv("OTEL_TOKENS_PRICE_FILE", raising=False)


@pytest.fixture
def price_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"version": 1, "prices": [
        {"model": "house-model", "input": "2", "output": "8", "cache_read": "0.5"},
        {"model": "house-model", "input": "4", "output": "12", "above_input_tokens": 100000},
    ]}), "utf-8")  # fmt: skip
    return path


def test_show_prints_every_tier_and_the_exact_cost(
    capsys: pytest.CaptureFixture[str], price_file: Path
) -> None:
    status, out, _ = run(capsys, "prices", "show", "house-model", "--prices", str(price_file),
                         "--input", "1000", "--cache-read", "400", "--output", "300",
                         "--reasoning", "100")  # fmt: skip
    assert status == 0
    assert f"house-model: USD per million tokens, from {price_file}" in out
    assert "always:\n  input                     2\n  output                    8\n" in out
    assert "  cache_read              0.5\n" in out
    assert "  cache_write               2  (no own price: billed as input)\n" in out
    assert "always, requests above 100,000 input tokens:\n  input                     4" in out
    # 600 x 2 + 400 x 0.5 + 200 x 8 + 100 x 8, per million: hand-computed
    assert "  input                   600 x 2/M = 0.0012\n" in out
    assert "  cache_read              400 x 0.5/M = 0.0002\n" in out
    assert "  output                  200 x 8/M = 0.0016\n" in out
    assert "  reasoning               100 x 8/M = 0.0008\n" in out
    assert out.endswith("  total                0.0038\n")


def test_show_prices_a_dated_snapshot_by_its_model(capsys: pytest.CaptureFixture[str]) -> None:
    # gpt-4o-2024-08-06 has a row of its own now; this snapshot still has none.
    status, out, _ = run(capsys, "prices", "show", "claude-sonnet-4-5-20250929")
    assert status == 0
    assert out.startswith(
        "claude-sonnet-4-5-20250929 (priced as claude-sonnet-4-5): USD per million tokens"
    )


def test_show_prices_a_vertex_id_by_its_model(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "prices", "show", "claude-sonnet-4-5@20250929")
    assert status == 0
    assert out.startswith(
        "claude-sonnet-4-5@20250929 (priced as claude-sonnet-4-5): USD per million tokens"
    )


def test_show_an_unknown_model_names_close_ones(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "prices", "show", "claude-sonet-4-5")
    assert (status, out) == (1, "")
    assert err.startswith("no price for claude-sonet-4-5: not in the bundled table; close "
                          "names: claude-sonnet-4-5")  # fmt: skip
    assert len(err.split("close names: ")[1].split(", ")) <= 5


def test_show_refuses_counts_that_do_not_add_up(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "prices", "show", "gpt-4o", "--input", "5", "--cache-read", "9")
    assert (status, out) == (2, "")
    assert err.startswith("otel-tokens prices: error: --input counts cached tokens too")


def test_check_names_the_unpriced_model_of_a_real_ledger(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, price_file: Path
) -> None:
    target = str(tmp_path / "usage.db")
    with UsageLedger(target, api_key_secret=SECRET) as ledger:
        tracker = TokenTracker(
            MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("prices-test"),
            ledger=ledger,
            api_key_secret=SECRET,
        )
        tracker.record(Usage(provider="openai", model="gpt-4o-mini", input_tokens=1000,
                             output_tokens=100, api_key="sk-alice"))  # fmt: skip
        for _ in range(2):
            tracker.record(Usage(provider="vllm", model="house-model", input_tokens=5000,
                                 output_tokens=700, api_key="sk-bob"))  # fmt: skip
        tracker.flush()
    status, out, err = run(capsys, "prices", "check", "--ledger", target)
    assert (status, err) == (1, "")
    assert "1 of 2 models (by provider) in" in out and "have no price in the bundled table" in out
    line = next(line for line in out.splitlines() if "house-model" in line)
    assert line.split() == ["house-model", "vllm", "11,400", "tokens", "(10,000", "input,",
                            "1,400", "output,", "2", "requests)"]  # fmt: skip
    assert "gpt-4o-mini" not in out
    # With the price file that prices it, every model has a price.
    status, out, _ = run(capsys, "prices", "check", "--ledger", target, "--prices", str(price_file))
    assert status == 0
    assert out.startswith("all 2 models in ") and f"have a price in {price_file}" in out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["check", "--ledger", "missing.db"], "no ledger at 'missing.db': check the path"),
        (["check"], "which ledger? pass --ledger PATH"),
        (["check", "--ledger", "postgresql://nobody@127.0.0.1:1/none"],
         "cannot open the usage ledger 'postgresql://nobody@127.0.0.1:1/none'"),
        (["import", "--format", "litellm", "missing.json"], "cannot read 'missing.json'"),
        (["show", "gpt-4o", "--prices", "missing.json"], "cannot read price file 'missing.json'"),
    ],
)  # fmt: skip
def test_errors_say_what_went_wrong_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    argv: list[str], said: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "prices", *argv)
    assert (status, out) == (2, "")
    assert err.startswith(f"otel-tokens prices: error: {said}"), err
    assert err.count("\n") <= 2


def test_import_of_bad_json_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", "utf-8")
    status, _, err = run(capsys, "prices", "import", "--format", "litellm", str(bad))
    assert status == 2
    assert "is not valid JSON" in err and "model_prices_and_context_window.json" in err


def test_import_accepts_only_litellm(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["prices", "import", "--format", "openrouter", str(SAMPLE)])
    assert exit_.value.code == 2
    assert "invalid choice: 'openrouter'" in capsys.readouterr().err


def test_import_writes_a_price_file_that_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "litellm.json"
    status, out, err = run(capsys, "prices", "import", "--format", "litellm", str(SAMPLE),
                           "--out", str(out_file))  # fmt: skip
    assert (status, out) == (0, "")
    lines = err.splitlines()
    assert lines[-1] == "13 rows from 10 models; 50 things not expressible, see warnings"
    assert all(line.startswith("warning: '") for line in lines[:-1]) and len(lines) == 51
    assert ("warning: 'gpt-4o': input_cost_per_token_batches: a batch price, not expressible "
            "in a price file: not imported") in lines  # fmt: skip
    table = PriceTable.from_file(out_file)
    assert len(table) == 10  # the databricks entry read through its float noise
    assert table.cost_usd(Usage(provider="anthropic", model="claude-sonnet-4-5",
                                input_tokens=1_000_000)) == 3  # fmt: skip
    rows = json.loads(out_file.read_text("utf-8"))["prices"]
    assert [r["model"] for r in rows] == sorted(r["model"] for r in rows)
    # To standard output, the same file.
    status, out, _ = run(capsys, "prices", "import", "--format", "litellm", str(SAMPLE))
    assert status == 0 and out == out_file.read_text("utf-8")


def test_show_costs_one_hour_cache_writes_at_their_own_price(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "prices", "show", "claude-sonnet-4-5", "--input", "10000",
                         "--cache-write", "4000", "--cache-write-1h", "1000")  # fmt: skip
    assert status == 0
    assert "cache_write           3,000 x 3.75/M = 0.01125" in out
    assert "cache_write_1h        1,000 x 6/M = 0.006" in out
    # 6 000 x 3 + 3 000 x 3.75 + 1 000 x 6 = 35 250 per million
    assert out.rstrip().endswith("total               0.03525")


def test_show_refuses_more_one_hour_writes_than_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = run(capsys, "prices", "show", "claude-sonnet-4-5", "--input", "100",
                         "--cache-write", "10", "--cache-write-1h", "11")  # fmt: skip
    assert status == 2
    assert "--cache-write >= --cache-write-1h" in err


def test_show_costs_a_request_at_the_prices_of_a_given_day(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "prices", "show", "o3", "--input", "1000000", "--on",
                         "2025-05-01")  # fmt: skip
    assert status == 0
    assert "at the prices of 2025-05-01 (1,000,000 input tokens)" in out
    assert out.split()[-2:] == ["total", "10"]  # before the 2025-06-10 cut
    status, out, _ = run(capsys, "prices", "show", "o3", "--input", "1000000")
    assert out.split()[-2:] == ["total", "2"]


def test_show_refuses_a_day_that_is_not_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(capsys, "prices", "show", "o3", "--input", "10", "--on", "2025-13-01")
    assert exited.value.code == 2
    assert "must be a day as YYYY-MM-DD, got '2025-13-01'" in capsys.readouterr().err
