"""The file transport: when no server is configured, payloads go to a local JSONL file.

One line per payload, the ``wire.envelope`` shape ``{"endpoint": ..., "body": ...}``, which
``definity-spark collector --load FILE`` imports. The path is ``events_file`` when set
(every task in that one file), else one file per task under ``<spool_dir>/events/``. The
path of each file is logged once, so that a user who forgot the server finds the reports.

Each line is written whole with one ``write`` on an ``O_APPEND`` descriptor (file mode
0600: the bodies may name internal tables), so concurrent writers never interleave lines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from definity_spark.delivery.transport import INVALID, IO_ERROR, SENT, SendResult, Transport

log = logging.getLogger("definity_spark.delivery")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(task_id: str, limit: int = 120) -> str:
    """A file-name-safe form of a task id (the real id stays inside the bodies)."""
    name = _UNSAFE.sub("_", task_id or "unknown-task").strip("._") or "unknown-task"
    return name[:limit]


def events_dir(spool_dir: str) -> str:
    return os.path.join(spool_dir, "events")


def write_line(fd: int, data: bytes) -> None:
    """Write all of ``data``; a short write is continued (O_APPEND keeps it at the end)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def open_private(path: str) -> int:
    """Open ``path`` for appending, creating it (and its directory) private to the user."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    # O_NOFOLLOW: a symbolic link planted under the expected name is refused, not followed
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask could only narrow it, but an old file may be wider
    except (AttributeError, OSError):
        pass
    return fd


class FileTransport(Transport):
    kind = "file"

    def __init__(self, events_file: str | None, spool_dir: str) -> None:
        self.events_file = os.path.abspath(os.path.expanduser(events_file)) if events_file \
            else None
        self.spool_dir = os.path.abspath(os.path.expanduser(spool_dir))
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.events_file or events_dir(self.spool_dir)

    def path_for(self, task_id: str) -> str:
        if self.events_file:
            return self.events_file
        return os.path.join(events_dir(self.spool_dir), safe_name(task_id) + ".jsonl")

    def send(self, endpoint: str, body: Mapping[str, Any],
             key: str | None = None) -> SendResult:
        path = self.path_for(str(body.get("task_id", "")))
        # (no key here: nothing is retried into this file; its lines are wire.envelope's)
        try:
            line = json.dumps({"endpoint": endpoint, "body": body}, separators=(",", ":"),
                              ensure_ascii=False) + "\n"
        except (TypeError, ValueError) as exc:
            return SendResult(INVALID, None, f"{type(exc).__name__}: {exc}", 0)
        try:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = open_private(path)
                    self._fds[path] = fd
                    log.warning("definity-spark: no server configured, writing events to %s "
                                "(import with `definity-spark collector --load %s`)", path, path)
                write_line(fd, line.encode("utf-8"))
        except OSError as exc:
            return SendResult(IO_ERROR, None, f"{type(exc).__name__}: {exc}", 1)
        return SendResult(SENT, None, "", 1)

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            try:
                os.fsync(fd)
            except OSError:
                pass
            try:
                os.close(fd)
            except OSError:
                pass
