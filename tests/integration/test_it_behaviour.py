"""Issue 3, what is NOT a transformation, and the task-level rules:

* read-only actions (count, collect, show, take, head, toPandas, lazy spark.sql) -> no tf;
* DDL without data (CREATE/DROP/ALTER/TRUNCATE, views, DESCRIBE, SHOW) -> no tf;
* a failing write (runtime error, analysis error) -> no tf, and the user's exception is
  exactly what Spark raises without the plugin (baseline taken before activation);
* tf_id starts at 1 in a task and increments by 1 (this module is its own task and its
  first scenario checks the start); a second activate() does not double-report;
* query_str: the SQL text for spark.sql writes, a short description otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from it_helpers import Task, expect_no_tf, expect_write, file_name, people_df

pytestmark = pytest.mark.spark

DB = "it_beh"
SRC = f"{DB}.people"


def _failing_write(spark: Any, out: str) -> None:
    # a runtime failure inside the write job (raise_error on the 3rd row)
    spark.range(3).selectExpr("if(id < 2, id, CAST(raise_error('boom-it') AS BIGINT)) AS id") \
        .write.parquet(out)


def _analysis_failure(spark: Any) -> None:
    spark.sql(f"INSERT INTO {SRC} SELECT no_such_column FROM {SRC}")


def _capture(action: Any) -> tuple[type, str]:
    try:
        action()
    except Exception as exc:  # noqa: BLE001
        return type(exc), _normalise(str(exc))
    raise AssertionError("baseline action did not fail")


def _normalise(message: str) -> str:
    # object ids (o123), stage/task/job numbers and paths differ between two runs
    first = message.strip().splitlines()[0] if message.strip() else ""
    return re.sub(r"\d+", "N", first)


@pytest.fixture(scope="module")
def module_data(spark: Any, module_dir: Path) -> dict[str, Any]:
    spark.sql(f"DROP DATABASE IF EXISTS {DB} CASCADE")
    spark.sql(f"CREATE DATABASE {DB}")
    people_df(spark).coalesce(1).write.format("parquet").saveAsTable(SRC)
    baseline = {
        "runtime": _capture(lambda: _failing_write(spark, str(module_dir / "fail_base"))),
        "analysis": _capture(lambda: _analysis_failure(spark)),
    }
    return {"baseline": baseline}


def test_first_write_of_a_task_is_tf_1(task: Task, module_data: Any, module_dir: Path) -> None:
    # also the first write of the process when this module runs first (cold py4j/JVM):
    # its inputs must be complete like any other write's
    assert task.last_tf_id == 0, "this module's task must start with this scenario"
    out = str(module_dir / "out" / "first")
    batch = task.run(lambda: task.spark.table(SRC).select("id").write.parquet(out))
    tf = expect_write(batch, output=file_name(out), inputs={SRC: ["id"]},
                      schema=["id-INTEGER"], cnt=4, ds_type="path")
    assert tf["tf_id"] == 1


def test_three_writes_three_consecutive_tf_ids(task: Task, module_data: Any,
                                               module_dir: Path) -> None:
    first = task.last_tf_id

    def action() -> None:
        for i in range(3):
            task.spark.range(i + 1).write.parquet(str(module_dir / "out" / f"seq{i}"))

    batch = task.run(action)
    assert [t["tf_id"] for t in batch.tfs] == [first + 1, first + 2, first + 3]
    assert [t["output"]["name"] for t in batch.tfs] == [
        file_name(module_dir / "out" / f"seq{i}") for i in range(3)]
    cnts = {m["asset_name"]: m["value"] for m in batch.metrics if m["metric_type"] == "cnt"}
    assert cnts == {file_name(module_dir / "out" / f"seq{i}"): i + 1 for i in range(3)}


READ_ONLY = {
    "count": lambda s: s.table(SRC).count(),
    "collect": lambda s: s.table(SRC).collect(),
    "show": lambda s: s.table(SRC)._jdf.showString(20, 20, False),
    "take": lambda s: s.table(SRC).take(2),
    "head": lambda s: s.table(SRC).head(),
    "first_sql": lambda s: s.sql(f"SELECT max(age) FROM {SRC}").first(),
    "lazy_sql": lambda s: s.sql(f"SELECT * FROM {SRC}"),
    "cache_count": lambda s: s.table(SRC).cache().count(),
    "describe": lambda s: s.table(SRC).describe("age").collect(),
}


@pytest.mark.parametrize("action", sorted(READ_ONLY))
def test_read_only_action_is_no_tf(task: Task, module_data: Any, action: str) -> None:
    try:
        batch = task.run(lambda: READ_ONLY[action](task.spark))
    finally:
        task.spark.catalog.clearCache()
    expect_no_tf(batch)


def test_to_pandas_is_no_tf(task: Task, module_data: Any) -> None:
    pytest.importorskip("pandas")
    batch = task.run(lambda: task.spark.table(SRC).toPandas())
    expect_no_tf(batch)


DDL = [
    f"CREATE TABLE {DB}.ddl_t (id INT, name STRING) USING parquet",
    f"CREATE TABLE {DB}.ddl_h (id INT) STORED AS TEXTFILE",
    f"ALTER TABLE {DB}.ddl_t ADD COLUMNS (extra STRING)",
    f"ALTER TABLE {DB}.ddl_t SET TBLPROPERTIES ('it.note' = 'ddl only')",
    f"CREATE VIEW {DB}.ddl_v AS SELECT id, name FROM {SRC}",
    f"CREATE TEMPORARY VIEW it_beh_tv AS SELECT * FROM {SRC}",
    f"DESCRIBE TABLE {SRC}",
    f"SHOW TABLES IN {DB}",
    f"TRUNCATE TABLE {DB}.ddl_t",
    f"DROP VIEW {DB}.ddl_v",
    f"DROP TABLE {DB}.ddl_t",
    f"CREATE DATABASE {DB}_extra",
    f"DROP DATABASE {DB}_extra",
]


def test_ddl_without_data_is_no_tf(task: Task, module_data: Any) -> None:
    def action() -> None:
        for statement in DDL:
            task.spark.sql(statement).collect()

    expect_no_tf(task.run(action))


def test_failing_write_is_no_tf_and_same_exception(task: Task, module_data: Any,
                                                   module_dir: Path) -> None:
    exc_type, message = module_data["baseline"]["runtime"]
    out = str(module_dir / "out" / "fails")
    batch, exc = task.run_failing(lambda: _failing_write(task.spark, out), exc_type)
    assert type(exc) is exc_type
    assert _normalise(str(exc)) == message
    assert "boom-it" in str(exc)
    expect_no_tf(batch)


def test_analysis_failure_is_no_tf_and_same_exception(task: Task, module_data: Any) -> None:
    exc_type, message = module_data["baseline"]["analysis"]
    batch, exc = task.run_failing(lambda: _analysis_failure(task.spark), exc_type)
    assert type(exc) is exc_type and _normalise(str(exc)) == message
    expect_no_tf(batch)


def test_write_after_failures_continues_numbering(task: Task, module_data: Any,
                                                  module_dir: Path) -> None:
    before = task.last_tf_id
    out = str(module_dir / "out" / "after_failures")
    batch = task.run(lambda: task.spark.range(2).write.parquet(out))
    assert [t["tf_id"] for t in batch.tfs] == [before + 1]


def test_second_activate_does_not_double_report(task: Task, module_data: Any,
                                                module_dir: Path) -> None:
    import definity_spark

    again = definity_spark.activate(task.spark, server_url=task.handle.settings.server_url,
                                    token=task.handle.settings.token)
    assert again is not None and again.task_id == task.task_id
    out = str(module_dir / "out" / "after_reactivate")
    batch = task.run(lambda: task.spark.range(4).write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={}, schema=["id-LONG"], cnt=4,
                 ds_type="path")


def test_query_str_sql_text_and_dataframe_description(task: Task, module_data: Any,
                                                      module_dir: Path) -> None:
    out = str(module_dir / "out" / "described")
    sql = f"CREATE TABLE {DB}.qs USING parquet AS SELECT id FROM {SRC}"

    def action() -> None:
        task.spark.sql(sql)
        task.spark.table(SRC).write.format("orc").save(out)

    batch = task.run(action)
    assert len(batch.tfs) == 2, batch.summary()
    assert batch.tfs[0]["query_str"] == sql
    description = batch.tfs[1].get("query_str")
    assert isinstance(description, str) and description.strip(), batch.tfs[1]
    assert "orc" in description.lower(), description

