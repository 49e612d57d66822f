"""Issue 20, item 14: a request the server stored but answered too late is sent again (a
retry, a replay); every payload carries an idempotency key so that the receiver drops the
copy, and the local collector drops duplicates of all four kinds.

Real components only: the local collector (real HTTP, real SQLite) told to store a request
and answer it after the client's timeout; tests/faulty_server.py to read the headers; real
spool files; the helper process (``HelperProcess``); a real ``fork``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from collector_util import running_collector

from definity_spark import wire
from definity_spark.delivery import make_delivery
from definity_spark.delivery.replay import replay
from definity_spark.delivery.spool_format import spool_files
from definity_spark.helper.client import HelperProcess

try:
    from faulty_server import FaultyServer
    from test_delivery import TOKEN, make_settings
except ImportError:  # tests/ imported as a package
    from tests.faulty_server import FaultyServer
    from tests.test_delivery import TOKEN, make_settings


def all_kinds(task_id: str = "dup-task") -> list[Any]:
    """One payload of every kind: task start, tf, dataset, metrics, task end."""
    return [
        wire.TaskStart(task_id, "pipe", "job"),
        wire.Transformation(task_id, 1, "db.out", {"db.in": ["id"]}, query_str="INSERT ..."),
        wire.DatasetSchema(task_id, "db.out", [("id", "INTEGER")], tf_id=1, ds_type="table"),
        wire.Metrics(task_id, [wire.Metric("db.out", "cnt", 3)]),
        wire.TaskEnd(task_id),
    ]


def stored(collector: Any) -> list[tuple[str, Any]]:
    return [(p["endpoint"], p["body"]) for p in collector.store.payloads()]


def expected(payloads: list[Any]) -> list[tuple[str, Any]]:
    return [(p.endpoint, p.to_json()) for p in payloads]


def test_a_retry_of_a_request_stored_too_late_is_dropped(tmp_path: Path) -> None:
    """The collector stores every payload's first try and answers after the client's
    timeout: every payload is tried twice, and stored once."""
    payloads = all_kinds()
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as collector:
        collector.set_delay(1.5, after_store=True)
        settings = make_settings(tmp_path, server_url=collector.url, server_timeout=0.5,
                                 server_attempts=5, server_attempt_sleep=0.01,
                                 replay_spool=False)
        delivery = HelperProcess(settings)  # through the helper process
        for p in payloads:
            delivery.submit(p)
        assert delivery.close(30.0)
        held = stored(collector)
        tries = [r for r in collector.requests() if r["method"] == "POST"]
        keys = [p["idempotency_key"] for p in collector.store.payloads()]
    assert held == expected(payloads)
    assert len(tries) > len(payloads)  # it did retry
    assert len(set(keys)) == len(payloads) and None not in keys
    assert delivery.stats()["sent"] == len(payloads)


def test_every_kind_replayed_twice_is_held_once(tmp_path: Path) -> None:
    """Replay sent everything and died before its cursor was written (the copy of the
    spool file taken before stands for that): a second replay sends it all again."""
    server = FaultyServer(token=TOKEN)
    server.down()
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=1,
                             replay_spool=False)
    delivery = make_delivery(settings)
    payloads = all_kinds()
    for p in payloads:
        delivery.submit(p)
    delivery.close(5.0)
    server.close()
    [path] = spool_files(settings.spool_dir)
    saved = tmp_path / "before-replay.jsonl"
    shutil.copy(path, saved)
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as collector:
        first = replay(settings.spool_dir, collector.url, TOKEN, timeout=5.0, attempts=1)
        shutil.copy(saved, path)  # "the process died before the cursor": all of it again
        second = replay(settings.spool_dir, collector.url, TOKEN, timeout=5.0, attempts=1)
        held = stored(collector)
        task = collector.store.task("dup-task")
    assert first.sent == second.sent == len(payloads)
    assert held == expected(payloads)
    assert task is not None
    assert task["counts"] == {"tfs": 1, "datasets": 1, "metrics": 1, "payloads": 5}


def test_the_key_is_the_same_on_every_try_and_differs_between_payloads(
        tmp_path: Path) -> None:
    server = FaultyServer(token=TOKEN)
    try:
        server.slow(1.5, n=1, accept=True)  # the first request: recorded, answered late
        settings = make_settings(tmp_path, server_url=server.url, server_timeout=0.5,
                                 server_attempts=3, replay_spool=False)
        delivery = make_delivery(settings)
        payloads = all_kinds()
        for p in payloads:
            delivery.submit(p)
        assert delivery.close(10.0)
        deadline = time.monotonic() + 10  # the late answer of the first try comes after
        while len(server.records) < len(payloads) + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        records = sorted(server.records, key=lambda r: r.received_at)
    finally:
        server.close()
    keys = [r.headers.get("idempotency-key") for r in records]
    assert len(records) == len(payloads) + 1  # the first one twice: this server keeps both
    first = [i for i, r in enumerate(records) if r.body == records[0].body]
    assert len(first) == 2 and keys[first[0]] == keys[first[1]]
    assert len(set(keys)) == len(payloads) and all(keys)
    assert all(TOKEN not in key for key in keys)


def test_two_deliveries_of_one_task_never_share_a_key(tmp_path: Path) -> None:
    """The helper's delivery and the driver's fallback both number from 1: the collector
    must keep the payloads of both."""
    payloads = all_kinds()
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as collector:
        settings = make_settings(tmp_path, server_url=collector.url, replay_spool=False)
        helper_side, fallback = make_delivery(settings), make_delivery(settings)
        for p in payloads[:2]:
            helper_side.submit(p)
        assert helper_side.close(5.0)
        for p in payloads[2:]:
            fallback.submit(p)
        assert fallback.close(5.0)
        held = stored(collector)
    assert held == expected(payloads)
    assert helper_side.key(1) != fallback.key(1)


def test_a_forked_child_numbers_with_keys_of_its_own(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server_url="http://127.0.0.1:9", replay_spool=False)
    delivery = make_delivery(settings)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(write, json.dumps([delivery.key(1), delivery.key(2)]).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_keys = json.loads(os.read(read, 4096))
    os.close(read)
    os.waitpid(pid, 0)
    delivery.close(1.0)
    assert not {delivery.key(1), delivery.key(2)} & set(child_keys)
