"""``Delivery``: one task's payloads, queued, sent in order, spooled when they cannot be.

The policies and the ``stats()`` counters are described in the ``delivery`` package's
docstring; the recovery of spooled tasks during the run is ``recovery.SpoolRecovery``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import secrets
import threading
import time
from typing import Any, Callable

from definity_spark import wire
from definity_spark._internal import contained
from definity_spark.delivery.recovery import PROBE_BASE, SpoolRecovery
from definity_spark.delivery.spool import Spool
from definity_spark.delivery.transport import (
    ABORTED,
    AUTH,
    INVALID,
    IO_ERROR,
    MISDIRECTED,
    NETWORK,
    REJECTED,
    SENT,
    TLS,
    SendResult,
    Transport,
)
from definity_spark.delivery.worker import BackgroundWorker, reset_after_fork

log = logging.getLogger("definity_spark.delivery")

COLUMN_LINEAGE = "column_lineage"  # the optional field of /log/tf (docs/column-lineage.md)
STAT_KEYS = ("submitted", "sent", "spooled", "recovered", "queue_full", "network", "rejected",
             "spool_failed", "spool_dropped", "io_error", "invalid", "closed",
             "unsent_at_close", "lost")

# (seq, payload): seq is the submission number, kept in the spool so replay keeps order
_Item = tuple[int, Any]


class Delivery(SpoolRecovery):
    """Queue + worker thread + transport (+ spool). See the ``delivery`` package's docstring."""

    def __init__(self, transport: Transport, spool: Spool | None = None,
                 queue_size: int = 10000, abort: threading.Event | None = None,
                 recover: Callable[[], Transport] | None = None,
                 probe_base: float = PROBE_BASE) -> None:
        self.transport = transport
        self.spool = spool
        if spool is not None:
            spool.on_dropped = lambda n: self._count("spool_dropped", n, lost=True)
        # Set by close(): cuts backoff sleeps (shared with the HTTP transport) and sends
        # whatever the worker still picks up straight to the spool.
        self.abort = abort if abort is not None else threading.Event()
        self._worker: BackgroundWorker[_Item] = BackgroundWorker(self._process, queue_size)
        self._seq = itertools.count(1)
        self._key_prefix = _new_key_prefix()
        self._stats: dict[str, int] = {k: 0 for k in STAT_KEYS}
        self._stats_lock = threading.Lock()
        # Held by the worker from the moment a payload is in flight until its outcome is
        # recorded, and by close() when it takes over a payload stuck in flight.
        self._flight_lock = threading.Lock()
        self._inflight: _Item | None = None
        self._spooling_tasks: set[str] = set()  # tasks whose payloads now go to the spool
        self._server_refuses = False
        # the server refused a tf's optional column lineage (400): tfs go without it
        self._without_column_lineage = False
        self._closed = False
        self._close_lock = threading.Lock()
        # Held while deciding whether a payload goes to the spool or live, while writing to
        # the spool, and by the recovery when it sends a task back to live delivery: so no
        # payload of a task lands in its spool after that task was declared drained.
        self._route_lock = threading.RLock()
        # seqs in the worker's queue or in flight, oldest first (recovery sends a spooled
        # record only when no older payload is still on its way)
        self._outstanding: collections.deque[int] = collections.deque()
        self._order_lock = threading.Lock()
        self._recover_factory = recover if spool is not None else None
        self._probe_base = max(PROBE_BASE, float(probe_base))
        self._recover_thread: threading.Thread | None = None
        self._retry_after_hint: float | None = None  # the live failure's Retry-After
        # idle | waiting (for the next probe) | probing | draining (the server answered)
        self._recover_state = "idle"
        self._recover_changed = threading.Condition(threading.Lock())
        reset_after_fork(self)

    def _after_fork(self) -> None:
        # Locks held by the parent's worker thread at fork time would never be released in
        # the child; the queue was reset by the worker itself (the parent sends its items).
        self._stats_lock = threading.Lock()
        self._flight_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._inflight = None
        # the child numbers on from the parent's count: its keys need their own prefix
        self._key_prefix = _new_key_prefix()
        self._route_lock = threading.RLock()
        self._order_lock = threading.Lock()
        self._outstanding = collections.deque()
        # the parent's recovery thread is the parent's; the child starts its own if needed
        self._recover_thread = None
        self._recover_state = "idle"
        self._recover_changed = threading.Condition(threading.Lock())

    # ------------------------------------------------------------------ public API
    def submit(self, payload: Any) -> bool:
        """Queue a payload (anything with ``.endpoint`` and ``.to_json()``). Never blocks
        on the network; True if it was queued (or, queue full, spooled)."""
        with contained("delivery.submit"):
            if self._closed:
                self._count("closed", lost=True)
                return False
            with self._order_lock:  # queue order == seq order, even from several threads
                item: _Item = (next(self._seq), payload)
                self._outstanding.append(item[0])
                queued = self._worker.submit(item)
                if not queued:
                    self._outstanding.pop()
            if queued:
                self._count("submitted")
                return True
            self._count("submitted")
            self._count("queue_full")
            if self.spool is None:
                self._count("lost")
                return False
            # Bounded memory without losing the report: the overflow goes to disk. The
            # task switches to the spool so that nothing later overtakes this payload.
            return self._spool_items([item], reason="queue_full")
        return False

    def submit_many(self, payloads: Any) -> int:
        """``submit`` each payload in turn; the number accepted."""
        return sum(1 for payload in payloads if self.submit(payload))

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted was processed; at most ``timeout`` seconds."""
        with contained("delivery.flush"):
            return self._worker.flush(timeout)
        return False

    def close(self, timeout: float) -> bool:
        """Deliver what is queued within ``timeout``, spool the rest, stop the thread.

        True when the worker processed everything itself within ``timeout`` (sent, spooled
        or counted); False when the closing thread had to take over what was left (a
        request hanging, a long queue), which it then spooled. Idempotent.
        """
        with contained("delivery.close"):
            with self._close_lock:
                if self._closed:
                    return True
                self._closed = True
            return self._close(max(0.0, float(timeout)))
        return False

    def join(self, timeout: float) -> bool:
        """After ``close``: wait at most ``timeout`` seconds for a request that was still
        in flight to end (its outcome is then counted, and acked in the spool if the
        server took it). True when the worker thread is gone."""
        return self._worker.join(timeout)

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def describe(self) -> str:
        return self.transport.describe()

    def key(self, seq: int) -> str:
        """The idempotency key of this delivery's payload number ``seq``."""
        return f"{self._key_prefix}-{seq}"

    # ------------------------------------------------------------------ closing
    def _close(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        # Keep a little of the budget to put leftovers on disk.
        reserve = min(0.25, timeout * 0.2)
        self._worker.flush(max(0.0, timeout - reserve))
        # A recovery that is sending a spooled task (the server answers again) may use what
        # is left of the budget; one that waits for its next probe is not waited for.
        self._wait_for_recovery(deadline - reserve)
        # From here on: no backoff sleeps, no new sends; the worker spools what it picks up.
        self.abort.set()
        self._wake_recovery()
        leftovers = self._worker.close(max(0.0, deadline - time.monotonic() - reserve / 2))
        with self._flight_lock:
            stuck = self._inflight
            self._inflight = None  # tells the worker the closer took it over
        if stuck is not None:
            leftovers.insert(0, stuck)
        with self._order_lock:
            self._outstanding.clear()  # (what is left goes to the spool right here)
        if leftovers:
            if self.spool is not None:
                self._spool_items(leftovers, reason="close")
                log.warning("definity-spark: %d report(s) not delivered within the close "
                            "timeout (%.1fs) were written to the spool %s", len(leftovers),
                            timeout, self.spool.spool_dir)
            else:
                self._count("unsent_at_close", len(leftovers))
                self._count("lost", len(leftovers))
                log.warning("definity-spark: %d report(s) not written within the close "
                            "timeout (%.1fs) are lost", len(leftovers), timeout)
        if stuck is None:
            # Nothing in flight: release the session and the spool files (this makes them
            # replayable). Otherwise the worker does it when its request returns.
            self._release()
        return not leftovers

    def _release(self) -> None:
        with contained("delivery.release"):
            self.transport.close()
        if self.spool is not None:
            with contained("delivery.release"):
                self.spool.close()

    # ------------------------------------------------------------------ the worker side
    def _process(self, item: _Item) -> None:
        try:
            self._process_item(item)
        finally:
            with self._order_lock:
                if self._outstanding and self._outstanding[0] == item[0]:
                    self._outstanding.popleft()
                elif item[0] in self._outstanding:
                    self._outstanding.remove(item[0])

    def _process_item(self, item: _Item) -> None:
        seq, payload = item
        try:
            endpoint = str(payload.endpoint)
            body = payload.to_json()
        except Exception as exc:  # noqa: BLE001 - a broken payload must not stop the rest
            self._count("invalid", lost=True)
            log.warning("definity-spark: a report could not be serialised (%s: %s); dropped",
                        type(exc).__name__, exc)
            return
        task_id = str(body.get("task_id", ""))
        with self._route_lock:
            if self.spool is not None and (self.abort.is_set() or self._server_refuses
                                           or task_id in self._spooling_tasks):
                self._spool_items([item], reason="order", prepared=[(seq, endpoint, body)])
                return
        with self._flight_lock:
            self._inflight = item
        try:
            if self._without_column_lineage and endpoint == wire.TF:
                body.pop(COLUMN_LINEAGE, None)
            result = self.transport.send(endpoint, body, key=self.key(seq))
            if result.outcome == REJECTED and result.status == 400 and endpoint == wire.TF \
                    and COLUMN_LINEAGE in body:
                result = self._without_columns(endpoint, body, self.key(seq))
        except Exception as exc:  # noqa: BLE001 - a transport bug counts as a failed send
            result = SendResult(NETWORK, None, f"{type(exc).__name__}: {exc}", 0)
        with self._flight_lock:
            if self._inflight is None:
                # close() gave up waiting and spooled this payload already.
                self._after_abandoned(task_id, seq, result)
                return
            self._inflight = None
            self._record(item, task_id, endpoint, body, result)

    def _without_columns(self, endpoint: str, body: dict[str, Any], key: str) -> SendResult:
        """A 400 to a tf with its column lineage (an additive field a server may not know):
        the tf again without it, and no more of it from this delivery (logged once)."""
        if not self._without_column_lineage:
            self._without_column_lineage = True
            log.warning("definity-spark: %s refused a transformation with its column "
                        "lineage (HTTP 400); it is sent again without it, and column lineage "
                        "is left out of this application's reports from now on",
                        self.transport.describe())
        body.pop(COLUMN_LINEAGE, None)
        return self.transport.send(endpoint, body, key=key)

    def _record(self, item: _Item, task_id: str, endpoint: str, body: dict[str, Any],
                result: SendResult) -> None:
        outcome = result.outcome
        if outcome == SENT:
            self._count("sent")
        elif outcome in (NETWORK, ABORTED):
            self._count("network")
            self._retry_after_hint = result.retry_after
            if self.spool is None:
                self._count("lost")
                return
            if task_id not in self._spooling_tasks and not self.abort.is_set():
                log.warning(
                    "definity-spark: could not deliver %s of task %s to %s after %d "
                    "attempt(s) (%s); this and the task's later reports go to the spool %s "
                    "until the server answers again (probed in the background; what is "
                    "left at the end is sent by `definity-spark replay` or the next "
                    "activation)", endpoint, task_id, self.transport.describe(),
                    result.attempts, result.detail, self.spool.spool_dir)
            self._spool_items([item], reason="network", prepared=[(item[0], endpoint, body)])
        elif outcome in (AUTH, MISDIRECTED, TLS):
            self._count("rejected")
            # Every later payload would get the same answer: they go to the spool unsent.
            self._server_refuses = True
            if self.spool is None:
                self._count("lost")
                return
            self._spool_items([item], reason="auth", prepared=[(item[0], endpoint, body)])
        elif outcome == REJECTED:
            self._count("rejected", lost=True)
        elif outcome == INVALID:
            self._count("invalid", lost=True)
            log.warning("definity-spark: a %s report could not be serialised (%s); dropped",
                        endpoint, result.detail)
        elif outcome == IO_ERROR:
            self._count("io_error", lost=True)
            log.warning("definity-spark: could not write a report to %s: %s",
                        self.transport.describe(), result.detail)
        else:  # pragma: no cover - unknown outcome from a custom transport
            self._count("network", lost=True)

    def _after_abandoned(self, task_id: str, seq: int, result: SendResult) -> None:
        # The request returned after close() spooled it. If the server took it, mark it
        # in the spool so that replay does not send it a second time.
        if result.outcome == SENT:
            self._count("sent")
            if self.spool is not None:
                self.spool.append(task_id, [{"ack": seq}])
        self._release()

    # ------------------------------------------------------------------ spool + stats
    def _spool_items(self, items: list[_Item], reason: str,
                     prepared: list[tuple[int, str, dict[str, Any]]] | None = None) -> bool:
        """Append items to their tasks' spool files, in one write per task. True if all
        made it to disk."""
        assert self.spool is not None
        if prepared is None:
            prepared = []
            for seq, payload in items:
                try:
                    prepared.append((seq, str(payload.endpoint), payload.to_json()))
                except Exception:  # noqa: BLE001
                    self._count("invalid", lost=True)
        by_task: dict[str, list[dict[str, Any]]] = {}
        for seq, endpoint, body in prepared:
            task_id = str(body.get("task_id", ""))
            by_task.setdefault(task_id, []).append(
                {"seq": seq, "key": self.key(seq), "endpoint": endpoint, "body": body})
        ok = True
        with self._route_lock:
            for task_id, records in by_task.items():
                self._spooling_tasks.add(task_id)
                if self.spool.append(task_id, records):
                    self._count("spooled", len(records))
                else:
                    ok = False
                    self._count("spool_failed", len(records))
                    self._count("lost", len(records))
            if reason in ("network", "queue_full"):
                self._start_recovery()
        log.debug("definity-spark: %d report(s) spooled (%s)", len(prepared), reason)
        return ok

    def _count(self, key: str, n: int = 1, lost: bool = False) -> None:
        with self._stats_lock:
            self._stats[key] = self._stats.get(key, 0) + n
            if lost:
                self._stats["lost"] += n


def _new_key_prefix() -> str:
    """64 random bits: the idempotency keys of two deliveries never meet."""
    return secrets.token_hex(8)
