"""The spool: payloads that could not be delivered wait on local disk for a replay.

Layout: ``<spool_dir>/<stamp>__<task>.jsonl``, one file per task and writer (``stamp`` is
the UTC creation time + pid + a random part, so that file names sort in time order and two
processes never share a file; ``task`` is the file-name-safe task id, the real one is in
the bodies). Directory mode 0700, file mode 0600.

The first line names the server the reports were meant for, ``{"dest": "https://h/p"}``
(``destination_of``: no user-info, no query): the background replay of a later activation
sends only files of its own server. Then records, one JSON object per line:
  ``{"seq": 7, "key": "9f2c...-7", "endpoint": "/log/tf", "body": {...}}``  a payload
                  (``wire.envelope`` + seq + its idempotency key, resent as it was)
  ``{"ack": 7}``  payload 7 was delivered after all (it was in flight when the delivery
                  closed and got spooled, then the server answered 2xx)

Each record is one ``write`` of a whole line on an ``O_APPEND`` descriptor followed by
``fsync``, so a crash leaves at most a torn last line (skipped at replay). ``seq`` is the
submission number: replay sends in ``seq`` order, which is the submission order even when
a payload got to the file after a later one (overflow on the caller's thread, a payload in
flight at close).

A live writer holds a shared ``flock`` on its file for as long as it has it open; replay
takes an exclusive one without waiting and skips files that are still being written.

Replay keeps a cursor per file, ``<file>.cursor``: the number of records (in send order)
already accepted by the server or permanently refused; it is replaced atomically after
every accepted record, so replaying twice never re-sends what the server accepted. When a
file is done, it and its cursor are removed. The one unavoidable duplicate: the server
accepts a record and the replaying process dies before the cursor is written.

Here: the writer, ``Spool``. Reading the files: ``spool_format``; replay: ``replay``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from definity_spark.delivery.file import open_private, safe_name, write_line
from definity_spark.delivery.spool_format import (
    CURSOR_SUFFIX,
    SUFFIX,
    _remove,
    destination_of,
    pending_count,
    read_records,
    spool_files,
    unsafe_dir,
)

try:  # POSIX; on other platforms files are never considered live
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("definity_spark.delivery")


def _new_stamp() -> str:
    now = time.time()
    return "{}{:03d}-{}-{:04x}".format(
        time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)), int(now * 1000) % 1000,
        os.getpid(), random.getrandbits(16))


def ensure_dir(spool_dir: str) -> str:
    path = os.path.abspath(os.path.expanduser(spool_dir))
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _record_line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def _dir_size(directory: str) -> int:
    """Bytes of the spool files (and cursors) in ``directory``."""
    total = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.endswith((SUFFIX, CURSOR_SUFFIX)):
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                pass
    return total


class Spool:
    """The writer side: one open file per task, appended to by the delivery.

    ``max_bytes`` bounds the directory: to make room, the oldest whole files (other
    processes' idle files, then this writer's files of other tasks) are removed and the
    reports in them counted through ``on_dropped``; a task whose own file alone fills the
    bound gets no more records (``append`` returns False), so that its file keeps a prefix
    of the task. Both are logged once.
    """

    def __init__(self, spool_dir: str, max_bytes: int | None = None,
                 destination: str | None = None) -> None:
        self.spool_dir = os.path.abspath(os.path.expanduser(spool_dir))
        self.max_bytes = max_bytes
        # the server the reports were meant for, first line of each file (replay at a later
        # activation only sends files of its own server)
        self._header = _record_line({"dest": destination_of(destination)}) \
            if destination else b""
        self._fresh: set[str] = set()  # tasks whose file has no header line yet
        # called with the number of reports removed to make room (under the spool's lock)
        self.on_dropped: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self._files: dict[str, tuple[int, str]] = {}
        self._stamp = _new_stamp()
        self._pid = os.getpid()
        self._error_logged = False
        self._drop_logged = False
        self._full_logged = False
        self._dir_checked = False
        self._used: int | None = None  # bytes in the directory, as far as this writer knows
        self._torn: set[str] = set()  # tasks whose file may end in a partial line
        # tasks refused for lack of room: nothing later of theirs either, so that what
        # the spool holds of a task is always a prefix of it (no hole in the middle)
        self._full: set[str] = set()
        self._closed = False
        self._closed_paths: dict[str, str] = {}  # after close: where each task's file is

    def path_for(self, task_id: str) -> str | None:
        entry = self._files.get(task_id)
        return entry[1] if entry else None

    def paths(self) -> list[str]:
        return [p for _, p in self._files.values()]

    def _fd_for(self, task_id: str) -> int:
        if self._pid != os.getpid():
            # Forked child: the parent's files are the parent's (the descriptors are
            # shared copies); the child writes its own.
            self._files = {}
            self._stamp = _new_stamp()
            self._pid = os.getpid()
            self._used = None
            self._full = set()
            self._torn = set()
        entry = self._files.get(task_id)
        if entry is not None:
            return entry[0]
        directory = ensure_dir(self.spool_dir)
        if not self._dir_checked:
            self._dir_checked = True
            problem = unsafe_dir(directory)
            if problem:
                log.warning("definity-spark: the spool directory %s is %s; `definity-spark "
                            "replay` refuses to send from it (set spark.definity.spool.dir "
                            "to a directory of your own)", directory, problem)
        path = os.path.join(directory, f"{self._stamp}__{safe_name(task_id)}{SUFFIX}")
        fd = open_private(path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                pass  # a lock we cannot take only means replay may treat the file as idle
        self._files[task_id] = (fd, path)
        if self._header:
            self._fresh.add(task_id)
        return fd

    def append(self, task_id: str, records: Sequence[Mapping[str, Any]]) -> bool:
        """Append records (``{"seq", "endpoint", "body"}`` or ``{"ack"}``) durably.

        One write and one fsync per call. False (logged once) if the disk refused or the
        bound leaves no room; a write that failed half-way (disk full, file size limit) is
        cut off again, so that it never corrupts the next record.
        """
        if not records:
            return True
        try:
            data = b"".join(_record_line(record) for record in records)
        except (TypeError, ValueError) as exc:  # not JSON-serialisable: a bug upstream
            log.warning("definity-spark: a report could not be serialised for the spool "
                        "(%s: %s); dropped", type(exc).__name__, exc)
            return False
        try:
            with self._lock:
                if self._closed:
                    return self._append_closed(task_id, data)
                fd = self._fd_for(task_id)
                if task_id in self._fresh:
                    data = self._header + data
                # an ack (a few bytes) is never refused for room: without it, replay would
                # send a delivered report again
                acks_only = all("ack" in record for record in records)
                if not acks_only and not self._make_room(task_id, len(data)):
                    return False
                self._write(task_id, fd, data)
                self._fresh.discard(task_id)
                if self._used is not None:
                    self._used += len(data)
            return True
        except OSError as exc:
            if not self._error_logged:
                self._error_logged = True
                log.error("definity-spark: cannot write to the spool %s (%s: %s); reports "
                          "that cannot be delivered are lost", self.spool_dir,
                          type(exc).__name__, exc)
            return False

    def _write(self, task_id: str, fd: int, data: bytes) -> None:
        if task_id in self._torn:
            data = b"\n" + data  # a partial line may end the file: keep it on its own
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            write_line(fd, data)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)  # back to the last whole record
                self._torn.discard(task_id)
            except OSError:
                self._torn.add(task_id)
            raise
        self._torn.discard(task_id)

    def _append_closed(self, task_id: str, data: bytes) -> bool:
        """After ``close``: a late record (the ack of a request that was in flight) goes
        into the task's file without keeping it open (nor locked); never a new file."""
        path = self._closed_paths.get(task_id)
        if path is None or self._pid != os.getpid():
            return False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return False  # replayed and removed meanwhile
        try:
            self._write(task_id, fd, data)
        finally:
            os.close(fd)
        return True

    def pending(self, task_id: str) -> list[dict[str, Any]]:
        """The task's spooled reports not delivered yet (unacked), in ``seq`` order."""
        with self._lock:
            path = self.path_for(task_id)
        if path is None:
            return []
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return []
        return read_records(data)[0]

    def discard(self, task_id: str) -> None:
        """The task's file is fully delivered: close and remove it (and its cursor)."""
        with self._lock:
            entry = self._files.pop(task_id, None)
            self._fresh.discard(task_id)
            self._torn.discard(task_id)
            self._full.discard(task_id)
            if entry is None:
                return
            fd, path = entry
            try:
                os.close(fd)
            except OSError:
                pass
            try:
                freed = os.path.getsize(path)
            except OSError:
                freed = 0
            _remove(path)
            if self._used is not None:
                self._used = max(0, self._used - freed)

    # ------------------------------------------------------------------ the bound
    def _make_room(self, task_id: str, needed: int) -> bool:
        """True when ``needed`` more bytes fit in the bound, after removing the oldest
        whole files other than this task's if that is what it takes."""
        if self.max_bytes is None:
            return True
        if task_id in self._full:
            return False
        if self._used is not None and self._used + needed <= self.max_bytes:
            return True
        self._used = _dir_size(self.spool_dir)  # other writers and replays change it
        if self._used + needed <= self.max_bytes:
            return True
        current = self.path_for(task_id)
        ours = {path: task for task, (_, path) in self._files.items()}
        reports = files = 0
        for path in spool_files(self.spool_dir):
            if self._used + needed <= self.max_bytes:
                break
            if path == current:
                continue
            removed = self._drop(path, ours.get(path))
            if removed is not None:
                reports += removed[0]
                files += 1
                self._used = max(0, self._used - removed[1])
        if files:
            if self.on_dropped is not None and reports:
                self.on_dropped(reports)
            if not self._drop_logged:
                self._drop_logged = True
                log.warning("definity-spark: the spool %s reached its bound "
                            "(spark.definity.spool.maxSize, %d bytes): the %d oldest file(s) "
                            "were removed, %d report(s) in them are lost; further removals "
                            "are counted, not logged", self.spool_dir, self.max_bytes, files,
                            reports)
        if self._used + needed <= self.max_bytes:
            return True
        self._full.add(task_id)
        if not self._full_logged:
            self._full_logged = True
            log.error("definity-spark: the spool %s is full (spark.definity.spool.maxSize, "
                      "%d bytes) with the reports of task %s alone; its later reports that "
                      "cannot be delivered are lost", self.spool_dir, self.max_bytes, task_id)
        return False

    def _drop(self, path: str, own_task: str | None) -> tuple[int, int] | None:
        """Remove one spool file (and its cursor): (reports lost, bytes freed), or None when
        it is still being written by another process."""
        if own_task is not None:
            fd, _ = self._files.pop(own_task)
            try:
                os.close(fd)
            except OSError:
                pass
            return self._remove_counted(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return None  # a running application's file
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return self._remove_counted(path)
        finally:
            os.close(fd)

    @staticmethod
    def _remove_counted(path: str) -> tuple[int, int]:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            lost = pending_count(path, data)
        except OSError:
            data, lost = b"", 0
        freed = len(data)
        try:
            freed += os.path.getsize(path + CURSOR_SUFFIX)
        except OSError:
            pass
        _remove(path)
        return lost, freed

    def close(self) -> None:
        with self._lock:
            files, self._files = self._files, {}
            self._closed = True
            self._closed_paths.update({task: path for task, (_, path) in files.items()})
        if self._pid != os.getpid():
            return
        for fd, _ in files.values():
            try:
                os.close(fd)  # also releases the shared lock: the file is now replayable
            except OSError:
                pass
