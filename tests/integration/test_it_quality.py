"""Issue 25, opt-in data quality of written data (``spark.definity.quality.columns``):
per named column of a write, ``row_count``, ``null_count``, ``distinct_count_approx``,
``min`` and ``max`` (orderable types whose values are numbers), measured in the write's
own pass (docs/metrics.md, "Data quality"), for DataFrame API and SQL writes.

Every expected value is what Spark itself computes over the data read back after the
write (``count``, ``approx_count_distinct``, ``min``, ``max``; dates and timestamps as
Unix seconds with ``unix_date`` / ``unix_micros``), never a number written here.
test_it_quality_all.py: ``*:*``, the same jobs and stages, the same data.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from it_helpers import Batch, Task, delta_jars, expect_write

pytestmark = pytest.mark.spark

DB = "it_q"
SRC = f"{DB}.src"
TASK_SETTINGS = {"quality_columns": (
    f"{DB}.orders_out:amount,status,nope;{DB}.ctas_q:*;{DB}.ins_q:amount;*/q_path:*;"
    "*/q_jdbc:amount;*/q_delta:*")}
SQLITE_JAR = "/usr/share/java/sqlite-jdbc.jar"
SRC_DDL = ("id INT, amount DECIMAL(10,2), status STRING, d DATE, ts TIMESTAMP, "
           "tags ARRAY<STRING>, flag BOOLEAN, score DOUBLE")
COLUMNS = ["id", "amount", "status", "d", "ts", "tags", "flag", "score"]
# how a type is measured (DataFrame.dtypes' names): min/max where its values are numbers,
# an approximate distinct count where it is atomic
NUMBERS = ("tinyint", "smallint", "int", "bigint", "float", "double", "decimal", "date",
           "timestamp", "boolean")


@pytest.fixture(scope="module")
def module_data(spark: Any) -> None:
    spark.sql(f"DROP DATABASE IF EXISTS {DB} CASCADE")
    spark.sql(f"CREATE DATABASE {DB}")
    spark.sql(f"""CREATE TABLE {SRC} USING parquet AS SELECT id,
        CAST(amount AS DECIMAL(10,2)) AS amount, status, d, ts, tags, flag, score FROM VALUES
        (1, 120.50, 'shipped', DATE'2024-01-03', TIMESTAMP'2024-01-03 10:00:00.250',
         array('a', 'b'), true, 1.5),
        (2, NULL, 'open', DATE'2023-12-31', TIMESTAMP'2023-12-31 23:59:59', NULL, false,
         -2.0),
        (3, 250.00, NULL, NULL, NULL, array('c'), NULL, NULL),
        (4, 80.00, 'shipped', DATE'2024-02-29', TIMESTAMP'2024-02-29 00:00:01',
         array(), true, 1e10),
        (5, 15.25, 'open', DATE'2024-01-03', TIMESTAMP'1969-12-31 23:59:59.5',
         array('a'), NULL, 0.0)
        AS t({", ".join(COLUMNS)})""")
    spark.sql(f"CREATE TABLE {DB}.ins_q (id INT, amount DECIMAL(10,2), status STRING) "
              "USING parquet")


@pytest.fixture(scope="module")
def sqlite_db(module_data: Any, module_dir: Path) -> Path:
    if not os.path.exists(SQLITE_JAR):
        pytest.skip("Debian libxerial-sqlite-jdbc-java not installed (.ci/setup-deps.sh)")
    db = module_dir / "q.db"
    with sqlite3.connect(str(db)) as conn:  # (Spark 4 cannot create a SQLite table)
        conn.execute("CREATE TABLE q_jdbc (id INTEGER, amount DOUBLE)")
    return db


@pytest.fixture()
def warnings() -> Iterator[list[str]]:
    """The plugin's warnings while the test runs (the helper's come back to the driver)."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("definity_spark")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def spark_measures(spark: Any, df: Any, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What Spark computes over ``df`` for each column, as the metrics are sent."""
    types = dict(df.dtypes)
    orderable = {c for c in columns if types[c].split("(")[0] in NUMBERS}
    atomic = orderable | {c for c in columns if types[c] in ("string", "binary")}
    exprs = ["count(1) AS rows"]
    for i, c in enumerate(columns):
        q = f"`{c}`"
        exprs.append(f"count({q}) AS nn{i}")
        if c in atomic:
            exprs.append(f"approx_count_distinct({q}) AS dc{i}")
        if c in orderable:
            t = types[c]
            if t == "date":
                conv = "CAST(unix_date({f}({q})) AS BIGINT) * 86400"
            elif t == "timestamp":
                conv = "unix_micros({f}({q})) / 1e6"
            elif t == "boolean":
                conv = "CAST({f}({q}) AS INT)"
            else:
                conv = "CAST({f}({q}) AS DOUBLE)"
            exprs.append(conv.format(f="min", q=q) + f" AS min{i}")
            exprs.append(conv.format(f="max", q=q) + f" AS max{i}")
    row = df.selectExpr(*exprs).collect()[0].asDict()
    out = {}
    for i, c in enumerate(columns):
        m = {"row_count": row["rows"], "null_count": row["rows"] - row[f"nn{i}"]}
        if c in atomic:
            m["distinct_count_approx"] = row[f"dc{i}"]
        if c in orderable and row[f"min{i}"] is not None:
            m["min"] = row[f"min{i}"]
            m["max"] = row[f"max{i}"]
        out[c] = m
    return out


def column_metrics(batch: Batch, dataset: str) -> dict[str, dict[str, Any]]:
    """The batch's column metrics of ``dataset``: column -> metric_type -> value."""
    out: dict[str, dict[str, Any]] = {}
    for m in batch.metrics:
        if m["asset_type"] == "column":
            assert m["asset_name"].startswith(dataset + "."), m
            column = m["asset_name"][len(dataset) + 1:]
            assert m["metric_type"] not in out.setdefault(column, {}), m
            out[column][m["metric_type"]] = m["value"]
    return out


def assert_measures(reported: dict[str, dict[str, Any]],
                    expected: dict[str, dict[str, Any]]) -> None:
    assert sorted(reported) == sorted(expected), (reported, expected)
    for column, want in expected.items():
        got = reported[column]
        assert sorted(got) == sorted(want), (column, got, want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-6), (column, key, got)


def test_dataframe_write_to_a_path_every_column(task: Task, module_dir: Path,
                                                warnings: list[str]) -> None:
    path = module_dir / "q_path"
    batch = task.run(lambda: task.spark.table(SRC).write.parquet(str(path)))
    name = "file:" + str(path)
    expect_write(batch, output=name, inputs={SRC: COLUMNS}, schema=[
        "id-INTEGER", "amount-DECIMAL(10,2)", "status-STRING", "d-DATE", "ts-TIMESTAMP",
        "tags-ARRAY<STRING>", "flag-BOOLEAN", "score-DOUBLE"], cnt=5)
    reported = column_metrics(batch, name)
    assert_measures(reported, spark_measures(task.spark, task.spark.read.parquet(str(path)),
                                             COLUMNS))
    # a type without min/max (a string, an array) has none; an array no distinct count
    assert "min" not in reported["status"] and "distinct_count_approx" in reported["status"]
    assert sorted(reported["tags"]) == ["null_count", "row_count"]
    assert warnings == []


def test_save_as_table_named_columns_and_a_missing_one(task: Task,
                                                       warnings: list[str]) -> None:
    table = f"{DB}.orders_out"
    batch = task.run(lambda: task.spark.table(SRC).select("id", "amount", "status")
                     .write.saveAsTable(table))
    expect_write(batch, output=table, inputs={SRC: ["id", "amount", "status"]},
                 schema=["id-INTEGER", "amount-DECIMAL(10,2)", "status-STRING"], cnt=5)
    assert_measures(column_metrics(batch, table),
                    spark_measures(task.spark, task.spark.table(table), ["amount", "status"]))
    missing = [w for w in warnings if "'nope'" in w]
    assert len(missing) == 1 and table in missing[0], warnings
    # the same write again: measured again, not warned again
    batch = task.run(lambda: task.spark.table(SRC).select("id", "amount", "status")
                     .write.mode("overwrite").saveAsTable(table))
    assert sorted(column_metrics(batch, table)) == ["amount", "status"]
    assert len([w for w in warnings if "'nope'" in w]) == 1, warnings


def test_sql_ctas_every_column(task: Task) -> None:
    table = f"{DB}.ctas_q"
    batch = task.run(lambda: task.spark.sql(
        f"CREATE TABLE {table} USING parquet AS SELECT status, count(*) AS n, "
        f"max(d) AS last_d FROM {SRC} GROUP BY status"))
    assert len(batch.tfs) == 1 and batch.tfs[0]["output"] == {"name": table}
    assert_measures(column_metrics(batch, table),
                    spark_measures(task.spark, task.spark.table(table),
                                   ["status", "n", "last_d"]))


def test_sql_insert_into_named_column(task: Task) -> None:
    table = f"{DB}.ins_q"
    batch = task.run(lambda: task.spark.sql(
        f"INSERT INTO {table} SELECT id, amount, status FROM {SRC} WHERE id > 1"))
    expect_write(batch, output=table, inputs={SRC: ["id", "amount", "status"]},
                 schema=["id-INTEGER", "amount-DECIMAL(10,2)", "status-STRING"], cnt=4)
    assert_measures(column_metrics(batch, table),
                    spark_measures(task.spark, task.spark.table(table), ["amount"]))


def test_a_dataset_not_named_is_not_measured(task: Task, module_dir: Path) -> None:
    path = module_dir / "not_named"
    batch = task.run(lambda: task.spark.table(SRC).write.parquet(str(path)))
    assert len(batch.tfs) == 1
    assert [m for m in batch.metrics if m["asset_type"] == "column"] == []


def test_jdbc_write_measured_in_its_nested_query(task: Task, sqlite_db: Path) -> None:
    url = f"jdbc:sqlite:{sqlite_db}"
    batch = task.run(lambda: task.spark.table(SRC).selectExpr(
        "id", "CAST(amount AS DOUBLE) AS amount").write.format("jdbc")
        .option("url", url).option("dbtable", "q_jdbc").option("driver", "org.sqlite.JDBC")
        .mode("append").save())
    name = f"sqlite:{sqlite_db}/q_jdbc"
    expect_write(batch, output=name, inputs={SRC: ["id", "amount"]},
                 schema=["id-INTEGER", "amount-DOUBLE"], cnt=5)
    written = (task.spark.read.format("jdbc").option("url", url).option("dbtable", "q_jdbc")
               .option("driver", "org.sqlite.JDBC").load())
    assert_measures(column_metrics(batch, name),
                    spark_measures(task.spark, written, ["amount"]))


def test_delta_path_write_measured_in_its_nested_write(task: Task, module_dir: Path) -> None:
    if not delta_jars():
        pytest.skip("no Delta Lake release for this Spark line (tests/integration/README.md)")
    target = str(module_dir / "q_delta")
    batch = task.run(lambda: task.spark.table(SRC).select("id", "amount", "status")
                     .write.format("delta").save(target))
    name = "file:" + target
    assert [t["output"]["name"] for t in batch.tfs] == [name], batch.summary()
    assert_measures(column_metrics(batch, name),
                    spark_measures(task.spark, task.spark.read.format("delta").load(target),
                                   ["id", "amount", "status"]))
