"""The lineage page in a real headless Chromium (Debian's): its JavaScript fetched the
collector's API and drew every dataset and task, with the edges between them: for
payloads posted by the test, and for a real PySpark application reporting to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from collector_util import (
    CollectorClient,
    collector_fixture,  # noqa: F401 - the `collector` fixture
    needs_chromium,
    render_page,
    rendered_graph,
)
from test_collector_api import three_tasks

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
