"""The collector keeps which transformation each metric is of (the optional ``tf_id`` of
/log/metrics) and answers one asset's metric across runs (``GET /api/metrics``): what the
page's per-transformation tables and rows-written chart read (docs/collector.md).

The payloads are built by the plugin's own ``task.build_payloads`` from a lineage with
output, input and run metrics, as a Spark application would send them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import requests
from collector_util import CollectorClient, collector_fixture  # noqa: F401 - `collector`
from test_collector_api import send

from definity_spark import wire
from definity_spark.collector import Collector
from definity_spark.lineage.model import InputLineage, OutputLineage, WriteLineage
from definity_spark.task import TASK_ASSET_TYPE, build_payloads

ORDERS = "shop.orders"
RAW = "file:/data/raw/orders"
# three nightly runs of one job: the rows each wrote to shop.orders
NIGHTLY_ROWS = [1200, 1350, 900]


def run_payloads(task_id: str, pit: str, rows: int) -> list[Any]:
    """One run of the nightly job: one transformation raw -> shop.orders with the metrics
    of every kind, and the task's own metrics."""
    lineage = WriteLineage(
        output=OutputLineage(name=ORDERS, ds_type="table", schema=(("id", "INTEGER"),)),
        inputs=(InputLineage(name=RAW, columns=("id",),
                             metrics={"read_rows": rows + 10, "read_bytes": 48_213.0,
                                      "read_files": 3.0}),),
        metrics={"cnt": float(rows), "write_bytes": 20_480.0, "write_files": 2.0,
                 "duration_ms": 812.0},
        run={"jobs": 2.0, "stages": 3.0, "tasks": 12.0, "failed_tasks": 0.0,
             "executor_run_time_ms": 1530.0, "skew_ratio": 3.25, "skew_stage_id": 4.0,
             "skew_stage_tasks": 8.0})
    return [wire.TaskStart(task_id, "nightly", "load_orders", app_pit=pit),
            *build_payloads(task_id, 1, lineage),
            wire.Metrics(task_id, [wire.Metric("load_orders", "transformations", 1,
                                               asset_type=TASK_ASSET_TYPE),
                                   wire.Metric("load_orders", "utilization", 0.4375,
                                               asset_type=TASK_ASSET_TYPE)]),
            wire.TaskEnd(task_id)]


def nightly_runs(url: str) -> list[str]:
    task_ids = []
    for night, rows in enumerate(NIGHTLY_ROWS, start=1):
        task_id = f"nightly-{night}"
        for payload in run_payloads(task_id, f"2025-09-0{night}", rows):
            send(url, payload)
        task_ids.append(task_id)
    return task_ids


def test_each_metric_keeps_its_transformation(collector: Collector) -> None:
    nightly_runs(collector.url)
    detail = CollectorClient(collector.url).task("nightly-2")
    by_tf: dict[Any, dict[tuple[str, str, str], Any]] = {}
    for m in detail["metrics"]:
        by_tf.setdefault(m["tf_id"], {})[(m["asset_type"], m["asset_name"],
                                          m["metric_type"])] = m["value"]
    assert set(by_tf) == {1, None}
    assert by_tf[None] == {("task", "load_orders", "transformations"): 1,
                           ("task", "load_orders", "utilization"): 0.4375}
    tf = by_tf[1]
    assert tf[("table", ORDERS, "cnt")] == 1350 and tf[("table", RAW, "read_rows")] == 1360
    assert tf[("transformation", ORDERS, "skew_ratio")] == 3.25
    assert len(tf) == 4 + 3 + 8  # written, read, how it ran


def test_metric_history_of_a_dataset_across_runs(collector: Collector) -> None:
    task_ids = nightly_runs(collector.url)
    client = CollectorClient(collector.url)
    points = client.metric_history(ORDERS, "cnt", asset_type="table")
    assert [p["value"] for p in points] == NIGHTLY_ROWS  # oldest first
    assert [p["task_id"] for p in points] == task_ids
    assert [p["app_pit"] for p in points] == ["2025-09-01", "2025-09-02", "2025-09-03"]
    assert {(p["tf_id"], p["task_name"], p["app_name"]) for p in points} == {
        (1, "load_orders", "nightly")}
    assert points[0]["seq"] < points[1]["seq"] < points[2]["seq"]
    # the latest `limit` points, still oldest first
    assert [p["value"] for p in client.metric_history(ORDERS, "cnt", limit=2)] == \
        NIGHTLY_ROWS[1:]
    # the same name as a transformation's run metric is another asset type
    assert client.metric_history(ORDERS, "tasks", asset_type="table") == []
    assert [p["value"] for p in client.metric_history(ORDERS, "tasks")] == [12] * 3
    assert client.metric_history("no.such", "cnt") == []
    for params in ({"asset_name": ORDERS}, {"metric_type": "cnt"},
                   {"asset_name": ORDERS, "metric_type": "cnt", "limit": "x"}):
        answer = requests.get(collector.url + "/api/metrics", params=params, timeout=10)
        assert answer.status_code == 400, (params, answer.text)


def test_a_metrics_tf_id_must_be_an_integer(collector: Collector) -> None:
    answer = requests.post(collector.url + "/log/metrics", timeout=10, json={
        "task_id": "t", "tf_id": "1", "metrics": []})
    assert answer.status_code == 400 and "tf_id" in answer.json()["error"], answer.text


def test_a_schema_2_database_gets_the_tf_id_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(str(db)) as conn:  # the metrics table as schema 2 made it
        conn.execute("CREATE TABLE metrics (seq INTEGER NOT NULL, idx INTEGER NOT NULL,"
                     " task_id TEXT NOT NULL, asset_name TEXT NOT NULL, asset_type TEXT,"
                     " metric_type TEXT NOT NULL, value REAL, value_json TEXT NOT NULL,"
                     " received_at TEXT NOT NULL, PRIMARY KEY (seq, idx))")
        conn.execute("INSERT INTO metrics VALUES (1, 0, 'old', 'a.b', 'table', 'cnt', 5, '5',"
                     " '2025-01-01T00:00:00.000Z')")
    with Collector(db_path=str(db), host="127.0.0.1", port=0) as server:
        for payload in run_payloads("new", "2025-09-09", 7):
            send(server.url, payload)
        points = CollectorClient(server.url).metric_history("a.b", "cnt")
        assert [(p["task_id"], p["tf_id"], p["value"]) for p in points] == [("old", None, 5)]
        assert [p["tf_id"] for p in CollectorClient(server.url).metric_history(ORDERS, "cnt")
                ] == [1]

