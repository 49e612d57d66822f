"""The local collector: a small Definity-compatible server for laptops, demos and tests.

It implements the four reporting endpoints of the Definity API (``POST /log/task``,
``/log/tf``, ``/log/dataset``, ``/log/metrics``) with the documented validation, keeps
everything in SQLite (``store.Store``) and serves what it holds back:

* ``GET /api/tasks``, ``/api/tasks/{task_id}``, ``/api/lineage``, ``/api/columns``
  (a column's upstream columns), ``/api/payloads``, ``/health``: JSON for people, the
  demo and other rooms' tests;
* ``GET /``: a self-contained HTML page drawing the lineage graph.

It may run on a shared host, so (docs/collector.md, "Access"): with a token, every read
needs it too (the page asks for it once); bound to loopback, a request must name a
loopback ``Host`` (DNS rebinding); a POST must be ``application/json`` (a web page cannot
send that cross-site without a CORS preflight, which is never granted); bodies are bounded
in size and nesting; at most ``max_connections`` connections are served at once, each
closed after ``idle_timeout`` seconds without a request; the database is private (0600).

Built on the standard library (``ThreadingHTTPServer``) so that it adds no dependency.
``Collector`` runs it in a background thread (``start()`` returns the URL, ``stop()``
closes the listening socket *and* every open keep-alive connection, so a stopped
collector really is gone for a client). For tests it can also inject faults
(``fail_next``, ``set_delay``) and records every request it answered.

Here: ``Collector``. The HTTP server and its request handler: ``http.py``; the database:
``store.py`` (``db.py``: its file and schema).
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from definity_spark import wire
from definity_spark.collector.db import default_db_path
from definity_spark.collector.http import _KEY, MAX_KEY_LENGTH, _Server
from definity_spark.collector.store import Store, utc_now
from definity_spark.collector.validate import PayloadError, parse_body, validate

logger = logging.getLogger("definity_spark.collector")

TOKEN_ENV = "DEFINITY_COLLECTOR_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_CONNECTIONS = 64  # served at once; more get a 503 and are closed
IDLE_TIMEOUT = 60.0  # seconds a connection may wait between requests (or within one)


class _Fault:
    """One scripted failure: answer the next matching POST with ``status``."""

    def __init__(self, status: int, retry_after: float | None, endpoint: str | None):
        self.status = status
        self.retry_after = retry_after
        self.endpoint = endpoint


class Collector:
    """A local collector on ``host:port`` backed by the SQLite file ``db_path``.

    ``port=0`` picks a free port; ``start()`` returns the base URL (``http://host:port``).
    ``token``: when set, ``POST /log/*`` and every read (``/api/*``; ``/health`` without
    the count) need ``Authorization: Bearer <token>``; the page asks for it once. Without
    a token, binding beyond loopback is warned about. ``max_connections`` /
    ``idle_timeout``: connections served at once, and seconds one may idle.
    ``nice``: on Linux, its threads run at this nice value;
    ``idle``: in Linux's idle scheduling class (``SCHED_IDLE``). A benchmark's collector,
    standing in for a remote server, then takes only CPU the job leaves idle.
    Usable as a context manager.
    """

    def __init__(self, db_path: str | None = None, host: str = DEFAULT_HOST, port: int = 0,
                 token: str | None = None, nice: int = 0, idle: bool = False,
                 max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.db_path = db_path or default_db_path()
        self.max_connections = max(1, int(max_connections))
        self.idle_timeout = max(0.1, float(idle_timeout))
        self.nice = nice
        self.idle = idle
        self.host = host
        self.port = port
        self.token = token or None
        # Opened by start() (or add()), closed and reset by stop().
        self.store: Store = None  # type: ignore[assignment]
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self._faults: collections.deque[_Fault] = collections.deque()
        self._faults_lock = threading.Lock()
        self._delay = 0.0
        self._delay_after_store = False
        self._requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=10000)

    def __repr__(self) -> str:
        # never the token itself
        return (f"Collector(url={self.url!r}, db_path={self.db_path!r}, "
                f"token={'***' if self.token else None})")

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Open the database, bind, serve in a daemon thread; return the base URL."""
        if self._server is not None:
            return self.url  # type: ignore[return-value]
        if self.store is None:
            self.store = Store(self.db_path)
        try:
            self._server = _Server((self.host, self.port), self)
        except OSError:
            self.store.close()
            self.store = None  # type: ignore[assignment]
            raise
        self.port = self._server.server_address[1]
        if self.token is None and not self._server.loopback_only:
            logger.warning(
                "collector: listening on %s without a token: anyone who can reach this "
                "port can read and write everything it holds; set --token (or %s) or bind "
                "to 127.0.0.1", self.url, TOKEN_ENV)
        self._thread = threading.Thread(target=self._serve, args=(self._server,),
                                        name="definity-collector", daemon=True)
        self._thread.start()
        logger.debug("collector listening on %s (db %s)", self.url, self.db_path)
        return self.url  # type: ignore[return-value]

    def _serve(self, server: _Server) -> None:
        if sys.platform.startswith("linux"):
            # request threads are started by this one and inherit its nice value and class
            if self.nice > 0:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            if self.idle:
                os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE,
                                      os.sched_param(0))
        server.serve_forever(poll_interval=0.1)

    def serve_forever(self) -> None:
        """Block until ``stop()`` (from another thread) or KeyboardInterrupt."""
        if self._server is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop listening, cut open keep-alive connections, close the database."""
        server, self._server = self._server, None
        if server is not None:
            self._shutdown(server)
        store, self.store = self.store, None  # type: ignore[assignment]
        if store is not None:
            store.close()
        with self._changed:
            self._changed.notify_all()

    def _shutdown(self, server: _Server) -> None:
        server.shutdown()
        with server.connections_lock:
            connections = list(server.open_connections)
        for conn in connections:
            # A client with a keep-alive connection must see the collector go away too.
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        # Give in-flight handlers a moment to finish their transaction before the store
        # closes under them.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with server.connections_lock:
                if not server.open_connections:
                    break
            time.sleep(0.02)

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- import --------------------------------------------------------------------------

    def add(self, endpoint: str, body: Any, raw: bytes | None = None,
            source: str = "api", key: str | None = None) -> int:
        """Validate and store one payload without HTTP (the ``--load`` path); return seq
        (the first copy's when ``key`` is already stored: nothing is stored then).

        Raises ``PayloadError`` for an invalid payload. Works before ``start()`` too.
        """
        if raw is None:
            raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return self._add_once(endpoint, raw, source, key)[0]

    def _add_once(self, endpoint: str, raw: bytes, source: str,
                  key: str | None) -> tuple[int, bool]:
        if self.store is None:
            self.store = Store(self.db_path)
        if endpoint not in wire.ENDPOINTS:
            raise PayloadError(f"unknown endpoint {endpoint!r}; expected one of "
                               f"{', '.join(wire.ENDPOINTS)}")
        parsed = parse_body(raw)
        validate(endpoint, parsed)
        if key is not None and not _KEY.match(str(key)):
            raise PayloadError(f"key must be 1-{MAX_KEY_LENGTH} visible ASCII characters")
        seq, duplicate = self.store.add_once(endpoint, raw, parsed, source=source, key=key)
        if not duplicate:
            self._notify()
        return seq, duplicate

    def load_file(self, path: str) -> tuple[int, list[tuple[int, str]]]:
        """Import a JSONL events file (the plugin's file transport / spool format).

        Each non-blank line is ``{"endpoint": "/log/...", "body": {...}}``
        (``wire.envelope()``, plus the payload's ``"key"`` when the plugin wrote it: a line
        whose key is already held is not stored again), validated like an HTTP request.
        Returns (payloads stored,
        [(line number, error message)] of lines rejected); a bad line never stops the import.
        Raises ``OSError`` if the file cannot be read.
        """
        loaded = duplicates = 0
        rejected: list[tuple[int, str]] = []
        source = "load:" + os.path.abspath(path)
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = parse_body(line.strip())
                    try:
                        payload = wire.from_envelope(record)
                    except ValueError:
                        raise PayloadError('line must be {"endpoint": "/log/...", "body": {...}}'
                                           f"; got keys {sorted(record)}") from None
                    raw = json.dumps(payload.body, ensure_ascii=False).encode("utf-8")
                    key = record.get("key")
                    _, duplicate = self._add_once(payload.endpoint, raw, f"{source}:{number}",
                                                  key if isinstance(key, str) else None)
                    if duplicate:
                        duplicates += 1
                    else:
                        loaded += 1
                except PayloadError as exc:
                    rejected.append((number, str(exc)))
        if duplicates:
            logger.info("collector: %d line(s) of %s already held (same key): not stored "
                        "again", duplicates, path)
        if rejected:
            logger.warning("collector: %d line(s) of %s rejected (first: line %d: %s)",
                           len(rejected), path, rejected[0][0], rejected[0][1])
        return loaded, rejected

    # -- test hooks ----------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 503, retry_after: float | None = None,
                  endpoint: str | None = None) -> None:
        """Answer the next ``count`` POSTs (to ``endpoint``, or any) with ``status``."""
        with self._faults_lock:
            for _ in range(count):
                self._faults.append(_Fault(status, retry_after, endpoint))

    def set_delay(self, seconds: float, after_store: bool = False) -> None:
        """Sleep this long before answering each POST (to exercise client timeouts).
        ``after_store``: store the payload first, then wait, and only for a payload that
        was stored (not for a duplicate): a server that took each request but answered
        after the client gave up, and answers its retry at once."""
        self._delay = max(0.0, float(seconds))
        self._delay_after_store = bool(after_store)

    def requests(self) -> list[dict[str, Any]]:
        """Every request answered so far: method, path, status, at (oldest first)."""
        return list(self._requests)

    def wait_for_payloads(self, count: int, timeout: float = 10.0, task_id: str | None = None,
                          endpoint: str | None = None) -> bool:
        """Wait until at least ``count`` payloads (matching the filters) are stored."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self.store is not None and self._server is not None:
                    if len(self.store.payloads(task_id=task_id, endpoint=endpoint)) >= count:
                        return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._server is None:
                    return False
                self._changed.wait(min(remaining, 0.5))

    # -- internals used by the handler -----------------------------------------------------

    def _take_fault(self, endpoint: str) -> _Fault | None:
        if not self._faults:  # the usual case: no lock, no copy
            return None
        with self._faults_lock:
            for fault in list(self._faults):
                if fault.endpoint is None or fault.endpoint == endpoint:
                    self._faults.remove(fault)
                    return fault
        return None

    def _check_auth(self, header: str | None) -> str | None:
        """None when authorised, else the 401 message (which never contains a token)."""
        if self.token is None:
            return None
        if not header:
            return "missing Authorization header: expected 'Bearer <token>'"
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "malformed Authorization header: expected 'Bearer <token>'"
        if not hmac.compare_digest(given.strip().encode("utf-8"), self.token.encode("utf-8")):
            return "token rejected"
        return None

    def _record(self, method: str, path: str, status: int) -> None:
        self._requests.append({"method": method, "path": path, "status": status,
                               "at": utc_now()})

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()


__all__ = ["Collector", "TOKEN_ENV", "DEFAULT_HOST", "DEFAULT_PORT", "MAX_CONNECTIONS",
           "IDLE_TIMEOUT"]
