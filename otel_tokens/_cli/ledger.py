"""The ledger's commands: `usage`, `meters`, `prune`, `reset`, `export` and `import`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otel_tokens._base.fingerprint import SECRET_ENV
from otel_tokens._cli.report import (
    as_csv,
    as_json,
    meter_records,
    meter_table,
    usage_records,
    usage_table,
)
from otel_tokens._ledger.ledger import LEDGER_ENV, UsageLedger
from otel_tokens._ledger.periods import PERIOD_HELP

COMMANDS = ("usage", "meters", "prune", "reset", "export", "import")


class CommandError(Exception):
    """What the user asked for cannot be done; the message says why and what to do."""


def add_commands(commands: Any) -> None:
    """Add the ledger commands to the `otel-tokens` subparsers `commands`."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--ledger",
        metavar="PATH|URL",
        help=f"a SQLite file or a postgresql:// URL (default: ${LEDGER_ENV})",
    )
    where.add_argument("--tz", metavar="ZONE", help="IANA time zone days begin in (default UTC)")

    usage = commands.add_parser(
        "usage",
        parents=[where],
        help="usage per key, model, day... from a ledger",
        description="Requests, tokens by class, cost and last activity over a period, "
        "from a usage ledger. With --meter, a custom meter's events instead.",
    )
    usage.add_argument("--period", default="today", help=f"{PERIOD_HELP} (default today)")
    usage.add_argument(
        "--by",
        default="",
        metavar="GROUPS",
        help="comma-separated: key, team, provider, model, scenario, status, day or hour; with "
        "--meter: key, day, hour and the meter's dimensions",
    )
    key = usage.add_mutually_exclusive_group()
    key.add_argument("--key-id", help="only this key (its fingerprint, as the ledger shows)")
    key.add_argument("--key", help=f"only this API key (fingerprinted with ${SECRET_ENV})")
    usage.add_argument("--team", help="only this team's usage (the team requests carry)")
    usage.add_argument("--meter", help="a custom meter's events instead of token usage")
    usage.add_argument("--format", choices=("table", "json", "csv"), default="table")

    commands.add_parser("meters", parents=[where], help="list the custom meters a ledger defines")

    prune = commands.add_parser(
        "prune", parents=[where], help="delete usage older than a date or an age"
    )
    prune.add_argument("--before", required=True, help="an age (90d, 12w) or a date YYYY-MM-DD")

    reset = commands.add_parser("reset", parents=[where], help="delete one key's usage, or all")
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--key-id", help="the key's fingerprint")
    which.add_argument("--key", help=f"the API key (fingerprinted with ${SECRET_ENV})")
    which.add_argument("--all", action="store_true", help="every key's usage")

    export = commands.add_parser(
        "export", parents=[where], help="write a JSON Lines snapshot that `import` merges"
    )
    export.add_argument("--period", default="all", help=f"{PERIOD_HELP} (default all)")
    export.add_argument(
        "-o", "--output", default="-", help="the snapshot file (default: standard output)"
    )

    merge = commands.add_parser(
        "import", parents=[where], help="merge snapshots, skipping what the ledger already has"
    )
    merge.add_argument("files", nargs="+", metavar="FILE", help="snapshots; '-' reads stdin")


def run(args: argparse.Namespace) -> int:
    """Run a ledger command; its exit status."""
    return run_on_ledger(args.command, lambda: _open(args), _COMMANDS[args.command], args)


def run_on_ledger(
    name: str,
    opened: Callable[[], UsageLedger],
    command: Callable[[UsageLedger, argparse.Namespace], int],
    args: argparse.Namespace,
) -> int:
    """Run `command` on the ledger `opened()` opens, and close it; the exit status: the
    command's, or 2 with the error on stderr (`otel-tokens NAME: error: ...`)."""
    try:
        with opened() as ledger:
            return command(ledger, args)
    except BrokenPipeError:  # the reader went away: the caller stops quietly
        raise
    except (CommandError, ValueError, ImportError, OSError) as exc:
        print(f"otel-tokens {name}: error: {exc}", file=sys.stderr)
        return 2


def _open(args: argparse.Namespace) -> UsageLedger:
    return open_ledger(args.ledger, creates=args.command == "import", creator="`import`")


def open_ledger(given: str | None, *, creates: bool, creator: str) -> UsageLedger:
    """The ledger a command names (`--ledger`, else $OTEL_TOKENS_LEDGER); only a command that
    `creates` one may name a SQLite file that is not there yet (`creator` is its name).

    Raises:
        CommandError: no ledger named, or no file there.
    """
    target = given or os.environ.get(LEDGER_ENV)
    if not target:
        msg = f"which ledger? pass --ledger PATH (or a postgresql:// URL) or set {LEDGER_ENV}"
        raise CommandError(msg)
    is_url = target.startswith(("postgresql://", "postgres://"))
    if not is_url and not creates and not Path(target).is_file():
        msg = f"no ledger at {target!r}: check the path ({creator} creates one)"
        raise CommandError(msg)
    return UsageLedger(target, queue_size=10, batch_size=10)


def _groups(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _usage(ledger: UsageLedger, args: argparse.Namespace) -> int:
    groups = ["key" if g == "key_id" else g for g in _groups(args.by)]
    period = ledger.period(args.period, tz=args.tz)
    if args.meter:
        meter_rows = ledger.meter_usage(args.meter, args.period, by=groups, key_id=args.key_id,
                                        api_key=args.key, tz=args.tz)  # fmt: skip
        records = meter_records(meter_rows)
        text = meter_table(meter_rows, groups, period)
        title = f"meter {args.meter}, "
    else:
        rows = ledger.usage(args.period, by=groups, key_id=args.key_id, api_key=args.key,
                            tz=args.tz, team=args.team)  # fmt: skip
        records = usage_records(rows)
        text = usage_table(rows, groups, period)
        title = ""
    if args.format == "json":
        print(as_json(records, period))
    elif args.format == "csv":
        print(as_csv(records, groups))
    else:
        print(f"{title}{period.describe()}  ({ledger.target})\n")
        print(text)
    return 0


def _meters(ledger: UsageLedger, args: argparse.Namespace) -> int:
    meters = ledger.meters()
    if not meters:
        print(f"no custom meters in {ledger.target}")
    for meter in meters:
        spec = meter.spec
        about = f"  {spec.description}" if spec.description else ""
        print(f"{spec.name}  {spec.aggregation} of {spec.unit}  by "
              f"{', '.join(spec.dimensions) or '-'}{about}")  # fmt: skip
    return 0


def _prune(ledger: UsageLedger, args: argparse.Namespace) -> int:
    deleted = ledger.prune(args.before, tz=args.tz)
    print(f"deleted {deleted} requests and events before {args.before} from {ledger.target}")
    return 0


def _reset(ledger: UsageLedger, args: argparse.Namespace) -> int:
    deleted = ledger.reset(key_id=args.key_id, api_key=args.key, all_keys=args.all)
    whose = "every key" if args.all else f"key {args.key_id or '(given)'}"
    print(f"deleted {deleted} requests and events of {whose} from {ledger.target}")
    return 0


def _export(ledger: UsageLedger, args: argparse.Namespace) -> int:
    if args.output == "-":
        counts = ledger.export(sys.stdout, args.period, tz=args.tz)
        sys.stdout.flush()
    else:
        counts = ledger.export(args.output, args.period, tz=args.tz)
    print(f"exported {counts['requests']} requests, {counts['events']} events and "
          f"{counts['meters']} meters", file=sys.stderr)  # fmt: skip
    return 0


def _import(ledger: UsageLedger, args: argparse.Namespace) -> int:
    for name in args.files:
        counts = ledger.merge(sys.stdin if name == "-" else name)
        print(f"{name}: added {counts['requests_added']} requests "
              f"({counts['requests_skipped']} already there) and {counts['events_added']} "
              f"events ({counts['events_skipped']} already there)")  # fmt: skip
    return 0


_COMMANDS = {
    "usage": _usage,
    "meters": _meters,
    "prune": _prune,
    "reset": _reset,
    "export": _export,
    "import": _import,
}
