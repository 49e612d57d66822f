"""Issue 25: every execution metric the plugin sends, against Spark's own status stores.

For each scenario the SQL executions it ran are found in the SQL status store (ids newer
than before the action); what Spark recorded for them is worked out again in
``status_store.py`` from each task attempt (app status store) and from the plan graph's
metric values (SQL status store), and compared with the /log/metrics the collector got:

* per input (``asset_type`` table, named by the input): ``read_rows``, ``read_bytes``,
  ``read_files``, ``read_partitions`` against the scan nodes of the plan graph, and
  against the files on disk; a metric Spark did not measure is absent, not zero;
* per transformation (``asset_type`` transformation, named by the output): jobs, stages,
  tasks, failed tasks, executor run / CPU / GC time, the largest task's peak execution
  memory, spills, shuffle read / write, the most skewed stage;
* per task: the transformations' run metrics together, the executors and their use.

Scenarios: a shuffle join with a skewed key, a partitioned read, a CTAS (two nested
executions), one table scanned twice, a JDBC read (no bytes), and a task that fails once
and is retried (in a child application on ``local[2,2]``: the suite's ``local[2]`` never
retries a task).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from it_helpers import ICEBERG_LINES, TOKEN, Batch, Task, file_name, iceberg_jar, spark_line
from status_store import (
    executions_after,
    executors,
    expected_run,
    last_execution_id,
    scan_nodes,
    scans_total,
    stage_ratios,
)

pytestmark = pytest.mark.spark

HERE = os.path.dirname(os.path.abspath(__file__))
# the fallback path (py4j Python listener, IT_FALLBACK=1) reads neither scans nor runs:
# there, each scenario checks that none is sent rather than made up
FALLBACK = os.environ.get("IT_FALLBACK") == "1"
SQLITE_JAR = "/usr/share/java/sqlite-jdbc.jar"
EVENTS = 300_000  # rows of the partitioned source, 9 in 10 of them on the join key 0
TABLE_ROWS = 1000
CUSTOMERS = [(1, "Ann"), (2, "Bob"), (3, "Cid")]
ICEBERG_ROWS = 500
RUN_KEYS = {"jobs", "stages", "tasks", "failed_tasks", "executor_run_time_ms",
            "executor_cpu_time_ms", "jvm_gc_time_ms", "peak_execution_memory_bytes",
            "memory_spill_bytes", "disk_spill_bytes", "shuffle_read_bytes",
            "shuffle_read_records", "shuffle_write_bytes", "shuffle_write_records"}
SKEW_KEYS = {"skew_ratio", "skew_stage_id", "skew_stage_tasks"}


def _data_files(root: Path) -> list[Path]:
    """The files Spark reads under a path: not its _SUCCESS nor its checksum files."""
    return [p for p in root.rglob("*") if p.is_file()
            and not p.name.startswith(("_", "."))]


@pytest.fixture(scope="module")
def module_data(spark: Any, module_dir: Path) -> dict[str, Any]:
    events = module_dir / "src" / "m_events"
    (spark.range(EVENTS)
     .selectExpr("id", "CASE WHEN id % 10 < 9 THEN 0 ELSE id % 97 END AS k",
                 "cast(id * 7 AS string) AS v", "id % 3 AS day")
     .repartition(2).write.partitionBy("day").parquet(str(events)))
    dims = module_dir / "src" / "m_dims"
    spark.range(97).selectExpr("id AS k", "concat('name', id) AS name") \
        .coalesce(1).write.parquet(str(dims))
    spark.sql("DROP TABLE IF EXISTS m_tab")
    spark.range(TABLE_ROWS).selectExpr("id", "id % 2 AS x").coalesce(1) \
        .write.format("parquet").saveAsTable("m_tab")
    table_dir = Path(spark.sql("DESCRIBE FORMATTED m_tab").where("col_name = 'Location'")
                     .collect()[0]["data_type"].replace("file:", ""))
    data: dict[str, Any] = {"events": events, "dims": dims, "table_dir": table_dir}
    if os.path.exists(SQLITE_JAR):
        db = module_dir / "m_crm.db"
        with sqlite3.connect(str(db)) as conn:
            conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
            conn.executemany("INSERT INTO customers VALUES (?, ?)", CUSTOMERS)
        data["jdbc_url"] = f"jdbc:sqlite:{db}"
        data["jdbc_name"] = f"sqlite:{db}/customers"
    if iceberg_jar() is not None and spark_line() in ICEBERG_LINES:
        spark.sql("CREATE NAMESPACE IF NOT EXISTS ice.m")
        spark.sql("DROP TABLE IF EXISTS ice.m.m_ev")
        spark.sql("CREATE TABLE ice.m.m_ev (id BIGINT, v STRING) USING iceberg")
        spark.range(ICEBERG_ROWS).selectExpr("id", "cast(id AS string) AS v").coalesce(2) \
            .writeTo("ice.m.m_ev").append()
        files = spark.sql("SELECT file_size_in_bytes FROM ice.m.m_ev.files").collect()
        data["iceberg_files"] = (len(files), sum(r[0] for r in files))
    return data


# --------------------------------------------------------------------------- helpers
def _run(task: Task, action: Callable[[], Any]) -> tuple[Batch, list[int]]:
    """Run a scenario; its batch and the ids of the SQL executions it ran."""
    before = last_execution_id(task.spark)
    batch = task.run(action)
    return batch, [e["id"] for e in executions_after(task.spark, before)]


def _metrics(batch: Batch, asset: str, asset_type: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for m in batch.metrics:
        if m["asset_name"] == asset and m["asset_type"] == asset_type:
            assert m["metric_type"] not in found, f"{m['metric_type']} twice: {batch.metrics}"
            found[m["metric_type"]] = m["value"]
    return found


def _check_run(batch: Batch, task: Task, output: str, execution_ids: list[int],
               skewed: bool = False) -> dict[str, Any]:
    """The transformation's run metrics are what Spark's task records say."""
    assert len(batch.tfs) == 1 and batch.tfs[0]["output"]["name"] == output, batch.summary()
    sent = _metrics(batch, output, "transformation")
    if FALLBACK:
        assert sent == {}, sent
        pytest.skip("the fallback path sends no run metrics (docs/metrics.md)")
    expected = expected_run(task.spark, execution_ids)
    assert set(sent) == set(expected), (sorted(set(sent) ^ set(expected)), sent, expected)
    assert RUN_KEYS <= set(sent), sent
    plain = {k: v for k, v in expected.items() if k not in SKEW_KEYS}
    assert {k: sent[k] for k in plain} == plain, (sent, expected)
    if skewed:
        assert SKEW_KEYS <= set(expected), expected
    if "skew_ratio" in expected:
        assert sent["skew_ratio"] == expected["skew_ratio"], (sent, expected)
        assert sent["skew_stage_tasks"] == expected["skew_stage_tasks"], (sent, expected)
        # the worst stage: the one Spark's records give, or one with the same ratio
        ratios = stage_ratios(task.spark, execution_ids)
        assert ratios.get(sent["skew_stage_id"]) == sent["skew_ratio"], (sent, ratios)
    return sent


def _check_reads(batch: Batch, task: Task, execution_ids: list[int], name: str,
                 token: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The input's read metrics are its scan nodes' in the SQL status store (every scan
    of it counted); the ones no scan measured are absent."""
    nodes = [n for n in scan_nodes(task.spark, execution_ids) if token in n["name"] + n["desc"]]
    assert nodes, [n["name"] for n in scan_nodes(task.spark, execution_ids)]
    sent = _metrics(batch, name, "table")
    expected = scans_total(nodes)
    assert set(sent) == set(expected), (sent, expected)
    for key, (value, tolerance) in expected.items():
        assert abs(sent[key] - value) <= tolerance, (key, sent, expected)
    return sent, nodes


def _files(paths: list[Path]) -> tuple[int, int]:
    return len(paths), sum(p.stat().st_size for p in paths)


# --------------------------------------------------------------------------- scenarios
def test_shuffle_join_with_a_skewed_key(task: Task, module_data: dict[str, Any],
                                        module_dir: Path) -> None:
    out = str(module_dir / "out" / "joined")
    spark = task.spark
    conf = {"spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.shuffle.partitions": "8",
            "spark.sql.adaptive.coalescePartitions.enabled": "false"}
    saved = {k: spark.conf.get(k) for k in conf}

    def action() -> None:
        events = spark.read.parquet(str(module_data["events"]))
        dims = spark.read.parquet(str(module_data["dims"]))
        events.join(dims, "k").select("id", "k", "v", "name").write.parquet(out)

    for k, v in conf.items():
        spark.conf.set(k, v)
    try:
        batch, ids = _run(task, action)
    finally:
        for k, v in saved.items():
            spark.conf.set(k, v)
    run = _check_run(batch, task, file_name(out), ids, skewed=True)
    # the reduce side of the join: 8 tasks, the one with key 0 the longest
    assert run["skew_stage_tasks"] == 8 and run["skew_ratio"] > 1, run
    assert run["shuffle_write_records"] == EVENTS + 97, run  # both sides went through
    assert run["shuffle_read_records"] == EVENTS + 97, run
    events, nodes = _check_reads(batch, task, ids, file_name(module_data["events"]), "m_events")
    assert len(nodes) == 1
    count, size = _files(_data_files(module_data["events"]))
    assert events == {"read_rows": EVENTS, "read_files": count, "read_bytes": size,
                      "read_partitions": 3}, events
    dims, _ = _check_reads(batch, task, ids, file_name(module_data["dims"]), "m_dims")
    count, size = _files(_data_files(module_data["dims"]))
    # not partitioned: Spark has no partition count for it, and neither do we
    assert dims == {"read_rows": 97, "read_files": count, "read_bytes": size}, dims


def test_partitioned_read(task: Task, module_data: dict[str, Any], module_dir: Path) -> None:
    out = str(module_dir / "out" / "day1")
    batch, ids = _run(task, lambda: task.spark.read.parquet(str(module_data["events"]))
                      .where("day = 1").groupBy("k").count().write.parquet(out))
    _check_run(batch, task, file_name(out), ids)
    sent, _ = _check_reads(batch, task, ids, file_name(module_data["events"]), "m_events")
    count, size = _files(_data_files(module_data["events"] / "day=1"))
    rows = sum(1 for i in range(EVENTS) if i % 3 == 1)
    assert sent == {"read_rows": rows, "read_files": count, "read_bytes": size,
                    "read_partitions": 1}, sent


def test_ctas_sums_its_nested_executions(task: Task, module_data: dict[str, Any]) -> None:
    task.spark.sql("DROP TABLE IF EXISTS m_ctas")
    task.run(lambda: None)
    batch, ids = _run(task, lambda: task.spark.sql(
        "CREATE TABLE m_ctas USING parquet AS SELECT x, count(*) AS n, sum(id) AS s "
        "FROM m_tab GROUP BY x"))
    roots = {e["root"] for e in executions_after(task.spark, min(ids) - 1)}
    assert len(ids) >= 2 and roots == {min(ids)}, (ids, roots)  # nested in the CTAS's own
    run = _check_run(batch, task, "default.m_ctas", ids)
    assert run["jobs"] >= 1 and run["shuffle_write_records"] > 0, run
    sent, _ = _check_reads(batch, task, ids, "default.m_tab", "m_tab")
    count, size = _files(_data_files(module_data["table_dir"]))
    assert sent == {"read_rows": TABLE_ROWS, "read_files": count, "read_bytes": size}, sent


def test_one_table_scanned_twice_counts_both_scans(task: Task, module_data: dict[str, Any],
                                                   module_dir: Path) -> None:
    out = str(module_dir / "out" / "twice")
    batch, ids = _run(task, lambda: task.spark.sql(
        "SELECT id FROM m_tab WHERE x = 0 UNION ALL SELECT id FROM m_tab WHERE x = 1")
        .write.parquet(out))
    _check_run(batch, task, file_name(out), ids)
    sent, nodes = _check_reads(batch, task, ids, "default.m_tab", "m_tab")
    assert len(nodes) == 2, [n["name"] for n in nodes]
    count, size = _files(_data_files(module_data["table_dir"]))
    assert sent == {"read_rows": 2 * TABLE_ROWS, "read_files": 2 * count,
                    "read_bytes": 2 * size}, sent


def test_jdbc_read_has_rows_and_no_bytes(task: Task, module_data: dict[str, Any],
                                         module_dir: Path) -> None:
    if "jdbc_url" not in module_data:
        pytest.skip("Debian libxerial-sqlite-jdbc-java not installed (.ci/setup-deps.sh)")
    out = str(module_dir / "out" / "from_jdbc")
    batch, ids = _run(task, lambda: task.spark.read.jdbc(
        module_data["jdbc_url"], "customers", properties={"driver": "org.sqlite.JDBC"})
        .write.parquet(out))
    _check_run(batch, task, file_name(out), ids)
    sent, _ = _check_reads(batch, task, ids, module_data["jdbc_name"], "JDBCRelation")
    # Spark measures a JDBC scan's rows only: no bytes, files, partitions (absent, not 0)
    assert sent == {"read_rows": len(CUSTOMERS)}, sent


def test_iceberg_scan_has_iceberg_sizes(task: Task, module_data: dict[str, Any],
                                        module_dir: Path) -> None:
    if "iceberg_files" not in module_data:
        pytest.skip(f"no Iceberg runtime for Spark {spark_line()} here")
    out = str(module_dir / "out" / "from_iceberg")
    batch, ids = _run(task, lambda: task.spark.table("ice.m.m_ev").select("id")
                      .write.parquet(out))
    _check_run(batch, task, file_name(out), ids)
    sent, _ = _check_reads(batch, task, ids, "ice.m.m_ev", "m_ev")
    count, size = module_data["iceberg_files"]  # Iceberg's own files table
    assert sent == {"read_rows": ICEBERG_ROWS, "read_files": count, "read_bytes": size}, sent


FAILING_APP = """
import json, sys
sys.path.insert(0, sys.argv[5])
from pyspark import TaskContext
from pyspark.sql import SparkSession
from pyspark.sql.functions import udf
import definity_spark
from status_store import executions_after, expected_run, last_execution_id

out, result, url, token = sys.argv[1:5]
spark = (SparkSession.builder.master("local[2,2]").appName("it-failed-task")
         .config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("OFF")
handle = definity_spark.activate(spark, server_url=url, token=token, pipeline_name="it",
                                 task_name="failed_task", flush_timeout=60.0)


def flaky(value):
    ctx = TaskContext.get()
    if ctx.partitionId() == 0 and ctx.attemptNumber() == 0:
        raise RuntimeError("the first attempt of task 0 fails, on purpose")
    return value


before = last_execution_id(spark)
spark.range(0, 100, 1, 2).select(udf(flaky, "long")("id").alias("id")).write.parquet(out)
assert handle.flush(60)
ids = [e["id"] for e in executions_after(spark, before)]
with open(result, "w") as f:
    json.dump({"task_id": handle.task_id, "run": expected_run(spark, ids)}, f)
definity_spark.deactivate(spark)
spark.stop()
"""


def test_a_failed_task_retried(collector: Any, tmp_path: Path) -> None:
    app, result, out = tmp_path / "app.py", tmp_path / "result.json", tmp_path / "out"
    app.write_text(FAILING_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFINITY_")}
    env.update(PYSPARK_PYTHON=sys.executable, DEFINITY_SPOOL_DIR=str(tmp_path / "spool"))
    done = subprocess.run([sys.executable, str(app), str(out), str(result), collector.url,
                           TOKEN, HERE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    child = json.loads(result.read_text())
    expected = child["run"]
    assert expected["failed_tasks"] == 1 and expected["tasks"] == 2, expected
    bodies = [b for ep, b in collector.bodies(child["task_id"]) if ep == "/log/metrics"]
    sent = {m["metric_type"]: m["value"] for b in bodies for m in b["metrics"]
            if m["asset_type"] == "transformation" and m["asset_name"] == file_name(out)}
    assert sent == expected, (sent, expected)


def test_task_level_metrics(task: Task, spark: Any, collector: Any) -> None:
    """Last of the module: ends the task itself, then checks its task-level metrics."""
    import definity_spark

    tf_runs = [b for ep, b in collector.bodies(task.task_id) if ep == "/log/metrics"]
    runs = []
    for body in tf_runs:
        run = {m["metric_type"]: m["value"] for m in body["metrics"]
               if m["asset_type"] == "transformation"}
        if run:
            runs.append(run)
    assert len(runs) >= (0 if FALLBACK else 4), runs
    before = executors(spark)
    # whole ms, as the JVM's clock reads them: a reading between the two is in [floor, ceil]
    started = math.floor(time.time() * 1000)
    definity_spark.deactivate(spark, timeout=60)
    ended = math.ceil(time.time() * 1000)
    bodies = collector.bodies(task.task_id)
    assert bodies[-1][0] == "/log/task" and bodies[-1][1]["status"] == "end", bodies[-2:]
    assert bodies[-2][0] == "/log/metrics", bodies[-2]
    sent = {m["metric_type"]: m["value"] for m in bodies[-2][1]["metrics"]
            if m["asset_type"] == "task"}
    if FALLBACK:  # the Python listener reads no runs and no executors
        assert not set(sent) & (RUN_KEYS | SKEW_KEYS | {"utilization"}), sent
        return
    # the transformations' run metrics together: counts and times summed, the largest
    # peak, the worst skew
    for key in RUN_KEYS:
        if key == "peak_execution_memory_bytes":
            assert sent[key] == max(r[key] for r in runs), key
        else:
            assert sent[key] == sum(r[key] for r in runs), key
    worst = max(runs, key=lambda r: r.get("skew_ratio", 0))
    assert {k: sent[k] for k in SKEW_KEYS} == {k: worst[k] for k in SKEW_KEYS}
    # the executors: local mode has only the driver, which runs the tasks
    found = executors(spark)
    assert sent["executors_added"] == sum(1 for e in found if e["id"] != "driver") == 0
    assert sent["executors_removed"] == 0
    # the store's executor totals are flushed from Spark's live entities with a lag: the
    # plugin read them between the test's two readings
    low_ms, high_ms = (sum(e["task_ms"] for e in x) for x in (before, found))
    assert low_ms / 1000 - 0.0005 <= sent["task_time_seconds"] <= high_ms / 1000 + 0.0005, \
        (low_ms, sent, high_ms)
    low = sum(e["cores"] * (started - e["added_ms"]) for e in found) / 1000
    high = sum(e["cores"] * (ended - e["added_ms"]) for e in found) / 1000
    assert low - 0.001 <= sent["executor_core_seconds"] <= high + 0.001, (low, sent, high)
    assert abs(sent["utilization"]
               - sent["task_time_seconds"] / sent["executor_core_seconds"]) < 1e-3, sent
    assert 0 < sent["utilization"] < 1, sent
