"""``definity-spark collector`` as users run it: a real child process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests
from collector_util import CollectorClient, CollectorProcess

from definity_spark import wire

COLLECTOR = [sys.executable, "-m", "definity_spark.collector"]


def events_file(path: Path, payloads: list[object], extra_lines: list[str] = ()) -> Path:
    lines = [json.dumps(wire.envelope(p)) for p in payloads] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


PAYLOADS = [
    wire.TaskStart("file-task", "pipe", "offline-job", env="dev"),
    wire.Transformation("file-task", 1, "db.out", {"db.in": ["id"]}, query_str="INSERT ..."),
    wire.DatasetSchema("file-task", "db.out", [("id", "INTEGER")], tf_id=1),
    wire.Metrics("file-task", [wire.Metric("db.out", "cnt", 3)]),
    wire.TaskEnd("file-task"),
]


def test_load_imports_a_jsonl_events_file_then_serves_it(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    events = events_file(tmp_path / "events.jsonl", PAYLOADS)
    done = subprocess.run(COLLECTOR + ["--db", db, "--load", str(events)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"loaded 5 payload(s) from {events}"
    with CollectorProcess(db) as proc:
        client = proc.client
        assert [(e, b) for e, b in client.bodies()] == [
            (p.endpoint, p.to_json()) for p in PAYLOADS]
        assert all(p["source"].startswith("load:") for p in client.payloads())
        task = client.task("file-task")
        assert task["status"] == "end" and task["task_name"] == "offline-job"
        edges = {(e["source"], e["target"]) for e in client.lineage()["edges"]}
        assert edges == {("dataset:db.in", "task:file-task"), ("task:file-task", "dataset:db.out")}


def test_load_reports_bad_lines_keeps_good_ones_and_exits_1(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    events = events_file(tmp_path / "events.jsonl", PAYLOADS[:2], extra_lines=[
        '{"endpoint": "/log/tf", "body": {"task_id": "file-task", "tf_id": "2"}}',
        '{"endpoint": "/log/nothing", "body": {}}',
        '',
        '{"endpoint": "/log/task", "body": {"task_id": "file-ta',  # truncated last write
    ])
    done = subprocess.run(COLLECTOR + ["--db", db, "--load", str(events)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "loaded 2 payload(s)" in done.stdout and "rejected 3 line(s)" in done.stdout
    assert f"{events}:3: 'tf_id' must be an integer" in done.stderr
    assert f"{events}:4:" in done.stderr and f"{events}:6: body is not valid JSON" in done.stderr


def test_load_missing_file_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(COLLECTOR + ["--db", str(tmp_path / "c.db"), "--load",
                                       str(tmp_path / "absent.jsonl")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot read" in done.stderr


def test_load_with_serve_keeps_serving(tmp_path: Path) -> None:
    events = events_file(tmp_path / "events.jsonl", PAYLOADS)
    with CollectorProcess(str(tmp_path / "c.db"), extra_args=["--load", str(events),
                                                              "--serve"]) as proc:
        assert len(proc.client.payloads()) == 5


def test_port_0_prints_the_url_token_from_env_and_clean_sigterm(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    with CollectorProcess(db, token="env-s3cr3t") as proc:
        assert proc.url.startswith("http://127.0.0.1:")
        body = wire.TaskEnd("cli-task").to_json()
        assert requests.post(proc.url + "/log/task", json=body, timeout=10).status_code == 401
        ok = requests.post(proc.url + "/log/task", json=body, timeout=10,
                           headers={"Authorization": "Bearer env-s3cr3t"})
        assert ok.status_code == 200
        assert proc.stop() == 0
        assert "env-s3cr3t" not in proc.stderr()
        assert "accepted /log/task" in proc.stderr()
    # restart of the CLI on the same file: still there
    with CollectorProcess(db) as again:
        assert CollectorClient(again.url).bodies() == [("/log/task", body)]


def test_busy_port_exits_2(tmp_path: Path) -> None:
    with CollectorProcess(str(tmp_path / "a.db")) as proc:
        port = proc.url.rsplit(":", 1)[1]
        done = subprocess.run(COLLECTOR + ["--db", str(tmp_path / "b.db"), "--port", port],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "cannot listen" in done.stderr
