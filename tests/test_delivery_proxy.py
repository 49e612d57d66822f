"""Delivery through a proxy taken from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY...).

A real forward proxy on loopback: a request in absolute form (``POST http://host/path``) is
forwarded to its host, a ``CONNECT host:port`` opens a tunnel (https); the proxy records
what it saw. The server behind it is the loopback FaultyServer of the other delivery tests.
"""

from __future__ import annotations

import base64
import http.client
import logging
import select
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from definity_spark.delivery.http import HttpTransport
from definity_spark.delivery.transport import NETWORK, REJECTED, SENT

try:
    from faulty_server import FaultyServer, free_port
    from test_delivery import TOKEN, make_settings, spooled_bodies, submit_all
    from test_delivery_tls import certificate  # noqa: F401 - the fixture
except ImportError:  # tests/ imported as a package
    from tests.faulty_server import FaultyServer, free_port
    from tests.test_delivery import TOKEN, make_settings, spooled_bodies, submit_all
    from tests.test_delivery_tls import certificate  # noqa: F401 - the fixture

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
PROXY_USER, PROXY_PASSWORD = "proxy-user", "pr@xy-SECRET"
# hop-by-hop headers: a proxy consumes them, it does not forward them
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "transfer-encoding", "upgrade"})


@dataclass
class Seen:
    method: str
    target: str  # absolute URL, or host:port for CONNECT
    headers: dict[str, str]
    client_port: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class ForwardProxy:
    """``refuse=(status, body)``: answer that itself to every request instead of forwarding."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.refuse: tuple[int, bytes] | None = None
        self._httpd = _Server(("127.0.0.1", 0), _proxy_handler(self))
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"proxy-{self.port}", daemon=True).start()

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _proxy_handler(proxy: ForwardProxy) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive towards the client

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _record(self) -> None:
            with proxy.lock:
                proxy.seen.append(Seen(self.command, self.path,
                                       {k.lower(): v for k, v in self.headers.items()},
                                       self.client_address[1]))

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers:
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:  # a client that stopped reading a big answer and hung up
                self.close_connection = True

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self._record()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if proxy.refuse is not None:
                self._answer(proxy.refuse[0], [("Content-Type", "text/html")], proxy.refuse[1])
                return
            target = urlsplit(self.path)
            if not target.scheme:  # origin form: the client did not talk to a proxy
                self._answer(400, [], b"not a proxy request")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=5)
            try:
                upstream.request("POST", target.path, body=body, headers=headers)
                resp = upstream.getresponse()
                self._answer(resp.status, resp.getheaders(), resp.read())
            finally:
                upstream.close()

        def do_CONNECT(self) -> None:  # noqa: N802
            self._record()
            host, port = self.path.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=5)
            self.send_response(200, "Connection established")
            self.end_headers()
            self.close_connection = True  # the connection is the tunnel's from now on
            try:
                ends = [self.connection, upstream]
                while True:
                    readable, _, _ = select.select(ends, [], [], 5)
                    if not readable:
                        return
                    for end in readable:
                        data = end.recv(65536)
                        if not data:
                            return
                        (upstream if end is self.connection else self.connection).sendall(data)
            finally:
                upstream.close()

    return Handler


@pytest.fixture()
def proxy() -> Iterator[ForwardProxy]:
    p = ForwardProxy()
    yield p
    p.close()


@pytest.fixture()
def server() -> Iterator[FaultyServer]:
    srv = FaultyServer(token=TOKEN)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: the machine running the tests may have proxies of its own."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_posts_go_through_the_proxy_of_the_environment(
        server: FaultyServer, proxy: ForwardProxy, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, proxy.url())
    monkeypatch.setenv("NO_PROXY", "example.com,.internal")  # not the server's host
    delivery, payloads = submit_all(make_settings(tmp_path, server_url=server.url), n_tf=2)
    assert delivery.close(5.0)
    assert delivery.stats()["sent"] == len(payloads)
    assert server.bodies() == [p.to_json() for p in payloads]
    assert [(s.method, s.target) for s in proxy.seen] == [
        ("POST", server.url + p.endpoint) for p in payloads]
    # the token reached the server through the proxy; no proxy credentials were sent
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in server.records)
    assert all("proxy-authorization" not in s.headers for s in proxy.seen)
    assert len({s.client_port for s in proxy.seen}) == 1  # keep-alive to the proxy


def test_proxy_credentials_become_a_proxy_authorization_header(
        server: FaultyServer, proxy: ForwardProxy, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="definity_spark")
    monkeypatch.setenv("HTTP_PROXY", proxy.url(f"{PROXY_USER}:pr%40xy-SECRET@"))
    delivery, payloads = submit_all(make_settings(tmp_path, server_url=server.url))
    assert delivery.close(5.0)
    assert server.bodies() == [p.to_json() for p in payloads]
    assert len(proxy.seen) == len(payloads)
    assert all(s.headers["proxy-authorization"] == basic(PROXY_USER, PROXY_PASSWORD)
               for s in proxy.seen)
    assert all(s.headers["authorization"] == f"Bearer {TOKEN}" for s in proxy.seen)
    # the proxy's credentials stop at the proxy
    assert all("proxy-authorization" not in r.headers for r in server.records)
    assert "SECRET" not in caplog.text


@pytest.mark.parametrize("variable", ["NO_PROXY", "no_proxy"])
@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "example.com, 127.0.0.0/8"])
def test_no_proxy_matching_the_server_bypasses_the_proxy(
        server: FaultyServer, proxy: ForwardProxy, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch, variable: str, no_proxy: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv(variable, no_proxy)
    delivery, payloads = submit_all(make_settings(tmp_path, server_url=server.url))
    assert delivery.close(5.0)
    assert server.bodies() == [p.to_json() for p in payloads]
    assert proxy.seen == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_https_goes_through_a_connect_tunnel(proxy: ForwardProxy, tmp_path: Any,
                                             monkeypatch: pytest.MonkeyPatch,
                                             certificate: tuple[str, str]) -> None:
    https_server = FaultyServer(token=TOKEN, tls=certificate)
    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url(f"{PROXY_USER}:pr%40xy-SECRET@"))
        settings = make_settings(tmp_path, server_url=https_server.url,
                                 ca_bundle=certificate[0])
        delivery, payloads = submit_all(settings, n_tf=2)
        assert delivery.close(5.0)
        assert https_server.bodies() == [p.to_json() for p in payloads]
        # one tunnel for all the reports; the proxy saw neither the token nor a body
        assert [(s.method, s.target) for s in proxy.seen] == [
            ("CONNECT", f"127.0.0.1:{https_server.port}")]
        assert proxy.seen[0].headers["proxy-authorization"] == basic(PROXY_USER,
                                                                     PROXY_PASSWORD)
        assert "authorization" not in proxy.seen[0].headers
        assert all(r.headers["authorization"] == f"Bearer {TOKEN}"
                   for r in https_server.records)
    finally:
        https_server.close()


def test_a_proxy_that_is_down_is_a_network_failure_without_its_credentials_in_logs(
        server: FaultyServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="definity_spark")
    monkeypatch.setenv("HTTP_PROXY", f"http://{PROXY_USER}:pr%40xy-SECRET@127.0.0.1:"
                                     f"{free_port()}")
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=2)
    delivery, payloads = submit_all(settings)
    assert delivery.close(5.0)
    assert server.requests_seen == 0
    assert delivery.stats()["network"] == 1
    assert spooled_bodies(settings.spool_dir) == [p.to_json() for p in payloads]
    assert any("attempt 1/2" in r.getMessage() for r in caplog.records)
    assert "SECRET" not in caplog.text and "pr%40xy" not in caplog.text


def test_a_big_answer_is_cut_and_its_connection_not_reused(
        server: FaultyServer, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy's HTML error page is not what the server answers: the transport reads a
    bounded part of it and closes the connection instead of reading the rest."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    proxy.refuse = (407, b"<html>" + b"x" * 1_000_000 + b"</html>")
    transport = HttpTransport(server.url, TOKEN, timeout=2.0, attempts=3, attempt_sleep=0.01)
    try:
        refused = transport.send("/log/task", {"task_id": "t-1"})
        assert (refused.outcome, refused.status, refused.attempts) == (REJECTED, 407, 1)
        assert refused.detail.startswith("<html>xxx") and len(refused.detail) == 300
        proxy.refuse = None
        for _ in range(2):
            assert transport.send("/log/task", {"task_id": "t-1"}).outcome == SENT
        assert server.bodies() == [{"task_id": "t-1"}] * 2
        ports = [s.client_port for s in proxy.seen]
        # a new connection after the cut answer, then keep-alive again
        assert ports[1] != ports[0] and ports[2] == ports[1]
    finally:
        transport.close()


def test_send_never_raises_for_an_unusable_proxy(server: FaultyServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "ftp://127.0.0.1:1")
    transport = HttpTransport(server.url, TOKEN, timeout=1.0, attempts=2, attempt_sleep=0.01)
    result = transport.send("/log/task", {"task_id": "t-1"})
    assert (result.outcome, result.attempts) == (NETWORK, 2)
    assert "ftp" in result.detail and server.requests_seen == 0
    transport.close()
