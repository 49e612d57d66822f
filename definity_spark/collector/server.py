"""The local collector: a small Definity-compatible server for laptops, demos and tests.

It implements the four reporting endpoints of the Definity API (``POST /log/task``,
``/log/tf``, ``/log/dataset``, ``/log/metrics``) with the documented validation, keeps
everything in SQLite (``store.Store``) and serves what it holds back:

* ``GET /api/tasks``, ``/api/tasks/{task_id}``, ``/api/lineage``, ``/api/columns``
  (a column's upstream columns), ``/api/payloads``, ``/health``: JSON for people, the
  demo and other rooms' tests;
* ``GET /``: a self-contained HTML page drawing the lineage graph.

Built on the standard library (``ThreadingHTTPServer``) so that it adds no dependency.
``Collector`` runs it in a background thread (``start()`` returns the URL, ``stop()``
closes the listening socket *and* every open keep-alive connection, so a stopped
collector really is gone for a client). For tests it can also inject faults
(``fail_next``, ``set_delay``) and records every request it answered.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from definity_spark import wire
from definity_spark.collector.store import Store, default_db_path, utc_now
from definity_spark.collector.validate import PayloadError, parse_body, validate

logger = logging.getLogger("definity_spark.collector")

TOKEN_ENV = "DEFINITY_COLLECTOR_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_BODY_BYTES = 16 * 1024 * 1024
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_JSON_TYPE = "application/json; charset=utf-8"


class _Fault:
    """One scripted failure: answer the next matching POST with ``status``."""

    def __init__(self, status: int, retry_after: float | None, endpoint: str | None):
        self.status = status
        self.retry_after = retry_after
        self.endpoint = endpoint


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], collector: Collector) -> None:
        self.collector = collector
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive: the plugin's delivery reuses one connection.
    protocol_version = "HTTP/1.1"
    # An answer goes out in one write: wfile is buffered (wbufsize -1: the default buffer
    # size) and flushed once per answer by _send(), so headers and body share one segment
    # (one syscall, one wake-up of the client). The stdlib's own answers are flushed too:
    # handle_one_request() flushes after each request, send_error() closes the connection
    # (finish() flushes) and handle_expect_100() is overridden below.
    wbufsize = -1
    # TCP_NODELAY all the same: an answer larger than the buffer still goes out in more
    # than one write, and with Nagle on the last one would wait for the client's delayed
    # ACK (~40 ms per request on a keep-alive connection).
    disable_nagle_algorithm = True
    server_version = "definity-spark-collector"
    # Idle keep-alive connections are dropped after this many seconds. Long, because a
    # Spark application may go minutes between writes and a connection closed under a
    # client makes its next POST fail once (the plugin retries, but why make it).
    timeout = 600
    server: _Server

    # -- connection bookkeeping (so that stop() can cut keep-alive connections) ----------

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # The stdlib's access log, called for every answer: format it only when shown.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("collector %s - %s", self.address_string(), format % args)

    def handle_expect_100(self) -> bool:
        # "100 Continue" must reach the client before it sends the body.
        result = super().handle_expect_100()
        self.wfile.flush()
        return result

    # -- responses -----------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        # Recorded before answering: a client that got its answer finds it in requests().
        self.server.collector._record(self.command, self.path, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(value, ensure_ascii=False, indent=None).encode("utf-8")
        self._send(status, body, _JSON_TYPE, headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": message}, headers)

    # -- request body --------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 400/413 (connection then closed)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError(length_header)
        except ValueError:
            self.close_connection = True
            self._error(400, f"invalid Content-Length header: {length_header!r}")
            return None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, f"body too large: {length} bytes (limit {MAX_BODY_BYTES})")
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                self._error(400, "malformed chunked body")
                return None
            if size == 0:
                # trailers until the empty line
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                self._error(413, f"body too large (limit {MAX_BODY_BYTES} bytes)")
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after each chunk

    # -- dispatch ------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._guarded(self._post)

    def do_GET(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def _not_allowed(self) -> None:
        if self._read_body() is None:
            return
        self.close_connection = True
        self._error(405, f"method {self.command} not allowed")

    do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

    def _guarded(self, handler: Any) -> None:
        try:
            handler()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server
            logger.exception("collector: internal error on %s %s", self.command, self.path)
            self.close_connection = True
            try:
                self._error(500, f"internal error: {type(exc).__name__}: {exc}")
            except OSError:
                pass

    def _post(self) -> None:
        collector = self.server.collector
        endpoint = urlsplit(self.path).path.rstrip("/") or "/"
        raw = self._read_body()
        if raw is None:
            return
        if endpoint not in wire.ENDPOINTS:
            self._error(404, f"unknown endpoint {endpoint!r}; reporting endpoints are "
                             f"{', '.join(wire.ENDPOINTS)}")
            return
        delay = collector._delay
        if delay > 0:
            time.sleep(delay)
        fault = collector._take_fault(endpoint)
        if fault is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            self._error(fault.status, f"injected failure (status {fault.status})", headers)
            return
        auth_error = collector._check_auth(self.headers.get("Authorization"))
        if auth_error is not None:
            self._error(401, auth_error, {"WWW-Authenticate": 'Bearer realm="definity"'})
            return
        try:
            body = parse_body(raw)
            validate(endpoint, body)
        except PayloadError as exc:
            logger.info("collector: rejected %s: %s", endpoint, exc)
            self._error(400, str(exc))
            return
        seq = collector.store.add(endpoint, raw, body, source="http",
                                  content_type=self.headers.get("Content-Type"))
        collector._notify()
        logger.info("collector: accepted %s (task %s, seq %d)", endpoint, body.get("task_id"), seq)
        # == _json(200, {"ok": True, "seq": seq}), without the encoder on the hot path
        self._send(200, b'{"ok": true, "seq": %d}' % seq, _JSON_TYPE)

    def _get(self) -> None:
        # Drain a (pointless) GET body so that the keep-alive stream stays in sync.
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            if self._read_body() is None:
                return
        store = self.server.collector.store
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        # Reads are open (the page in a browser cannot send a bearer token), but a request
        # that does present a token gets it checked: `definity-spark doctor` learns that
        # its token is wrong from any endpoint, as with the real server.
        header = self.headers.get("Authorization")
        if header is not None:
            auth_error = self.server.collector._check_auth(header)
            if auth_error is not None:
                self._error(401, auth_error, {"WWW-Authenticate": 'Bearer realm="definity"'})
                return
        if path in ("/", "/index.html", "/lineage", "/lineage.html"):
            self._static("lineage.html", "text/html; charset=utf-8")
        elif path == "/health":
            self._json(200, {"status": "ok", "payloads": store.count(),
                             "token_required": self.server.collector.token is not None})
        elif path == "/api":
            self._json(200, {"endpoints": ["/api/tasks", "/api/tasks/{task_id}",
                                           "/api/lineage", "/api/columns?dataset=&column=",
                                           "/api/payloads", "/health"]})
        elif path == "/api/tasks":
            self._json(200, store.tasks())
        elif path.startswith("/api/tasks/"):
            task_id = unquote(path[len("/api/tasks/"):])
            task = store.task(task_id)
            if task is None:
                self._error(404, f"no task with task_id {task_id!r}")
            else:
                self._json(200, task)
        elif path == "/api/lineage":
            self._json(200, store.lineage())
        elif path == "/api/columns":
            dataset, column = query.get("dataset"), query.get("column")
            if not dataset or not column:
                self._error(400, "'dataset' and 'column' are required")
                return
            self._json(200, store.column_upstream(dataset, column))
        elif path == "/api/payloads":
            try:
                since = int(query.get("since", "0"))
            except ValueError:
                self._error(400, "'since' must be an integer (a payload seq)")
                return
            endpoint = query.get("endpoint")
            if endpoint is not None and not endpoint.startswith("/"):
                endpoint = "/log/" + endpoint
            self._json(200, store.payloads(task_id=query.get("task_id"), endpoint=endpoint,
                                           since=since))
        else:
            self._error(404, f"not found: {path}")

    def _static(self, name: str, content_type: str) -> None:
        with open(os.path.join(STATIC_DIR, name), "rb") as handle:
            self._send(200, handle.read(), content_type)


class Collector:
    """A local collector on ``host:port`` backed by the SQLite file ``db_path``.

    ``port=0`` picks a free port; ``start()`` returns the base URL (``http://host:port``).
    ``token``: when set, ``POST /log/*`` needs ``Authorization: Bearer <token>``; the read
    API and the page stay open (bind to loopback), but a GET that presents a wrong token
    is refused with 401 too. ``nice``: on Linux, its threads run at this nice value;
    ``idle``: in Linux's idle scheduling class (``SCHED_IDLE``). A benchmark's collector,
    standing in for a remote server, then takes only CPU the job leaves idle.
    Usable as a context manager.
    """

    def __init__(self, db_path: str | None = None, host: str = DEFAULT_HOST, port: int = 0,
                 token: str | None = None, nice: int = 0, idle: bool = False) -> None:
        self.db_path = db_path or default_db_path()
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
            source: str = "api") -> int:
        """Validate and store one payload without HTTP (the ``--load`` path); return seq.

        Raises ``PayloadError`` for an invalid payload. Works before ``start()`` too.
        """
        if self.store is None:
            self.store = Store(self.db_path)
        if raw is None:
            raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if endpoint not in wire.ENDPOINTS:
            raise PayloadError(f"unknown endpoint {endpoint!r}; expected one of "
                               f"{', '.join(wire.ENDPOINTS)}")
        parsed = parse_body(raw)
        validate(endpoint, parsed)
        seq = self.store.add(endpoint, raw, parsed, source=source)
        self._notify()
        return seq

    def load_file(self, path: str) -> tuple[int, list[tuple[int, str]]]:
        """Import a JSONL events file (the plugin's file transport / spool format).

        Each non-blank line is ``{"endpoint": "/log/...", "body": {...}}``
        (``wire.envelope()``), validated like an HTTP request. Returns (payloads stored,
        [(line number, error message)] of lines rejected); a bad line never stops the import.
        Raises ``OSError`` if the file cannot be read.
        """
        loaded = 0
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
                    self.add(payload.endpoint, payload.body, raw=raw,
                             source=f"{source}:{number}")
                    loaded += 1
                except PayloadError as exc:
                    rejected.append((number, str(exc)))
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

    def set_delay(self, seconds: float) -> None:
        """Sleep this long before answering each POST (to exercise client timeouts)."""
        self._delay = max(0.0, float(seconds))

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


__all__ = ["Collector", "TOKEN_ENV", "DEFAULT_HOST", "DEFAULT_PORT", "MAX_BODY_BYTES"]
