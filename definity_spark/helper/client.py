"""The helper process, the driver's side: ``HelperProcess``.

Why a helper: a driver's Python runs the application one statement after the other, and
every statement's py4j calls need the interpreter lock. Reading the queries and sending
the reports (three POSTs a write) are the plugin's Python; run in the driver's
interpreter, they made the application's next statement wait for the lock (the gap
between two small writes: +1.9 ms with the delivery in the driver against +1.45 ms in a
helper; +0.9 against +0.25 ms for the reading, docs/performance.md). In the helper they
cost the driver one socket write per report and nothing per query.

``HelperProcess`` has ``Delivery``'s interface (``submit``, ``submit_many``, ``flush``,
``close``, ``stats``, ``describe``). It starts ``python -I -c BOOT`` (``helper/child.py``),
whose ordinary ``Delivery`` (queue, worker thread, transport, spool) keeps every policy
of docs/reliability.md on the other side of a socket pair (the child's stdin and stdout;
its stderr is the driver's), and which reads the sessions the observers attach
(``attach``). Frames: ``helper/protocol.py``. Linux only (``available()``).

What can go wrong, and what happens then:

* The child cannot start or is not ready within ``START_TIMEOUT`` (no usable
  ``sys.executable``, an import failing): payloads waited in the parent until then; an
  in-process ``Delivery`` (the *fallback*) takes them and everything after. Logged once.
* The socket is full (the child reads slower than the plugin writes): the frame waits in
  the parent, and the writer thread writes it when the socket has room. At most ``WAITING_LIMIT``
  submissions wait; past that they are counted as ``queue_full`` and lost.
* The child dies (killed): logged once, with an upper bound of the payloads it had
  accepted and not reported done (those are lost); the fallback takes over, and the
  observers it read for read in the driver from then on (``helper_lost``), numbering the
  task's transformations after every number the helper could have given.
* The parent dies or closes the socket without a close: the child sees the end of its input,
  closes its ``Delivery`` within ``flush_timeout`` (what is left goes to the spool) and
  exits. SIGTERM and SIGHUP do the same; SIGINT (a terminal's Ctrl-C) is the driver's business.
* A process forked from the driver does not own the socket: its payloads go to a fallback of
  its own.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from definity_spark._internal import contained
from definity_spark.delivery import STAT_KEYS, reset_after_fork
from definity_spark.delivery.file import FileTransport
from definity_spark.helper.protocol import frame, group_frame, payload_frame, read_frame
from definity_spark.helper.sending import FALLBACK as _FALLBACK
from definity_spark.helper.sending import READY as _READY
from definity_spark.helper.sending import SEND_FLAGS as _SEND_FLAGS
from definity_spark.helper.sending import STARTING as _STARTING
from definity_spark.helper.sending import HelperSending
from definity_spark.helper.sending import payloads_of as _payloads_of

log = logging.getLogger("definity_spark.helper")

START_TIMEOUT = 30.0  # seconds for the child to say it is ready (cold imports on a slow disk)
STATS_TIMEOUT = 2.0   # seconds to wait for the child's counts
# Frames that may wait on the driver's side (the child starting, the socket full). The
# child's own queue (``queue_size``) and its spool apply behind the socket as usual.
WAITING_LIMIT = 10000
_BOOT_PATH = "DEFINITY_HELPER_PATH"
# Run in isolated mode (-I: no script directory, no PYTHON* variables, no user site) so
# that nothing in the driver's working directory can shadow a module of the helper; the
# driver's own import path comes through the environment (not a secret).
_BOOT = ("import os,sys;sys.path[:0]=os.environ.pop('" + _BOOT_PATH + "').split(os.pathsep);"
         "from definity_spark.helper.child import main;main()")



def _import_path() -> list[str]:
    """The helper's import path: where this package was imported from, then the driver's
    path without its first entry (the script's directory or the working directory)."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = [package_root]
    for entry in sys.path[1:]:
        if isinstance(entry, str) and entry and entry not in out:
            out.append(entry)
    return out


def _command() -> list[str]:
    return [sys.executable, "-I", "-c", _BOOT]


# ====================================================================== the driver's side
class HelperProcess(HelperSending):
    """``Delivery``'s interface, with the delivery (and the reading) in a helper process."""

    def __init__(self, settings: Any, start_timeout: float = START_TIMEOUT) -> None:
        self.settings = settings
        self._start_timeout = start_timeout
        self._pid = os.getpid()
        self._init_locks()
        # frames waiting to be written: [bytes, offset written, payloads in them]
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._state = _STARTING
        self._closed = False
        self._broken = False  # a write failed: the child is gone, the reader will see it
        self._fallback: Any = None
        self._replies: dict[int, tuple[threading.Event, dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._local: dict[str, int] = {}  # outcomes on this side of the socket
        self._child_stats: dict[str, int] = {}  # the child's last counts
        self._written = 0  # payload frames written whole to the socket
        self._describe = _describe(settings)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        # the observers whose sessions it reads (by session key), the reporter whose
        # numbering it took over, and what numbering here continues after if it dies
        self._observers: dict[int, Any] = {}
        self._numbering: Any = None
        self._tf_base = 0
        self._groups_written = 0  # W frames
        self._tf_next = 0
        reset_after_fork(self)  # (_after_fork)
        try:
            self._spawn()
        except Exception as exc:  # noqa: BLE001 - any failure to start means the fallback
            self._to_fallback(f"could not start it ({type(exc).__name__}: {exc})")

    def _init_locks(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # state or pending changed
        self._close_lock = threading.Lock()
        self._fallback_lock = threading.RLock()  # taken before _lock, never after

    # ------------------------------------------------------------------ start
    def _spawn(self) -> None:
        if not sys.executable:
            raise RuntimeError("sys.executable is not set")
        env = dict(os.environ)
        env[_BOOT_PATH] = os.pathsep.join(_import_path())
        ours, theirs = socket.socketpair()
        try:
            # The child's stdin and stdout are its end of the socket; its stderr is ours.
            self._proc = subprocess.Popen(_command(), stdin=theirs.fileno(),
                                          stdout=theirs.fileno(), env=env, close_fds=True)
        finally:
            theirs.close()
        with contained("helper.buffer"):
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        start = pickle.dumps({"settings": self.settings,
                              "log_level": logging.getLogger("definity_spark")
                              .getEffectiveLevel()})
        ours.sendall(frame(b"S", start))  # an empty socket takes it at once
        self._sock = ours
        for target, name in ((self._read_replies, "definity-spark.delivery-reader"),
                             (self._write_pending, "definity-spark.delivery-writer")):
            threading.Thread(target=target, name=name, daemon=True).start()

    # ------------------------------------------------------------------ public API
    def submit(self, payload: Any) -> bool:
        """Serialise the payload and hand it to the helper; never blocks. True if it was
        accepted (the helper's delivery counts what becomes of it)."""
        return self.submit_many([payload]) == 1

    def submit_many(self, payloads: Sequence[Any]) -> int:
        """``submit`` for payloads that come together (the three of one write): one write
        to the socket, one wake-up of the helper. The number accepted."""
        with contained("helper.submit"):
            if self._closed:
                self._count("closed", len(payloads), lost=True)
                return 0
            if os.getpid() != self._pid or self._state == _FALLBACK:
                return self._to_fallback_delivery(payloads)
            written = []
            for payload in payloads:
                try:
                    written.append(payload_frame(payload))
                except Exception as exc:  # noqa: BLE001 - a broken payload must not stop the rest
                    self._count("invalid", lost=True)
                    log.warning("definity-spark: a report could not be serialised (%s: %s); "
                                "dropped", type(exc).__name__, exc)
            if not written:
                return 0
            data, n = b"".join(written), len(written)
            with self._lock:
                if self._state != _FALLBACK:
                    self._count("submitted", n)
                    if self._state == _READY and not self._pending:
                        self._write(data, 0, n)  # what does not fit waits in _pending
                        return n
                    if len(self._pending) < WAITING_LIMIT:
                        self._pending.append([data, 0, n])
                        self._changed.notify_all()
                        return n
                    self._count("queue_full", n)
                    self._count("lost", n)
                    return 0
            # the child went away since the check above
            return self._to_fallback_delivery(_payloads_of(data))
        return 0

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted was processed; at most ``timeout`` seconds."""
        with contained("helper.flush"):
            deadline = time.monotonic() + max(0.0, timeout)
            ok = True
            if os.getpid() == self._pid and self._state != _FALLBACK:
                # (a helper still starting has nothing to flush unless frames wait for it)
                ok = self._drain(deadline) and (self._state == _STARTING or self._request(
                    b"F", deadline, {"timeout": _left(deadline)}).get("ok") is True)
            if self._fallback is not None:
                ok = bool(self._fallback.flush(_left(deadline))) and ok
            return ok
        return False

    def close(self, timeout: float) -> bool:
        """Deliver what is queued within ``timeout``; the helper spools the rest and exits.
        True when nothing was left over. Idempotent."""
        with contained("helper.close"):
            with self._close_lock:
                if self._closed:
                    return True
                self._closed = True
            return self._close(max(0.0, float(timeout)))
        return False

    def stats(self) -> dict[str, int]:
        """The helper's counts (asked for now, or the last known) plus this side's."""
        if self._state == _READY and not self._closed and os.getpid() == self._pid:
            self._request(b"T", time.monotonic() + STATS_TIMEOUT, {})
        with self._lock:
            merged = dict(self._child_stats)
            merged.pop("submitted", None)  # this side counts what it accepted
            for key, value in self._local.items():
                merged[key] = merged.get(key, 0) + value
        if self._fallback is not None:
            for key, value in self._fallback.stats().items():
                merged[key] = merged.get(key, 0) + value
        return {key: int(merged.get(key, 0)) for key in STAT_KEYS}

    def describe(self) -> str:
        return self._describe

    @property
    def helper_pid(self) -> int | None:
        """The helper process's id while it is in use (None once the fallback took over)."""
        proc = self._proc
        if proc is None or self._state == _FALLBACK or proc.poll() is not None:
            return None
        return proc.pid

    # ------------------------------------------------------------------ reading there
    def take_numbering(self, reporter: Any, fields: dict[str, Any]) -> bool:
        """The helper numbers the task's transformations from now on, after
        ``fields["tf"]`` (``N``); ``reporter`` sends its writes as ``submit_group``."""
        with self._lock:
            if not self._usable():
                return False
            self._numbering = reporter
            self._tf_base = int(fields["tf"])
            self._enqueue(frame(b"N", json.dumps(fields).encode()))
            return True

    def submit_group(self, payloads: Sequence[Any]) -> bool:
        """One write's payloads (``tf_id`` 0), numbered in the helper. False: the helper is
        gone, and the caller numbers them (its ``numbering_lost`` was called)."""
        with contained("helper.submit_group"):
            data = group_frame(payloads)
            with self._lock:
                if self._usable():
                    self._count("submitted", len(payloads))
                    self._enqueue(data, len(payloads))
                    return True
        with self._fallback_lock:  # a hand-over in progress ends first
            return False

    def attach(self, observer: Any, args: dict[str, Any],
               timeout: float = START_TIMEOUT) -> bool:
        """Let the helper read a session's callbacks (``O``; waits for it to be ready);
        True once it does."""
        deadline = time.monotonic() + timeout
        key = int(args["key"])
        with self._lock:
            while self._state == _STARTING and time.monotonic() < deadline:
                self._changed.wait(0.1)
            if not self._usable() or self._state != _READY:
                return False
            self._observers[key] = observer
        reply = self._request(b"O", deadline, args)
        if reply.get("ok") is True:
            return True
        self._observers.pop(key, None)
        log.info("definity-spark: queries are read in the driver: the helper could not "
                 "(%s)", reply.get("error") or "no answer")
        return False

    def detach(self, key: int | None, timeout: float) -> dict[str, Any]:
        """The helper reads what it was given of the session and stops reading it."""
        try:
            return self._request(b"Z", time.monotonic() + timeout,
                                 {"key": key, "timeout": max(0.0, timeout - 0.5)})
        finally:
            self._observers.pop(key, None)  # type: ignore[arg-type]

    def task_counts(self, timeout: float) -> dict[str, Any] | None:
        """The helper's counts of the task (``K``: tf, failed, reads, partial)."""
        reply = self._request(b"K", time.monotonic() + timeout, {})
        return reply if reply.get("ok") is True else None

    def _usable(self) -> bool:
        return (os.getpid() == self._pid and self._state != _FALLBACK and not self._closed
                and not self._broken)

    def _enqueue(self, data: bytes, payloads: int = 0) -> None:
        """Write a frame, or queue it behind those waiting (lock held)."""
        if self._state == _READY and not self._pending:
            self._write(data, 0, payloads)
        else:
            self._pending.append([data, 0, payloads])
            self._changed.notify_all()

    # ------------------------------------------------------------------ closing
    def _close(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        ok = True
        if os.getpid() == self._pid and self._state != _FALLBACK:
            reserve = min(0.25, timeout * 0.2)  # for the child to spool what is left
            self._drain(deadline - reserve)  # (what still waits after it is handed over)
            if self._state == _READY:
                reply = self._request(b"C", deadline,
                                      {"timeout": max(0.0, _left(deadline) - reserve)})
                ok = reply.get("ok") is True and ok
                if not reply:
                    self._gave_up()
            with self._lock:
                leftovers = [entry[0] for entry in self._pending if entry[1] == 0]
                self._pending.clear()
            self._end_socket()
            if leftovers:
                ok = False
                self._to_fallback_delivery(_payloads_of(b"".join(leftovers)))
        with self._fallback_lock:  # (a hand-over to it in progress ends first)
            fallback = self._fallback
        if fallback is not None:
            ok = bool(fallback.close(_left(deadline))) and ok
        return ok

    def _gave_up(self) -> None:
        """The helper did not answer the close in time (hung, stopped): what it accepted
        and did not report done may be lost; said once and counted."""
        with self._lock:
            done = sum(self._child_stats.get(key, 0) for key in ("sent", "spooled", "lost"))
            unconfirmed = max(0, self._written - done)
            self._count("unsent_at_close", unconfirmed, lost=True)
        log.warning("definity-spark: the helper process did not finish within the close "
                    "timeout; at most %d report(s) it had accepted may be lost", unconfirmed)

    def _end_socket(self) -> None:
        """Stop writing: the child exits once it has read everything (if it has not yet)."""
        with self._lock:
            sock = self._sock
            self._broken = True
            self._changed.notify_all()
        if sock is not None:
            with contained("helper.shutdown"):
                sock.shutdown(socket.SHUT_WR)

    def _request(self, kind: bytes, deadline: float, args: dict[str, Any]) -> dict[str, Any]:
        """Send a control frame and wait for its reply until deadline ({} if none came)."""
        request_id = next(self._ids)
        done = threading.Event()
        reply: dict[str, Any] = {}
        self._replies[request_id] = (done, reply)
        try:
            data = frame(kind, json.dumps(dict(args, id=request_id)).encode())
            with self._lock:
                if self._broken or self._state != _READY:
                    return {}
                if self._pending:
                    self._pending.append([data, 0, 0])
                    self._changed.notify_all()
                else:
                    self._write(data, 0, 0)
            done.wait(_left(deadline))
            return reply
        finally:
            self._replies.pop(request_id, None)

    def _read_replies(self) -> None:
        """The reader thread: the child's replies, log records and readiness."""
        proc, sock = self._proc, self._sock
        assert proc is not None and sock is not None
        with contained("helper.reader"):
            stream = sock.makefile("rb")
            while True:
                try:
                    found = read_frame(stream)
                except OSError:  # reset: the child died with unread data in its socket
                    found = None
                if found is None:
                    break
                kind, body = found
                message = json.loads(body) if body else {}
                if kind == b"Y":
                    with self._lock:
                        if self._state == _STARTING:
                            self._state = _READY
                            self._describe = str(message.get("describe") or self._describe)
                        self._changed.notify_all()
                elif kind == b"R":
                    with self._lock:
                        if isinstance(message.get("stats"), dict):
                            self._child_stats = message["stats"]
                    waiter = self._replies.get(message.get("id"))
                    if waiter is not None:
                        waiter[1].update(message)
                        waiter[0].set()
                elif kind == b"L":
                    _log_again(message)
                elif kind == b"M":
                    observer = self._observers.get(message.get("key"))
                    if observer is not None:
                        with contained("helper.mark"):
                            observer.helper_mark(int(message["n"]), message)
        code: int | None = None
        with contained("helper.exit"):
            code = proc.wait(5.0)
        if not self._closed:
            self._to_fallback(f"it exited with code {code}")
        for done, _ in list(self._replies.values()):
            done.set()
        with contained("helper.socket"):
            sock.close()

    def _kill(self) -> None:
        with contained("helper.kill"):
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def _count(self, key: str, n: int = 1, lost: bool = False) -> None:
        # (the driver's side counts under its lock, or where no other thread counts)
        self._local[key] = self._local.get(key, 0) + n
        if lost:
            self._local["lost"] = self._local.get("lost", 0) + n

    def _after_fork(self) -> None:
        # Locks held by a thread of the parent at fork time would stay locked here; the
        # socket is the parent's: this process gets a fallback of its own when it submits.
        # Its copy of the socket is closed, so that the helper still sees the end of its
        # input when the parent dies while this process lives on (a pool worker).
        self._init_locks()
        self._fallback = None
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                os.close(sock.detach())  # this process's descriptor; the parent's stays
            except OSError:
                pass


def _log_again(fields: dict[str, Any]) -> None:
    """Log a record of the helper through the driver's logging (its levels, handlers)."""
    logger = logging.getLogger(str(fields.get("name") or log.name))
    if logger.isEnabledFor(int(fields.get("levelno", logging.WARNING))):
        logger.handle(logging.makeLogRecord(fields))


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _describe(settings: Any) -> str:
    """Until the helper says (its transport's own ``describe()``)."""
    if settings.server_url:
        return str(settings.server_url)
    return FileTransport(settings.events_file, settings.spool_dir).describe()


def available() -> bool:
    """Whether this platform can run the helper: a socket send that neither blocks nor
    raises SIGPIPE (Linux)."""
    return bool(_SEND_FLAGS) and bool(sys.executable)


