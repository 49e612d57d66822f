"""``definity-spark collector``: run the local collector, or import a JSONL events file.

The lead's ``definity_spark/cli.py`` mounts this with ``add_parser(subparsers)``; until
then (and always) ``python -m definity_spark.collector`` runs the same thing.

Printing is fine here (this is a CLI): the base URL goes to stdout on its own first line
(so scripts can read it when ``--port 0`` picks a free port); everything else to stderr,
except the summary of a plain ``--load`` (no ``--serve``), which is the command's output.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from definity_spark.collector.db import default_db_path
from definity_spark.collector.server import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, Collector

HELP = "run the local Definity collector (lineage page + REST API), or import an events file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"interface to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 = a free port, printed)")
    parser.add_argument("--db", default=None,
                        help=f"SQLite database file (default $DEFINITY_COLLECTOR_DB or "
                             f"{default_db_path()}); ':memory:' keeps nothing")
    parser.add_argument("--token", default=None,
                        help=f"require 'Authorization: Bearer TOKEN' on POST /log/* and on "
                             f"reads (default ${TOKEN_ENV}; prefer the variable: arguments are "
                             f"visible in ps)")
    parser.add_argument("--load", nargs="+", action="append", metavar="FILE", default=None,
                        help="import JSONL events file(s) written by the plugin's file "
                             "transport, then exit (add --serve to keep serving)")
    parser.add_argument("--serve", action="store_true",
                        help="with --load: serve after importing instead of exiting")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``collector`` subcommand; its ``func`` default is ``run``."""
    parser = subparsers.add_parser("collector", help=HELP, description=HELP)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Exit codes: 0 ok; 1 some loaded lines were rejected; 2 cannot start/read."""
    _configure_logging()
    token = args.token or os.environ.get(TOKEN_ENV) or None
    db_path = args.db or default_db_path()
    collector = Collector(db_path=db_path, host=args.host, port=args.port, token=token)
    files: list[str] = [path for group in (args.load or []) for path in group]
    status = 0
    # When serving, stdout carries only the URL (first line), so the import summary goes
    # to stderr; a plain import prints its summary on stdout.
    summary = sys.stderr if args.serve else sys.stdout
    try:
        for path in files:
            try:
                loaded, rejected = collector.load_file(path)
            except OSError as exc:
                _err(f"definity-spark collector: cannot read {path}: {exc}")
                return 2
            print(f"loaded {loaded} payload(s) from {path}"
                  + (f", rejected {len(rejected)} line(s)" if rejected else ""),
                  file=summary, flush=True)
            for number, message in rejected[:20]:
                _err(f"  {path}:{number}: {message}")
            if len(rejected) > 20:
                _err(f"  ... and {len(rejected) - 20} more")
            if rejected:
                status = 1
        if files and not args.serve:
            return status
        try:
            url = collector.start()
        except OSError as exc:
            _err(f"definity-spark collector: cannot listen on {args.host}:{args.port}: {exc}")
            return 2
        print(url, flush=True)
        _err(f"definity-spark collector: lineage page {url}/ , reporting endpoints "
             f"{url}/log/*, db {db_path}"
             + (" (token required, for reads too: the page asks for it)" if token else "")
             + ". Ctrl-C to stop.")
        _stop_on_sigterm()
        collector.serve_forever()
        return status
    finally:
        collector.stop()


def _configure_logging() -> None:
    # The collector's own log (accepted/rejected payloads) goes to stderr when run as a
    # command; a host program that already configured logging keeps its setup.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(message)s")
        # One record per request, and this format shows no thread, process or source
        # line: don't collect them (the logging docs' "Optimization" switches; safe here,
        # where this process's logging is ours).
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        logging._srcfile = None  # no sys._getframe() walk per record


def _stop_on_sigterm() -> None:
    # `kill PID` should close the database cleanly, like Ctrl-C.
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="definity-spark collector", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))
