"""The delivery room: payloads in, reports out, on a background thread, never lost quietly.

``make_delivery(settings)`` builds a ``Delivery``: a bounded ``BackgroundWorker`` feeding one
transport (HTTP to ``settings.server_url``, else the local JSONL events file) and, for
HTTP, a durable ``Spool`` for what cannot be delivered.

Policies (docs/reliability.md has the long form):

* ``submit`` never blocks and never touches the network: it numbers the payload and puts
  it on the queue. One worker thread sends in submission order.
* Every payload has an idempotency key, ``<random prefix of this Delivery>-<seq>``: sent
  as ``Idempotency-Key`` on every try, kept in the spool record so that replay and
  recovery resend the same one. Two deliveries of one task (the helper's and the driver's
  fallback) never share a prefix, nor does a forked child with its parent.
* Queue full (``queue_size``): the payload is written to the task's spool file on the
  caller's thread (one small append + fsync, no network) and the task switches to the
  spool to keep its order; counted as ``queue_full``. Without a spool (file transport) the
  newest payload is dropped and counted as lost.
* A payload not delivered after ``server_attempts`` tries (connection error, timeout,
  reset, 5xx, 429) is spooled, and so is everything the task submits after it (order).
  *Recovery*: while a task has spooled reports, a thread (``definity-spark.recover``)
  probes the server with them, oldest first, with capped exponential backoff (the
  server's ``Retry-After`` honoured); once it answers, it sends the task's spool in order
  (acking each record in the file) and the task goes back to live delivery. At close,
  what is left stays in the spool for replay. A
  401/403 (token rejected), a 404/405/410/3xx (not the server's URL) or an untrusted TLS
  certificate is logged once and
  switches the whole delivery to the spool (no retry storm; replay once fixed); any other
  4xx (400, 413, 422...) is a refusal of that payload: logged once per status, counted,
  dropped.
* ``flush(timeout)`` waits for the queue against a deadline. ``close(timeout)`` flushes,
  then cuts retries and backoff short; what is still queued at the deadline, and a payload
  stuck in a request, go to the spool on the closing thread (disk only). It returns within
  ``timeout`` plus the time of that disk write.

``stats()`` counters (all always present):
  ``submitted``  accepted by ``submit``
  ``sent``       delivered (2xx, or written to the events file)
  ``spooled``    written to the spool (then recovered during the run, or replayed)
  ``recovered``  spooled, then delivered from the spool during the run (in ``spooled``,
                 not in ``sent``)
  ``queue_full`` found the queue full (then spooled, or lost without a spool)
  ``network``    failed after all attempts (connection, timeout, reset, 5xx, 429)
  ``rejected``   refused by the server (401/403/404/405/410/3xx and an untrusted TLS
                 certificate are spooled, other 4xx lost)
  ``spool_failed`` / ``io_error`` / ``invalid`` / ``closed``  lost: spool write failed
                 (disk full, or the spool bound reached by this task's own file), events
                 file write failed, payload could not be serialised, submitted after close
  ``spool_dropped``  lost: reports in the oldest spool files, removed to keep the spool
                 within ``spool_max_size``
  ``unsent_at_close``  left in memory at close without a spool (lost)
  ``lost``       total gone for good (the task metric for dropped reports)
"""

from __future__ import annotations

import threading
from typing import Any

from definity_spark._internal import contained
from definity_spark.delivery.delivery import STAT_KEYS, Delivery
from definity_spark.delivery.file import FileTransport
from definity_spark.delivery.replay import (
    ReplayReport,
    replay,
    replay_with,
    start_background_replay,
)
from definity_spark.delivery.spool import Spool
from definity_spark.delivery.transport import SendResult, Transport
from definity_spark.delivery.worker import reset_after_fork


def make_transport(settings: Any, abort: threading.Event | None = None) -> Transport:
    """The transport for these settings: ``http`` when a server is configured, else
    ``file`` (the JSONL events file)."""
    if settings.server_url:
        # (imported here: with the helper process, the driver never loads the HTTP stack)
        from definity_spark.delivery.http import HttpTransport

        return HttpTransport(
            settings.server_url, settings.token, timeout=settings.server_timeout,
            attempts=settings.server_attempts, attempt_sleep=settings.server_attempt_sleep,
            verify_tls=settings.verify_tls, ca_bundle=settings.ca_bundle, abort=abort)
    return FileTransport(settings.events_file, settings.spool_dir)


def make_delivery(settings: Any) -> Delivery:
    """The delivery for one task, its worker thread in this process (the driver's, when
    the helper process cannot run; the helper's own, in ``helper/child.py``)."""
    abort = threading.Event()
    transport = make_transport(settings, abort)
    spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_size,
                  destination=settings.server_url) if transport.kind == "http" else None

    def recovery_transport() -> Transport:
        # One try per request: the recovery's own loop backs off between probes.
        from definity_spark.delivery.http import HttpTransport

        return HttpTransport(
            settings.server_url, settings.token, timeout=settings.server_timeout, attempts=1,
            attempt_sleep=0.0, verify_tls=settings.verify_tls, ca_bundle=settings.ca_bundle,
            abort=abort)

    delivery = Delivery(transport, spool, queue_size=settings.queue_size, abort=abort,
                        recover=recovery_transport if spool is not None else None,
                        probe_base=settings.server_attempt_sleep)
    if spool is not None and settings.replay_spool:
        with contained("delivery.background_replay"):
            start_background_replay(settings, abort)
    return delivery


def __getattr__(name: str) -> Any:
    # ``from definity_spark.delivery import HttpTransport`` still works, without loading
    # urllib3 and ssl for the processes that never send (the driver, with the helper)
    if name == "HttpTransport":
        from definity_spark.delivery.http import HttpTransport

        return HttpTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Delivery", "make_delivery", "make_transport", "reset_after_fork", "replay",
    "replay_with", "ReplayReport", "Spool", "HttpTransport", "FileTransport", "Transport",
    "SendResult", "STAT_KEYS",
]
