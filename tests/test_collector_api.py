"""The collector's storage and read API: persistence, tasks, lineage across tasks, raw log,
and the test hooks other rooms rely on (fault injection, stop cutting connections)."""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from collector_util import (
    CollectorClient,
    collector_fixture,  # noqa: F401 - the `collector` fixture
    running_collector,
)

from definity_spark import wire
from definity_spark.collector import Collector, Store


def send(url: str, payload: Any) -> requests.Response:
    response = requests.post(url + payload.endpoint, json=payload.to_json(), timeout=10)
    assert response.status_code == 200, response.text
    return response


def report_task(url: str, task_id: str, name: str, writes: list[Any], end: bool = True) -> None:
    """One task: start, one tf + schema per (inputs, output), a row count metric, end."""
    send(url, wire.TaskStart(task_id, "nightly", name, env="dev", app_pit="2025-09-01"))
    for tf_id, (inputs, output) in enumerate(writes, start=1):
        send(url, wire.Transformation(task_id, tf_id, output, inputs, query_str=f"write {output}"))
        send(url, wire.DatasetSchema(task_id, output, [("id", "INTEGER"), ("v", "STRING")],
                                     tf_id=tf_id, ds_type="table"))
    send(url, wire.Metrics(task_id, [wire.Metric(writes[-1][1], "cnt", 42)]))
    if end:
        send(url, wire.TaskEnd(task_id))


def three_tasks(url: str) -> None:
    # A: raw.events -> shared_db.table_a; B: shared_db.table_a -> shared_db.table_b (+ a
    # second tf reading b and raw.users); C: never ends, reads table_b.
    report_task(url, "task-A", "ingest", [({"raw.events": ["id", "v"]}, "shared_db.table_a")])
    report_task(url, "task-B", "transform", [
        ({"shared_db.table_a": ["id", "v"]}, "shared_db.table_b"),
        ({"shared_db.table_b": None, "raw.users": ["id"]}, "shared_db.table_c")])
    report_task(url, "task-C", "report", [({"shared_db.table_b": ["v"]}, "out.report")],
                end=False)


def test_lineage_links_one_tasks_output_to_anothers_input(collector: Collector) -> None:
    three_tasks(collector.url)
    graph = CollectorClient(collector.url).lineage()
    nodes = {n["id"]: n for n in graph["nodes"]}
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert {n["label"] for n in nodes.values() if n["kind"] == "task"} == {
        "ingest", "transform", "report"}
    assert {n["label"] for n in nodes.values() if n["kind"] == "dataset"} == {
        "raw.events", "shared_db.table_a", "shared_db.table_b", "shared_db.table_c",
        "raw.users", "out.report"}
    # one node per dataset name even though three tasks mention table_a/table_b
    assert edges == {
        ("dataset:raw.events", "task:task-A"), ("task:task-A", "dataset:shared_db.table_a"),
        ("dataset:shared_db.table_a", "task:task-B"), ("task:task-B", "dataset:shared_db.table_b"),
        ("dataset:shared_db.table_b", "task:task-B"), ("dataset:raw.users", "task:task-B"),
        ("task:task-B", "dataset:shared_db.table_c"),
        ("dataset:shared_db.table_b", "task:task-C"), ("task:task-C", "dataset:out.report"),
    }
    by_pair = {(e["source"], e["target"]): e for e in graph["edges"]}
    assert by_pair[("dataset:shared_db.table_a", "task:task-B")]["columns"] == ["id", "v"]
    assert by_pair[("task:task-B", "dataset:shared_db.table_c")]["tf_ids"] == [2]
    assert nodes["dataset:shared_db.table_a"]["fields"] == [
        {"name": "id", "type": "INTEGER", "position": 0},
        {"name": "v", "type": "STRING", "position": 1}]
    assert nodes["task:task-C"]["status"] == "start"
    assert nodes["task:task-A"]["app_name"] == "nightly"


def test_tasks_list_and_task_detail(collector: Collector) -> None:
    three_tasks(collector.url)
    client = CollectorClient(collector.url)
    tasks = client.tasks()
    assert [t["task_id"] for t in tasks] == ["task-A", "task-B", "task-C"]
    b = tasks[1]
    assert (b["app_name"], b["task_name"], b["env"], b["app_pit"]) == (
        "nightly", "transform", "dev", "2025-09-01")
    assert b["status"] == "end" and b["started_at"] <= b["ended_at"]
    assert tasks[2]["status"] == "start" and tasks[2]["ended_at"] is None
    assert b["counts"] == {"tfs": 2, "datasets": 2, "metrics": 1, "payloads": 7}

    detail = client.task("task-B")
    assert [tf["tf_id"] for tf in detail["transformations"]] == [1, 2]
    assert detail["transformations"][1]["input_datasets"] == {
        "shared_db.table_b": {}, "raw.users": {"columns": ["id"]}}
    assert detail["transformations"][1]["output"] == {"name": "shared_db.table_c"}
    assert [d["ds_name"] for d in detail["datasets"]] == ["shared_db.table_b", "shared_db.table_c"]
    assert detail["datasets"][0]["fields"][1] == {"name": "v", "type": "STRING", "position": 1}
    assert detail["metrics"][0]["value"] == 42 and detail["metrics"][0]["metric_type"] == "cnt"
    assert [p["endpoint"] for p in detail["raw"]] == [
        "/log/task", "/log/tf", "/log/dataset", "/log/tf", "/log/dataset", "/log/metrics",
        "/log/task"]
    assert {p["task_id"] for p in detail["raw"]} == {"task-B"}

    missing = requests.get(collector.url + "/api/tasks/nope", timeout=10)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_task_ids_with_odd_characters_are_addressable(collector: Collector) -> None:
    task_id = "app-20250901/run 1?#%"
    send(collector.url, wire.TaskStart(task_id, "p", "t"))
    assert CollectorClient(collector.url).task(task_id)["task_id"] == task_id


def test_payloads_are_the_exact_bytes_in_arrival_order(collector: Collector) -> None:
    raw_bodies = [
        b'{"task_id":"x","status":"start","app_name":"a","task_name":"t","task_type":"spark"}',
        b'{ "task_id" : "x", "tf_id": 1, "status": "end", "input_datasets": {},\n'
        b'  "output": {"name": "d\\u00e9j\\u00e0"}, "extra": null }',
        '{"task_id": "x", "status": "end", "note": "caf\u00e9"}'.encode("utf-8"),
    ]
    endpoints = ["/log/task", "/log/tf", "/log/task"]
    for endpoint, raw in zip(endpoints, raw_bodies):
        response = requests.post(collector.url + endpoint, data=raw, timeout=10,
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
    payloads = CollectorClient(collector.url).payloads()
    assert [p["endpoint"] for p in payloads] == endpoints
    assert [p["raw"].encode("utf-8") for p in payloads] == raw_bodies
    assert [p["body"] for p in payloads] == [json.loads(r) for r in raw_bodies]
    assert [p["seq"] for p in payloads] == sorted(p["seq"] for p in payloads)
    assert payloads[0]["content_type"] == "application/json"
    # filters
    client = CollectorClient(collector.url)
    assert [p["endpoint"] for p in client.payloads(endpoint="/log/tf")] == ["/log/tf"]
    assert [p["endpoint"] for p in client.payloads(endpoint="task")] == ["/log/task"] * 2
    assert client.payloads(task_id="other") == []
    since = requests.get(collector.url + "/api/payloads", params={"since": payloads[0]["seq"]},
                         timeout=10).json()
    assert len(since) == 2


def test_everything_survives_a_restart_on_the_same_db(tmp_path: Path) -> None:
    db = str(tmp_path / "persist.db")
    with running_collector(db) as first:
        three_tasks(first.url)
        before = CollectorClient(first.url)
        expected = (before.payloads(), before.tasks(), before.lineage(), before.task("task-B"))
    with running_collector(db) as second:
        after = CollectorClient(second.url)
        assert (after.payloads(), after.tasks(), after.lineage(), after.task("task-B")) == expected
        # and it keeps appending after the old records
        send(second.url, wire.TaskEnd("task-C"))
        payloads = after.payloads()
        assert payloads[-1]["seq"] > expected[0][-1]["seq"]
        assert after.task("task-C")["status"] == "end"


def test_concurrent_posts_are_all_stored_once(collector: Collector) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        session = requests.Session()  # keep-alive, like the plugin's delivery
        for i in range(25):
            body = wire.Transformation(f"task-{n}", i + 1, f"db.t{n}", {}).to_json()
            response = session.post(collector.url + "/log/tf", json=body, timeout=10)
            if response.status_code != 200:
                errors.append(response.text)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    payloads = collector.store.payloads()
    assert len(payloads) == 150
    assert len({p["seq"] for p in payloads}) == 150
    for n in range(6):  # per sender, arrival order is send order
        mine = [p["body"]["tf_id"] for p in payloads if p["task_id"] == f"task-{n}"]
        assert mine == list(range(1, 26))


def test_fail_next_injects_errors_then_recovers(collector: Collector) -> None:
    collector.fail_next(2, status=503, retry_after=1.5)
    body = wire.TaskEnd("t").to_json()
    first = requests.post(collector.url + "/log/task", json=body, timeout=10)
    second = requests.post(collector.url + "/log/task", json=body, timeout=10)
    third = requests.post(collector.url + "/log/task", json=body, timeout=10)
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Retry-After"] == "1.5"
    assert collector.store.count() == 1
    statuses = [(r["path"], r["status"]) for r in collector.requests()]
    assert statuses == [("/log/task", 503), ("/log/task", 503), ("/log/task", 200)]
    # endpoint-specific faults leave other endpoints alone
    collector.fail_next(1, status=429, endpoint="/log/tf")
    assert requests.post(collector.url + "/log/task", json=body, timeout=10).status_code == 200
    tf = wire.Transformation("t", 1, "d", {}).to_json()
    assert requests.post(collector.url + "/log/tf", json=tf, timeout=10).status_code == 429
    assert requests.post(collector.url + "/log/tf", json=tf, timeout=10).status_code == 200


def test_set_delay_makes_client_timeouts_happen(collector: Collector) -> None:
    collector.set_delay(1.0)
    with pytest.raises(requests.Timeout):
        requests.post(collector.url + "/log/task", json=wire.TaskEnd("t").to_json(), timeout=0.3)
    collector.set_delay(0)


def test_wait_for_payloads(collector: Collector) -> None:
    def later() -> None:
        time.sleep(0.3)
        send(collector.url, wire.TaskEnd("late"))

    thread = threading.Thread(target=later)
    thread.start()
    assert collector.wait_for_payloads(1, timeout=10, task_id="late")
    thread.join()
    assert not collector.wait_for_payloads(2, timeout=0.2)


def test_stop_cuts_keep_alive_connections(tmp_path: Path) -> None:
    collector = Collector(db_path=str(tmp_path / "c.db"), port=0)
    url = collector.start()
    session = requests.Session()
    assert session.post(url + "/log/task", json=wire.TaskEnd("t").to_json(),
                        timeout=5).status_code == 200
    collector.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(url + "/log/task", json=wire.TaskEnd("t").to_json(), timeout=5)
    # the accepted payload is on disk
    store = Store(str(tmp_path / "c.db"))
    try:
        assert [p["body"] for p in store.payloads()] == [{"task_id": "t", "status": "end"}]
    finally:
        store.close()


def test_health_and_empty_state(collector: Collector) -> None:
    health = requests.get(collector.url + "/health", timeout=10).json()
    assert health == {"status": "ok", "payloads": 0, "token_required": False}
    assert requests.get(collector.url + "/api/lineage", timeout=10).json() == {
        "nodes": [], "edges": []}
    page = requests.get(collector.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/api/lineage" in page.text and "<script>" in page.text
    # self-contained: no external scripts, styles or fonts (the machine may be offline)
    assert "<script src" not in page.text and "<link" not in page.text
    assert "https://" not in page.text


def test_reads_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    """Issue 20, item 9: a collector on a shared host holds other people's table names and
    queries; with a token, reading them needs it too."""
    with running_collector(str(tmp_path / "c.db"), token="s3cr3t-xyz") as started:
        response = requests.post(started.url + "/log/task", json=wire.TaskEnd("t").to_json(),
                                 headers={"Authorization": "Bearer s3cr3t-xyz"}, timeout=10)
        assert response.status_code == 200
        health: dict[str, Any] = requests.get(started.url + "/health", timeout=10).json()
        assert health == {"status": "ok", "token_required": True}  # no count without it
        for path in ("/api/tasks", "/api/tasks/t", "/api/lineage", "/api/payloads", "/api",
                     "/api/nothing"):
            anonymous = requests.get(started.url + path, timeout=10)
            assert anonymous.status_code == 401, path
            assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
            assert set(anonymous.json()) == {"error"}, path  # nothing of what it holds
        assert len(CollectorClient(started.url, token="s3cr3t-xyz").payloads()) == 1
        health = requests.get(started.url + "/health", timeout=10,
                              headers={"Authorization": "Bearer s3cr3t-xyz"}).json()
        assert health["payloads"] == 1
        assert "s3cr3t-xyz" not in repr(started)
        # a read presenting a wrong token is refused (how `doctor` checks a token)
        wrong = requests.get(started.url + "/api/tasks", timeout=10,
                             headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "token rejected"
        right = requests.get(started.url + "/api/tasks", timeout=10,
                             headers={"Authorization": "Bearer s3cr3t-xyz"})
        assert right.status_code == 200 and right.json()[0]["task_id"] == "t"


def test_one_keep_alive_connection_survives_rejections_and_chunked_bodies(
        collector: Collector) -> None:
    session = requests.Session()
    url = collector.url
    good = wire.TaskEnd("ka").to_json()
    as_json = {"Content-Type": "application/json"}
    answers = [
        session.post(url + "/log/task", json=good, timeout=10).status_code,
        session.post(url + "/log/task", data=b'{"task_id": 1}', headers=as_json,
                     timeout=10).status_code,
        session.post(url + "/log/nope", json=good, timeout=10).status_code,
        session.get(url + "/api/tasks", data=b"ignored body", timeout=10).status_code,
        # a generator body is sent with Transfer-Encoding: chunked
        session.post(url + "/log/task", data=(c for c in (b'{"task_id": "ka", ',
                                                           b'"status": "end"}')),
                     headers=as_json, timeout=10).status_code,
        session.post(url + "/log/task", json=good, timeout=10).status_code,
    ]
    assert answers == [200, 400, 404, 200, 200, 200]
    assert [p["body"] for p in collector.store.payloads()] == [good] * 3
    assert collector.store.payloads()[1]["raw"] == '{"task_id": "ka", "status": "end"}'


def _answer(stream: Any) -> bytes:
    """One whole HTTP answer (headers + Content-Length body) read from a socket file."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        assert line, head
        head += line
    match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    return head + stream.read(int(match.group(1)) if match else 0)


def test_answers_are_whole_and_prompt_on_a_raw_keep_alive_connection(
        collector: Collector) -> None:
    """Answers are buffered and sent in one write: every path must still flush its answer
    before the server waits for the client (100 Continue, a stdlib 400, a normal answer)."""
    host, port = collector.url[len("http://"):].rsplit(":", 1)
    body = json.dumps(wire.TaskEnd("raw").to_json()).encode()
    post = (b"POST /log/task HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n" % len(body))
    with socket.create_connection((host, int(port)), timeout=5) as sock, \
            sock.makefile("rb") as answers:
        # the client waits for "100 Continue" before it sends the body
        sock.sendall(post + b"Expect: 100-continue\r\n\r\n")
        assert _answer(answers) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        first = _answer(answers)
        assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b'{"ok": true, "seq": 1}')
        # keep-alive: two more requests on the same connection, sent at once
        sock.sendall(post + b"\r\n" + body + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _answer(answers).endswith(b'{"ok": true, "seq": 2}')
        health = _answer(answers)
        assert json.loads(health.partition(b"\r\n\r\n")[2])["payloads"] == 2
        date = re.search(rb"\r\nDate: ([^\r]+)", health)
        assert date is not None
        sent_at = email.utils.parsedate_to_datetime(date.group(1).decode()).timestamp()
        assert abs(sent_at - time.time()) < 5
        # a request the stdlib rejects itself (a header line too long) is answered at once
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Long: " + b"a" * 70000
                     + b"\r\n\r\n")
        assert _answer(answers).startswith(b"HTTP/1.1 431 ")
    assert [(r["method"], r["status"]) for r in collector.requests()] == [
        ("POST", 200), ("POST", 200), ("GET", 200)]


def test_arrival_times_are_utc_with_milliseconds(collector: Collector) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    send(collector.url, wire.TaskEnd("clock"))
    after = datetime.datetime.now(datetime.timezone.utc)
    stamps = [collector.store.payloads()[0]["received_at"], collector.requests()[0]["at"]]
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
        when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
        assert before - datetime.timedelta(milliseconds=1) <= when <= after


@pytest.mark.parametrize("idle", [True, False])
def test_nice_and_idle_reach_the_thread_that_serves(tmp_path: Path, idle: bool) -> None:
    # the benchmark's collector stands in for a remote server: it takes only idle CPU.
    # Request threads are started by the serving thread and inherit both.
    collector = Collector(str(tmp_path / "c.db"), host="127.0.0.1", nice=19, idle=idle)
    url = collector.start()
    try:
        send(url, wire.TaskStart("t-idle", "nightly", "idle"))
        tid = collector._thread.native_id
        assert os.sched_getscheduler(tid) == (os.SCHED_IDLE if idle else os.SCHED_OTHER)
        assert os.getpriority(os.PRIO_PROCESS, tid) == 19
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's: untouched
        assert len(CollectorClient(url).payloads("t-idle")) == 1
    finally:
        collector.stop()
