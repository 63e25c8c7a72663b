"""The `otel-tokens` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from otel_tokens._cli.budget import COMMANDS as BUDGET_COMMANDS
from otel_tokens._cli.budget import add_commands as add_budget_commands
from otel_tokens._cli.budget import run as run_budget_command
from otel_tokens._cli.ledger import COMMANDS as LEDGER_COMMANDS
from otel_tokens._cli.ledger import add_commands as add_ledger_commands
from otel_tokens._cli.ledger import run as run_ledger_command
from otel_tokens._cli.prices import COMMANDS as PRICE_COMMANDS
from otel_tokens._cli.prices import add_commands as add_price_commands
from otel_tokens._cli.prices import run as run_price_command
from otel_tokens._export.endpoint import CannotServeError
from otel_tokens._version import __version__
from otel_tokens._workers.files import MULTIPROC_ENV


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        msg = f"must be a number of seconds > 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _whole(low: int, high: int | None, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`, else an error naming `what`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            msg = f"must be {what}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_port = _whole(0, 65535, "a port number from 0 to 65535 (0: any free one)")
_count = _whole(1, None, "a whole number >= 1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-tokens", description="OpenTelemetry metrics for LLM token usage."
    )
    parser.add_argument("--version", action="version", version=f"otel-tokens {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="play gateway traffic through a tracker and serve it on Prometheus",
        description="Simulated LLM gateway traffic through a real TokenTracker, served on a "
        "Prometheus endpoint while it runs, then a summary table.",
    )
    length = demo.add_mutually_exclusive_group()
    length.add_argument("--duration", type=_positive, default=15.0, help="seconds (default 15)")
    length.add_argument("--forever", action="store_true", help="run until Ctrl-C")
    demo.add_argument("--host", default="127.0.0.1", help="Prometheus address (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=9464, help="Prometheus port (default 9464)")
    demo.add_argument(
        "--otlp", action="store_true", help="also push OTLP, per OTEL_EXPORTER_OTLP_* variables"
    )
    demo.add_argument("--concurrency", type=_count, default=16, help="clients at once (default 16)")
    demo.add_argument("--seed", type=int, default=None, help="repeatable traffic")
    demo.add_argument(
        "--ledger",
        metavar="PATH",
        help="also write every request to this usage ledger (SQLite file or postgresql:// "
        "URL), for `otel-tokens usage`; default: a new file in a temporary directory",
    )
    serve = commands.add_parser(
        "serve-metrics",
        help="serve the sum of several worker processes' metrics for Prometheus",
        description="One Prometheus endpoint for the worker processes that write to a "
        "directory (configure(exporters='prometheus', prometheus_multiproc_dir=DIR)); "
        "runs until Ctrl-C or SIGTERM.",
    )
    serve.add_argument(
        "--dir",
        default=os.environ.get(MULTIPROC_ENV),
        help=f"the workers' directory (default ${MULTIPROC_ENV})",
    )
    serve.add_argument("--host", default=None, help="address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=None, help="port (default 9464; 0: any free)")
    add_ledger_commands(commands)
    add_price_commands(commands)
    add_budget_commands(commands)
    return parser


def _serve_metrics(args: argparse.Namespace) -> int:
    if not args.dir:
        print(
            f"otel-tokens serve-metrics: error: give --dir or set {MULTIPROC_ENV}", file=sys.stderr
        )
        return 2
    from otel_tokens._workers.server import WorkerMetricsServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        from otel_tokens._workers.files import check_directory

        source = "--dir" if args.dir != os.environ.get(MULTIPROC_ENV) else MULTIPROC_ENV
        check_directory(args.dir, source)  # first, so that its error names the option
        server = WorkerMetricsServer(args.dir, host=args.host, port=args.port)
    except (OSError, ImportError, ValueError) as exc:
        print(f"otel-tokens serve-metrics: error: {_said(exc)}", file=sys.stderr)
        return 2
    print(f"serving the sum of the worker metrics in {args.dir} at {server.url}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _said(exc: BaseException) -> str:
    """An error's message in the command line's words (its flags, not Python arguments)."""
    if isinstance(exc, CannotServeError):
        return exc.says("--port")
    return str(exc)


def _reader_went_away() -> int:
    """What a Unix tool does when the command reading its output exits (`| head`): stop,
    say nothing, and exit as killed by SIGPIPE. Standard output is pointed at /dev/null
    first, or Python would complain when it flushes it at exit."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 128 + getattr(signal, "SIGPIPE", 13)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(message)s")
    if args.command in LEDGER_COMMANDS:
        try:
            return run_ledger_command(args)
        except BrokenPipeError:
            return _reader_went_away()
    for commands, run in ((PRICE_COMMANDS, run_price_command),
                          (BUDGET_COMMANDS, run_budget_command)):  # fmt: skip
        if args.command in commands:
            try:
                return run(args)
            except BrokenPipeError:
                return _reader_went_away()
    if args.command == "serve-metrics":
        return _serve_metrics(args)
    if args.command == "demo":
        try:
            from otel_tokens._demo.run import run_demo

            run_demo(
                duration=None if args.forever else args.duration,
                host=args.host,
                port=args.port,
                otlp=args.otlp,
                concurrency=args.concurrency,
                seed=args.seed,
                ledger=args.ledger,
            )
        except (OSError, ImportError, ValueError) as exc:
            print(f"otel-tokens demo: error: {_said(exc)}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
