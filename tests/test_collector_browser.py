"""The lineage page in a real headless Chromium (Debian's): its JavaScript fetched the
collector's API and drew every dataset and task, with the edges between them, each
transformation's metrics in a table and a dataset's rows written across runs as a chart:
for payloads posted by the test, and for a real PySpark application reporting to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from collector_util import (
    CollectorClient,
    collector_fixture,  # noqa: F401 - the `collector` fixture
    needs_chromium,
    render_page,
    rendered_chart,
    rendered_graph,
    rendered_metrics,
)
from test_collector_api import three_tasks
from test_collector_metrics import NIGHTLY_ROWS, ORDERS, nightly_runs

from definity_spark import wire
from definity_spark.collector import Collector

pytestmark = [pytest.mark.browser, needs_chromium]


def test_page_draws_datasets_tasks_and_edges(collector: Collector, tmp_path: Path) -> None:
    three_tasks(collector.url)
    # a long path-like name is drawn in full (it is the dataset's identity)
    long_name = "file:/data/warehouse/very/long/path/to/the/partitioned/table/of/events"
    client = CollectorClient(collector.url)
    for payload in (wire.TaskStart("task-D", "nightly", "export"),
                    wire.Transformation("task-D", 1, long_name, {"out.report": ["v"]}),
                    wire.TaskEnd("task-D")):
        assert requests.post(collector.url + payload.endpoint, json=payload.to_json(),
                             timeout=10).status_code == 200
    expected = client.lineage()

    screenshot = Path(os.environ.get("DEFINITY_SCREENSHOT_DIR", str(tmp_path))) / "lineage.png"
    dom = render_page(collector.url + "/", str(tmp_path), screenshot=str(screenshot))
    drawn = rendered_graph(dom)

    assert drawn["rendered"] == "true", dom[:2000]
    assert drawn["nodes"] == {n["id"]: (n["kind"], n["label"]) for n in expected["nodes"]}
    labels = {label for _, label in drawn["nodes"].values()}
    assert {"ingest", "transform", "report", "export", "shared_db.table_a", "raw.events",
            long_name} <= labels
    assert drawn["edges"] == {(e["source"], e["target"]) for e in expected["edges"]}
    assert "6 tasks" not in dom and "4 tasks" in dom  # the status line counts from the API
    # the tasks table lists every task id
    for task in client.tasks():
        assert f'data-task-id="{task["task_id"]}"' in dom
    assert screenshot.exists() and screenshot.stat().st_size > 5000


def test_page_with_no_data_says_so(collector: Collector, tmp_path: Path) -> None:
    dom = render_page(collector.url + "/", str(tmp_path))
    drawn = rendered_graph(dom)
    assert drawn["rendered"] == "true" and drawn["nodes"] == {}
    assert "No tasks yet" in dom and collector.url in dom


def _metrics_by_tf(task: dict[str, Any]) -> dict[Any, dict[tuple[str, str, str], float]]:
    """What the API holds for a task, as the page's tables show it (tf_id -> metrics)."""
    out: dict[Any, dict[tuple[str, str, str], float]] = {}
    for m in task["metrics"]:
        out.setdefault(m["tf_id"], {})[(m["asset_type"], m["asset_name"], m["metric_type"])] = \
            float(m["value"])
    return out


def test_page_shows_metrics_per_transformation_and_rows_written(collector: Collector,
                                                                tmp_path: Path) -> None:
    task_ids = nightly_runs(collector.url)
    client = CollectorClient(collector.url)
    shots = Path(os.environ.get("DEFINITY_SCREENSHOT_DIR", str(tmp_path)))

    dom = render_page(collector.url + "/#task=nightly-2", str(tmp_path),
                      screenshot=str(shots / "task_metrics.png"))
    assert 'data-task="nightly-2"' in dom, dom[:2000]
    tables = rendered_metrics(dom)
    expected = _metrics_by_tf(client.task("nightly-2"))
    assert tables == expected
    # one table for the tf (what it wrote, read and how it ran), one for the task
    assert set(tables) == {1, None} and len(tables[1]) == 15
    assert tables[1][("table", ORDERS, "cnt")] == NIGHTLY_ROWS[1]
    assert tables[1][("transformation", ORDERS, "skew_ratio")] == 3.25
    assert "1,350" in dom and "20,480 (20.0 KiB)" in dom  # numbers with their units

    dom = render_page(collector.url + "/#dataset=" + quote(ORDERS, safe=""), str(tmp_path),
                      screenshot=str(shots / "rows_written.png"))
    assert f'data-chart="{ORDERS}"' in dom, dom[:2000]
    chart = rendered_chart(dom)
    assert chart == [(float(p["value"]), p["task_id"])
                     for p in client.metric_history(ORDERS, "cnt", asset_type="table")]
    assert chart == [(float(rows), task) for rows, task in zip(NIGHTLY_ROWS, task_ids)]
    assert "3 runs, latest 900 rows" in dom
    for shot in ("task_metrics.png", "rows_written.png"):
        assert (shots / shot).stat().st_size > 5000


def test_a_dataset_without_row_counts_says_so(collector: Collector, tmp_path: Path) -> None:
    nightly_runs(collector.url)
    dom = render_page(collector.url + "/#dataset=" + quote("file:/data/raw/orders", safe=""),
                      str(tmp_path))
    assert 'data-chart="file:/data/raw/orders"' in dom, dom[:2000]
    assert rendered_chart(dom) == [] and "No row counts reported" in dom


SPARK_APP = """
import sys
from pyspark.sql import SparkSession
import definity_spark

out = sys.argv[1]
spark = (SparkSession.builder.master("local[1]").appName("browser-app")
         .config("spark.ui.enabled", "false").getOrCreate())
definity_spark.activate(spark, pipeline_name="browser-pipeline")
spark.range(20).selectExpr("id", "id % 3 AS grp").write.mode("overwrite").parquet(out + "/first")
(spark.read.parquet(out + "/first").groupBy("grp").count()
 .write.mode("overwrite").parquet(out + "/second"))
spark.stop()
"""


@pytest.mark.spark
def test_page_shows_the_datasets_and_task_of_a_real_spark_run(collector: Collector,
                                                              tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    app = tmp_path / "app.py"
    app.write_text(SPARK_APP)
    env = dict(os.environ, DEFINITY_SERVER_URL=collector.url, DEFINITY_FLUSH_TIMEOUT="10",
               DEFINITY_SPOOL_DIR=str(tmp_path / "spool"))
    done = subprocess.run([sys.executable, str(app), str(tmp_path / "out")], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    expected = CollectorClient(collector.url).lineage()
    datasets = {n["label"] for n in expected["nodes"] if n["kind"] == "dataset"}
    first = [d for d in datasets if d.endswith("/first")]
    second = [d for d in datasets if d.endswith("/second")]
    assert first and second, expected
    tasks = [n for n in expected["nodes"] if n["kind"] == "task"]
    assert [t["label"] for t in tasks] == ["browser-app"] and tasks[0]["status"] == "end"
    task_id = tasks[0]["id"]
    edges = {(e["source"], e["target"]) for e in expected["edges"]}
    assert {(task_id, "dataset:" + first[0]), ("dataset:" + first[0], task_id),
            (task_id, "dataset:" + second[0])} <= edges

    drawn = rendered_graph(render_page(collector.url + "/", str(tmp_path)))
    assert drawn["rendered"] == "true"
    assert drawn["nodes"] == {n["id"]: (n["kind"], n["label"]) for n in expected["nodes"]}
    assert drawn["edges"] == edges

    # the task's page: each tf's metrics as the plugin sent them (written, read, ran)
    client = CollectorClient(collector.url)
    task = client.task(tasks[0]["task_id"])
    dom = render_page(collector.url + "/#task=" + quote(task["task_id"], safe=""),
                      str(tmp_path))
    tables = rendered_metrics(dom)
    assert tables == _metrics_by_tf(task)
    assert set(tables) == {1, 2, None}, tables
    for tf_id, output in ((1, first[0]), (2, second[0])):
        kinds = {(t, name) for t, name, _ in tables[tf_id]}
        assert ("table", output) in kinds and ("transformation", output) in kinds, tables
    assert tables[2][("table", first[0], "read_rows")] == 20  # tf 2 read what tf 1 wrote
    # the second dataset's rows written: one run, 3 groups
    dom = render_page(collector.url + "/#dataset=" + quote(second[0], safe=""), str(tmp_path))
    assert rendered_chart(dom) == [(3.0, task["task_id"])]
