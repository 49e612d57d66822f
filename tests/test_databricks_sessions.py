"""Databricks all-purpose cluster: one task per notebook session, on a real SparkContext.

Two notebooks attached to one cluster share the SparkContext but each has its own
SparkSession; Databricks marks each command thread with the notebook's path. The app
below recreates that with the same conf keys and local properties and checks that the
collector holds two tasks, one per notebook, each with its own transformations, and
that stopping the SparkContext ends both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

pytest.importorskip("pyspark")
pytestmark = pytest.mark.spark

from definity_spark.collector import Collector  # noqa: E402

APP = textwrap.dedent("""
    import sys
    from pyspark.sql import SparkSession
    import definity_spark

    out = sys.argv[1]
    spark = (SparkSession.builder.master("local[1]").appName("Databricks Shell")
             .config("spark.ui.enabled", "false")
             .config("spark.databricks.clusterUsageTags.clusterId", "0101-abc")
             .config("spark.databricks.clusterUsageTags.clusterName", "team-cluster")
             .getOrCreate())
    sc = spark.sparkContext
    nb_two = spark.newSession()

    sc.setLocalProperty("spark.databricks.notebook.path", "/Users/ada/nb_one")
    definity_spark.activate(spark)
    spark.range(3).write.mode("overwrite").parquet(out + "/one")

    sc.setLocalProperty("spark.databricks.notebook.path", "/Users/ada/nb_two")
    definity_spark.activate(nb_two)
    nb_two.range(4).write.mode("overwrite").parquet(out + "/two_a")
    nb_two.range(5).write.mode("overwrite").parquet(out + "/two_b")
    spark.stop()   # the cluster's SparkContext stops: every notebook's task ends
""")


def test_one_task_per_notebook_session(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    with Collector(db_path=str(tmp_path / "c.db"), host="127.0.0.1", port=0) as collector:
        url = collector.url
        env = dict(os.environ, DEFINITY_SERVER_URL=url, DEFINITY_SPOOL_DIR=str(tmp_path / "s"))
        env.pop("DATABRICKS_RUNTIME_VERSION", None)
        proc = subprocess.run([sys.executable, str(app), str(tmp_path / "out")], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        tasks = requests.get(f"{url}/api/tasks", timeout=10).json()
        details = {t["app_name"]: requests.get(f"{url}/api/tasks/{t['task_id']}",
                                               timeout=10).json() for t in tasks}
    assert sorted(details) == ["/Users/ada/nb_one", "/Users/ada/nb_two"]
    one, two = details["/Users/ada/nb_one"], details["/Users/ada/nb_two"]
    assert one["task_name"] == "nb_one" and two["task_name"] == "nb_two"
    assert one["task_id"] != two["task_id"]
    assert [tf["output"]["name"] for tf in one["transformations"]] == [
        "file:" + str(tmp_path / "out" / "one")]
    assert [tf["output"]["name"] for tf in two["transformations"]] == [
        "file:" + str(tmp_path / "out" / "two_a"), "file:" + str(tmp_path / "out" / "two_b")]
    assert [tf["tf_id"] for tf in two["transformations"]] == [1, 2]
    assert one["status"] == "end" and two["status"] == "end"
