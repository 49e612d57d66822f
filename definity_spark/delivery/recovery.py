"""Recovery: a ``Delivery``'s spooled tasks sent again while the application runs.

``SpoolRecovery`` holds the methods of ``Delivery`` that run its recovery thread
(``definity-spark.recover``): probe the server with a task's oldest spooled report, send
the task's spool in order once it answers, put the task back on live delivery. Its state
(``_spooling_tasks``, ``_recover_*``, the locks) is set up by ``Delivery``.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from definity_spark._internal import contained, log_internal_error
from definity_spark.delivery.transport import (
    AUTH,
    MISDIRECTED,
    REJECTED,
    SENT,
    TLS,
    Transport,
)

log = logging.getLogger("definity_spark.delivery")

# Recovery probes: the first after PROBE_BASE (or the backoff base, if larger), then
# doubling with jitter up to PROBE_CAP; a server's Retry-After is honoured (capped too).
PROBE_BASE = 0.5
PROBE_CAP = 60.0


class SpoolRecovery:
    """The recovery methods of ``Delivery`` (see the module docstring)."""

    def _start_recovery(self) -> None:
        """(Under the route lock.) A thread that brings spooled tasks back, if none runs."""
        if (self._recover_factory is None or self._server_refuses or self.abort.is_set()
                or (self._recover_thread is not None and self._recover_thread.is_alive())):
            return
        thread = threading.Thread(target=self._recover, name="definity-spark.recover",
                                  daemon=True)
        self._recover_thread = thread
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: what is spooled stays for replay
            self._recover_thread = None

    def _set_recover_state(self, state: str) -> None:
        with self._recover_changed:
            self._recover_state = state
            self._recover_changed.notify_all()

    def _wake_recovery(self) -> None:
        with self._recover_changed:
            self._recover_changed.notify_all()

    def _wait_for_recovery(self, deadline: float) -> None:
        """At close: while the recovery is sending a task the server takes again (not
        waiting for, nor trying, a probe), let it."""
        with self._recover_changed:
            while self._recover_state == "draining":
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._recover_changed.wait(min(remaining, 0.5))

    def _recover(self) -> None:
        """The recovery thread: probe, drain each spooled task in order, back off, repeat
        until no task is spooled (or the delivery closes / the server refuses us)."""
        from definity_spark.delivery.http import backoff_delay  # (the helper has it loaded)

        transport: Transport | None = None
        failures = 0
        wait = self._probe_base / 2 + random.random() * self._probe_base / 2
        # the server said when to come back (429/503 with Retry-After): not before
        wait = min(PROBE_CAP, max(wait, self._retry_after_hint or 0.0))
        try:
            while True:
                self._set_recover_state("waiting")
                with self._recover_changed:
                    if not self.abort.is_set():
                        self._recover_changed.wait(wait)
                if self.abort.is_set() or self._server_refuses:
                    return
                with self._route_lock:
                    tasks = sorted(self._spooling_tasks)
                    if not tasks:
                        self._recover_thread = None
                        return
                self._set_recover_state("probing")
                if transport is None:
                    assert self._recover_factory is not None
                    transport = self._recover_factory()
                retry_after: float | None = None
                for task_id in tasks:
                    retry_after = self._drain(task_id, transport)
                    if retry_after is not None:
                        break
                if retry_after is None:
                    failures, wait = 0, self._probe_base / 2
                else:
                    failures += 1
                    wait = max(retry_after, backoff_delay(failures, self._probe_base))
                    wait = min(wait, PROBE_CAP)
        except Exception as exc:  # noqa: BLE001 - the recovery must never break the host
            log_internal_error("delivery.recover", exc)
            log.warning("definity-spark: the recovery of spooled reports stopped; they stay "
                        "in the spool for replay")
        finally:
            self._set_recover_state("idle")
            if transport is not None:
                with contained("delivery.recover.close"):
                    transport.close()

    def _drain(self, task_id: str, transport: Transport) -> float | None:
        """Send the task's spooled reports in order and, when none is left, put the task
        back on live delivery. None when done (or nothing could be done now: the task's
        older reports are still queued); else seconds to wait before the next probe (0:
        the backoff's)."""
        assert self.spool is not None
        sent = 0
        while True:
            if self.abort.is_set():
                return 0.0
            records = self.spool.pending(task_id)
            with self._order_lock:
                oldest_on_its_way = self._outstanding[0] if self._outstanding else None
            # a spooled record goes only when nothing older is still queued or in flight
            ready = [r for r in records if oldest_on_its_way is None
                     or (isinstance(r.get("seq"), int) and r["seq"] < oldest_on_its_way)]
            if not ready:
                with self._route_lock:
                    if not self.spool.pending(task_id):
                        # Drained: from here on the worker sends this task's payloads live.
                        self._spooling_tasks.discard(task_id)
                        self.spool.discard(task_id)
                        if sent:
                            log.info("definity-spark: %s answers again: %d spooled "
                                     "report(s) of task %s delivered, back to live delivery",
                                     transport.describe(), sent, task_id)
                        return None
                if records:
                    # older payloads of the run are still on their way: let the worker
                    # spool them (or a slow request of another task end), then go on
                    self.abort.wait(0.1)
                    continue
            for record in ready:
                if self.abort.is_set():
                    return 0.0
                seq = record.get("seq")
                result = transport.send(record["endpoint"], record["body"],
                                        key=record.get("key") or self.key(int(seq or 0)))
                if result.outcome == SENT:
                    self.spool.append(task_id, [{"ack": seq}])
                    self._count("recovered")
                    if not sent:
                        self._set_recover_state("draining")  # close lets it finish
                    sent += 1
                elif result.outcome == REJECTED:
                    # refused for good: the same answer at replay; not sent again
                    self.spool.append(task_id, [{"ack": seq, "refused": result.status}])
                    self._count("rejected", lost=True)
                elif result.outcome in (AUTH, MISDIRECTED, TLS):
                    self._server_refuses = True  # logged by the transport; replay later
                    return 0.0
                else:
                    return result.retry_after or 0.0
