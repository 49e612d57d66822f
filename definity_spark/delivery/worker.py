"""The background worker: a bounded queue drained by one named daemon thread.

Modelled on sentry-python's ``BackgroundWorker``: ``submit`` is a ``put_nowait`` that
never blocks (a full queue returns ``False`` and the caller counts the loss), the thread
is started lazily on the first submit and restarted in a forked child, ``flush(timeout)``
waits against a deadline, ``close(timeout)`` stops the thread and returns whatever was
never processed, so that the caller can put it somewhere durable (the spool).

The worker knows nothing about HTTP or payloads: it calls ``process(item)`` on its own
thread, one item at a time, in submission order. One thread per worker is what keeps
payloads of a task in order.

Why the queue itself is unbounded: the bound is enforced in ``submit`` so that the stop
marker of ``close`` always fits, even when the queue is full (sentry's worker cannot be
stopped when its queue is full).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from typing import Any, Callable, Generic, TypeVar

log = logging.getLogger("definity_spark.delivery")

T = TypeVar("T")

_STOP = object()  # the marker that makes the thread exit

# What has an ``_after_fork`` to call in a child this process forks: the workers, the
# deliveries and helper clients (reset_after_fork)
_forked: weakref.WeakSet[Any] = weakref.WeakSet()


def reset_after_fork(obj: Any) -> None:
    """``obj._after_fork()`` is called in a child this process forks."""
    _forked.add(obj)


class BackgroundWorker(Generic[T]):
    """A bounded queue plus one daemon thread calling ``process(item)`` in order."""

    def __init__(self, process: Callable[[T], None], queue_size: int = 1000,
                 name: str = "definity-spark.delivery") -> None:
        self._process = process
        self._maxsize = max(1, int(queue_size))
        self._name = name
        self._init_state()
        reset_after_fork(self)

    def _init_state(self) -> None:
        # Everything that must be fresh in a forked child: a lock held by another thread at
        # fork time would stay locked forever in the child.
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._thread_for_pid: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ state
    @property
    def is_alive(self) -> bool:
        if self._thread_for_pid != os.getpid():
            return False
        return self._thread is not None and self._thread.is_alive()

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        """Items submitted and not yet fully processed (queued + in flight)."""
        return self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        if self._thread_for_pid is not None and self._thread_for_pid != os.getpid():
            # Forked without register_at_fork having run (or on a platform without it).
            self._after_fork()
        if not self.is_alive:
            with self._lock:
                if self.is_alive or self._closed:
                    return
                thread = threading.Thread(target=self._target, name=self._name, daemon=True)
                try:
                    thread.start()
                except RuntimeError:
                    # Interpreter shutting down: no new threads. Items stay queued and go
                    # to the caller's fallback at close.
                    log.debug("definity-spark: could not start the delivery thread")
                    return
                self._thread = thread
                self._thread_for_pid = os.getpid()

    def _after_fork(self) -> None:
        # The parent owns what was queued before the fork and sends it; a child that sent
        # the same items would duplicate them. The child starts empty.
        self._init_state()

    # ------------------------------------------------------------------ API
    def submit(self, item: T) -> bool:
        """Queue ``item`` without blocking. False if the queue is full or closed."""
        if self._closed:
            return False
        # qsize() counts queued items only, not the one in flight: the bound is on memory.
        if self._queue.qsize() >= self._maxsize:
            return False
        self._queue.put_nowait(item)
        self._ensure_thread()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until every submitted item was processed, at most ``timeout`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        q = self._queue
        with q.all_tasks_done:
            while q.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.is_alive:
                    return False
                q.all_tasks_done.wait(timeout=min(remaining, 0.5))
            return True

    def close(self, timeout: float) -> list[T]:
        """Stop accepting, let the thread finish what is queued for at most ``timeout``
        seconds, and return the items that were never started (oldest first).

        The item in flight, if the thread is still busy with it at the deadline, is not
        returned: the caller's ``process`` owns it (see ``Delivery``).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._closed = True
            thread = self._thread if self.is_alive else None
        if thread is not None:
            self._queue.put_nowait(_STOP)
            thread.join(max(0.0, deadline - time.monotonic()))
        pending = self.take_pending()
        if thread is not None and thread.is_alive():
            # Still busy with its item in flight: leave it a stop marker so that it exits
            # when that item is done instead of waiting on an empty queue forever.
            self._queue.put_nowait(_STOP)
        return pending

    def join(self, timeout: float) -> bool:
        """After ``close``: wait until the thread has exited (its item in flight done),
        at most ``timeout`` seconds. True when no thread is left."""
        thread = self._thread if self._thread_for_pid == os.getpid() else None
        if thread is not None:
            thread.join(max(0.0, timeout))
            return not thread.is_alive()
        return True

    def take_pending(self) -> list[T]:
        """Remove and return every queued item that was not started yet."""
        items: list[T] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items
            self._queue.task_done()
            if item is not _STOP:
                items.append(item)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the thread
    def _target(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                try:
                    self._process(item)  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - the worker must survive anything
                    log.warning("definity-spark: delivery worker failed on one item",
                                exc_info=True)
            finally:
                self._queue.task_done()


def _reset_after_fork() -> None:
    for obj in list(_forked):
        try:
            obj._after_fork()
        except Exception:  # pragma: no cover - never break a fork
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
