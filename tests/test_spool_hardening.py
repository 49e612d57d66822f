"""Issue 20, items 5-7: what the spool trusts, how big it may grow, what it may read.

Real files, FIFOs, links and directory modes; real loopback HTTP servers
(tests/faulty_server.py), one of them standing in for an HTTP proxy; the replay command
as a real subprocess; a real file-size limit (``RLIMIT_FSIZE``) in a real child process.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from definity_spark.delivery import make_delivery
from definity_spark.delivery.replay import replay
from definity_spark.delivery.spool import Spool
from definity_spark.delivery.spool_format import read_records, spool_files

try:
    from faulty_server import FaultyServer
    from test_delivery import TOKEN, make_settings, task_payloads
except ImportError:  # tests/ imported as a package
    from tests.faulty_server import FaultyServer
    from tests.test_delivery import TOKEN, make_settings, task_payloads


def _record(seq: int, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"seq": seq, "endpoint": endpoint, "body": body}


def _spool_file(spool_dir: Path, task: str, records: list[dict[str, Any]]) -> str:
    spool = Spool(str(spool_dir))
    spool.append(task, records)
    path = spool.path_for(task)
    spool.close()
    assert path is not None
    return path


def _replay_cli(spool_dir: Path, server_url: str, timeout: float = 60,
                **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DEFINITY_") and k.lower() not in (
               "http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(DEFINITY_TOKEN=TOKEN, DEFINITY_SERVER_ATTEMPTS="1",
               DEFINITY_SERVER_TIMEOUT="2", DEFINITY_AUTOLOAD="0", **env_extra)
    code = "import sys; from definity_spark.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, "replay", "--spool", str(spool_dir),
                           "--server", server_url], env=env, capture_output=True, text=True,
                          timeout=timeout)


START = {"task_id": "t-5", "status": "start", "app_name": "a", "task_name": "t",
         "task_type": "spark"}
END = {"task_id": "t-5", "status": "end"}


# ----------------------------------------------------------------------------- item 5
def test_replay_sends_only_to_the_four_endpoints_even_through_a_proxy(tmp_path: Path) -> None:
    """A record whose endpoint is ``@attacker.example/steal`` would make the URL
    ``http://server@attacker.example/steal``: through a proxy, the token goes there."""
    spool_dir = tmp_path / "spool"
    _spool_file(spool_dir, "t-5", [
        _record(1, "/log/task", START),
        _record(2, "@attacker.example/steal", {"task_id": "t-5", "status": "end"}),
        _record(3, "/log/task", END),
    ])
    server, proxy = FaultyServer(token=TOKEN), FaultyServer()
    try:
        result = _replay_cli(spool_dir, server.url, HTTP_PROXY=proxy.url)
        through_proxy = [(r.path, r.headers.get("authorization")) for r in proxy.records]
    finally:
        server.close()
        proxy.close()
    out = result.stdout + result.stderr
    assert through_proxy, out  # the replay did go through the proxy
    for path, _ in through_proxy:
        assert "attacker.example" not in path, through_proxy
        assert path.endswith("/log/task"), through_proxy
    assert len(through_proxy) == 2, through_proxy
    assert "unreadable line" in out, out
    assert TOKEN not in out


def test_http_transport_refuses_any_other_endpoint(tmp_path: Path) -> None:
    from definity_spark.delivery.http import HttpTransport
    from definity_spark.delivery.transport import INVALID

    server = FaultyServer(token=TOKEN)
    try:
        transport = HttpTransport(server.url, TOKEN, timeout=2.0, attempts=1)
        for endpoint in ("@attacker.example/steal", "/log/task/../../x", "/api/tasks", ""):
            assert transport.send(endpoint, END).outcome == INVALID
        transport.close()
        assert server.requests_seen == 0
    finally:
        server.close()


@pytest.mark.parametrize("how", ["others-write", "group-write", "other-owner"])
def test_replay_refuses_a_spool_directory_others_control(tmp_path: Path, how: str) -> None:
    spool_dir = tmp_path / "spool"
    _spool_file(spool_dir, "t-5", [_record(1, "/log/task", START), _record(2, "/log/task", END)])
    if how == "others-write":
        os.chmod(spool_dir, 0o777)
    elif how == "group-write":
        os.chmod(spool_dir, 0o770)
    else:
        if os.getuid() != 0:
            pytest.skip("changing a directory's owner needs root")
        os.chown(spool_dir, 65534, 65534)
    server = FaultyServer(token=TOKEN)
    try:
        result = _replay_cli(spool_dir, server.url)
        seen = server.requests_seen
    finally:
        server.close()
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert seen == 0, out
    assert "another user's or writable by others" in result.stderr, out
    assert len(spool_files(str(spool_dir))) == 1  # kept, untouched


def test_the_writer_warns_once_about_a_directory_others_can_write(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    os.chmod(spool_dir, 0o777)
    spool = Spool(str(spool_dir))
    with caplog.at_level(logging.WARNING, logger="definity_spark.delivery"):
        assert spool.append("t-1", [_record(1, "/log/task", START)])
        assert spool.append("t-2", [_record(1, "/log/task", START)])
    spool.close()
    warned = [r.getMessage() for r in caplog.records if "writable by other users" in
              r.getMessage()]
    assert len(warned) == 1, warned


# ----------------------------------------------------------------------------- item 7
def test_a_fifo_or_a_link_named_like_a_spool_file_is_skipped(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    good = _spool_file(spool_dir, "t-5", [_record(1, "/log/task", START),
                                          _record(2, "/log/task", END)])
    os.mkfifo(spool_dir / "00000000T000000000-1-0000__fifo.jsonl", 0o600)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(json.dumps(_record(1, "/log/task", {"task_id": "x", "status": "end"}))
                       + "\n")
    os.symlink(outside, spool_dir / "00000000T000000000-1-0001__link.jsonl")
    server = FaultyServer(token=TOKEN)
    try:
        started = time.monotonic()
        result = _replay_cli(spool_dir, server.url, timeout=30)  # a hang fails here
        elapsed = time.monotonic() - started
        bodies = server.bodies()
    finally:
        server.close()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert elapsed < 25
    assert bodies == [START, END]  # the regular file, and nothing from the link
    assert not os.path.exists(good)
    assert outside.exists()


def test_spool_files_lists_regular_files_only(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    good = _spool_file(spool_dir, "t-5", [_record(1, "/log/task", START)])
    os.mkfifo(spool_dir / "0__fifo.jsonl")
    os.symlink(good, spool_dir / "1__link.jsonl")
    (spool_dir / "2__dir.jsonl").mkdir()
    assert spool_files(str(spool_dir)) == [good]


# ----------------------------------------------------------------------------- item 6
def _old_files(spool_dir: Path, n: int, reports_each: int) -> list[str]:
    """``n`` idle spool files of an earlier application, ``reports_each`` reports each."""
    paths = []
    for i in range(n):
        body = {"task_id": f"old-{i}", "status": "start", "app_name": "a" * 200,
                "task_name": "t", "task_type": "spark"}
        paths.append(_spool_file(spool_dir, f"old-{i}", [
            _record(k, "/log/task", body) for k in range(1, reports_each + 1)]))
        time.sleep(0.002)  # distinct stamps: names sort in creation order
    return paths


def _dir_bytes(spool_dir: Path) -> int:
    return sum(p.stat().st_size for p in spool_dir.iterdir() if p.is_file())


def test_the_spool_bound_drops_the_oldest_whole_files_and_counts_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool_dir = tmp_path / "spool"
    old = _old_files(spool_dir, 6, reports_each=4)
    bound = _dir_bytes(spool_dir) + 1024  # room for little more than the old files
    server = FaultyServer(token=TOKEN)
    server.down()
    try:
        settings = make_settings(tmp_path, server_url=server.url, server_attempts=1,
                                 spool_max_size=bound, replay_spool=False)
        delivery = make_delivery(settings)
        payloads = task_payloads(task_id="new-task", n_tf=6)
        with caplog.at_level(logging.WARNING, logger="definity_spark.delivery"):
            for p in payloads:
                delivery.submit(p)
            assert delivery.close(5.0)
        stats = delivery.stats()
    finally:
        server.close()
    remaining = spool_files(str(spool_dir))
    dropped = [p for p in old if p not in remaining]
    assert dropped and dropped == old[:len(dropped)], "the oldest files go first"
    assert all(p in remaining for p in old[len(dropped):])
    assert stats["spooled"] == len(payloads)  # the new task kept all of its reports
    assert stats["spool_dropped"] == 4 * len(dropped)
    assert stats["lost"] == stats["spool_dropped"]
    assert _dir_bytes(spool_dir) <= bound
    warned = [r.getMessage() for r in caplog.records if "reached its bound" in r.getMessage()]
    assert len(warned) == 1, warned


def test_a_task_alone_over_the_bound_keeps_its_first_reports_whole(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = FaultyServer(token=TOKEN)
    server.down()
    try:
        settings = make_settings(tmp_path, server_url=server.url, server_attempts=1,
                                 spool_max_size=4096, replay_spool=False)
        delivery = make_delivery(settings)
        payloads = task_payloads(task_id="big", n_tf=40)
        with caplog.at_level(logging.WARNING, logger="definity_spark.delivery"):
            for p in payloads:
                delivery.submit(p)
            delivery.close(5.0)
        stats = delivery.stats()
    finally:
        server.close()
    files = spool_files(settings.spool_dir)
    assert len(files) == 1
    assert os.path.getsize(files[0]) <= 4096
    with open(files[0], "rb") as fh:
        records, corrupt = read_records(fh.read())
    assert corrupt == 0
    # a prefix of the task, in order: the start is there, the end is what was lost
    assert [r["body"] for r in records] == [p.to_json() for p in payloads[:len(records)]]
    assert 0 < stats["spooled"] == len(records) < len(payloads)
    assert stats["spool_failed"] == len(payloads) - len(records)
    assert stats["lost"] == stats["spool_failed"]
    full = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1, full


FSIZE_CHILD = textwrap.dedent("""
    import json, os, resource, sys
    from definity_spark.delivery.spool import Spool
    spool = Spool(sys.argv[1])
    rec = lambda seq, size: {"seq": seq, "endpoint": "/log/task",
                             "body": {"task_id": "t", "status": "end", "pad": "x" * size}}
    ok = [spool.append("t", [rec(1, 10)])]
    path = spool.path_for("t")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # the disk is "full" 20 bytes into the next record: a write fails half-way
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 20, hard))
    ok.append(spool.append("t", [rec(2, 5000)]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    ok.append(spool.append("t", [rec(3, 10)]))
    spool.close()
    print(json.dumps({"ok": ok, "path": path}))
""")


def test_a_write_that_fails_half_way_never_corrupts_the_next_record(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFINITY_")}
    result = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(tmp_path / "spool")],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["ok"] == [True, False, True]
    with open(outcome["path"], "rb") as fh:
        data = fh.read()
    records, corrupt = read_records(data)
    assert corrupt == 0, data[-200:]
    assert [r["seq"] for r in records] == [1, 3]
    assert stat.S_IMODE(os.stat(outcome["path"]).st_mode) == 0o600


def test_replay_after_the_bound_dropped_files_sends_what_is_left(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    old = _old_files(spool_dir, 3, reports_each=2)
    spool = Spool(str(spool_dir), max_bytes=_dir_bytes(spool_dir) + 50)
    assert spool.append("new", [_record(1, "/log/task", START), _record(2, "/log/task", END)])
    spool.close()
    kept_old = [p for p in old if p in spool_files(str(spool_dir))]
    assert old[0] not in kept_old
    server = FaultyServer(token=TOKEN)
    try:
        report = replay(str(spool_dir), server.url, TOKEN, timeout=2.0, attempts=1)
        bodies = server.bodies()
    finally:
        server.close()
    assert report.complete
    assert bodies[-2:] == [START, END]
    assert len(bodies) == 2 * len(kept_old) + 2
