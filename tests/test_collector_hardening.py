"""Issue 20, items 9-13: the local collector on a shared host.

A real collector on loopback (and on all interfaces, for the warning), real sockets that
send what a hostile or broken client would, a real headless Chromium for the page, real
files for the database's modes.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
import requests
from collector_util import (
    collector_fixture,  # noqa: F401 - the `collector` fixture
    needs_chromium,
    render_page,
    rendered_graph,
    running_collector,
)

from definity_spark import wire
from definity_spark.collector import Collector

TOKEN = "coll-s3cr3t-88f1"


def _host_port(url: str) -> tuple[str, int]:
    host, port = url[len("http://"):].rsplit(":", 1)
    return host, int(port)


def _raw(url: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection; everything the server answers until it closes
    the connection or stays silent for ``timeout`` seconds."""
    with socket.create_connection(_host_port(url), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


# ----------------------------------------------------------------------------- item 9
def _report(url: str) -> None:
    """task A writes shared_db.table_a from raw.events, with the token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for payload in (wire.TaskStart("task-A", "nightly", "ingest"),
                    wire.Transformation("task-A", 1, "shared_db.table_a",
                                        {"raw.events": ["id"]}),
                    wire.TaskEnd("task-A")):
        answer = requests.post(url + payload.endpoint, json=payload.to_json(),
                               headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text


@needs_chromium
@pytest.mark.browser
def test_the_page_takes_the_token_once_and_draws(tmp_path: Path) -> None:
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as started:
        _report(started.url)
        # without the token: the page loads (it holds no data) and asks for the token
        locked = render_page(started.url + "/", str(tmp_path / "a"))
        assert rendered_graph(locked)["rendered"] == "token", locked[:2000]
        assert rendered_graph(locked)["nodes"] == {}
        assert "ingest" not in locked and "shared_db.table_a" not in locked
        # with it, once, in the fragment (never sent to a server): the graph is drawn
        opened = render_page(started.url + "/#token=" + TOKEN, str(tmp_path / "b"))
        drawn = rendered_graph(opened)
        assert drawn["rendered"] == "true", opened[:2000]
        assert {label for _, label in drawn["nodes"].values()} == {
            "ingest", "raw.events", "shared_db.table_a"}
        assert TOKEN not in opened  # taken out of the address, not written into the page
        answered = [(r["path"], r["status"]) for r in started.requests()]
    assert ("/api/lineage", 401) in answered and ("/api/lineage", 200) in answered
    assert all(TOKEN not in path for path, _ in answered)


def test_binding_beyond_loopback_without_a_token_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="definity_spark.collector"):
        with running_collector(str(tmp_path / "a.db"), host="0.0.0.0"):
            pass
        with running_collector(str(tmp_path / "b.db"), host="0.0.0.0", token=TOKEN):
            pass
        with running_collector(str(tmp_path / "c.db")):
            pass
    warned = [r.getMessage() for r in caplog.records if "without a token" in r.getMessage()]
    assert len(warned) == 1 and "0.0.0.0" in warned[0], warned


# ----------------------------------------------------------------------------- item 10
def _chunked_post(size_line: bytes, rest: bytes = b"") -> bytes:
    return (b"POST /log/task HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\n" + rest)


@pytest.mark.parametrize("size_line", [b"-1", b"-ffff", b"+10", b"0x10", b"1_0", b"zz", b""])
def test_a_bad_chunk_size_is_a_400_at_once(collector: Collector, size_line: bytes) -> None:
    started = time.monotonic()
    # the connection stays open: a server reading "to the end" would never answer
    answer = _raw(collector.url, _chunked_post(size_line, b"x" * 1000), timeout=5)
    assert _status(answer) == 400, answer[:300]
    assert time.monotonic() - started < 4
    assert collector.store.count() == 0


def test_a_negative_chunk_size_cannot_grow_the_collector(collector: Collector) -> None:
    """The old parser read ``-1`` as "the rest of the stream" and kept all of it."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with socket.create_connection(_host_port(collector.url), timeout=5) as sock:
        sock.sendall(_chunked_post(b"-1"))
        block = b"x" * (1 << 20)
        sent = 0
        try:
            for _ in range(96):  # 96 MB, 6 times the body limit
                sock.sendall(block)
                sent += len(block)
        except OSError:
            pass  # answered and closed: what we want
        sock.settimeout(5)
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert answer == b"" or _status(answer) == 400, answer[:200]
    assert sent < 96 << 20 or grown_mb < 32, (sent, grown_mb)
    assert grown_mb < 32, grown_mb
    assert collector.store.count() == 0


def test_chunk_sizes_are_counted_on_what_was_read(collector: Collector) -> None:
    # a chunk announced long but cut short by the client closing: 400, nothing stored
    with socket.create_connection(_host_port(collector.url), timeout=5) as sock:
        sock.sendall(_chunked_post(b"ff", b'{"task_id": "t"'))
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(4096)
    assert _status(answer) == 400
    # and a body of many small chunks over the limit is a 413
    big = b"".join(b"%x\r\n%s\r\n" % (4096, b"a" * 4096) for _ in range(4200))
    answer = _raw(collector.url, _chunked_post(b"1", b"{\r\n" + big), timeout=10)
    assert _status(answer) == 413, answer[:200]
    assert collector.store.count() == 0


# ----------------------------------------------------------------------------- item 11
@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_a_400(collector: Collector, depth: int) -> None:
    body = b'{"task_id": "t", "status": "end", "x": ' + b"[" * depth + b"]" * depth + b"}"
    response = requests.post(collector.url + "/log/task", data=body, timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    assert "nested too deeply" in response.json()["error"]
    assert collector.store.count() == 0
    ok = requests.post(collector.url + "/log/task", json=wire.TaskEnd("t").to_json(),
                       timeout=10)
    assert ok.status_code == 200  # the server is fine afterwards


def test_connections_are_capped_and_idle_ones_closed(tmp_path: Path) -> None:
    collector = Collector(db_path=str(tmp_path / "c.db"), port=0, max_connections=4,
                          idle_timeout=1.0)
    collector.start()
    threads_before = threading.active_count()
    idle = [socket.create_connection(_host_port(collector.url), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.3)
        assert threading.active_count() <= threads_before + 4
        # a fifth connection is answered 503 at once and closed
        extra = _raw(collector.url, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
                     timeout=3)
        assert _status(extra) == 503 and b"Retry-After: 1" in extra, extra[:300]
        assert b"nosniff" in extra
        # the idle ones are closed by the server after the idle timeout
        started = time.monotonic()
        for sock in idle:
            sock.settimeout(5)
            assert sock.recv(1) == b""
        assert time.monotonic() - started < 4
        # and the collector serves again
        time.sleep(0.2)
        assert requests.get(collector.url + "/health", timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()
        collector.stop()


# ----------------------------------------------------------------------------- item 12
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_posts_must_be_json(collector: Collector, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(collector.url + "/log/task", timeout=10, headers=headers,
                             data=json.dumps(wire.TaskEnd("t").to_json()).encode())
    assert response.status_code == 415, response.text
    assert collector.store.count() == 0


@pytest.mark.parametrize("method,path", [("POST", "/log/task"), ("GET", "/api/tasks"),
                                         ("GET", "/health"), ("GET", "/")])
def test_a_loopback_collector_refuses_other_host_names(collector: Collector, method: str,
                                                       path: str) -> None:
    body = json.dumps(wire.TaskEnd("t").to_json()).encode()
    request = (f"{method} {path} HTTP/1.1\r\nHost: attacker.example:{_host_port(collector.url)[1]}"
               "\r\nContent-Type: application/json\r\n").encode()
    request += b"Content-Length: %d\r\n\r\n%s" % (len(body), body) if method == "POST" else b"\r\n"
    answer = _raw(collector.url, request)
    assert _status(answer) == 421, answer[:300]
    assert b"ok" not in answer.partition(b"\r\n\r\n")[2][:20]
    assert collector.store.count() == 0


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST", "app.localhost"])
def test_loopback_host_names_are_served(collector: Collector, host: str) -> None:
    port = _host_port(collector.url)[1]
    answer = _raw(collector.url, f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  "Connection: close\r\n\r\n".encode())
    assert _status(answer) == 200, answer[:300]


# ----------------------------------------------------------------------------- item 13
def test_the_database_is_private_and_answers_are_not_sniffed(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        db = tmp_path / "new-dir" / "collector.db"
        with running_collector(str(db)) as started:
            posted = requests.post(started.url + "/log/task", timeout=10,
                                   json=wire.TaskEnd("t").to_json())
            page = requests.get(started.url + "/", timeout=10)
            api = requests.get(started.url + "/api/tasks", timeout=10)
            missing = requests.get(started.url + "/nothing", timeout=10)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir()}
        dir_mode = stat.S_IMODE(db.parent.stat().st_mode)
    finally:
        os.umask(old_umask)
    assert posted.status_code == 200
    assert modes["collector.db"] == 0o600
    assert modes.get("collector.db-wal", 0o600) == 0o600
    assert modes.get("collector.db-shm", 0o600) == 0o600
    assert "collector.db-wal" in modes  # WAL mode: the side file exists and is private too
    assert dir_mode == 0o700
    for response in (posted, page, api, missing):
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.url


def test_an_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    with running_collector(str(db)):
        pass
    os.chmod(db, 0o644)
    with running_collector(str(db)):
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
