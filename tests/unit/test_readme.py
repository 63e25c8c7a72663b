"""The README agrees with the code: metric table, the two commands, and what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from otel_tokens._core import instruments as spec
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)


def _section(heading: str) -> str:
    return README.split(heading + "\n", 1)[1].split("\n#", 1)[0]


def test_metric_table_lists_every_instrument_as_the_code_defines_it() -> None:
    section = _section("## Metrics")
    rows = re.findall(
        r"^\| `([a-z_.]+)` \| (\w+) \| `([^`]+)` \| `(\w+)` \| (.+) \|$", section, re.M
    )
    assert [row[:4] for row in rows] == [(i.name, i.kind, i.unit, i.prometheus) for i in spec.ALL]
    own = {row[0] for row in rows if row[4].startswith("the package's own")}
    assert own == {i.name for i in spec.ALL if not i.name.startswith("gen_ai.")}


def test_latest_names_table_lists_what_the_switch_renames() -> None:
    from otel_tokens._core.conventions import LATEST, naming

    section = _section("### The conventions' newest names, behind one switch")
    rows = re.findall(r"^\| `([a-z_.]+)` \| (\w+) \| `([^`]+)` \| `(\w+)` \|$", section, re.M)
    renamed = [i for i in naming(LATEST).instruments() if i not in spec.ALL]
    assert rows == [(i.name, i.kind, i.unit, i.prometheus) for i in renamed]


def test_first_command_installs_and_runs_the_demo_and_second_runs_the_tests() -> None:
    install_demo, run_tests = _commands()[:2]
    assert "pip install" in install_demo and install_demo.endswith("otel-tokens demo")
    assert "pip install" in run_tests and run_tests.endswith("-m pytest")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci.splitlines()


def test_advised_buckets_are_those_in_the_readme() -> None:
    assert tuple(4**i for i in range(14)) == spec.TOKEN_BUCKETS
    assert tuple(round(0.01 * 2**i, 2) for i in range(14)) == spec.DURATION_BUCKETS
    assert "1, 4, 16, ... 67108864" in README and "0.01, 0.02, 0.04, ... 81.92" in README


def test_normalizer_table_has_exactly_the_cells_that_have_a_test() -> None:
    from tests.helpers.normalizer_cells import CELLS

    section = README.split("## From provider responses to `Usage`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([A-Za-z ]+) \| (.+) \| `(\w+)`(.*) \|$", section, re.M)
    shown = [(p, field, usage + rest) for p, field, usage, rest in rows if p != "provider"]
    assert shown == [(c[0], c[1], c[2]) for c in CELLS]


def test_price_file_example_in_the_readme_loads(tmp_path: Path) -> None:
    from otel_tokens import PriceTable, Usage

    (example,) = re.findall(r"```yaml\n(.*?)\n```", README, flags=re.S)
    path = tmp_path / "prices.yaml"
    path.write_text(example)
    table = PriceTable.bundled().with_overrides(PriceTable.from_file(path))
    usage = Usage(provider="openai", model="gpt-4.1", input_tokens=1_000_000)
    assert str(table.cost_usd(usage)) == "1.6"
    long = Usage(provider="x", model="my-finetune", input_tokens=300_000)
    assert str(table.cost_usd(long)) == "1.8"


def test_every_command_shown_in_the_readme_parses() -> None:
    from otel_tokens.cli import _parser

    shown = re.findall(r"^\$ otel-tokens (.+)$", README, re.M)
    shown += re.findall(r"\(`otel-tokens (demo [^`]+)`", README)
    assert len(shown) >= 2
    for line in shown:
        _parser().parse_args(line.split())  # exits (a SystemExit fails the test) if it does not
