"""The `budget` commands: `set` a key's, a team's or the global budget, `list` every budget
with where it stands, and `remove` them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from otel_tokens._base.fingerprint import SECRET_ENV
from otel_tokens._cli.ledger import open_ledger, run_on_ledger
from otel_tokens._ledger.budgets import PERIOD_HELP, BudgetStatus, status_table
from otel_tokens._ledger.ledger import LEDGER_ENV, UsageLedger

COMMANDS = ("budget",)


def add_commands(commands: Any) -> None:
    """Add `budget` and its subcommands to the `otel-tokens` subparsers `commands`."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--ledger", metavar="PATH|URL",
        help=f"a SQLite file or a postgresql:// URL (default: ${LEDGER_ENV})",
    )  # fmt: skip
    whose = argparse.ArgumentParser(add_help=False)
    subject = whose.add_mutually_exclusive_group(required=True)
    subject.add_argument("--key-id", help="a key's budget, by its fingerprint")
    subject.add_argument(
        "--key", help=f"a key's budget, by the key (fingerprinted with ${SECRET_ENV})"
    )
    subject.add_argument("--team", help="a team's budget (the team requests carry, Usage.team)")
    subject.add_argument("--global", dest="everything", action="store_true",
                         help="the budget of all usage together")  # fmt: skip
    budget = commands.add_parser(
        "budget",
        help="set, list and remove the budgets of keys, teams or all usage",
        description="Budgets in a usage ledger: an amount in USD or tokens per day, week, "
        "month or rolling window, for one key, one team, or everything. Gateways read them "
        "with UsageLedger.remaining(); the llm.budget.* gauges report them.",
    )
    which = budget.add_subparsers(dest="budget_command", required=True)
    put = which.add_parser("set", parents=[where, whose], help="set (or change) a budget")
    put.add_argument("amount", help="USD (exact: 12.50) or whole tokens with --unit tokens")
    put.add_argument("--unit", choices=("usd", "tokens"), default="usd")
    put.add_argument("--period", default="month", help=f"{PERIOD_HELP} (default month)")
    put.add_argument("--tz", default="UTC", help="IANA time zone days begin in (default UTC)")
    listing = which.add_parser("list", parents=[where], help="every budget and where it stands")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    remove = which.add_parser("remove", parents=[where, whose], help="remove budgets")
    remove.add_argument("--period", help="only the budget of this period")
    remove.add_argument("--unit", choices=("usd", "tokens"), help="only the budget in this unit")


def run(args: argparse.Namespace) -> int:
    """Run a budget command; its exit status."""
    which = args.budget_command
    return run_on_ledger(f"budget {which}", lambda: _open(args), _COMMANDS[which], args)


def _open(args: argparse.Namespace) -> UsageLedger:
    return open_ledger(args.ledger, creates=args.budget_command == "set", creator="`budget set`")


def _subject(args: argparse.Namespace) -> dict[str, str | None]:
    return {"key_id": args.key_id, "api_key": args.key, "team": args.team}


def _set(ledger: UsageLedger, args: argparse.Namespace) -> int:
    budget = ledger.set_budget(args.amount, unit=args.unit, period=args.period, tz=args.tz,
                               **_subject(args))  # fmt: skip
    print(f"set {budget.describe()} in {ledger.target}")
    return 0


def _remove(ledger: UsageLedger, args: argparse.Namespace) -> int:
    removed = ledger.remove_budget(period=args.period, unit=args.unit, **_subject(args))
    print(f"removed {removed} budget(s) from {ledger.target}")
    return 0 if removed else 1


def _list(ledger: UsageLedger, args: argparse.Namespace) -> int:
    statuses = sorted(ledger.budget_statuses(), key=lambda s: s.budget.name)
    if args.format == "json":
        print(json.dumps([_record(s) for s in statuses], indent=2))
        return 0
    if not statuses:
        print(f"no budgets in {ledger.target}: add one with `otel-tokens budget set`")
        return 0
    print(status_table(statuses))
    unpriced = sum(s.unpriced_tokens for s in statuses if s.budget.unit == "usd")
    if unpriced:
        print(f"\n{unpriced} tokens of unpriced models are not in the USD figures: "
              "`otel-tokens prices check` lists them")  # fmt: skip
    return 0


def _record(status: BudgetStatus) -> dict[str, Any]:
    budget = status.budget
    return {
        "scope": budget.scope, "subject": budget.subject, "amount": str(budget.amount),
        "unit": budget.unit, "period": budget.period, "tz": budget.tz,
        "spent": str(status.spent), "remaining": str(status.remaining),
        "window_start": status.window_start.isoformat(),
        "resets_at": None if status.resets_at is None else status.resets_at.isoformat(),
        "burn_per_hour": str(status.burn_per_hour), "exhaustion_s": status.exhaustion_s,
        "unpriced_tokens": status.unpriced_tokens,
    }  # fmt: skip


_COMMANDS = {"set": _set, "list": _list, "remove": _remove}
