"""The collector's HTTP side: the listening server and the request handler.

``_Server`` serves at most ``max_connections`` connections at once and tracks every open
one, so that ``Collector.stop()`` can cut them. ``_Handler`` answers one connection's
requests: reading bodies, the access checks, the four reporting endpoints and the read
API. ``collector`` is the ``server.Collector`` being served.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from definity_spark import wire
from definity_spark.collector.validate import PayloadError, parse_body, validate

logger = logging.getLogger("definity_spark.collector")

MAX_BODY_BYTES = 16 * 1024 * 1024
_MAX_TRAILER_LINES = 32
# A payload's idempotency key (the plugin's "<random prefix>-<seq>"): a request whose key
# the collector already holds is answered 200 and not stored again.
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
_KEY = re.compile(rf"^[!-~]{{1,{MAX_KEY_LENGTH}}}$")
_CHUNK_SIZE_LINE = re.compile(rb"^([0-9A-Fa-f]{1,8})[ \t]*(?:;[^\r\n]*)?\r?\n$")
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_JSON_TYPE = "application/json; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], collector: Any) -> None:
        self.collector = collector
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.active = 0  # connections with a thread serving them
        super().__init__(address, _Handler)
        self.loopback_only = _is_loopback_address(self.server_address[0])

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection, at most max_connections of them: past that a client
        # gets a 503 at once (the plugin retries) instead of a thread that idles.
        with self.connections_lock:
            busy = self.active >= self.collector.max_connections
            if not busy:
                self.active += 1
        if busy:
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self.connections_lock:
                self.active -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.active -= 1

    def _refuse_busy(self, request: socket.socket) -> None:
        body = b'{"error": "too many connections; retry later"}'
        answer = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + _JSON_TYPE.encode()
                  + b"\r\nContent-Length: %d\r\nRetry-After: 1\r\n"
                  b"X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n" % len(body)
                  + body)
        try:
            request.settimeout(0.2)  # a fresh socket's buffer takes it; never wait long
            request.sendall(answer)
        except OSError:
            pass
        self.shutdown_request(request)


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
    server: _Server

    # -- connection bookkeeping (so that stop() can cut keep-alive connections) ----------

    def setup(self) -> None:
        # Idle keep-alive connections (and requests that stall) are dropped after this
        # many seconds. The plugin checks a kept connection before it reuses it, so one
        # closed while a Spark application was busy elsewhere costs it no failed attempt.
        self.timeout = self.server.collector.idle_timeout
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
        self.send_header("X-Content-Type-Options", "nosniff")
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
        """A chunked body, or None after answering 400/413. Chunk sizes are hex digits only
        (no sign: ``-1`` would read to the end of the stream unbounded), and the limit
        counts the bytes actually read."""
        parts: list[bytes] = []
        total = 0
        while True:
            match = _CHUNK_SIZE_LINE.match(self.rfile.readline(1024))
            if match is None:
                return self._bad_body(400, "malformed chunked body: bad chunk size line")
            size = int(match.group(1), 16)
            if size == 0:
                # trailers until the empty line
                for _ in range(_MAX_TRAILER_LINES):
                    if self.rfile.readline(1024) in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
                return self._bad_body(400, "malformed chunked body: too many trailer lines")
            if total + size > MAX_BODY_BYTES:
                return self._bad_body(413, f"body too large (limit {MAX_BODY_BYTES} bytes)")
            chunk = self.rfile.read(size)
            total += len(chunk)
            if len(chunk) < size:
                return self._bad_body(400, "malformed chunked body: truncated chunk")
            parts.append(chunk)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                return self._bad_body(400, "malformed chunked body: no CRLF after a chunk")

    def _bad_body(self, status: int, message: str) -> None:
        self.close_connection = True
        self._error(status, message)
        return None

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

    def _host_refused(self) -> bool:
        """Bound to loopback, a request must be addressed to a loopback name: a page that
        rebinds its own name to 127.0.0.1 (DNS rebinding) sends its own ``Host``."""
        host = self.headers.get("Host")
        if not self.server.loopback_only or host is None or _is_loopback_host(host):
            return False
        self.close_connection = True
        self._error(421, "this collector only answers requests addressed to a loopback "
                         "name (localhost, 127.0.0.1, [::1])")
        return True

    def _post(self) -> None:
        collector = self.server.collector
        endpoint = urlsplit(self.path).path.rstrip("/") or "/"
        raw = self._read_body()
        if raw is None or self._host_refused():
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            # text/plain and form posts are what a web page may send cross-site without
            # asking (no CORS preflight); the Definity API takes JSON only
            self._error(415, "Content-Type must be application/json")
            return
        if endpoint not in wire.ENDPOINTS:
            self._error(404, f"unknown endpoint {endpoint!r}; reporting endpoints are "
                             f"{', '.join(wire.ENDPOINTS)}")
            return
        key = self.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not _KEY.match(key):
            self._error(400, f"{IDEMPOTENCY_HEADER} must be 1-{MAX_KEY_LENGTH} visible ASCII "
                             "characters")
            return
        delay, after_store = collector._delay, collector._delay_after_store
        if delay > 0 and not after_store:
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
        seq, duplicate = collector.store.add_once(
            endpoint, raw, body, source="http", content_type=self.headers.get("Content-Type"),
            key=key)
        if delay > 0 and after_store and not duplicate:
            time.sleep(delay)  # stored, answered late: the client may have given up
        if duplicate:
            logger.info("collector: dropped a duplicate %s (task %s, key %s, first seq %d)",
                        endpoint, body.get("task_id"), key, seq)
            self._send(200, b'{"ok": true, "seq": %d, "duplicate": true}' % seq, _JSON_TYPE)
            return
        collector._notify()
        logger.info("collector: accepted %s (task %s, seq %d)", endpoint, body.get("task_id"), seq)
        # == _json(200, {"ok": True, "seq": seq}), without the encoder on the hot path
        self._send(200, b'{"ok": true, "seq": %d}' % seq, _JSON_TYPE)

    def _get(self) -> None:
        # Drain a (pointless) GET body so that the keep-alive stream stays in sync.
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            if self._read_body() is None:
                return
        if self._host_refused():
            return
        collector = self.server.collector
        store = collector.store
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if path in ("/", "/index.html", "/lineage", "/lineage.html"):
            # The page itself holds no data: it asks for the token once (kept in the tab)
            # and sends it with each read of /api/*.
            self._static("lineage.html", "text/html; charset=utf-8")
            return
        # With a token, every read needs it too (the collector may run on a shared host).
        header = self.headers.get("Authorization")
        auth_error = collector._check_auth(header)
        if path == "/health":
            health: dict[str, Any] = {"status": "ok",
                                      "token_required": collector.token is not None}
            if auth_error is None:
                health["payloads"] = store.count()
            elif header is not None:  # a wrong token is refused (how `doctor` checks one)
                self._error(401, auth_error, {"WWW-Authenticate": 'Bearer realm="definity"'})
                return
            self._json(200, health)
            return
        if auth_error is not None:
            self._error(401, auth_error, {"WWW-Authenticate": 'Bearer realm="definity"'})
            return
        if path == "/api":
            self._json(200, {"endpoints": ["/api/tasks", "/api/tasks/{task_id}",
                                           "/api/lineage", "/api/columns?dataset=&column=",
                                           "/api/metrics?asset_name=&metric_type=",
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
        elif path == "/api/metrics":
            asset, metric = query.get("asset_name"), query.get("metric_type")
            if not asset or not metric:
                self._error(400, "'asset_name' and 'metric_type' are required")
                return
            try:
                limit = int(query.get("limit", "200"))
            except ValueError:
                self._error(400, "'limit' must be an integer")
                return
            self._json(200, store.metric_history(asset, metric, query.get("asset_type"),
                                                 limit))
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


def _is_loopback_address(host: str) -> bool:
    """True for a bound address that only this machine can reach (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(str(host).strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return str(host).lower() == "localhost"


def _loopback_names() -> set[str]:
    names = {"localhost"}
    try:  # the machine's own name: no page can rebind it (no DNS look-up here)
        names.add(socket.gethostname().lower())
    except OSError:
        pass
    return names


_LOOPBACK_NAMES = _loopback_names()


def _is_loopback_host(header: str) -> bool:
    """True when a ``Host`` header names this machine by a loopback name or address."""
    value = header.strip().lower()
    if value.startswith("["):
        name = value[1:value.find("]")] if "]" in value else value
    else:
        name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
