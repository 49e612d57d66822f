"""A real HTTP server on loopback that misbehaves on request, for delivery tests.

It stands in for the Definity server: it accepts ``POST /log/*`` with a JSON body and
answers 200, and records every accepted request (path, headers, body). It can be told to:

* ``down()`` / ``up()``        stop listening (connection refused) / listen again, same port
* ``fail_first(n, status)``  answer ``status`` (500) to the next ``n`` requests
* ``rate_limit(n, retry_after)``  answer 429 with ``Retry-After`` to the next ``n`` requests
* ``reject(status)``         answer 401 (or ``status``) to every request until ``clear()``
* ``slow(delay, n)``         wait ``delay`` seconds before answering the next ``n`` requests
                             (``n=None``: all); a delayed request is *not* recorded, it
                             stands for a request the server never completed
* ``reset(n)``               read the next ``n`` requests and reset the connection (RST)
* ``accept_only(n)``         accept the next ``n`` requests, then answer 503 until ``clear()``
* ``slow(..., accept=True)`` a delayed request is recorded and answered 200 (the server
                             completed it after the client gave up)
* ``tls=(cert, key)``        serve https with that certificate
* ``token=...``              answer 401 to a request without ``Authorization: Bearer token``
* ``refuse_field(name)``      answer 400 to a body that has the top-level field ``name``
                             (a server that does not know an additive field)

``requests_seen`` counts every request that reached the handler (accepted or not);
``records`` holds the accepted ones in arrival order.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Record:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    client_port: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultyServer:
    def __init__(self, token: str | None = None,
                 tls: tuple[str, str] | None = None) -> None:
        """``tls``: (certificate file, key file) to serve https instead of http."""
        self.token = token
        self.tls = tls
        self.lock = threading.Lock()
        self.records: list[Record] = []
        self.refused: list[Any] = []  # bodies refused by refuse_field
        self.requests_seen = 0
        self.idle_timeout: float | None = None  # seconds, for connections opened later
        self.request_times: list[float] = []
        self._stopping = threading.Event()
        self.clear()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.up()

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def clear(self) -> None:
        """Behave again (faults off); records are kept."""
        with getattr(self, "lock", threading.Lock()):
            self._fail_remaining = 0
            self._fail_status = 500
            self._retry_after: str | None = None
            self._reject_status: int | None = None
            self._slow_delay = 0.0
            self._slow_remaining: int | None = 0
            self._slow_accept = False
            self._reset_remaining = 0
            self._accept_budget: int | None = None

    def refuse_field(self, name: str) -> None:
        with self.lock:
            self._refused_field = name

    def fail_first(self, n: int, status: int = 500) -> None:
        with self.lock:
            self._fail_remaining, self._fail_status, self._retry_after = n, status, None

    def rate_limit(self, n: int, retry_after: str = "1") -> None:
        with self.lock:
            self._fail_remaining, self._fail_status, self._retry_after = n, 429, retry_after

    def reject(self, status: int = 401) -> None:
        with self.lock:
            self._reject_status = status

    def slow(self, delay: float, n: int | None = None, accept: bool = False) -> None:
        with self.lock:
            self._slow_delay, self._slow_remaining, self._slow_accept = delay, n, accept

    def accept_only(self, n: int) -> None:
        with self.lock:
            self._accept_budget = n

    def reset(self, n: int) -> None:
        with self.lock:
            self._reset_remaining = n

    def up(self) -> None:
        if self._httpd is not None:
            return
        self._stopping.clear()
        httpd = _Server(("127.0.0.1", self.port), _handler_for(self))
        self.port = httpd.server_address[1]
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"faulty-server-{self.port}", daemon=True)
        self._thread.start()

    def down(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes slow handlers
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    close = down

    # ------------------------------------------------------------------ views
    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.json for r in self.records]

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.records]

    # ------------------------------------------------------------------ decisions
    def _decide(self, headers: dict[str, str]) -> dict[str, Any]:
        """What to do with one request (called under the lock)."""
        self.requests_seen += 1
        self.request_times.append(time.monotonic())
        if self._reset_remaining > 0:
            self._reset_remaining -= 1
            return {"action": "reset"}
        delay = 0.0
        if self._slow_delay and (self._slow_remaining is None or self._slow_remaining > 0):
            if self._slow_remaining is not None:
                self._slow_remaining -= 1
            delay = self._slow_delay
        if self._reject_status is not None:
            return {"action": "status", "status": self._reject_status, "delay": delay}
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return {"action": "status", "status": 401, "delay": delay}
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            return {"action": "status", "status": self._fail_status, "delay": delay,
                    "retry_after": self._retry_after}
        if self._accept_budget is not None:
            if self._accept_budget <= 0:
                return {"action": "status", "status": 503, "delay": delay}
            self._accept_budget -= 1
        return {"action": "accept", "delay": delay, "slow_accept": self._slow_accept}


def _handler_for(server: FaultyServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real server

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def setup(self) -> None:
            # an idle keep-alive connection is closed after this long (None: never)
            self.timeout = server.idle_timeout
            super().setup()

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            with server.lock:
                decision = server._decide(headers)
            if decision["action"] == "reset":
                # SO_LINGER 0 + close: the client sees ECONNRESET, not a clean close.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            delay = decision.get("delay") or 0.0
            if delay:
                if server._stopping.wait(delay):
                    self.close_connection = True
                    return
                if decision.get("slow_accept") and decision["action"] == "accept":
                    with server.lock:
                        server.records.append(Record(self.path, headers, body,
                                                     time.monotonic(), self.client_address[1]))
                    self._answer(200, b'{"ok":true}')
                    return
                # The client has given up by now: this request counts as never completed.
                self._answer(503, b'{"error":"too slow"}')
                self.close_connection = True
                return
            if decision["action"] == "status":
                status = decision["status"]
                extra = {}
                if decision.get("retry_after") is not None:
                    extra["Retry-After"] = decision["retry_after"]
                self._answer(status, json.dumps({"error": f"fault {status}"}).encode(), extra)
                return
            try:
                parsed = json.loads(body.decode("utf-8"))
            except ValueError:
                self._answer(400, b'{"error":"body is not JSON"}')
                return
            refused = getattr(server, "_refused_field", None)
            if refused and isinstance(parsed, dict) and refused in parsed:
                with server.lock:
                    server.refused.append(parsed)
                self._answer(400, json.dumps({"error": f"unknown field {refused}"}).encode())
                return
            with server.lock:
                server.records.append(Record(self.path, headers, body, time.monotonic(),
                                             self.client_address[1]))
            self._answer(200, b'{"ok":true}')

        def _answer(self, status: int, payload: bytes,
                    extra: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                self.close_connection = True

    return Handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
