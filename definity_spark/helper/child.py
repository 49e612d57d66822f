"""The helper process itself: ``python -I -c BOOT`` runs ``main`` (``helper/client.py``
starts it).

It reads frames (``helper/protocol.py``) from its stdin, a socket pair with the driver,
and answers on its stdout (anything printed by accident goes to stderr). It sends the
task's reports with an ordinary ``Delivery`` and, once a session is attached, reads that
session's queries (``helper/extraction.py``) through its own py4j connection to the
driver's JVM. It runs in Linux's idle scheduling class: the job's threads come first.
The end of its input (the driver gone), SIGTERM or SIGHUP: it delivers what it can within
``flush_timeout`` (1 s for a signal), spools the rest, and exits.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import sys
import threading
from typing import Any

from definity_spark._internal import contained
from definity_spark.delivery import make_delivery
from definity_spark.helper.protocol import frame, payload_of, read_frame


class _Terminated(Exception):
    pass


# What a log record of the helper keeps on its way to the driver (its origin; the message
# is formatted in the helper).
_RECORD_FIELDS = ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno",
                  "funcName", "created", "msecs", "process", "threadName")


class _SocketLogHandler(logging.Handler):
    """Sends the helper's log records to the driver, which logs them again."""

    def __init__(self, send: Any) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = {key: getattr(record, key) for key in _RECORD_FIELDS}
            fields.update(msg=msg, args=None, threadName=f"helper:{record.threadName}")
            self._send(b"L", fields)
        except Exception:  # noqa: BLE001 - logging must never break the helper
            pass


def main() -> None:
    """The helper process: read frames from stdin, deliver, answer on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, terminate)
    # a closed terminal's SIGHUP to the process group: the same (spool, exit)
    signal.signal(signal.SIGHUP, terminate)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a gone driver is an error, not a kill
    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed by accident goes to stderr, never into the replies
    out_lock = threading.Lock()

    def send(kind: bytes, message: dict[str, Any]) -> None:
        data = frame(kind, json.dumps(message).encode())
        with out_lock:
            view = memoryview(data)
            while view:
                view = view[os.write(out_fd, view):]

    stream = sys.stdin.buffer
    first = read_frame(stream)
    if first is None or first[0] != b"S":
        return
    start = pickle.loads(first[1])
    settings = start["settings"]
    if hasattr(os, "sched_setscheduler"):
        with contained("helper.sched_idle"):
            # before any thread starts: every thread of the helper inherits it
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    root = logging.getLogger("definity_spark")
    root.setLevel(int(start.get("log_level", logging.WARNING)))
    root.addHandler(_SocketLogHandler(send))
    root.propagate = False
    delivery = make_delivery(settings)

    def reply(request: dict[str, Any], ok: bool) -> None:
        with contained("helper.reply"):
            send(b"R", {"id": request.get("id"), "ok": ok, "stats": delivery.stats()})

    def flush(request: dict[str, Any]) -> None:
        with contained("helper.flush"):
            reply(request, bool(delivery.flush(float(request.get("timeout", 0.0)))))

    extraction: Any = None  # helper/extraction.py, imported with the first frame for it

    def answer(request: dict[str, Any], fields: dict[str, Any]) -> None:
        with contained("helper.answer"):
            send(b"R", dict(fields, id=request.get("id")))

    send(b"Y", {"describe": delivery.describe()})
    try:
        while True:
            found = read_frame(stream)
            if found is None:
                break
            kind, body = found
            if kind == b"P":
                delivery.submit(payload_of(body))
                continue
            if kind == b"W":
                if extraction is not None:
                    with contained("helper.group"):
                        extraction.group(body)
                continue
            request = json.loads(body)
            if kind in (b"N", b"O", b"Z", b"K"):
                if extraction is None:
                    from definity_spark.helper.extraction import HelperExtraction

                    extraction = HelperExtraction(settings, delivery, send)
                if kind == b"N":
                    extraction.numbering(request)
                elif kind == b"O":
                    answer(request, extraction.attach(request))
                elif kind == b"Z":
                    answer(request, extraction.detach(request))
                else:
                    answer(request, extraction.counts())
            elif kind == b"T":
                reply(request, True)
            elif kind == b"F":
                threading.Thread(target=flush, args=(request,), daemon=True,
                                 name="definity-spark.helper-flush").start()
            elif kind == b"C":
                if extraction is not None:
                    extraction.close(float(request.get("timeout", 0.0)) / 2)
                reply(request, bool(delivery.close(float(request.get("timeout", 0.0)))))
                # A request still in flight may yet be taken by the server: wait for its
                # answer (the spool then marks it sent), and tell the driver the counts.
                delivery.join(float(settings.server_timeout) + 1.0)
                reply({}, True)
                return
    except _Terminated:
        delivery.close(min(1.0, float(settings.flush_timeout)))
        return
    # The driver went away without a close: deliver what is queued, spool the rest.
    if extraction is not None:
        extraction.close(0.0)
    delivery.close(float(settings.flush_timeout))


if __name__ == "__main__":  # pragma: no cover - started through _command()
    main()
