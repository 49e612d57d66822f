"""Replay: spool files sent to the server, in order, from a cursor.

``replay`` (the ``definity-spark replay`` command), ``replay_with`` (any transport) and
``start_background_replay`` (at activation, the files of the same server). The files
and their cursors: ``spool`` and ``spool_format``.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from definity_spark.delivery.spool_format import (
    _remove,
    destination_of,
    file_destination,
    read_cursor,
    read_records,
    record_key,
    spool_files,
    unsafe_dir,
    write_cursor,
)
from definity_spark.delivery.transport import (
    ABORTED,
    AUTH,
    MISDIRECTED,
    REJECTED,
    SENT,
    TLS,
    Transport,
)

try:  # POSIX; on other platforms files are never considered live
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("definity_spark.delivery")


@dataclass
class ReplayReport:
    """What one replay did; ``complete`` when nothing is left to send."""

    files_done: int = 0
    files_pending: int = 0
    files_live: int = 0
    files_skipped: int = 0  # not a regular file of this user's (a FIFO, a link...)
    sent: int = 0
    rejected: int = 0
    corrupt_lines: int = 0
    # why replay stopped early: "network", "auth", "misdirected", "tls", "aborted",
    # "unsafe" (the directory is another user's or writable by others) or ""
    stopped_by: str = ""
    details: list[str] = field(default_factory=list)
    abort: threading.Event | None = field(default=None, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        return self.files_pending == 0 and not self.stopped_by

    def as_dict(self) -> dict[str, Any]:
        return {
            "files_done": self.files_done, "files_pending": self.files_pending,
            "files_live": self.files_live, "files_skipped": self.files_skipped,
            "sent": self.sent, "rejected": self.rejected,
            "corrupt_lines": self.corrupt_lines, "stopped_by": self.stopped_by,
        }


def replay_with(transport: Transport, spool_dir: str,
                abort: threading.Event | None = None,
                files: Iterable[str] | None = None) -> ReplayReport:
    """Send every idle spool file through ``transport``, in order; see module docstring.

    Stops at the first payload that cannot be delivered (server down, token rejected):
    sending later ones would break the order, and the next replay picks up from the cursor.
    A payload the server refuses for good (4xx other than 401/403) is skipped and counted.
    """
    report = ReplayReport(abort=abort)
    problem = unsafe_dir(os.path.abspath(os.path.expanduser(spool_dir)))
    if problem:
        report.stopped_by = "unsafe"
        report.files_pending = len(spool_files(spool_dir))
        report.details.append(f"the spool directory {spool_dir} is {problem}")
        log.error("definity-spark: not replaying %s: the directory is %s (records in it could "
                  "send the token elsewhere); move your spool files to a directory only you "
                  "can write to", spool_dir, problem)
        return report
    for path in list(files) if files is not None else spool_files(spool_dir):
        if abort is not None and abort.is_set():
            report.stopped_by = report.stopped_by or "aborted"
        if report.stopped_by:
            report.files_pending += 1
            continue
        try:
            _replay_file(transport, path, report)
        except OSError as exc:
            report.files_pending += 1
            report.details.append(f"{os.path.basename(path)}: {type(exc).__name__}: {exc}")
            log.warning("definity-spark: cannot replay %s: %s", path, exc)
    return report


def _replay_file(transport: Transport, path: str, report: ReplayReport) -> None:
    try:
        # O_NONBLOCK: a FIFO put here meanwhile must not hang the replay; O_NOFOLLOW: nor
        # a link lead it elsewhere
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return  # replayed meanwhile by someone else
    except OSError as exc:
        report.files_skipped += 1
        log.warning("definity-spark: %s skipped: %s", path, exc)
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            report.files_skipped += 1
            log.warning("definity-spark: %s skipped: not a regular file of this user's", path)
            return
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                report.files_live += 1
                log.info("definity-spark: %s is still being written by a running "
                         "application; not replayed now", path)
                return
        if not os.path.exists(path):
            return  # removed between listdir and lock by a replay that finished it
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read()
        records, corrupt = read_records(data)
        if corrupt:
            report.corrupt_lines += corrupt
            log.warning("definity-spark: %d unreadable line(s) in %s skipped (torn, not JSON, "
                        "or not for a reporting endpoint)", corrupt, path)
        accepted = min(read_cursor(path), len(records))
        name = os.path.basename(path)
        while accepted < len(records):
            if report.abort is not None and report.abort.is_set():
                report.stopped_by = "aborted"
                report.files_pending += 1
                return
            record = records[accepted]
            result = transport.send(record["endpoint"], record["body"],
                                    key=record_key(name, record, accepted))
            if result.outcome == SENT:
                report.sent += 1
            elif result.outcome == REJECTED:
                # A permanent refusal would block the file forever: skip it, say so.
                report.rejected += 1
                report.details.append(f"{name}: seq {record.get('seq')} {record['endpoint']} "
                                      f"refused (HTTP {result.status}: {result.detail[:200]})")
            else:
                report.stopped_by = {AUTH: "auth", MISDIRECTED: "misdirected", TLS: "tls",
                                     ABORTED: "aborted"}.get(result.outcome, "network")
                report.files_pending += 1
                report.details.append(f"{name}: stopped at record {accepted + 1}/{len(records)}"
                                      f": {result.detail or result.outcome}")
                return
            accepted += 1
            write_cursor(path, accepted)
        _remove(path)
        report.files_done += 1
    finally:
        os.close(fd)  # releases the exclusive lock


def replay(
    spool_dir: str,
    server_url: str,
    token: str | None = None,
    *,
    timeout: float = 5.0,
    attempts: int = 3,
    attempt_sleep: float = 1.0,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    abort: threading.Event | None = None,
    files: Iterable[str] | None = None,
) -> ReplayReport:
    """Send the spooled tasks of ``spool_dir`` (or only ``files`` of it) to ``server_url``;
    remove what was accepted."""
    from definity_spark.delivery.http import HttpTransport
    from definity_spark.redaction import mask_url

    transport = HttpTransport(server_url, token, timeout=timeout, attempts=attempts,
                              attempt_sleep=attempt_sleep, verify_tls=verify_tls,
                              ca_bundle=ca_bundle, abort=abort)
    try:
        report = replay_with(transport, spool_dir, abort=abort, files=files)
    finally:
        transport.close()
    level = logging.INFO if report.complete else logging.WARNING
    log.log(level, "definity-spark: replay of %s to %s: %s", spool_dir, mask_url(server_url),
            report.as_dict())
    return report


def start_background_replay(settings: Any, abort: threading.Event) -> threading.Thread | None:
    """At activation (``replay_spool``): replay older, idle spool files of the same server
    on a daemon thread.

    Only files whose first line names this activation's server (``destination_of``) are
    sent: a file spooled for another server (a dev server, a moved one) or by an older
    version waits for an explicit ``definity-spark replay``. Files of running applications
    (this one included) are locked and skipped. ``abort`` (the delivery's) stops it between
    payloads and cuts its backoff sleeps at close.
    """
    if not settings.server_url:
        return None
    mine = destination_of(settings.server_url)
    files = [path for path in spool_files(settings.spool_dir)
             if file_destination(path) == mine]
    if not files:
        return None

    def run() -> None:
        try:
            replay(settings.spool_dir, settings.server_url, settings.token,
                   timeout=settings.server_timeout, attempts=settings.server_attempts,
                   attempt_sleep=settings.server_attempt_sleep, verify_tls=settings.verify_tls,
                   ca_bundle=settings.ca_bundle, abort=abort, files=files)
        except Exception:  # noqa: BLE001 - a background thread must not die loudly
            log.warning("definity-spark: background replay failed", exc_info=True)

    thread = threading.Thread(target=run, name="definity-spark.replay", daemon=True)
    thread.start()
    return thread
