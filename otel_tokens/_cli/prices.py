"""The `prices` commands: `show` a model's rates (and what a request costs), `check` a
ledger's models for missing prices, and `import` another project's price map."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from otel_tokens._base.usage import Usage
from otel_tokens._ledger.ledger import LEDGER_ENV, UsageLedger
from otel_tokens._pricing.litellm import from_litellm
from otel_tokens._pricing.prices import PICO_PER_USD, ModelPrice
from otel_tokens._pricing.table import PriceTable

COMMANDS = ("prices",)
_CLASSES = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
#: What a class without its own price is billed at.
_DEFAULTS = {"cache_read": "input", "cache_write": "input", "cache_write_1h": "cache_write",
             "reasoning": "output"}  # fmt: skip
_PICO_PER_USD_PER_MILLION = 10**6


class CommandError(Exception):
    """What the user asked for cannot be done; the message says why and what to do."""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"must be a whole number of tokens >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _day_of(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        msg = f"must be a day as YYYY-MM-DD, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def add_commands(commands: Any) -> None:
    """Add `prices` and its subcommands to the `otel-tokens` subparsers `commands`."""
    table = argparse.ArgumentParser(add_help=False)
    table.add_argument(
        "--prices",
        metavar="FILE",
        help="a JSON or YAML price file whose models override the bundled table's, as a "
        "tracker given it does (default: $OTEL_TOKENS_PRICE_FILE, else the bundled table)",
    )
    prices = commands.add_parser(
        "prices",
        help="show a model's prices, check a ledger's models, import a price map",
        description="The price table: a model's rates, the models a ledger holds without a "
        "price, and price files made from LiteLLM's price map.",
    )
    which = prices.add_subparsers(dest="prices_command", required=True)
    show = which.add_parser(
        "show",
        parents=[table],
        help="a model's rates per class, and what a request would cost",
        description="A model's rates in USD per million tokens, per class, tier and day; with "
        "token counts, what such a request costs today (or on --on), per class and in total. "
        "Counts are "
        "the Usage fields: --input includes cached tokens, --output includes reasoning.",
    )
    show.add_argument("model", metavar="MODEL")
    for flag, what in (
        ("--input", "input tokens, cache reads and writes included"),
        ("--output", "output tokens, reasoning included"),
        ("--cache-read", "input tokens read from the prompt cache"),
        ("--cache-write", "input tokens written to the prompt cache"),
        ("--cache-write-1h", "of the cache writes, those cached for an hour"),
        ("--reasoning", "reasoning tokens"),
    ):
        show.add_argument(flag, type=_count, metavar="N", help=what)
    show.add_argument(
        "--on", type=_day_of, metavar="YYYY-MM-DD",
        help="cost the request at this day's prices (UTC; default: today)",
    )  # fmt: skip
    check = which.add_parser(
        "check",
        parents=[table],
        help="the models in a ledger that have no price",
        description="Every model in a usage ledger with no price in the table, by tokens "
        "(input + output), largest first. Exit status 0 when all have a price, 1 when not.",
    )
    check.add_argument(
        "--ledger",
        metavar="PATH|URL",
        help=f"a SQLite file or a postgresql:// URL (default: ${LEDGER_ENV})",
    )
    imported = which.add_parser(
        "import",
        help="write a price file from another project's price map",
        description="A price file (JSON, sorted by model) from LiteLLM's "
        "model_prices_and_context_window.json; every price it cannot express is a warning "
        "on standard error.",
    )
    imported.add_argument("--format", required=True, choices=("litellm",))
    imported.add_argument("file", metavar="FILE", help="the price map to read")
    imported.add_argument("--out", metavar="OUT", help="the price file (default: stdout)")


def run(args: argparse.Namespace) -> int:
    """Run a `prices` command; its exit status."""
    try:
        return _COMMANDS[args.prices_command](args)
    except BrokenPipeError:  # the reader went away: the caller stops quietly
        raise
    except (CommandError, ValueError, ImportError, OSError) as exc:
        print(f"otel-tokens prices: error: {exc}", file=sys.stderr)
        return 2


def _table(args: argparse.Namespace) -> tuple[PriceTable, str]:
    path = args.prices or os.environ.get("OTEL_TOKENS_PRICE_FILE") or None
    if path is None:
        return PriceTable.bundled(), "the bundled table"
    try:
        return PriceTable.bundled().with_overrides(PriceTable.from_file(path)), path
    except ValueError as exc:
        msg = f"{exc}; fix the file or give another with --prices"
        raise CommandError(msg) from None


def _show(args: argparse.Namespace) -> int:
    table, where = _table(args)
    model = args.model
    name = _priced_as(table, model)
    if name is None:
        close = difflib.get_close_matches(model, sorted(table.models), n=5, cutoff=0.6)
        hint = f"; close names: {', '.join(close)}" if close else ""
        print(f"no price for {model}: not in {where}{hint}", file=sys.stderr)
        return 1
    counts = [args.input, args.output, args.cache_read, args.cache_write, args.reasoning,
              args.cache_write_1h]  # fmt: skip
    usage = _request(name, counts) if any(c is not None for c in counts) else None
    shown = model if name == model else f"{model} (priced as {name})"
    print(f"{shown}: USD per million tokens, from {where}")
    for price in sorted(table.prices(name), key=lambda p: (_day(p), p.above_input_tokens)):
        print(f"\n{_when(price)}")
        rates = price.rates()
        for cls in _CLASSES:
            own = getattr(price, cls)
            note = "" if own is not None else f"  (no own price: billed as {_DEFAULTS[cls]})"
            print(f"  {cls:<15}{_per_million(getattr(rates, cls)):>12}{note}")
    if usage is not None:
        _cost(table, usage, args.on)
    return 0


def _request(name: str, counts: list[int | None]) -> Usage:
    """The request the token counts describe; an error when they do not add up."""
    inputs, output, cache_read, cache_write, reasoning, write_1h = (c or 0 for c in counts)
    if write_1h > cache_write:
        msg = "--cache-write counts the 1-hour writes too: give --cache-write >= --cache-write-1h"
        raise CommandError(msg)
    if cache_read + cache_write > inputs or reasoning > output:
        msg = (
            "--input counts cached tokens too and --output counts reasoning: give --input >= "
            "--cache-read + --cache-write and --output >= --reasoning"
        )
        raise CommandError(msg)
    try:
        usage = Usage(provider="otel-tokens", model=name, input_tokens=inputs,
                      output_tokens=output, cache_read_tokens=cache_read,
                      cache_write_tokens=cache_write, cache_write_1h_tokens=write_1h,
                      reasoning_tokens=reasoning)  # fmt: skip
    except ValueError as exc:
        msg = f"{exc} (--input counts cached tokens too, --output counts reasoning)"
        raise CommandError(msg) from None
    return usage


def _cost(table: PriceTable, usage: Usage, on: date | None = None) -> None:
    inputs, output = usage.input_tokens, usage.output_tokens
    cache_read, cache_write = usage.cache_read_tokens, usage.cache_write_tokens
    reasoning = usage.reasoning_tokens
    rates = table.rates(usage, None if on is None else on.toordinal())  # default: today, UTC
    assert rates is not None  # the model was found above
    tokens = {
        "input": inputs - cache_read - cache_write,
        "output": output - reasoning,
        "cache_read": cache_read,
        "cache_write": cache_write - usage.cache_write_1h_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
        "reasoning": reasoning,
    }
    when = "today's prices" if on is None else f"the prices of {on}"
    print(f"\ncost of this request at {when} ({inputs:,} input tokens), USD")
    for cls in _CLASSES:
        if tokens[cls]:
            pico = tokens[cls] * getattr(rates, cls)
            print(f"  {cls:<15}{tokens[cls]:>12,} x {_per_million(getattr(rates, cls))}/M"
                  f" = {_usd(pico)}")  # fmt: skip
    print(f"  {'total':<15}{_usd(rates.cost(usage)):>12}")  # the classes' sum, as billed


def _priced_as(table: PriceTable, model: str) -> str | None:
    """The name `model` is priced under: itself, or as the tracker finds it (without its date
    suffix, Gemini's `models/` prefix or Vertex AI's `@version`)."""
    return table.priced_as(model)


def _day(price: ModelPrice) -> int:
    return price.effective.toordinal() if isinstance(price.effective, date) else 0


def _when(price: ModelPrice) -> str:
    since = f"from {price.effective}" if price.effective else "always"
    if price.above_input_tokens:
        return f"{since}, requests above {price.above_input_tokens:,} input tokens:"
    return f"{since}:"


def _per_million(pico_per_token: int) -> str:
    value = (Decimal(pico_per_token) / _PICO_PER_USD_PER_MILLION).normalize()
    return f"{value:f}"


def _usd(pico: int) -> str:
    value = (Decimal(pico) / PICO_PER_USD).normalize()
    return f"{value:f}"


def _check(args: argparse.Namespace) -> int:
    table, where = _table(args)
    target = args.ledger or os.environ.get(LEDGER_ENV)
    if not target:
        msg = f"which ledger? pass --ledger PATH (or a postgresql:// URL) or set {LEDGER_ENV}"
        raise CommandError(msg)
    if not target.startswith(("postgresql://", "postgres://")) and not Path(target).is_file():
        msg = f"no ledger at {target!r}: check the path, or give a postgresql:// URL"
        raise CommandError(msg)
    with UsageLedger(target, queue_size=10, batch_size=10) as ledger:
        rows = ledger.usage("all", by=["provider", "model"])
        described = ledger.target
    unpriced = [row for row in rows if not _has_price(table, row.group)]
    models = {row.group["model"] for row in rows}
    if not unpriced:
        print(f"all {len(models)} models in {described} have a price in {where}")
        return 0
    unpriced.sort(key=lambda r: (-(r.input_tokens + r.output_tokens), r.group["model"]))
    print(f"{len(unpriced)} of {len(rows)} models (by provider) in {described} have no price "
          f"in {where}; by tokens, largest first:\n")  # fmt: skip
    width = max(len(r.group["model"]) for r in unpriced)
    for row in unpriced:
        tokens = row.input_tokens + row.output_tokens
        print(f"  {row.group['model']:<{width}}  {row.group['provider']:<12}{tokens:>14,} tokens"
              f"  ({row.input_tokens:,} input, {row.output_tokens:,} output, "
              f"{row.requests:,} requests)")  # fmt: skip
    print("\nadd them to a price file (see `otel-tokens prices show`) and pass it with --prices")
    return 1


def _has_price(table: PriceTable, group: dict[str, str]) -> bool:
    try:
        usage = Usage(provider=group["provider"], model=group["model"])
    except ValueError:
        return False
    return table.rates(usage) is not None


def _import(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read {args.file!r}: {getattr(exc, 'strerror', None) or exc}"
        raise CommandError(msg) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = (
            f"{args.file!r} is not valid JSON ({exc}): give LiteLLM's "
            "model_prices_and_context_window.json"
        )
        raise CommandError(msg) from None
    try:
        rows, warnings = from_litellm(data)
    except ValueError as exc:
        msg = f"{args.file!r}: {exc}"
        raise CommandError(msg) from None
    lines = ",\n".join(f"  {json.dumps(row, ensure_ascii=False)}" for row in rows)
    document = f'{{"version": 1, "prices": [\n{lines}\n]}}\n' if rows else (
        '{"version": 1, "prices": []}\n')  # fmt: skip
    if args.out:
        try:
            Path(args.out).write_text(document, "utf-8")
        except OSError as exc:
            msg = f"cannot write {args.out!r}: {exc.strerror or exc}"
            raise CommandError(msg) from None
    else:
        sys.stdout.write(document)
        sys.stdout.flush()
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    models = len({row["model"] for row in rows})
    print(f"{len(rows)} rows from {models} models; {len(warnings)} things not expressible, "
          "see warnings", file=sys.stderr)  # fmt: skip
    return 0


_COMMANDS = {"show": _show, "check": _check, "import": _import}
