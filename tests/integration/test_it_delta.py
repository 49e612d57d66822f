"""Issue 21, Delta Lake: real Delta tables (the session catalog is Delta's ``DeltaCatalog``
with its SQL extension; jars from Maven Central, .ci/fetch-jars.sh): Delta 3.3.3 on
Spark 3.5, Delta 4.4.0 on Spark 4.2 (the newest Spark 4.x Delta supports; CI runs this
module there). Other Spark lines have no Delta release: skipped.

What is asserted, for every command of the issue (tests/fixtures/plans/DELTA.md says
which executions and plan nodes Spark and Delta produce for each):

* Names: a Delta table in the session catalog is ``db.table``; a Delta table by path is
  its qualified path (``file:/...``), the same whichever API wrote or read it
  (``save``, ``delta.`path```, ``DeltaTable.forPath``, ``INSERT INTO delta.`path```).
  Time-travel reads (``VERSION AS OF``, ``TIMESTAMP AS OF``, ``versionAsOf``) name the
  current table; a change-data-feed read names the table it reads the changes of.
* One logical write is exactly one tf (``expect_write`` counts them), however many
  executions Delta runs for it (its log replays, statistics, checkpoints, the nested
  ``deltaTransactionalWrite``); Delta's log is never a dataset (``_delta_log`` appears in
  no payload); OPTIMIZE / ZORDER / VACUUM / DESCRIBE HISTORY / a count are no tf.
* MERGE: the target is an input and the output, the source is an input.
* Metrics: ``cnt`` is the rows the command physically wrote; where the plan has no row
  count (MERGE, UPDATE, DELETE) the values are Delta's own operation metrics, compared
  here with the operation metrics Delta committed to the table's history
  (``DeltaTable.history(1)``): MERGE ``rows_inserted`` / ``rows_updated`` /
  ``rows_deleted``, UPDATE ``rows_updated``, DELETE ``rows_deleted``, and for every write
  ``write_files`` (files added), ``files_removed`` (where files were removed),
  ``write_bytes`` (bytes added).
* The written schema is the table's schema after the write (``overwriteSchema`` /
  ``mergeSchema``: the new one), in the order Delta reads it back (partition columns are
  NOT moved last: Delta keeps the table's column order).

These expectations are the contract for the Delta entries of the rules table; see the
failing list in tests/fixtures/plans/DELTA.md ("Integration tests").
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from it_helpers import (
    DELTA_LINES,
    Batch,
    Task,
    delta_jars,
    expect_no_tf,
    expect_write,
    file_name,
    require_format,
)

pytestmark = pytest.mark.spark

DB = "dl"
DDL = "id BIGINT, kind STRING, amount DOUBLE"
SCHEMA = ["id-LONG", "kind-STRING", "amount-DOUBLE"]
ALL = ["id", "kind", "amount"]
EVENTS = [(1, "a", 10.0), (2, "b", 20.0), (3, "a", 30.0), (4, "c", 40.0), (5, "b", 50.0)]
UPDATES = [(2, "b", 99.0), (9, "z", 1.0)]
N = len(EVENTS)
SRC = f"{DB}.src"  # the source of most writes (a Delta table, never written by a test)


def _df(spark: Any, rows: list[tuple[Any, ...]] = EVENTS) -> Any:
    return spark.createDataFrame(rows, DDL).coalesce(1)


@pytest.fixture(scope="module")
def paths(module_dir: Path) -> dict[str, Path]:
    base = module_dir / "delta"
    return {name: base / name for name in (
        "events", "tt", "by_kind", "new", "append", "overwrite", "ignore", "part_new",
        "schema_over", "schema_merge", "insert_path", "delete_path")}


@pytest.fixture(scope="module")
def module_data(spark: Any, paths: dict[str, Path]) -> dict[str, Any]:
    require_format("Delta Lake", DELTA_LINES, bool(delta_jars()))
    spark.sql(f"DROP DATABASE IF EXISTS {DB} CASCADE")
    spark.sql(f"CREATE DATABASE {DB}")
    shutil.rmtree(next(iter(paths.values())).parent, ignore_errors=True)
    for table in ("src", "updates", "t_merge", "t_merge_api", "t_update", "t_update_api",
                  "t_delete", "t_delete_api", "t_insert", "t_insert_over", "t_opt", "tt",
                  "sat_append", "sat_overwrite", "sat_ignore", "write_to"):
        _df(spark, UPDATES if table == "updates" else EVENTS).write.format("delta") \
            .saveAsTable(f"{DB}.{table}")
    spark.sql(f"CREATE TABLE {DB}.cdf ({DDL}) USING delta "
              "TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    _df(spark).write.format("delta").mode("append").saveAsTable(f"{DB}.cdf")
    spark.sql(f"CREATE TABLE {DB}.chk ({DDL}) USING delta "
              "TBLPROPERTIES (delta.checkpointInterval = 2)")
    for name in ("events", "tt", "append", "overwrite", "ignore", "schema_over",
                 "schema_merge", "insert_path", "delete_path"):
        _df(spark).write.format("delta").save(str(paths[name]))
    _df(spark).write.format("delta").partitionBy("kind").save(str(paths["by_kind"]))
    # time travel: version 0 has the 5 events, version 1 five more
    _df(spark).selectExpr("id + 10 AS id", "kind", "amount").write.format("delta") \
        .mode("append").saveAsTable(f"{DB}.tt")
    _df(spark).selectExpr("id + 10 AS id", "kind", "amount").write.format("delta") \
        .mode("append").save(str(paths["tt"]))
    v0 = spark.sql(f"DESCRIBE HISTORY {DB}.tt").where("version = 0").collect()[0]
    return {"v0_time": v0["timestamp"].strftime("%Y-%m-%d %H:%M:%S.%f")}


def _out(module_dir: Path, name: str) -> str:
    return str(module_dir / "out" / name)


def run(task: Task, action: Callable[[], Any]) -> Batch:
    """``task.run``, and Delta's transaction log is never a dataset of any payload."""
    batch = task.run(action)
    assert "_delta_log" not in batch.text(), batch.summary()
    return batch


def last_operation(spark: Any, table: str | Path) -> tuple[str, dict[str, int]]:
    """(operation, operationMetrics) of the newest commit, as Delta recorded them."""
    from delta.tables import DeltaTable

    target = (DeltaTable.forPath(spark, str(table)) if isinstance(table, Path)
              else DeltaTable.forName(spark, table))
    row = target.history(1).select("operation", "operationMetrics").collect()[0]
    return str(row["operation"]), {k: int(v) for k, v in row["operationMetrics"].items()}


def expect_metrics(batch: Batch, output: str, expected: dict[str, int]) -> None:
    """The output's metrics of these types, each exactly once and with this value."""
    actual: dict[str, list[float]] = {}
    for m in batch.metrics:
        if m.get("asset_name") == output and m.get("metric_type") in expected:
            actual.setdefault(m["metric_type"], []).append(m["value"])
    assert actual == {k: [v] for k, v in expected.items()}, \
        f"metrics of {output}: expected {expected}, actual {batch.metrics}"


def expect_write_metrics(batch: Batch, output: str, ops: dict[str, int]) -> None:
    """Files and bytes a plain write added (and files it removed, where Delta says so:
    overwrite, replaceWhere), as Delta's WRITE-style operation metrics say."""
    expected = {"write_files": ops["numFiles"], "write_bytes": ops["numOutputBytes"]}
    if "numRemovedFiles" in ops:
        expected["files_removed"] = ops["numRemovedFiles"]
    expect_metrics(batch, output, expected)


# --------------------------------------------------------------------------- reads
def test_read_path(task: Task, module_data: Any, paths: dict[str, Path],
                   module_dir: Path) -> None:
    out = _out(module_dir, "read_path")
    batch = run(task, lambda: task.spark.read.format("delta").load(str(paths["events"]))
                .where("kind = 'a'").select("id").write.parquet(out))
    expect_write(batch, output=file_name(out),
                 inputs={file_name(paths["events"]): ["id", "kind"]}, schema=["id-LONG"],
                 cnt=2, ds_type="path")


def test_read_path_sql_has_the_same_name(task: Task, module_data: Any,
                                         paths: dict[str, Path], module_dir: Path) -> None:
    out = _out(module_dir, "read_path_sql")
    batch = run(task, lambda: task.spark.sql(
        f"SELECT id, amount FROM delta.`{paths['events']}`").write.parquet(out))
    expect_write(batch, output=file_name(out),
                 inputs={file_name(paths["events"]): ["id", "amount"]},
                 schema=["id-LONG", "amount-DOUBLE"], cnt=N, ds_type="path")


def test_read_table_by_name(task: Task, module_data: Any, module_dir: Path) -> None:
    out = _out(module_dir, "read_table")
    batch = run(task, lambda: task.spark.table(SRC).select("id", "kind").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={SRC: ["id", "kind"]},
                 schema=["id-LONG", "kind-STRING"], cnt=N, ds_type="path")


def test_read_version_as_of_names_the_current_table(task: Task, module_data: Any,
                                                    module_dir: Path) -> None:
    out = _out(module_dir, "read_version")
    batch = run(task, lambda: task.spark.sql(f"SELECT id FROM {DB}.tt VERSION AS OF 0")
                .write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={f"{DB}.tt": ["id"]},
                 schema=["id-LONG"], cnt=N, ds_type="path")


def test_read_timestamp_as_of_names_the_current_table(task: Task, module_data: Any,
                                                      module_dir: Path) -> None:
    out = _out(module_dir, "read_timestamp")
    sql = f"SELECT id, kind FROM {DB}.tt TIMESTAMP AS OF '{module_data['v0_time']}'"
    batch = run(task, lambda: task.spark.sql(sql).write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={f"{DB}.tt": ["id", "kind"]},
                 schema=["id-LONG", "kind-STRING"], cnt=N, ds_type="path")


def test_read_version_option_by_path_names_the_current_path(
        task: Task, module_data: Any, paths: dict[str, Path], module_dir: Path) -> None:
    out = _out(module_dir, "read_version_option")
    batch = run(task, lambda: task.spark.read.format("delta").option("versionAsOf", 0)
                .load(str(paths["tt"])).select("amount").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(paths["tt"]): ["amount"]},
                 schema=["amount-DOUBLE"], cnt=N, ds_type="path")


def test_read_change_data_feed(task: Task, module_data: Any, module_dir: Path) -> None:
    out = _out(module_dir, "read_cdf")
    batch = run(task, lambda: task.spark.read.format("delta")
                .option("readChangeFeed", "true").option("startingVersion", 0)
                .table(f"{DB}.cdf").select("id", "_change_type").write.parquet(out))
    # _change_type is the feed's own column, not one of the table's
    expect_write(batch, output=file_name(out), inputs={f"{DB}.cdf": ["id"]},
                 schema=["id-LONG", "_change_type-STRING"], cnt=N, ds_type="path")


def test_count_of_a_delta_table_is_no_tf(task: Task, module_data: Any) -> None:
    counted: list[int] = []
    batch = run(task, lambda: counted.append(task.spark.table(SRC).count()))
    assert counted == [N]
    expect_no_tf(batch)


# --------------------------------------------------------------------------- path writes
def test_save_path_new(task: Task, module_data: Any, paths: dict[str, Path]) -> None:
    target = paths["new"]
    batch = run(task, lambda: task.spark.table(SRC).where("id > 1").write.format("delta")
                .save(str(target)))
    expect_write(batch, output=file_name(target), inputs={SRC: ALL}, schema=SCHEMA,
                 cnt=N - 1, ds_type="path")
    operation, ops = last_operation(task.spark, target)
    assert operation == "WRITE" and ops["numOutputRows"] == N - 1
    expect_write_metrics(batch, file_name(target), ops)


def test_save_path_append(task: Task, module_data: Any, paths: dict[str, Path]) -> None:
    target = paths["append"]
    batch = run(task, lambda: task.spark.table(SRC).write.format("delta").mode("append")
                .save(str(target)))
    expect_write(batch, output=file_name(target), inputs={SRC: ALL}, schema=SCHEMA, cnt=N,
                 ds_type="path")
    expect_write_metrics(batch, file_name(target), last_operation(task.spark, target)[1])


def test_save_path_overwrite(task: Task, module_data: Any, paths: dict[str, Path]) -> None:
    target = paths["overwrite"]
    batch = run(task, lambda: task.spark.table(SRC).where("kind = 'b'").write
                .format("delta").mode("overwrite").save(str(target)))
    expect_write(batch, output=file_name(target), inputs={SRC: ALL}, schema=SCHEMA, cnt=2,
                 ds_type="path")
    operation, ops = last_operation(task.spark, target)
    assert operation == "WRITE" and ops["numOutputRows"] == 2
    expect_write_metrics(batch, file_name(target), ops)


def test_save_path_ignore_on_existing_is_no_tf(task: Task, module_data: Any,
                                              paths: dict[str, Path]) -> None:
    batch = run(task, lambda: task.spark.table(SRC).write.format("delta").mode("ignore")
                .save(str(paths["ignore"])))
    expect_no_tf(batch)


def test_save_path_error_on_existing_is_no_tf(task: Task, module_data: Any,
                                             paths: dict[str, Path]) -> None:
    from pyspark.errors import AnalysisException

    batch, exc = task.run_failing(lambda: task.spark.table(SRC).write.format("delta")
                                  .save(str(paths["ignore"])), AnalysisException)
    assert "already exist" in str(exc), exc  # Delta: "already existent path"
    expect_no_tf(batch)


def test_save_path_partitioned_keeps_the_table_column_order(
        task: Task, module_data: Any, paths: dict[str, Path]) -> None:
    target = paths["part_new"]
    batch = run(task, lambda: task.spark.table(SRC).write.format("delta")
                .partitionBy("kind").save(str(target)))
    # Delta reads a partitioned table back in its own column order (kind stays second)
    assert [f.name for f in task.spark.read.format("delta").load(str(target)).schema] == ALL
    expect_write(batch, output=file_name(target), inputs={SRC: ALL}, schema=SCHEMA, cnt=N,
                 ds_type="path")
    expect_write_metrics(batch, file_name(target), last_operation(task.spark, target)[1])


def test_save_replace_where(task: Task, module_data: Any, paths: dict[str, Path]) -> None:
    target = paths["by_kind"]
    batch = run(task, lambda: task.spark.table(SRC).where("kind = 'a'")
                .selectExpr("id + 100 AS id", "kind", "amount").write.format("delta")
                .mode("overwrite").option("replaceWhere", "kind = 'a'").save(str(target)))
    expect_write(batch, output=file_name(target), inputs={SRC: ALL}, schema=SCHEMA, cnt=2,
                 ds_type="path")
    operation, ops = last_operation(task.spark, target)
    assert operation == "WRITE" and ops["numOutputRows"] == 2
    expect_write_metrics(batch, file_name(target), ops)


def test_save_overwrite_schema_reports_the_new_schema(task: Task, module_data: Any,
                                                      paths: dict[str, Path]) -> None:
    target = paths["schema_over"]
    batch = run(task, lambda: task.spark.table(SRC).selectExpr("id", "upper(kind) AS label")
                .write.format("delta").mode("overwrite").option("overwriteSchema", "true")
                .save(str(target)))
    expect_write(batch, output=file_name(target), inputs={SRC: ["id", "kind"]},
                 schema=["id-LONG", "label-STRING"], cnt=N, ds_type="path")


def test_save_merge_schema_reports_the_new_schema(task: Task, module_data: Any,
                                                  paths: dict[str, Path]) -> None:
    target = paths["schema_merge"]
    batch = run(task, lambda: task.spark.table(SRC)
                .selectExpr("id", "kind", "amount * 2 AS doubled").write.format("delta")
                .mode("append").option("mergeSchema", "true").save(str(target)))
    # the table's schema after the write: the old columns, then the new one
    expect_write(batch, output=file_name(target), inputs={SRC: ALL},
                 schema=SCHEMA + ["doubled-DOUBLE"], cnt=N, ds_type="path")


# --------------------------------------------------------------------------- table writes
def test_save_as_table_new(task: Task, module_data: Any) -> None:
    batch = run(task, lambda: task.spark.table(SRC).select("id", "kind").write
                .format("delta").saveAsTable(f"{DB}.sat_new"))
    expect_write(batch, output=f"{DB}.sat_new", inputs={SRC: ["id", "kind"]},
                 schema=["id-LONG", "kind-STRING"], cnt=N, ds_type="table")
    operation, ops = last_operation(task.spark, f"{DB}.sat_new")
    assert operation == "CREATE TABLE AS SELECT" and ops["numOutputRows"] == N
    expect_write_metrics(batch, f"{DB}.sat_new", ops)


def test_save_as_table_append(task: Task, module_data: Any) -> None:
    batch = run(task, lambda: task.spark.table(SRC).where("id < 3").write.format("delta")
                .mode("append").saveAsTable(f"{DB}.sat_append"))
    expect_write(batch, output=f"{DB}.sat_append", inputs={SRC: ALL}, schema=SCHEMA, cnt=2,
                 ds_type="table")
    expect_write_metrics(batch, f"{DB}.sat_append",
                         last_operation(task.spark, f"{DB}.sat_append")[1])


def test_save_as_table_overwrite(task: Task, module_data: Any) -> None:
    batch = run(task, lambda: task.spark.table(SRC).where("id < 4").write.format("delta")
                .mode("overwrite").saveAsTable(f"{DB}.sat_overwrite"))
    expect_write(batch, output=f"{DB}.sat_overwrite", inputs={SRC: ALL}, schema=SCHEMA,
                 cnt=3, ds_type="table")
    expect_write_metrics(batch, f"{DB}.sat_overwrite",
                         last_operation(task.spark, f"{DB}.sat_overwrite")[1])


def test_save_as_table_ignore_on_existing_is_no_tf(task: Task, module_data: Any) -> None:
    batch = run(task, lambda: task.spark.table(SRC).write.format("delta").mode("ignore")
                .saveAsTable(f"{DB}.sat_ignore"))
    expect_no_tf(batch)


def test_save_as_table_partitioned(task: Task, module_data: Any) -> None:
    batch = run(task, lambda: task.spark.table(SRC).write.format("delta")
                .partitionBy("kind").saveAsTable(f"{DB}.sat_part"))
    assert [f.name for f in task.spark.table(f"{DB}.sat_part").schema] == ALL
    expect_write(batch, output=f"{DB}.sat_part", inputs={SRC: ALL}, schema=SCHEMA, cnt=N,
                 ds_type="table")


def test_write_to_append(task: Task, module_data: Any) -> None:
    batch = run(task, lambda: task.spark.table(SRC).where("kind = 'a'")
                .writeTo(f"{DB}.write_to").append())
    expect_write(batch, output=f"{DB}.write_to", inputs={SRC: ALL}, schema=SCHEMA, cnt=2,
                 ds_type="table")


def test_unknown_write_command_is_still_one_tf(task: Task, module_data: Any) -> None:
    """Issue 21, bad input: Delta's ``DeltaDynamicPartitionOverwriteCommand`` (a V2 write
    of Delta's own that the rules table has no entry for) is still one tf, with the output
    and the schema its relation and query give (partial, its class logged once at INFO:
    tests/unit/test_rules_recorded.py::test_an_unknown_write_command_is_partial)."""
    target = f"{DB}.dyn_over"
    task.spark.sql(f"CREATE TABLE {target} ({DDL}) USING delta PARTITIONED BY (kind)")
    run(task, lambda: task.spark.table(SRC).writeTo(target).append())
    key = "spark.sql.sources.partitionOverwriteMode"
    task.spark.conf.set(key, "dynamic")
    try:
        batch = run(task, lambda: task.spark.table(SRC).where("kind = 'a'")
                    .writeTo(target).overwritePartitions())
    finally:
        task.spark.conf.unset(key)
    tf = expect_write(batch, output=target, inputs={SRC: ALL}, schema=SCHEMA, cnt=None,
                      ds_type="table")
    # the writer call where the execution's description names it (4.2), else the command
    assert tf["query_str"] in (f"DeltaDynamicPartitionOverwriteCommand({target})",
                               f"DataFrameWriter.overwritePartitions({target})"), tf


def test_ctas_sql(task: Task, module_data: Any) -> None:
    sql = f"CREATE TABLE {DB}.ctas USING delta AS SELECT id, kind FROM {SRC} WHERE id > 1"
    batch = run(task, lambda: task.spark.sql(sql))
    expect_write(batch, output=f"{DB}.ctas", inputs={SRC: ["id", "kind"]},
                 schema=["id-LONG", "kind-STRING"], cnt=N - 1, ds_type="table",
                 query_str=sql)
    expect_write_metrics(batch, f"{DB}.ctas", last_operation(task.spark, f"{DB}.ctas")[1])


def test_create_or_replace_table_as_select(task: Task, module_data: Any) -> None:
    sql = f"CREATE OR REPLACE TABLE {DB}.rtas USING delta AS SELECT id, amount FROM {SRC}"
    batch = run(task, lambda: task.spark.sql(sql))
    expect_write(batch, output=f"{DB}.rtas", inputs={SRC: ["id", "amount"]},
                 schema=["id-LONG", "amount-DOUBLE"], cnt=N, ds_type="table", query_str=sql)


def test_replace_table_as_select(task: Task, module_data: Any) -> None:
    task.spark.sql(f"CREATE TABLE {DB}.rtas2 (x INT) USING delta")
    run(task, lambda: None)  # DDL: consumed (no tf, asserted by test_ddl_is_no_tf)
    sql = f"REPLACE TABLE {DB}.rtas2 USING delta AS SELECT kind FROM {SRC} WHERE id > 3"
    batch = run(task, lambda: task.spark.sql(sql))
    expect_write(batch, output=f"{DB}.rtas2", inputs={SRC: ["id", "kind"]},
                 schema=["kind-STRING"], cnt=2, ds_type="table", query_str=sql)


def test_ddl_is_no_tf(task: Task, module_data: Any) -> None:
    batch = run(task, lambda: task.spark.sql(f"CREATE TABLE {DB}.ddl_only ({DDL}) USING delta"))
    expect_no_tf(batch)


def test_insert_into_sql(task: Task, module_data: Any) -> None:
    sql = f"INSERT INTO {DB}.t_insert SELECT id, kind, amount FROM {SRC} WHERE id > 3"
    batch = run(task, lambda: task.spark.sql(sql))
    expect_write(batch, output=f"{DB}.t_insert", inputs={SRC: ALL}, schema=SCHEMA, cnt=2,
                 ds_type="table", query_str=sql)
    expect_write_metrics(batch, f"{DB}.t_insert",
                         last_operation(task.spark, f"{DB}.t_insert")[1])


def test_insert_overwrite_sql(task: Task, module_data: Any) -> None:
    sql = f"INSERT OVERWRITE {DB}.t_insert_over SELECT id, kind, amount FROM {DB}.updates"
    batch = run(task, lambda: task.spark.sql(sql))
    expect_write(batch, output=f"{DB}.t_insert_over", inputs={f"{DB}.updates": ALL},
                 schema=SCHEMA, cnt=len(UPDATES), ds_type="table", query_str=sql)


def test_insert_into_api(task: Task, module_data: Any) -> None:
    batch = run(task, lambda: task.spark.table(SRC).where("id = 1").write
                .insertInto(f"{DB}.t_insert"))
    expect_write(batch, output=f"{DB}.t_insert", inputs={SRC: ALL}, schema=SCHEMA, cnt=1,
                 ds_type="table")


def test_insert_into_path_sql_has_the_path_name(task: Task, module_data: Any,
                                                paths: dict[str, Path]) -> None:
    target = paths["insert_path"]
    sql = f"INSERT INTO delta.`{target}` SELECT id, kind, amount FROM {DB}.updates"
    batch = run(task, lambda: task.spark.sql(sql))
    expect_write(batch, output=file_name(target), inputs={f"{DB}.updates": ALL},
                 schema=SCHEMA, cnt=len(UPDATES), ds_type="path", query_str=sql)


# --------------------------------------------------------------------------- row-level
def _merge_metrics(ops: dict[str, int]) -> dict[str, int]:
    return {"rows_inserted": ops["numTargetRowsInserted"],
            "rows_updated": ops["numTargetRowsUpdated"],
            "rows_deleted": ops["numTargetRowsDeleted"],
            "write_files": ops["numTargetFilesAdded"],
            "files_removed": ops["numTargetFilesRemoved"],
            "write_bytes": ops["numTargetBytesAdded"]}


def _expect_merge(task: Task, batch: Batch, target: str, sql: str | None) -> None:
    operation, ops = last_operation(task.spark, target)
    assert operation == "MERGE"
    # one update (id 2), one insert (id 9); the file's 4 other rows are copied
    assert (ops["numTargetRowsUpdated"], ops["numTargetRowsInserted"],
            ops["numTargetRowsDeleted"], ops["numOutputRows"]) == (1, 1, 0, N + 1)
    tf = expect_write(batch, output=target, inputs={target: ALL, f"{DB}.updates": ALL},
                      schema=SCHEMA, cnt=ops["numOutputRows"], ds_type="table",
                      query_str=sql)
    expect_metrics(batch, target, _merge_metrics(ops))
    # every column keeps the target's values or takes the source's (INSERT *, SET
    # amount); the match condition decides the rows
    src = f"{DB}.updates"
    assert tf["column_lineage"] == {"version": 1, "columns": [
        {"name": c, "direct": {src: [c], target: [c]}} for c in ALL],
        "indirect_all": {src: ["id"], target: ["id"]}}, tf["column_lineage"]


def test_merge_into_sql(task: Task, module_data: Any) -> None:
    target = f"{DB}.t_merge"
    sql = (f"MERGE INTO {target} t USING {DB}.updates s ON t.id = s.id "
           "WHEN MATCHED THEN UPDATE SET t.amount = s.amount "
           "WHEN NOT MATCHED THEN INSERT *")
    batch = run(task, lambda: task.spark.sql(sql))
    _expect_merge(task, batch, target, sql)


def test_merge_python_api(task: Task, module_data: Any) -> None:
    from delta.tables import DeltaTable

    target = f"{DB}.t_merge_api"

    def merge() -> None:
        (DeltaTable.forName(task.spark, target).alias("t")
         .merge(task.spark.table(f"{DB}.updates").alias("s"), "t.id = s.id")
         .whenMatchedUpdate(set={"amount": "s.amount"}).whenNotMatchedInsertAll().execute())

    batch = run(task, merge)
    _expect_merge(task, batch, target, None)


def _expect_update(task: Task, batch: Batch, target: str, sql: str | None) -> None:
    operation, ops = last_operation(task.spark, target)
    assert operation == "UPDATE" and ops["numUpdatedRows"] == 2
    written = ops["numUpdatedRows"] + ops["numCopiedRows"]
    tf = expect_write(batch, output=target, inputs={target: ALL}, schema=SCHEMA,
                      cnt=written, ds_type="table", query_str=sql)
    assert tf["column_lineage"] == {"version": 1, "columns": [
        {"name": "id", "direct": {target: ["id"]}},
        {"name": "kind", "direct": {target: ["kind"]}},
        {"name": "amount", "direct": {target: ["amount"]}, "indirect": {target: ["kind"]}}]}, \
        tf["column_lineage"]
    expect_metrics(batch, target, {"rows_updated": ops["numUpdatedRows"],
                                   "write_files": ops["numAddedFiles"],
                                   "files_removed": ops["numRemovedFiles"],
                                   "write_bytes": ops["numAddedBytes"]})


def test_update_sql(task: Task, module_data: Any) -> None:
    sql = f"UPDATE {DB}.t_update SET amount = amount * 2 WHERE kind = 'a'"
    batch = run(task, lambda: task.spark.sql(sql))
    _expect_update(task, batch, f"{DB}.t_update", sql)


def test_update_python_api(task: Task, module_data: Any) -> None:
    from delta.tables import DeltaTable

    target = f"{DB}.t_update_api"
    batch = run(task, lambda: DeltaTable.forName(task.spark, target)
                .update("kind = 'a'", {"amount": "amount * 2"}))
    _expect_update(task, batch, target, None)


def _expect_delete(task: Task, batch: Batch, target: str, name: str, sql: str | None,
                   ds_type: str = "table") -> None:
    operation, ops = last_operation(task.spark, Path(target) if ds_type == "path" else target)
    assert operation == "DELETE" and ops["numDeletedRows"] == 1
    tf = expect_write(batch, output=name, inputs={name: ALL}, schema=SCHEMA,
                      cnt=ops["numCopiedRows"], ds_type=ds_type, query_str=sql)
    assert tf["column_lineage"] == {"version": 1, "columns": [
        {"name": c, "direct": {name: [c]}} for c in ALL],
        "indirect_all": {name: ["id"]}}, tf["column_lineage"]
    expect_metrics(batch, name, {"rows_deleted": ops["numDeletedRows"],
                                 "write_files": ops["numAddedFiles"],
                                 "files_removed": ops["numRemovedFiles"],
                                 "write_bytes": ops["numAddedBytes"]})


def test_delete_sql(task: Task, module_data: Any) -> None:
    sql = f"DELETE FROM {DB}.t_delete WHERE id = 3"
    batch = run(task, lambda: task.spark.sql(sql))
    _expect_delete(task, batch, f"{DB}.t_delete", f"{DB}.t_delete", sql)


def test_delete_python_api(task: Task, module_data: Any) -> None:
    from delta.tables import DeltaTable

    batch = run(task, lambda: DeltaTable.forName(task.spark, f"{DB}.t_delete_api")
                .delete("id = 3"))
    _expect_delete(task, batch, f"{DB}.t_delete_api", f"{DB}.t_delete_api", None)


def test_delete_by_path_python_api_has_the_path_name(task: Task, module_data: Any,
                                                     paths: dict[str, Path]) -> None:
    from delta.tables import DeltaTable

    target = paths["delete_path"]
    batch = run(task, lambda: DeltaTable.forPath(task.spark, str(target)).delete("id = 3"))
    _expect_delete(task, batch, str(target), file_name(target), None, ds_type="path")


# --------------------------------------------------------------------------- internal work
def test_checkpoint_is_not_a_tf(task: Task, module_data: Any) -> None:
    """checkpointInterval 2: the second append also writes a checkpoint (Delta's own
    'Delta checkpoint' execution, nested in the append): two tfs, both appends."""
    batch = run(task, lambda: [task.spark.table(SRC).write.format("delta").mode("append")
                               .saveAsTable(f"{DB}.chk") for _ in range(2)])
    assert [t["output"]["name"] for t in batch.tfs] == [f"{DB}.chk", f"{DB}.chk"], \
        batch.summary()
    for tf in batch.tfs:
        assert tf["input_datasets"] == {SRC: {"columns": ALL}}, tf
    cnts = [m["value"] for m in batch.metrics if m.get("metric_type") == "cnt"]
    assert cnts == [N, N], batch.metrics
    version = task.spark.sql(f"DESCRIBE HISTORY {DB}.chk").agg({"version": "max"}) \
        .collect()[0][0]
    log = Path(task.spark.sql(f"DESCRIBE DETAIL {DB}.chk").collect()[0]["location"]
               .replace("file:", "")) / "_delta_log"
    assert (log / f"{version:020d}.checkpoint.parquet").exists(), sorted(log.iterdir())
    run(task, lambda: None)  # the DESCRIBE queries above: consumed


@pytest.mark.parametrize("sql", [
    f"OPTIMIZE {DB}.t_opt",
    f"OPTIMIZE {DB}.t_opt ZORDER BY (id)",
    f"VACUUM {DB}.t_opt RETAIN 168 HOURS",
    f"DESCRIBE HISTORY {DB}.t_opt",
])
def test_maintenance_and_history_are_no_tf(task: Task, module_data: Any, sql: str) -> None:
    batch = run(task, lambda: task.spark.sql(sql).collect())
    expect_no_tf(batch)


# --------------------------------------------------------------------------- clone
def test_shallow_clone(task: Task, module_data: Any) -> None:
    sql = f"CREATE TABLE {DB}.cloned SHALLOW CLONE {SRC}"
    batch = run(task, lambda: task.spark.sql(sql))
    operation, ops = last_operation(task.spark, f"{DB}.cloned")
    assert operation == "CLONE" and ops["numCopiedFiles"] == 0  # shallow: files referenced
    # a clone copies the table, not rows through a query: the source is read whole, and
    # no row count is claimed
    # Delta's own parser keeps no SQL text in the plan (docs/coverage.md)
    expect_write(batch, output=f"{DB}.cloned", inputs={SRC: ALL}, schema=SCHEMA, cnt=None,
                 ds_type="table",
                 query_str=f"SparkSession.sql: CreateDeltaTableCommand({DB}.cloned)")
    assert not [m for m in batch.metrics if m.get("metric_type") == "cnt"], batch.metrics


def test_stream_from_delta_table_and_path_to_delta_path(
        task: Task, module_data: Any, paths: dict[str, Path], module_dir: Path) -> None:
    """Issue 24: Delta tables read as streams, by name and by path, written to a Delta path:
    one tf of the run, every dataset named as in batch."""
    spark = task.spark
    out = _out(module_dir, "stream_sink")

    def action() -> None:
        by_name = spark.readStream.table(SRC)
        by_path = spark.readStream.format("delta").load(str(paths["events"]))
        q = (by_name.unionByName(by_path).writeStream.format("delta").queryName("dl_stream")
             .option("checkpointLocation", str(module_dir / "chk" / "dl_stream")).start(out))
        q.processAllAvailable()
        q.stop()

    batch = run(task, action)
    assert [t["output"]["name"] for t in batch.tfs] == [file_name(out)], batch.summary()
    [tf] = batch.tfs
    assert tf["input_datasets"] == {SRC: {"columns": ALL},
                                    file_name(paths["events"]): {"columns": ALL}}, tf
    assert tf["stream"]["name"] == "dl_stream", tf
    ds = [d for d in batch.datasets if d.get("ds_name") == file_name(out)]
    assert len(ds) == 1 and ds[0]["tf_id"] == tf["tf_id"] and ds[0]["ds_type"] == "path", ds
    assert [m["info_value"] for m in ds[0]["metadata"]] == SCHEMA, ds
    ends = [m for m in batch.metrics if m.get("asset_type") == "stream"
            and m.get("asset_name") == file_name(out) and m["metric_type"] == "run_input_rows"]
    assert ends and ends[-1]["value"] == 2 * N, ends
    assert spark.read.format("delta").load(out).count() == 2 * N
