"""The Grafana dashboard and the Prometheus rules shipped in `otel_tokens/stack/`.

Statically: every panel and query is well formed, names only metrics this package defines and
honours the dashboard's variables. Live: a real Prometheus scrapes the package's own endpoint
while a known workload is recorded, loads the rules, and evaluates every PromQL expression of
the dashboard and the rules; each must parse and return data, and key values must be exactly
what was recorded.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

import otel_tokens
from otel_tokens import ModelPrice, PriceTable, TokenTracker, Usage, UsageLedger, configure
from otel_tokens._base.ratelimit import RateLimits, Reading
from otel_tokens._core import instruments as spec
from otel_tokens._core.drops import RECORD_REASONS
from tests.helpers.prometheus_server import WAIT_S, Prometheus, has_data, start_prometheus, stop

STACK = Path(otel_tokens.__file__).resolve().parent / "stack"
DASHBOARD_PATH = STACK / "grafana" / "dashboards" / "otel-tokens.json"
RULES_PATH = STACK / "prometheus" / "rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

#: Each dashboard variable and the label it filters on; every query of a usage metric carries
#: `label=~"$variable"` for all four.
FILTER = {
    "gen_ai_provider_name": "provider",
    "gen_ai_response_model": "model",
    "llm_scenario": "scenario",
    "llm_user_tier": "user_tier",
}
VARIABLES = tuple(FILTER.values())
SELECTOR = ", ".join(f'{label}=~"${variable}"' for label, variable in FILTER.items())

USAGE_METRICS = frozenset(
    [c.prometheus for c in spec.USAGE_COUNTERS]
    + [h.prometheus + suffix for h in spec.HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")]
)
#: The package's own health: not filtered (the provider is there only where a record named one).
SELF_METRICS = frozenset(c.prometheus for c in spec.SELF_COUNTERS)
#: Rate-limit headroom: a provider and the model asked for, but no scenario or tier.
RATELIMIT_METRICS = frozenset(g.prometheus for g in spec.RATELIMIT_GAUGES)
#: Budgets of the usage ledger: no provider, model, scenario or tier at all.
BUDGET_METRICS = frozenset(g.prometheus for g in spec.BUDGET_GAUGES)

#: What Grafana puts in for its own variables when the test evaluates a query. Windows are
#: wide enough to hold every sample of the run, so rates compare the two recorded phases.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "15s", "__range": "15m"}
ALL = ".*"  # each variable's allValue: matches series without the label too


# ---------------------------------------------------------------------------------------------
# Reading the dashboard and the rules, and the PromQL in them
# ---------------------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_PATH.read_text(encoding="utf-8")))


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _targets(dashboard: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel."""
    return [(p["title"], t) for p in dashboard["panels"] for t in p.get("targets", [])]


def _variable_query(variable: Mapping[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def _recorded_names() -> frozenset[str]:
    return frozenset(rule["record"] for rule in _rules() if "record" in rule)


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<range>\[[^\]]*\])
      | (?P<braces>\{[^}]*\})
      | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-z]*)
      | (?P<ident>[A-Za-z_:][\w:]*)
      | (?P<other>\S)
    )""",
    re.VERBOSE,
)
_MATCHER = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}
#: What follows a function or an aggregation's name (`sum by (le) (...)`), never a metric's.
_CALLED = {"(", "by", "without"}
_NOT_METRICS = _GROUPING | _KEYWORDS


def _selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Every vector selector of a PromQL expression: its metric name and matchers."""
    tokens = [(m.lastgroup, m.group(m.lastgroup or "")) for m in _TOKEN.finditer(expr)]
    found = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind == "ident" and text in _GROUPING and following[1] == "(":
            i = next(j for j in range(i, len(tokens)) if tokens[j][1] == ")")  # a label list
        elif kind == "ident" and text not in _NOT_METRICS and following[1] not in _CALLED:
            matchers: dict[str, tuple[str, str]] = {}
            if following[0] == "braces":
                body = following[1][1:-1]
                parsed = _MATCHER.findall(body)
                assert "".join(m.group(0) for m in _MATCHER.finditer(body)).strip() == body.strip()
                matchers = {label: (op, value) for label, op, value in parsed}
            found.append((text, matchers))
        i += 1
    return found


def test_selectors_reads_names_and_matchers_and_skips_functions_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, x) (rate(a_bucket{l=~"$v", m!="q"}[5m])))'
        " / on (x) group_left b unless c offset 15m and 2 * sum(d) or vector(0)"
    )
    assert _selectors(expr) == [
        ("a_bucket", {"l": ("=~", "$v"), "m": ("!=", "q")}),
        ("b", {}),
        ("c", {}),
        ("d", {}),
    ]


def _substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` as Grafana sends it, with `values` (already formatted) for the variables."""
    known = {**GRAFANA_BUILTINS, **values}

    def value(match: re.Match[str]) -> str:
        assert match.group(1) in known, f"unknown variable ${match.group(1)} in {expr}"
        return known[match.group(1)]

    return re.sub(r"\$(\w+)", value, expr)


def _grafana_regex(values: Sequence[str]) -> str:
    """A multi-value variable as Grafana formats it for a Prometheus `=~` matcher."""
    escaped = [re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


# ---------------------------------------------------------------------------------------------
# Static checks
# ---------------------------------------------------------------------------------------------


def test_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    text = DASHBOARD_PATH.read_text(encoding="utf-8")
    dashboard = json.loads(text)
    assert text == json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"  # tidy
    assert dashboard["title"] == "LLM token usage (otel_tokens)"
    assert dashboard["id"] is None  # no instance id: Grafana assigns one when provisioning
    assert dashboard["uid"] == "otel-tokens"
    assert 36 <= dashboard["schemaVersion"] <= 41

    panels = dashboard["panels"]
    titles = [panel.get("title") for panel in panels]
    assert all(titles), "every panel has a title"
    assert len(set(titles)) == len(titles), "panel titles are unique"
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]

    variables = dashboard["templating"]["list"]
    assert tuple(v["name"] for v in variables) == VARIABLES
    for variable in variables:
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        # Grafana's default "All" is a list of the values seen, which would hide series that
        # do not have the label at all (scenario and tier are optional).
        assert variable["allValue"] == ALL
        assert _variable_query(variable).startswith("label_values(")


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    exprs = {title: [t["expr"] for t in targets] for title, targets in _panel_targets().items()}

    def shown(title: str, *metrics: str) -> None:
        assert title in exprs, title
        names = {name for expr in exprs[title] for name, _ in _selectors(expr)}
        assert set(metrics) <= names, (title, names)

    shown("Tokens per second by class", *(c.prometheus for c in spec.USAGE_COUNTERS[:6]))
    shown("Cost per hour by provider", spec.COST.prometheus)
    shown("Requests per second by status", spec.REQUESTS.prometheus)
    shown("Failed requests per second by error type", spec.REQUESTS.prometheus)
    shown("Request latency", spec.OPERATION_DURATION.prometheus + "_bucket")
    shown("Time to first token (streamed)", spec.TIME_TO_FIRST_CHUNK.prometheus + "_bucket")
    shown("Cache hit ratio", spec.CACHE_READ_TOKENS.prometheus, spec.INPUT_TOKENS.prometheus)
    shown("Reasoning share of output", spec.REASONING_TOKENS.prometheus)
    shown("Unpriced tokens per second by model", spec.UNPRICED_TOKENS.prometheus)
    shown("Records dropped by reason", spec.DROPPED.prometheus)
    shown("Series overflow", spec.OVERFLOWED.prometheus)
    shown("Cache savings per hour by model", spec.CACHE_SAVINGS.prometheus,
          spec.CACHE_WRITE_PREMIUM.prometheus)  # fmt: skip
    shown(
        "Rate-limit headroom", spec.RATELIMIT_REMAINING.prometheus, spec.RATELIMIT_LIMIT.prometheus
    )
    shown("Budget spent", spec.BUDGET_SPENT.prometheus, spec.BUDGET_REMAINING.prometheus)
    shown("Budget runs out in", spec.BUDGET_EXHAUSTION.prometheus)
    for what in ("models", "providers"):
        shown(f"Top {what} by tokens", spec.INPUT_TOKENS.prometheus, spec.OUTPUT_TOKENS.prometheus)
        shown(f"Top {what} by cost", spec.COST.prometheus)
    latency = " ".join(exprs["Request latency"])
    assert all(f"histogram_quantile({q}," in latency for q in ("0.5", "0.95", "0.99"))
    for expr in (e for es in exprs.values() for e in es):
        if "rate(" in expr and "[$__range]" not in expr:
            assert "[$__rate_interval]" in expr, expr


def _panel_targets() -> dict[str, list[dict[str, Any]]]:
    return {p["title"]: p["targets"] for p in _dashboard()["panels"]}


def test_dashboard_queries_name_only_the_packages_metrics_and_honour_the_variables() -> None:
    dashboard = _dashboard()
    allowed = (USAGE_METRICS | SELF_METRICS | RATELIMIT_METRICS | BUDGET_METRICS
               | _recorded_names())  # fmt: skip
    for title, target in _targets(dashboard):
        selectors = _selectors(target["expr"])
        assert selectors, (title, target["expr"])
        for name, matchers in selectors:
            assert name in allowed, f"{title}: {name} is not a metric otel_tokens exports"
            if name in SELF_METRICS | BUDGET_METRICS:
                # No such labels on the package's own metrics: a chosen value would empty them.
                assert not set(matchers) & set(FILTER), (title, name)
            elif name in RATELIMIT_METRICS:
                assert matchers == {"gen_ai_provider_name": ("=~", "$provider")}, (title, name)
            elif name in USAGE_METRICS:
                for label, variable in FILTER.items():
                    assert matchers.get(label) == ("=~", f"${variable}"), (title, name, label)
        assert not re.search(r"\$\{|\[\[", target["expr"]), "one variable syntax: $name"

    for variable in dashboard["templating"]["list"]:
        inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", _variable_query(variable))
        assert inner is not None, variable["name"]
        (name, _), *rest = _selectors(inner.group(1))
        assert not rest
        assert name in USAGE_METRICS, variable["name"]
        assert inner.group(2) == next(k for k, v in FILTER.items() if v == variable["name"])


def test_rules_name_only_the_packages_metrics_and_are_complete() -> None:
    rules = _rules()
    allowed = (USAGE_METRICS | SELF_METRICS | RATELIMIT_METRICS | BUDGET_METRICS
               | _recorded_names())  # fmt: skip
    records = [rule for rule in rules if "record" in rule]
    alerts = [rule for rule in rules if "alert" in rule]
    assert {"llm:tokens:rate5m", "llm:cost_usd:rate1h", "llm:requests:error_ratio5m"} <= {
        r["record"] for r in records
    }
    assert {a["alert"] for a in alerts} >= {
        "LLMErrorRatioHigh", "LLMCostBurnHigh", "LLMUnpricedTokens", "OtelTokensRecordsDropped",
        "LLMRateLimitHeadroomLow", "LLMBudgetMostlySpent", "LLMBudgetRunsOutSoon",
    }  # fmt: skip
    for rule in rules:
        for name, _ in _selectors(rule["expr"]):
            assert name in allowed, f"{rule}: {name} is not a metric otel_tokens exports"
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", record["record"]), record
    for alert in alerts:
        assert re.fullmatch(r"\d+[smh]", alert["for"]), alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert alert["annotations"]["description"].strip(), alert["alert"]
    classes = {r["labels"]["class"] for r in records if r["record"] == "llm:tokens:rate5m"}
    assert classes == {"input", "output", "cache_read", "cache_write", "reasoning", "system"}


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install -y prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES_PATH)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


# ---------------------------------------------------------------------------------------------
# The workload: known totals over several providers, models, scenarios and tiers
# ---------------------------------------------------------------------------------------------

PRICES = PriceTable(
    {
        "gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cache_read="0.075"),
        "o3": ModelPrice(input="2", output="8", cache_read="0.5"),
        "claude-sonnet-4-5": ModelPrice(
            input="3", output="15", cache_read="0.30", cache_write="3.75"
        ),
        "claude-opus-4-1": ModelPrice(
            input="15", output="75", cache_read="1.5", cache_write="18.75"
        ),
        "gemini-2.5-pro": ModelPrice(input="1.25", output="10"),
        # vllm's "Qwen/Qwen3-32B" has no price: its tokens are unpriced.
    }
)


def _workload() -> list[Usage]:
    """One phase of requests. Their attribute sets are MAX_SERIES: none of them overflows."""
    records = []
    for i in range(30):  # 3 of 30 rate limited: a 10% error ratio on enough traffic to alert
        failed = i % 10 == 0
        records.append(
            Usage(
                provider="openai", model="gpt-4o-mini", input_tokens=1200,
                output_tokens=0 if failed else 300, cache_read_tokens=0 if failed else 1000,
                status="error" if failed else "success",
                error_type="rate_limited" if failed else None,
                latency_s=0.05 if failed else 0.7, scenario="openai", user_tier="free",
            )
        )  # fmt: skip
    records.append(  # a stream that ended without usage
        Usage(
            provider="openai", model="gpt-4o-mini", streamed=True, latency_s=2.2,
            time_to_first_token_s=0.25, scenario="openai", user_tier="free",
            usage_problem="missing",
        )
    )  # fmt: skip
    records += [
        Usage(
            provider="openai", model="o3", input_tokens=1500, output_tokens=4000,
            reasoning_tokens=3000, system_tokens=250, latency_s=12.0, scenario="openai",
            user_tier="enterprise",
        )
    ] * 2  # fmt: skip
    records += [
        Usage(
            provider="anthropic", model="claude-sonnet-4-5", input_tokens=8000,
            cache_read_tokens=6000, cache_write_tokens=1500, output_tokens=900, streamed=True,
            latency_s=3.0, time_to_first_token_s=0.45, scenario="anthropic", user_tier="pro",
        )
    ] * 6  # fmt: skip
    records.append(  # the client hung up: canceled, not an error
        Usage(
            provider="anthropic", model="claude-sonnet-4-5", input_tokens=8000,
            cache_read_tokens=6000, output_tokens=50, streamed=True, latency_s=0.9,
            time_to_first_token_s=0.3, status="canceled", error_type="client_closed",
            scenario="anthropic", user_tier="pro",
        )
    )  # fmt: skip
    records += [
        # A batch big enough to cross the cost-burn alert's 50 USD/hour: 120 + 15 USD.
        Usage(
            provider="anthropic", model="claude-opus-4-1", input_tokens=8_000_000,
            output_tokens=200_000, latency_s=75.0, scenario="claude_code",
            user_tier="enterprise", system_tokens=400,
        ),
        Usage(
            provider="anthropic", model="claude-opus-4-1", input_tokens=20_000,
            status="error", error_type="http_500", latency_s=1.5, scenario="claude_code",
            user_tier="enterprise",
        ),
        Usage(  # a prompt written to the cache and never read: its writes cost, unrepaid
            provider="anthropic", model="claude-opus-4-1", input_tokens=20_000,
            cache_write_tokens=10_000, output_tokens=100, latency_s=4.0, scenario="claude_code",
            user_tier="enterprise",
        ),
        Usage(  # failed, nobody said how: error.type "_OTHER"
            provider="anthropic", model="claude-opus-4-1", input_tokens=300, status="error",
            latency_s=0.2, scenario="claude_code", user_tier="enterprise",
        ),
    ]  # fmt: skip
    records += [
        Usage(
            provider="gcp.gemini", model="gemini-2.5-pro", input_tokens=3000,
            output_tokens=2000, reasoning_tokens=1200, latency_s=6.0, scenario="openai",
            user_tier="pro",
        )
    ] * 4  # fmt: skip
    records.append(
        Usage(
            provider="gcp.gemini", model="gemini-2.5-pro", input_tokens=3000, status="error",
            error_type="timeout", latency_s=30.0, scenario="openai", user_tier="pro",
        )
    )  # fmt: skip
    records += [  # a self-hosted model with no price, and no scenario or tier
        Usage(
            provider="vllm", model="Qwen/Qwen3-32B", input_tokens=700, output_tokens=300,
            streamed=True, latency_s=0.9, time_to_first_token_s=0.15,
        )
    ] * 3  # fmt: skip
    return records


#: Recorded after the workload, once the series table is full: goes to the overflow series.
PROBE = Usage(
    provider="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=10, latency_s=0.3,
    scenario="openai", user_tier="overflow-probe",
)  # fmt: skip
#: Invalid (negative tokens): dropped and counted.
INVALID = Usage(provider="openai", model="gpt-4o-mini", input_tokens=-1)
PHASES = 2


#: What the providers' last response headers said: OpenAI's token limit for gpt-4o-mini is
#: down to 6% (the headroom alert fires), its request limit and Anthropic's are healthy.
RATE_LIMITS = [
    (
        Usage(provider="openai", model="gpt-4o-mini", server_address="api.openai.com"),
        RateLimits((Reading("requests", 500, 480, 0.1), Reading("tokens", 200_000, 12_000, 3000)),
                   None),
    ),
    (
        Usage(provider="anthropic", model="claude-sonnet-4-5", server_address="api.anthropic.com"),
        RateLimits((Reading("requests", 50, 40, 2000),), None),
    ),
]  # fmt: skip

#: Cache savings less write premium per model over the whole run (two phases), by hand:
#: claude-sonnet-4-5 ($3 input, $0.30 read, $3.75 write): 7 reads of 6,000 save
#: 42,000 x 2.70 / 1e6 = 0.1134, 6 writes of 1,500 cost 9,000 x 0.75 / 1e6 = 0.00675 extra;
#: gpt-4o-mini ($0.15, $0.075 read): 27 reads of 1,000 save 27,000 x 0.075 / 1e6 = 0.002025;
#: claude-opus-4-1 ($15, $18.75 write): 10,000 written, never read, cost 0.0375 extra.
CACHE_NET_USD = {
    "claude-sonnet-4-5": 2 * (0.1134 - 0.00675),
    "gpt-4o-mini": 2 * 0.002025,
    "claude-opus-4-1": -2 * 0.0375,
}


def _series_key(usage: Usage) -> tuple[object, ...]:
    return (usage.provider, usage.model, usage.status, usage.error_type, usage.streamed,
            usage.scenario, usage.user_tier, usage.usage_problem)  # fmt: skip


#: Exactly the workload's attribute sets: the probe's is one too many.
MAX_SERIES = len({_series_key(u) for u in _workload()})


def _record_phase(tracker: TokenTracker) -> None:
    for usage in _workload():
        tracker.record(usage)
    tracker.record(PROBE)
    tracker.record(INVALID)
    tracker.flush()


def _recorded() -> list[tuple[Usage, bool]]:
    """Every accepted record of the whole run, and whether it went to the overflow series."""
    return [(u, False) for u in _workload()] * PHASES + [(PROBE, True)] * PHASES


#: What the whole run costs, and its tokens (input and output).
RUN_COST = sum(Decimal(PRICES.cost_pico(u) or 0) for u, _ in _recorded()) / 10**12
RUN_TOKENS = sum(u.input_tokens + u.output_tokens for u, _ in _recorded())
#: Budgets of the ledger the tracker writes: all of the run is spent within the last hour, so
#: its burn per hour is the run's cost. 24h: 90% spent, runs out in 400 s (both alerts);
#: 7d: 20% spent, runs out in 4 hours (the forecast alert only); tokens: 0.1% spent, runs
#: out in 999 hours (neither).
BUDGETS: list[tuple[Decimal | int, dict[str, str]]] = [
    ((RUN_COST / Decimal("0.9")).quantize(Decimal("1e-9")), {"period": "24h"}),
    (RUN_COST * 5, {"period": "7d"}),
    (RUN_TOKENS * 1000, {"period": "30d", "unit": "tokens"}),
]


def _total(field: str, where: Callable[[Usage], bool] = lambda u: True) -> int:
    return sum(getattr(u, field) for u, _ in _recorded() if where(u))


def _by(label: Callable[[Usage], str | None], where: Callable[[Usage], bool]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for usage, overflowed in _recorded():
        if where(usage):
            counts["" if overflowed else (label(usage) or "")] += 1
    return dict(counts)


def _error_type(usage: Usage) -> str:
    return usage.error_type or ("_OTHER" if usage.status == "error" else "")


# ---------------------------------------------------------------------------------------------
# A real Prometheus scraping the package's own endpoint
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping a tracker that recorded the workload twice, one scrape apart.

    Prometheus starts after the first phase, so its first sample of every series holds that
    phase; the second phase is the same again, so every rate() over the run is that phase
    exactly (up to Prometheus's extrapolation, which is the same for every series).
    """
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "the prometheus binary is not installed (Debian: apt-get install -y prometheus): "
            "the dashboard's and the rules' PromQL are checked against a real Prometheus"
        )
    telemetry = configure(exporters="prometheus", prometheus_port=0)
    ledger = UsageLedger(tmp_path_factory.mktemp("ledger") / "usage.db", flush_interval_s=0.2)
    server = None
    try:
        for amount, options in BUDGETS:
            ledger.set_budget(amount, **options)
        tracker = telemetry.tracker(prices=PRICES, max_series=MAX_SERIES, ledger=ledger)
        _record_phase(tracker)
        for usage, limits in RATE_LIMITS:  # as MeteredTransport hands them on from headers
            tracker._rate_limits(usage, limits)
        server = start_prometheus(
            binary,
            str(telemetry.prometheus_url),
            tmp_path_factory.mktemp("prometheus"),
            rule_files=[RULES_PATH],
        )
        per_phase = len(_recorded()) / PHASES
        server.wait_for("sum(llm_requests_total)", per_phase)
        _record_phase(tracker)
        seen_at = server.wait_for("sum(llm_requests_total)", PHASES * per_phase)
        server.wait_for_rules(after=seen_at)
        yield server
    finally:
        if server is not None:
            stop(server.process)
        telemetry.shutdown()
        ledger.close()


def _all_values() -> dict[str, str]:
    return dict.fromkeys(VARIABLES, ALL)


# ---------------------------------------------------------------------------------------------
# Live checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_dashboard_query_parses_and_returns_data(prometheus: Prometheus) -> None:
    empty = []
    deadline = time.monotonic() + WAIT_S  # one bound for all, so that a broken file fails fast
    for title, target in _targets(_dashboard()):
        expr = _substitute(target["expr"], _all_values())
        result = prometheus.eventually(lambda e=expr: prometheus.query(e), has_data, deadline)
        if not has_data(result):
            empty.append((title, target["refId"], expr, result))
    assert not empty


@pytest.mark.slow
def test_every_dashboard_query_parses_with_chosen_values(prometheus: Prometheus) -> None:
    chosen = {
        "provider": _grafana_regex(["openai", "gcp.gemini"]),
        "model": ALL,
        "scenario": _grafana_regex(["openai"]),
        "user_tier": _grafana_regex(["pro", "enterprise"]),
    }
    assert chosen["provider"] == r"(openai|gcp\\.gemini)"
    qwen = {**_all_values(), "model": _grafana_regex(["Qwen/Qwen3-32B"])}
    for _title, target in _targets(_dashboard()):
        prometheus.query(_substitute(target["expr"], chosen))  # raises unless it parses
        prometheus.query(_substitute(target["expr"], qwen))

    def picked(u: Usage) -> bool:
        return (
            u.provider in {"openai", "gcp.gemini"}
            and u.scenario == "openai"
            and u.user_tier in {"pro", "enterprise"}
        )

    assert prometheus.value(
        _substitute(f"sum(llm_usage_input_tokens_total{{{SELECTOR}}})", chosen)
    ) == _total("input_tokens", picked)
    # The panel's own query: its share of the whole is the workload's. One query, so that both
    # sides extrapolate to the same moment (and so alike).
    (input_rate,) = [
        t["expr"] for t in _panel_targets()["Tokens per second by class"] if t["refId"] == "A"
    ]
    share = prometheus.value(
        f"({_substitute(input_rate, chosen)}) / ({_substitute(input_rate, _all_values())})"
    )
    assert share == pytest.approx(_total("input_tokens", picked) / _total("input_tokens"))
    unpriced = _panel_targets()["Unpriced tokens per second by model"][0]["expr"]
    assert [dict(k) for k in prometheus.values(_substitute(unpriced, qwen))] == [
        {"gen_ai_provider_name": "vllm", "gen_ai_response_model": "Qwen/Qwen3-32B"}
    ]


@pytest.mark.slow
def test_template_variables_list_the_recorded_values(prometheus: Prometheus) -> None:
    expected = {
        "provider": {"openai", "anthropic", "gcp.gemini", "vllm"},
        "model": {
            "gpt-4o-mini", "o3", "claude-sonnet-4-5", "claude-opus-4-1", "gemini-2.5-pro",
            "Qwen/Qwen3-32B",
        },
        "scenario": {"openai", "anthropic", "claude_code"},
        "user_tier": {"free", "pro", "enterprise"},  # not the probe's: it overflowed
    }  # fmt: skip

    def label_values(query: str, values: Mapping[str, str]) -> set[str]:
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", _substitute(query, values))
        assert match is not None, query
        found = prometheus.get(
            f"/api/v1/label/{match.group(2)}/values", **{"match[]": match.group(1)}
        )
        return set(found)

    for variable in _dashboard()["templating"]["list"]:
        query = _variable_query(variable)
        assert label_values(query, _all_values()) == expected[variable["name"]], query
    (model,) = [v for v in _dashboard()["templating"]["list"] if v["name"] == "model"]
    assert label_values(_variable_query(model), {"provider": "anthropic"}) == {
        "claude-sonnet-4-5", "claude-opus-4-1",
    }  # fmt: skip


@pytest.mark.slow
def test_prometheus_holds_exactly_what_was_recorded(prometheus: Prometheus) -> None:
    q = prometheus.value
    for counter, field in [
        (spec.INPUT_TOKENS, "input_tokens"),
        (spec.OUTPUT_TOKENS, "output_tokens"),
        (spec.CACHE_READ_TOKENS, "cache_read_tokens"),
        (spec.CACHE_WRITE_TOKENS, "cache_write_tokens"),
        (spec.REASONING_TOKENS, "reasoning_tokens"),
        (spec.SYSTEM_TOKENS, "system_tokens"),
    ]:
        assert q(f"sum({counter.prometheus})") == _total(field), counter.prometheus
    for token_type in ("input", "output"):
        assert q(
            f'sum(gen_ai_client_token_usage_sum{{gen_ai_token_type="{token_type}"}})'
        ) == _total(f"{token_type}_tokens")

    cost = sum(Decimal(PRICES.cost_pico(u) or 0) for u, _ in _recorded()) / 10**12
    assert cost > 270  # two opus batches
    assert q("sum(llm_usage_cost_USD_total)") == pytest.approx(float(cost), rel=1e-12, abs=0)
    net = prometheus.values(
        "sum by (gen_ai_response_model) (llm_usage_cache_savings_USD_total)"
        " - sum by (gen_ai_response_model) (llm_usage_cache_write_premium_USD_total)"
    )
    by_model = {dict(k)["gen_ai_response_model"]: v for k, v in net.items() if v}
    assert by_model == pytest.approx(CACHE_NET_USD, rel=1e-12)  # the hand-computed figures
    by_status = prometheus.values("sum by (llm_status) (llm_requests_total)")
    assert {dict(k).get("llm_status", ""): v for k, v in by_status.items()} == _by(
        lambda u: u.status, lambda u: True
    )
    errors = prometheus.values('sum by (error_type) (llm_requests_total{llm_status="error"})')
    assert {dict(k)["error_type"]: v for k, v in errors.items()} == _by(
        _error_type, lambda u: u.status == "error"
    )
    assert set(_by(_error_type, lambda u: u.status == "error")) == {
        "rate_limited", "http_500", "_OTHER", "timeout",
    }  # fmt: skip

    def vllm(u: Usage) -> bool:
        return u.provider == "vllm"

    unpriced = prometheus.values("sum by (gen_ai_response_model) (llm_usage_unpriced_tokens_total)")
    assert unpriced == {
        (("gen_ai_response_model", "Qwen/Qwen3-32B"),): _total("input_tokens", vllm)
        + _total("output_tokens", vllm)
    }
    streamed = [u for u, _ in _recorded() if u.time_to_first_token_s is not None]
    assert q("sum(gen_ai_client_operation_time_to_first_chunk_seconds_count)") == len(streamed)
    assert q("sum(gen_ai_client_operation_time_to_first_chunk_seconds_sum)") == pytest.approx(
        sum(u.time_to_first_token_s or 0 for u in streamed)
    )
    assert q('sum(llm_requests_total{llm_usage_problem="missing"})') == PHASES
    dropped = prometheus.values("sum by (reason) (otel_tokens_records_dropped_total > 0)")
    assert dropped == {(("reason", "negative_tokens"),): PHASES}
    # Every other reason is there too, at 0, from the first scrape on.
    assert q("count(otel_tokens_records_dropped_total == 0)") >= len(RECORD_REASONS) - 1
    assert q("sum(otel_tokens_series_overflow_total)") == PHASES
    assert q('sum(llm_requests_total{otel_metric_overflow="true"})') == PHASES


def _quantile_bounds(values: Sequence[float], q: float) -> tuple[float, float]:
    """The bucket histogram_quantile() interpolates in for these observations."""
    bounds = (*spec.DURATION_BUCKETS, math.inf)
    rank = q * len(values)
    for i, upper in enumerate(bounds):
        if sum(v <= upper for v in values) >= rank:
            return (bounds[i - 1] if i else 0.0), (upper if upper < math.inf else bounds[i - 1])
    raise AssertionError


@pytest.mark.slow
def test_dashboard_panels_show_the_workloads_values(prometheus: Prometheus) -> None:
    panels = _panel_targets()

    def panel(title: str, ref: str = "A") -> dict[tuple[tuple[str, str], ...], float]:
        (expr,) = [t["expr"] for t in panels[title] if t["refId"] == ref]
        return prometheus.values(_substitute(expr, _all_values()))

    def one(title: str, ref: str = "A") -> float:
        (value,) = panel(title, ref).values()
        return value

    phase = [*_workload(), PROBE]  # what each rate and increase of the run measures
    requests = len(phase)
    failed = sum(u.status == "error" for u in phase)
    assert one("Error ratio") == pytest.approx(failed / requests)
    assert one("Cache hit ratio") == pytest.approx(
        _total("cache_read_tokens") / _total("input_tokens")
    )
    assert one("Reasoning share of output") == pytest.approx(
        _total("reasoning_tokens") / _total("output_tokens")
    )
    latencies = [u.latency_s for u in phase if u.latency_s is not None]
    for ref, q in (("A", 0.5), ("B", 0.95), ("C", 0.99)):
        low, high = _quantile_bounds(latencies, q)
        assert low <= one("Request latency", ref) <= high, q
    first_tokens = [u.time_to_first_token_s for u in phase if u.time_to_first_token_s]
    for ref, q in (("A", 0.5), ("B", 0.95)):
        low, high = _quantile_bounds(first_tokens, q)
        assert low <= one("Time to first token (streamed)", ref) <= high, q
    top_cost = panel("Top models by cost")
    assert max(top_cost, key=top_cost.__getitem__) == (
        ("gen_ai_response_model", "claude-opus-4-1"),
    )
    assert ("gen_ai_response_model", "Qwen/Qwen3-32B") not in {k[0] for k in top_cost if k}
    top_tokens = panel("Top providers by tokens")
    assert max(top_tokens, key=top_tokens.__getitem__) == (("gen_ai_provider_name", "anthropic"),)
    statuses = {dict(k).get("llm_status", "") for k in panel("Requests per second by status")}
    assert statuses == {"success", "error", "canceled", ""}  # "": the overflow series
    failures = {dict(k)["error_type"] for k in panel("Failed requests per second by error type")}
    assert failures == {"rate_limited", "http_500", "_OTHER", "timeout", "client_closed"}
    dropped = panel("Records dropped by reason")
    assert {dict(k)["reason"] for k, rate in dropped.items() if rate > 0} == {"negative_tokens"}
    assert {dict(k)["reason"] for k in dropped} >= set(RECORD_REASONS)  # at 0 but one
    headroom = {
        (dict(k)["gen_ai_request_model"], dict(k)["llm_ratelimit_kind"]): v
        for k, v in panel("Rate-limit headroom").items()
    }
    assert headroom == {
        ("gpt-4o-mini", "requests"): 1.0,  # 480 of 500, but reset 0.1 s later: whole again
        ("gpt-4o-mini", "tokens"): pytest.approx(12_000 / 200_000),
        ("claude-sonnet-4-5", "requests"): pytest.approx(40 / 50),
    }
    savings = {dict(k).get("gen_ai_response_model", ""): v
               for k, v in panel("Cache savings per hour by model").items()}  # fmt: skip
    assert set(savings) == {"gpt-4o-mini", "o3", "claude-sonnet-4-5", "claude-opus-4-1",
                            "gemini-2.5-pro", ""}  # fmt: skip  # "": the overflow series
    assert savings["claude-opus-4-1"] < 0 < savings["gpt-4o-mini"] < savings["claude-sonnet-4-5"]
    # Rates over one window: their ratio is the hand-computed ratio of the totals.
    assert savings["claude-sonnet-4-5"] / savings["gpt-4o-mini"] == pytest.approx(
        CACHE_NET_USD["claude-sonnet-4-5"] / CACHE_NET_USD["gpt-4o-mini"]
    )


@pytest.mark.slow
def test_every_rule_expression_parses_and_returns_data(prometheus: Prometheus) -> None:
    empty = []
    deadline = time.monotonic() + WAIT_S
    for rule in _rules():
        expr = rule["expr"]
        result = prometheus.eventually(lambda e=expr: prometheus.query(e), has_data, deadline)
        if not has_data(result):
            empty.append((rule.get("record") or rule.get("alert"), result))
    assert not empty


@pytest.mark.slow
def test_recording_rules_write_their_series(prometheus: Prometheus) -> None:
    def recorded(expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        return dict(prometheus.eventually(lambda: prometheus.values(expr), bool))

    for name in _recorded_names():
        assert recorded(name), name
    rates = recorded("llm:tokens:rate5m")
    assert {dict(k)["class"] for k in rates} == {
        "input", "output", "cache_read", "cache_write", "reasoning", "system",
    }  # fmt: skip
    # Both from one evaluation of the group (a query may fall between its two rules: retry).
    cache_share = _total("cache_read_tokens") / _total("input_tokens")
    share_expr = (
        'sum(llm:tokens:rate5m{class="cache_read"}) / sum(llm:tokens:rate5m{class="input"})'
    )
    seen = prometheus.eventually(
        lambda: prometheus.value(share_expr), lambda v: v == pytest.approx(cache_share)
    )
    assert seen == pytest.approx(cache_share)

    ratios = recorded("llm:requests:error_ratio5m")
    expected = {}
    for usage in _workload():
        key = (("gen_ai_provider_name", usage.provider), ("gen_ai_response_model", usage.model))
        failed, total = expected.get(key, (0, 0))
        expected[key] = (failed + (usage.status == "error"), total + 1)
    # The probe's overflow series keeps its provider, not its model.
    overflow = ratios.pop((("gen_ai_provider_name", "openai"),), None)
    assert overflow == 0
    assert ratios == pytest.approx({k: failed / total for k, (failed, total) in expected.items()})
    assert 3600 * next(iter(recorded("sum(llm:cost_usd:rate1h)").values())) > 50
    worth = {dict(k).get("gen_ai_response_model", ""): v
             for k, v in recorded("llm:cache_savings_usd:rate1h").items()}  # fmt: skip
    assert worth["claude-opus-4-1"] < 0 < worth["gpt-4o-mini"]  # writes that never paid off
    headroom = recorded('llm:ratelimit_headroom:ratio{llm_ratelimit_kind="tokens"}')
    assert list(headroom.values()) == [pytest.approx(0.06)]


@pytest.mark.slow
def test_alerts_fire_for_the_workload(prometheus: Prometheus) -> None:
    expected = {
        ("LLMUnpricedTokens", "vllm", "Qwen/Qwen3-32B", ""),
        # 10% errors on 31 requests; claude-opus-4-1 and gemini fail more often, but on fewer
        # than 20 requests, which is too little traffic to alert on.
        ("LLMErrorRatioHigh", "openai", "gpt-4o-mini", ""),
        ("LLMCostBurnHigh", "", "", ""),
        ("OtelTokensRecordsDropped", "openai", "", "negative_tokens"),
        ("OtelTokensSeriesOverflow", "openai", "", ""),
        ("LLMRateLimitHeadroomLow", "openai", "gpt-4o-mini", ""),  # 6% of its token limit left
        ("LLMBudgetMostlySpent", "", "", ""),  # the 24h budget (see BUDGETS)
        ("LLMBudgetRunsOutSoon", "", "", ""),  # the 24h and 7d budgets
    }

    def active() -> set[tuple[str, str, str, str]]:
        return {
            (
                a["labels"]["alertname"],
                a["labels"].get("gen_ai_provider_name", ""),
                a["labels"].get("gen_ai_response_model")
                or a["labels"].get("gen_ai_request_model", ""),
                a["labels"].get("reason", ""),
            )
            for a in prometheus.get("/api/v1/alerts")["alerts"]
            if a["state"] in {"pending", "firing"}
        }

    assert prometheus.eventually(active, lambda seen: seen == expected) == expected
    alerts = prometheus.get("/api/v1/alerts")["alerts"]
    (unpriced,) = [a for a in alerts if a["labels"]["alertname"] == "LLMUnpricedTokens"]
    assert unpriced["labels"]["severity"] == "warning"
    assert "Qwen/Qwen3-32B" in unpriced["annotations"]["summary"]
    budgets = Counter(
        (a["labels"]["alertname"], a["labels"]["llm_budget_period"]) for a in alerts
        if a["labels"]["alertname"].startswith("LLMBudget")
    )  # fmt: skip
    assert budgets == {("LLMBudgetMostlySpent", "24h"): 1, ("LLMBudgetRunsOutSoon", "24h"): 1,
                       ("LLMBudgetRunsOutSoon", "7d"): 1}  # fmt: skip
