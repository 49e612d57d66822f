"""``definity-spark replay``: send the spooled reports to the Definity server.

Wired into the ``definity-spark`` console script by ``definity_spark.cli`` through
``add_parser(subparsers)`` and ``run(args) -> exit code``. Settings come from the usual
places (``DEFINITY_*`` environment), the flags override them. The token is taken from
``--token`` or ``DEFINITY_TOKEN`` and is never printed.

Exit codes: 0 everything replayed (or nothing to do), 1 something is left in the spool
(server down, token rejected, a file still being written), 2 bad usage (no server).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from definity_spark.delivery.replay import replay
from definity_spark.delivery.spool_format import destination_of, file_destination, spool_files
from definity_spark.redaction import mask_url


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "replay", help="send spooled reports to the Definity server",
        description="Send the reports that could not be delivered (kept in the spool) to "
                    "the Definity server, in their original order, and remove what the "
                    "server accepted. Running it twice never sends a report twice.")
    parser.add_argument("--spool", default=None,
                        help="spool directory (default: spark.definity.spool.dir / "
                             "DEFINITY_SPOOL_DIR / the user's cache dir)")
    parser.add_argument("--server", default=None,
                        help="server base URL (default: DEFINITY_SERVER_URL)")
    parser.add_argument("--token", default=None,
                        help="API token (default: DEFINITY_TOKEN; prefer the environment, a "
                             "command-line argument is visible to other users in ps)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per request (default: DEFINITY_SERVER_TIMEOUT or 5)")
    parser.add_argument("--attempts", type=int, default=None,
                        help="tries per report, the first included (default: "
                             "DEFINITY_SERVER_ATTEMPTS or 3)")
    return parser


def run(args: argparse.Namespace) -> int:
    from definity_spark.settings import resolve

    overrides: dict[str, Any] = {}
    for flag, key in (("spool", "spool_dir"), ("server", "server_url"), ("token", "token"),
                      ("timeout", "server_timeout"), ("attempts", "server_attempts")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    settings = resolve(overrides=overrides, spark_conf={}, environ=os.environ)
    if not settings.server_url:
        print("definity-spark replay: no server: give --server URL or set "
              "DEFINITY_SERVER_URL", file=sys.stderr)
        return 2
    files = spool_files(settings.spool_dir)
    if not files:
        print(f"nothing to replay in {settings.spool_dir}")
        return 0
    print(f"replaying {len(files)} spool file(s) from {settings.spool_dir} "
          f"to {mask_url(settings.server_url)}")
    mine = destination_of(settings.server_url)
    elsewhere = sorted({d for d in map(file_destination, files) if d and d != mine})
    if elsewhere:
        # the user named the server: send them (the server may have moved), but say so
        print("  note: some files were spooled for another server: "
              + ", ".join(mask_url(d) or "" for d in elsewhere))
    report = replay(settings.spool_dir, settings.server_url, settings.token,
                    timeout=settings.server_timeout, attempts=settings.server_attempts,
                    attempt_sleep=settings.server_attempt_sleep,
                    verify_tls=settings.verify_tls, ca_bundle=settings.ca_bundle)
    print(f"sent {report.sent} report(s); {report.files_done} file(s) done, "
          f"{report.files_pending} pending, {report.files_live} still being written"
          + (f"; {report.rejected} refused by the server" if report.rejected else "")
          + (f"; {report.files_skipped} skipped (not a regular file of yours)"
             if report.files_skipped else "")
          + (f"; {report.corrupt_lines} unreadable line(s) skipped"
             if report.corrupt_lines else ""))
    for detail in report.details:
        print(f"  {detail}")
    if report.stopped_by == "auth":
        print("the Definity server rejected the token; fix DEFINITY_TOKEN (or --token) and "
              "run replay again", file=sys.stderr)
    elif report.stopped_by == "misdirected":
        print("the server URL does not answer like a Definity server (404/405/redirect); "
              "check --server / DEFINITY_SERVER_URL", file=sys.stderr)
    elif report.stopped_by == "tls":
        print("the server's TLS certificate could not be verified; set "
              "DEFINITY_SERVER_CA_BUNDLE to the CA that signed it", file=sys.stderr)
    elif report.stopped_by == "unsafe":
        print("the spool directory is another user's or writable by others: nothing was "
              "sent from it; use a directory only you can write to (--spool)",
              file=sys.stderr)
    elif report.stopped_by == "network":
        print("the server could not be reached (or failed); run replay again later",
              file=sys.stderr)
    return 0 if report.complete and not report.files_live else 1
