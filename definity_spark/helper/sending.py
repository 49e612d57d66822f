"""The helper process, the driver's side: writing frames to the helper's socket, and the
fallback delivery that takes over when the helper is gone.

``HelperSending`` holds these methods of ``HelperProcess`` (helper/client.py); their
state (``_pending``, ``_state``, ``_sock``, the locks, the counts) is set up there.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import Sequence
from typing import Any

from definity_spark import wire
from definity_spark._internal import contained
from definity_spark.delivery import make_delivery
from definity_spark.helper.protocol import frames, payload_of

log = logging.getLogger("definity_spark.helper")

STARTING, READY, FALLBACK = "starting", "ready", "fallback"  # HelperProcess._state

# A send that never blocks and never raises SIGPIPE (a host that restored SIGPIPE's default
# would otherwise die with a dead helper); 0 where the flags do not exist (not Linux).
SEND_FLAGS = (getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)
               if hasattr(socket, "MSG_DONTWAIT") and hasattr(socket, "MSG_NOSIGNAL") else 0)


class HelperSending:
    """The socket and fallback methods of ``HelperProcess`` (see the module docstring)."""

    # ------------------------------------------------------------------ the socket
    def _write(self, data: bytes, offset: int, payloads: int) -> None:
        """Write what the socket takes without blocking (lock held); what it does not
        take waits at the head of ``_pending`` for the writer thread."""
        sock = self._sock
        if sock is not None and not self._broken:
            view = memoryview(data)
            while offset < len(data):
                try:
                    offset += sock.send(view[offset:], SEND_FLAGS)
                except BlockingIOError:
                    break
                except InterruptedError:
                    continue
                except OSError:
                    # The child is gone (EPIPE, ECONNRESET): the reader sees its end and
                    # hands what waits to the fallback.
                    self._broken = True
                    break
            if offset == len(data):
                self._written += payloads
                if data[:1] == b"W":
                    self._groups_written += 1
                return
        self._pending.appendleft([data, offset, payloads])
        self._changed.notify_all()

    def _write_pending(self) -> None:
        """The writer thread: writes frames that waited (the child starting, a full socket)."""
        with contained("helper.writer"):
            ready_by = time.monotonic() + self._start_timeout
            while True:
                timed_out = False
                with self._lock:
                    while True:
                        if self._state == FALLBACK or self._sock is None or self._broken:
                            return  # (closed, or the child gone: the reader hands over)
                        if self._state == READY and self._pending:
                            break
                        if self._state == STARTING:
                            left = ready_by - time.monotonic()
                            if left <= 0:
                                timed_out = True
                                break
                            self._changed.wait(left)
                        else:
                            self._changed.wait()
                    if not timed_out:
                        while self._pending and not self._broken:
                            data, offset, payloads = self._pending.popleft()
                            self._write(data, offset, payloads)
                            if self._pending and self._pending[0][0] is data:
                                break  # the socket is full
                        self._changed.notify_all()
                    full = bool(self._pending) and not self._broken
                    sock = self._sock
                if timed_out:
                    self._kill()
                    self._to_fallback(f"it was not ready within {self._start_timeout:g} s")
                    return
                if full:
                    select.select([], [sock], [], 0.5)

    def _drain(self, deadline: float) -> bool:
        """Wait until every waiting frame is in the socket (True), at most until deadline."""
        with self._lock:
            while self._pending and self._state != FALLBACK:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
            return self._state != FALLBACK

    # ------------------------------------------------------------------ the fallback
    def _to_fallback_delivery(self, payloads: Sequence[Any]) -> int:
        fallback = self._fallback_delivery()
        return sum(1 for payload in payloads if fallback.submit(payload))

    def _to_fallback(self, why: str) -> None:
        """The helper is gone: an in-process delivery takes the waiting frames and
        everything submitted later (in that order: submitters wait on the fallback lock
        while the waiting frames are handed over)."""
        with self._fallback_lock:
            with self._lock:
                if self._state == FALLBACK:
                    return
                was_ready = self._state == READY
                self._state = FALLBACK
                waiting = [entry[0] for entry in self._pending if entry[1] == 0]
                self._pending.clear()
                self._changed.notify_all()
                unconfirmed = 0
                if was_ready:
                    done = sum(self._child_stats.get(key, 0)
                               for key in ("sent", "spooled", "lost"))
                    unconfirmed = max(0, self._written - done)
            log.warning("definity-spark: the delivery helper process is not available (%s); "
                        "reports are sent from the driver's process from now on%s", why,
                        f"; at most {unconfirmed} report(s) it had accepted may be lost"
                        if unconfirmed else "")
            # Numbering here continues after every number the helper could have given:
            # each write it was sent, or callback it took from the JVM itself, is at most
            # one transformation.
            pulled = 0
            for observer in list(self._observers.values()):
                with contained("helper.pulled"):
                    pulled += int(observer.pulled_by_helper())
            self._tf_next = self._tf_base + self._groups_written + pulled
            self._hand_over(b"".join(waiting))
            if self._numbering is not None:
                with contained("helper.numbering"):
                    self._numbering.numbering_lost(self._tf_next)
            for observer in list(self._observers.values()):
                with contained("helper.observer_lost"):
                    observer.helper_lost()
            self._observers.clear()

    def _hand_over(self, data: bytes) -> None:
        """Frames the helper did not get, in order: payloads to the fallback, writes
        numbered here."""
        for kind, body in frames(data):
            if kind == b"P":
                self._to_fallback_delivery([payload_of(body)])
            elif kind == b"W":
                self._tf_next += 1
                self._to_fallback_delivery(wire.numbered(json.loads(body), self._tf_next))

    def _fallback_delivery(self) -> Any:
        with self._fallback_lock:
            if self._fallback is None:
                self._fallback = make_delivery(self.settings)
            return self._fallback


def payloads_of(data: bytes) -> list[Any]:
    """The payloads in frames that were not written (for the fallback)."""
    return [payload_of(body) for kind, body in frames(data) if kind == b"P"]
