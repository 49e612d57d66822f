"""Issue 25, data quality with ``*:*`` (every column of every write): measured in the
write's own pass. Each write here ran once before the task started (no plugin: the
module's data) and once with it; both must have run the same number of Spark jobs and
stages (Spark's status tracker, by job group), the input must have been scanned once
(its ``read_rows``), and both must have written the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from it_helpers import Task
from test_it_quality import assert_measures, column_metrics, spark_measures

pytestmark = pytest.mark.spark

DB = "it_qa"
SRC = f"{DB}.src"
N = 2000
TASK_SETTINGS = {"quality_columns": "*:*"}
BASELINE: dict[str, tuple[int, int]] = {}  # write -> (jobs, stages) without the plugin


def _ctas(spark: Any, table: str) -> None:
    spark.sql(f"CREATE TABLE {table} USING parquet AS SELECT s.k, count(*) AS n, "
              f"sum(s.v) AS total, max(s.day) AS last_day, min(d.label) AS label "
              f"FROM {SRC} s JOIN {DB}.dim d ON s.k = d.k GROUP BY s.k")


def _partitioned(spark: Any, path: str) -> None:
    spark.table(SRC).write.partitionBy("k").parquet(path)


def _empty(spark: Any, path: str) -> None:
    # (a filter parquet cannot push down: the scan reads every row, the write none)
    spark.table(SRC).where("length(name) > 100").write.parquet(path)


WRITES: dict[str, Callable[[Any, str], None]] = {
    "ctas": _ctas, "partitioned": _partitioned, "empty": _empty}


def _target(name: str, on: bool, module_dir: Path) -> str:
    suffix = "on" if on else "off"
    if name == "ctas":
        return f"{DB}.ctas_{suffix}"
    return str(module_dir / f"{name}_{suffix}")


def _jobs_and_stages(spark: Any, action: Callable[[], None], group: str) -> tuple[int, int]:
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    tracker = sc.statusTracker()
    jobs = tracker.getJobIdsForGroup(group)
    return len(jobs), sum(len(tracker.getJobInfo(j).stageIds) for j in jobs)


@pytest.fixture(scope="module")
def module_data(spark: Any, module_dir: Path) -> None:
    spark.sql(f"DROP DATABASE IF EXISTS {DB} CASCADE")
    spark.sql(f"CREATE DATABASE {DB}")
    spark.range(N).selectExpr(
        "CAST(id % 7 AS INT) AS k", "CASE WHEN id % 5 = 0 THEN NULL ELSE id * 1.5 END AS v",
        "date_add(DATE'2024-01-01', CAST(id % 40 AS INT)) AS day",
        "CASE WHEN id % 3 = 0 THEN NULL ELSE concat('n', id % 11) END AS name",
        "map('a', id) AS attrs").write.format("parquet").saveAsTable(SRC)
    spark.range(7).selectExpr("CAST(id AS INT) AS k", "concat('L', id) AS label") \
        .write.format("parquet").saveAsTable(f"{DB}.dim")
    for name, write in WRITES.items():
        target = _target(name, False, module_dir)
        BASELINE[name] = _jobs_and_stages(
            spark, lambda w=write, t=target: w(spark, t), f"off-{name}")


def _read(spark: Any, name: str, target: str) -> Any:
    return spark.table(target) if name == "ctas" else spark.read.parquet(target)


@pytest.mark.parametrize("name", list(WRITES))
def test_same_jobs_stages_and_data_with_every_column_measured(
        task: Task, module_dir: Path, name: str) -> None:
    spark = task.spark
    target = _target(name, True, module_dir)
    counts: list[tuple[int, int]] = []
    batch = task.run(lambda: counts.append(
        _jobs_and_stages(spark, lambda: WRITES[name](spark, target), f"on-{name}")))
    assert counts == [BASELINE[name]], f"jobs, stages with / without: {counts} {BASELINE}"
    assert len(batch.tfs) == 1
    dataset = batch.tfs[0]["output"]["name"]
    # one scan of the input: what it read is its rows, once
    read_rows = [m["value"] for m in batch.metrics
                 if m["asset_name"] == SRC and m["metric_type"] == "read_rows"]
    assert read_rows == [N], batch.metrics
    # the same rows written as without the plugin
    on = _read(spark, name, target)
    off = _read(spark, name, _target(name, False, module_dir))
    assert on.count() == off.count()
    comparable = [f"map_entries({c}) AS {c}" if t.startswith("map") else c
                  for c, t in on.dtypes]  # (set operations refuse maps)
    on_rows, off_rows = on.selectExpr(*comparable), off.selectExpr(*comparable)
    assert on_rows.exceptAll(off_rows).count() == 0
    assert off_rows.exceptAll(on_rows).count() == 0
    # every column measured, as Spark computes it over the data read back
    columns = [c for c, _ in on.dtypes]
    reported = column_metrics(batch, dataset)
    expected = spark_measures(spark, on, columns)
    if name == "empty":
        assert {m["row_count"] for m in reported.values()} == {0}
    assert_measures(reported, expected)
