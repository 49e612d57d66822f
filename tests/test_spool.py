"""The spool and its replay, against a real HTTP server on loopback.

Payloads are spooled by a real ``Delivery`` facing a faulty server; replay then sends them
to the (recovered) server. The promise under test: after recovery the server holds every
payload exactly once, in order, and a second replay sends nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from typing import Any

import pytest

from definity_spark.delivery import make_delivery
from definity_spark.delivery.cli import add_parser, run
from definity_spark.delivery.replay import replay
from definity_spark.delivery.spool import Spool
from definity_spark.delivery.spool_format import (
    CURSOR_SUFFIX,
    read_cursor,
    read_records,
    spool_files,
)

try:
    from faulty_server import FaultyServer
    from test_delivery import TOKEN, make_settings, task_payloads
except ImportError:  # tests/ imported as a package
    from tests.faulty_server import FaultyServer
    from tests.test_delivery import TOKEN, make_settings, task_payloads


@pytest.fixture()
def server() -> Iterator[FaultyServer]:
    srv = FaultyServer(token=TOKEN)
    yield srv
    srv.close()


def spool_task(tmp_path: Any, server: FaultyServer, payloads: list[Any], **kw: Any) -> Any:
    """Run a delivery against a server that is down: everything lands in the spool."""
    server.down()
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=1, **kw)
    delivery = make_delivery(settings)
    for p in payloads:
        delivery.submit(p)
    delivery.close(3.0)
    assert delivery.stats()["spooled"] == len(payloads)
    server.up()
    return settings


def do_replay(settings: Any, server: FaultyServer, **kw: Any) -> Any:
    kw.setdefault("attempts", 1)
    return replay(settings.spool_dir, server.url, TOKEN, timeout=1.0, attempt_sleep=0.01, **kw)


def test_spool_files_are_private_and_well_formed(server: FaultyServer, tmp_path: Any) -> None:
    payloads = task_payloads(task_id="app-7/x", n_tf=1)
    settings = spool_task(tmp_path, server, payloads)
    files = spool_files(settings.spool_dir)
    assert len(files) == 1
    assert os.path.basename(files[0]).endswith("__app-7_x.jsonl")
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(settings.spool_dir).st_mode) == 0o700
    with open(files[0], "rb") as fh:
        data = fh.read()
    assert TOKEN.encode() not in data
    header, *lines = [json.loads(line) for line in data.decode().splitlines()]
    assert header == {"dest": server.url}  # the server these reports were meant for
    assert [line["seq"] for line in lines] == list(range(1, len(payloads) + 1))
    assert len({line["key"] for line in lines}) == len(payloads)  # each its own key
    assert [{"endpoint": r["endpoint"], "body": r["body"]} for r in lines] == \
        [{"endpoint": p.endpoint, "body": p.to_json()} for p in payloads]


def test_replay_delivers_everything_exactly_once(server: FaultyServer, tmp_path: Any) -> None:
    a = task_payloads(task_id="app-a", n_tf=2)
    settings = spool_task(tmp_path, server, a)
    # a second application, later, same spool dir, while the server is still down (its
    # activation's replay of app-a's file stops at the first refused connection)
    b = task_payloads(task_id="app-b", n_tf=1)
    server.down()
    delivery = make_delivery(settings)
    for p in b:
        delivery.submit(p)
    delivery.close(3.0)
    server.up()
    assert len(spool_files(settings.spool_dir)) == 2

    report = do_replay(settings, server)
    assert report.complete and report.sent == len(a) + len(b)
    assert report.files_done == 2
    # task by task, each in its original order: start, tfs/datasets, end
    assert server.bodies() == [p.to_json() for p in a + b]
    assert server.paths() == [p.endpoint for p in a + b]
    assert server.records[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert spool_files(settings.spool_dir) == []
    assert [n for n in os.listdir(settings.spool_dir) if n.endswith(CURSOR_SUFFIX)] == []

    seen = server.requests_seen
    again = do_replay(settings, server)
    assert again.sent == 0 and again.complete
    assert server.requests_seen == seen


def test_interrupted_replay_resumes_from_the_cursor(server: FaultyServer,
                                                    tmp_path: Any) -> None:
    payloads = task_payloads(n_tf=3)  # 8 payloads
    settings = spool_task(tmp_path, server, payloads)
    path = spool_files(settings.spool_dir)[0]
    server.accept_only(3)  # then 503: the server fails mid-replay
    first = do_replay(settings, server)
    assert first.sent == 3 and first.stopped_by == "network" and not first.complete
    assert read_cursor(path) == 3
    server.clear()
    second = do_replay(settings, server)
    assert second.complete and second.sent == len(payloads) - 3
    # exactly once, in order, across the two replays
    assert server.bodies() == [p.to_json() for p in payloads]
    assert not os.path.exists(path) and not os.path.exists(path + CURSOR_SUFFIX)


def test_replay_with_a_rejected_token_keeps_everything(server: FaultyServer,
                                                       tmp_path: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="definity_spark")
    payloads = task_payloads(n_tf=1)
    settings = spool_task(tmp_path, server, payloads)
    report = replay(settings.spool_dir, server.url, "not-the-token", timeout=1.0, attempts=3)
    assert report.stopped_by == "auth" and report.sent == 0
    assert server.requests_seen == 1  # no retry storm
    assert len(spool_files(settings.spool_dir)) == 1
    assert "not-the-token" not in caplog.text
    fixed = do_replay(settings, server)  # the fixed token
    assert fixed.complete and server.bodies() == [p.to_json() for p in payloads]


def test_a_live_spool_file_is_not_replayed(server: FaultyServer, tmp_path: Any) -> None:
    server.down()
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=1)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=1)
    for p in payloads[:-1]:
        delivery.submit(p)
    assert delivery.flush(3.0)
    server.up()
    report = do_replay(settings, server)  # the application is still running
    assert report.files_live == 1 and report.sent == 0
    assert server.requests_seen == 0
    delivery.submit(payloads[-1])
    delivery.close(3.0)
    report = do_replay(settings, server)
    assert report.complete and report.sent == len(payloads)
    assert server.bodies() == [p.to_json() for p in payloads]


def test_replay_orders_by_seq_and_skips_torn_lines_and_acked(tmp_path: Any,
                                                             server: FaultyServer) -> None:
    spool = Spool(str(tmp_path / "spool"))
    bodies = [{"task_id": "t", "tf_id": i, "status": "end", "input_datasets": {},
               "output": {"name": f"db.t{i}"}} for i in range(1, 5)]
    # written out of order (an overflow, a payload in flight at close), one acked
    spool.append("t", [{"seq": 3, "endpoint": "/log/tf", "body": bodies[2]}])
    spool.append("t", [{"seq": 1, "endpoint": "/log/tf", "body": bodies[0]},
                       {"seq": 2, "endpoint": "/log/tf", "body": bodies[1]},
                       {"seq": 4, "endpoint": "/log/tf", "body": bodies[3]},
                       {"ack": 2}])
    path = spool.paths()[0]
    spool.close()
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 5, "endpoint": "/log/tf", "bo')  # a crash mid-write
    with open(path, "rb") as fh:
        records, corrupt = read_records(fh.read())
    assert [r["seq"] for r in records] == [1, 3, 4] and corrupt == 1
    report = replay(str(tmp_path / "spool"), server.url, TOKEN, timeout=1.0, attempts=1)
    assert report.complete and report.corrupt_lines == 1
    assert server.bodies() == [bodies[0], bodies[2], bodies[3]]


def test_request_in_flight_at_close_that_succeeds_later_is_not_replayed(
        server: FaultyServer, tmp_path: Any) -> None:
    # The server completes the request, but only after the delivery's close timeout.
    server.slow(1.0, n=1, accept=True)
    settings = make_settings(tmp_path, server_url=server.url, server_timeout=5.0)
    delivery = make_delivery(settings)
    payload = task_payloads()[0]
    delivery.submit(payload)
    time.sleep(0.1)
    assert delivery.close(0.3) is False  # spooled on the closing thread
    deadline = time.monotonic() + 5
    while delivery.stats()["sent"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delivery.stats()["sent"] == 1  # the worker saw the 200 and acked it
    report = do_replay(settings, server)
    assert report.complete and report.sent == 0
    assert server.bodies() == [payload.to_json()]  # once


def test_fault_then_recovery_holds_every_payload_exactly_once(server: FaultyServer,
                                                              tmp_path: Any) -> None:
    """Part delivered live, a fault, the rest spooled, replay: one copy of everything."""
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=2,
                             server_timeout=0.3)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=4)
    for p in payloads[:3]:
        delivery.submit(p)
    assert delivery.flush(3.0)
    server.reset(100)
    for p in payloads[3:]:
        delivery.submit(p)
    delivery.close(3.0)
    server.clear()
    report = do_replay(settings, server)
    assert report.complete
    assert server.bodies() == [p.to_json() for p in payloads]


# --------------------------------------------------------------------------- the CLI
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="definity-spark")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    return parser.parse_args(argv)


def test_cli_replay_token_from_environment_never_printed(server: FaultyServer, tmp_path: Any,
                                                         capsys: Any,
                                                         monkeypatch: Any) -> None:
    payloads = task_payloads(n_tf=1)
    settings = spool_task(tmp_path, server, payloads)
    monkeypatch.setenv("DEFINITY_TOKEN", TOKEN)
    server.down()
    args = _parse(["replay", "--spool", settings.spool_dir, "--server", server.url,
                   "--attempts", "1"])
    assert run(args) == 1  # server down: left in the spool
    server.up()
    assert run(args) == 0
    assert run(args) == 0  # nothing to do the second time
    out = capsys.readouterr()
    assert TOKEN not in out.out and TOKEN not in out.err
    assert "nothing to replay" in out.out
    assert server.bodies() == [p.to_json() for p in payloads]


def test_cli_replay_without_server_is_a_usage_error(tmp_path: Any, capsys: Any,
                                                    monkeypatch: Any) -> None:
    monkeypatch.delenv("DEFINITY_SERVER_URL", raising=False)
    assert run(_parse(["replay", "--spool", str(tmp_path)])) == 2
    assert "no server" in capsys.readouterr().err



def test_activation_replays_old_spool_files_in_the_background(server: FaultyServer,
                                                              tmp_path: Any) -> None:
    old = task_payloads(task_id="old-app", n_tf=1)
    settings = spool_task(tmp_path, server, old)
    settings = make_settings(tmp_path, server_url=server.url, replay_spool=True)
    delivery = make_delivery(settings)  # a later application starts
    deadline = time.monotonic() + 5
    while len(server.records) < len(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.bodies() == [p.to_json() for p in old]
    new = task_payloads(task_id="new-app", n_tf=1)
    for p in new:
        delivery.submit(p)
    assert delivery.close(3.0)
    assert spool_files(settings.spool_dir) == []
    assert len(server.bodies()) == len(old) + len(new)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_worker_and_spool(server: FaultyServer,
                                                    tmp_path: Any) -> None:
    settings = make_settings(tmp_path, server_url=server.url)
    delivery = make_delivery(settings)
    parent = task_payloads(task_id="parent", n_tf=1)
    delivery.submit(parent[0])
    assert delivery.flush(3.0)  # the worker thread exists before the fork
    pid = os.fork()
    if pid == 0:  # child: its own thread must start, and send only the child's payload
        code = 1
        try:
            child = task_payloads(task_id="child", n_tf=0)
            delivery.submit(child[0])
            code = 0 if delivery.close(3.0) and delivery.stats()["sent"] >= 1 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    for p in parent[1:]:
        delivery.submit(p)
    assert delivery.close(3.0)
    bodies = server.bodies()
    assert [b["task_id"] for b in bodies].count("child") == 1
    assert [b for b in bodies if b["task_id"] == "parent"] == [p.to_json() for p in parent]
