"""Issue 3, outputs into session-catalog tables: ``saveAsTable`` in every mode,
``insertInto``, CTAS (datasource, Hive serde, the optimized Hive CTAS), RTAS (refused by
the session catalog: no tf), ``INSERT INTO/OVERWRITE`` a datasource table, a Hive table,
a static partition (the partition column is in the schema), dynamic partitions, VALUES.

One logical write is exactly one tf, even when Spark runs it as two executions (CTAS,
saveAsTable): the outer table's name and the inner insert's row count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from it_helpers import (
    PEOPLE,
    Task,
    expect_no_tf,
    expect_write,
    people_df,
)

pytestmark = pytest.mark.spark

DB = "it_out"
SRC = f"{DB}.people"
N = len(PEOPLE)
PARIS = sum(1 for p in PEOPLE if p[3] == "Paris")
ID_NAME = ["id-INTEGER", "name-STRING"]


@pytest.fixture(scope="module")
def module_data(spark: Any) -> None:
    spark.sql(f"DROP DATABASE IF EXISTS {DB} CASCADE")
    spark.sql("DROP TABLE IF EXISTS default.it_out_in_default")
    spark.sql(f"CREATE DATABASE {DB}")
    people_df(spark).coalesce(1).write.format("parquet").saveAsTable(SRC)
    spark.sql(f"CREATE TABLE {DB}.ds_t (id INT, name STRING) USING parquet")
    spark.sql(f"CREATE TABLE {DB}.hive_t (id INT, name STRING) STORED AS TEXTFILE")
    spark.sql(f"CREATE TABLE {DB}.ds_part (id INT, name STRING, ds STRING) USING parquet "
              "PARTITIONED BY (ds)")
    spark.sql(f"CREATE TABLE {DB}.hive_part (id INT, name STRING) PARTITIONED BY (ds STRING) "
              "STORED AS TEXTFILE")
    for name in ("sat_append", "sat_overwrite", "sat_ignore", "sat_error"):
        spark.range(2).selectExpr("CAST(id AS INT) AS id", "'old' AS name") \
            .write.format("parquet").saveAsTable(f"{DB}.{name}")


def _id_name(spark: Any, where: str = "true") -> Any:
    return spark.table(SRC).where(where).select("id", "name")


# --------------------------------------------------------------------------- saveAsTable
def test_save_as_table_create(task: Task, module_data: Any) -> None:
    table = f"{DB}.sat_new"
    batch = task.run(lambda: _id_name(task.spark).write.saveAsTable(table))
    expect_write(batch, output=table, inputs={SRC: ["id", "name"]}, schema=ID_NAME, cnt=N,
                 ds_type="table")


def test_save_as_table_append(task: Task, module_data: Any) -> None:
    table = f"{DB}.sat_append"
    batch = task.run(lambda: _id_name(task.spark, "city = 'Paris'").write.mode("append")
                     .saveAsTable(table))
    expect_write(batch, output=table, inputs={SRC: ["id", "name", "city"]}, schema=ID_NAME,
                 cnt=PARIS, ds_type="table")


def test_save_as_table_overwrite(task: Task, module_data: Any) -> None:
    table = f"{DB}.sat_overwrite"
    batch = task.run(lambda: _id_name(task.spark).write.mode("overwrite").saveAsTable(table))
    expect_write(batch, output=table, inputs={SRC: ["id", "name"]}, schema=ID_NAME, cnt=N,
                 ds_type="table")


def test_save_as_table_ignore_existing_is_no_tf(task: Task, module_data: Any) -> None:
    table = f"{DB}.sat_ignore"
    batch = task.run(lambda: _id_name(task.spark).write.mode("ignore").saveAsTable(table))
    expect_no_tf(batch)


def test_save_as_table_error_existing_is_no_tf(task: Task, module_data: Any) -> None:
    from pyspark.errors import AnalysisException

    table = f"{DB}.sat_error"
    batch, exc = task.run_failing(lambda: _id_name(task.spark).write.saveAsTable(table),
                                  AnalysisException)
    assert "already exists" in str(exc)
    expect_no_tf(batch)


def test_save_as_table_partitioned(task: Task, module_data: Any) -> None:
    table = f"{DB}.sat_by_city"
    batch = task.run(lambda: task.spark.table(SRC).select("city", "id")
                     .write.partitionBy("city").saveAsTable(table))
    expect_write(batch, output=table, inputs={SRC: ["id", "city"]},
                 schema=["id-INTEGER", "city-STRING"], cnt=N, ds_type="table")


def test_save_as_table_hive_format(task: Task, module_data: Any) -> None:
    table = f"{DB}.sat_hive"
    batch = task.run(lambda: _id_name(task.spark).write.format("hive").saveAsTable(table))
    expect_write(batch, output=table, inputs={SRC: ["id", "name"]}, schema=ID_NAME, cnt=N,
                 ds_type="table")


def test_save_as_table_in_default_database(task: Task, module_data: Any) -> None:
    batch = task.run(lambda: task.spark.range(3).write.saveAsTable("it_out_in_default"))
    expect_write(batch, output="default.it_out_in_default", inputs={}, schema=["id-LONG"],
                 cnt=3, ds_type="table")


# --------------------------------------------------------------------------- insertInto
def test_insert_into_datasource_table(task: Task, module_data: Any) -> None:
    batch = task.run(lambda: _id_name(task.spark).write.insertInto(f"{DB}.ds_t"))
    expect_write(batch, output=f"{DB}.ds_t", inputs={SRC: ["id", "name"]}, schema=ID_NAME,
                 cnt=N, ds_type="table")


def test_insert_into_hive_table_overwrite(task: Task, module_data: Any) -> None:
    batch = task.run(lambda: _id_name(task.spark, "age > 30").write
                     .insertInto(f"{DB}.hive_t", overwrite=True))
    expect_write(batch, output=f"{DB}.hive_t", inputs={SRC: ["id", "name", "age"]},
                 schema=ID_NAME, cnt=2, ds_type="table")


# --------------------------------------------------------------------------- CTAS / RTAS
@pytest.mark.parametrize("kind,clause", [
    ("datasource", "USING parquet"),
    ("hive_serde", "STORED AS TEXTFILE"),
    ("hive_optimized", "STORED AS PARQUET"),  # converted to a datasource write by Spark
    ("hive_orc_optimized", "STORED AS ORC"),
])
def test_ctas(task: Task, module_data: Any, kind: str, clause: str) -> None:
    table = f"{DB}.ctas_{kind}"
    sql = f"CREATE TABLE {table} {clause} AS SELECT id, upper(name) AS name FROM {SRC}"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=table, inputs={SRC: ["id", "name"]}, schema=ID_NAME, cnt=N,
                 ds_type="table", query_str=sql)


def test_ctas_partitioned_hive(task: Task, module_data: Any) -> None:
    table = f"{DB}.ctas_hive_part"
    sql = (f"CREATE TABLE {table} PARTITIONED BY (city) STORED AS PARQUET AS "
           f"SELECT id, city FROM {SRC}")
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=table, inputs={SRC: ["id", "city"]},
                 schema=["id-INTEGER", "city-STRING"], cnt=N, ds_type="table", query_str=sql)


@pytest.mark.parametrize("clause", ["USING parquet", "STORED AS PARQUET"])
def test_rtas_in_session_catalog_is_refused_and_no_tf(task: Task, module_data: Any,
                                                      clause: str) -> None:
    # Spark's session catalog does not support REPLACE TABLE AS SELECT (V2 only: see the
    # Iceberg module); the refusal is the user's exception, unchanged, and no tf.
    from pyspark.errors import AnalysisException

    sql = f"CREATE OR REPLACE TABLE {DB}.rtas {clause} AS SELECT id FROM {SRC}"
    batch, exc = task.run_failing(lambda: task.spark.sql(sql), AnalysisException)
    assert "REPLACE TABLE AS SELECT" in str(exc)
    expect_no_tf(batch)


# --------------------------------------------------------------------------- INSERT SQL
@pytest.mark.parametrize("verb", ["INTO", "OVERWRITE TABLE"])
@pytest.mark.parametrize("target", ["ds_t", "hive_t"])
def test_insert_sql(task: Task, module_data: Any, verb: str, target: str) -> None:
    table = f"{DB}.{target}"
    sql = f"INSERT {verb} {table} SELECT id, name FROM {SRC} WHERE city = 'Paris'"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=table, inputs={SRC: ["id", "name", "city"]}, schema=ID_NAME,
                 cnt=PARIS, ds_type="table", query_str=sql)


@pytest.mark.parametrize("target", ["ds_part", "hive_part"])
def test_insert_static_partition_includes_partition_column(task: Task, module_data: Any,
                                                           target: str) -> None:
    table = f"{DB}.{target}"
    sql = (f"INSERT OVERWRITE TABLE {table} PARTITION (ds = '2025-01-01') "
           f"SELECT id, name FROM {SRC}")
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=table, inputs={SRC: ["id", "name"]},
                 schema=["id-INTEGER", "name-STRING", "ds-STRING"], cnt=N, ds_type="table",
                 query_str=sql)


def test_insert_dynamic_partitions(task: Task, module_data: Any) -> None:
    table = f"{DB}.ds_part"
    sql = f"INSERT INTO {table} PARTITION (ds) SELECT id, name, city AS ds FROM {SRC}"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=table, inputs={SRC: ["id", "name", "city"]},
                 schema=["id-INTEGER", "name-STRING", "ds-STRING"], cnt=N, ds_type="table",
                 query_str=sql)


def test_insert_values_has_no_input(task: Task, module_data: Any) -> None:
    sql = f"INSERT INTO {DB}.ds_t VALUES (9, 'Zed'), (10, 'Yan')"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=f"{DB}.ds_t", inputs={}, schema=ID_NAME, cnt=2,
                 ds_type="table", query_str=sql)


def test_table_read_and_written_has_one_name(task: Task, module_data: Any) -> None:
    table = f"{DB}.hive_t"
    sql = f"INSERT INTO {table} SELECT id + 100, name FROM {table}"
    before = task.spark.table(table).count()
    task.run(lambda: None)  # the count above is read-only; consume whatever it reported
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=table, inputs={table: ["id", "name"]}, schema=ID_NAME,
                 cnt=before, ds_type="table", query_str=sql)


def test_sql_and_dataframe_writes_name_the_table_alike(task: Task, module_data: Any,
                                                       tmp_path: Path) -> None:
    def action() -> None:
        task.spark.sql(f"INSERT INTO {DB}.ds_t SELECT id, name FROM {SRC}")
        _id_name(task.spark).write.insertInto(f"{DB}.ds_t")
        task.spark.table(f"{DB}.ds_t").write.parquet(str(tmp_path / "copy"))
        task.spark.sql(f"SELECT * FROM {DB}.ds_t").write.mode("overwrite") \
            .parquet(str(tmp_path / "copy"))

    batch = task.run(action)
    names = [(sorted(t["input_datasets"]), t["output"]["name"]) for t in batch.tfs]
    copy = "file:" + str(tmp_path / "copy")
    assert names == [([SRC], f"{DB}.ds_t"), ([SRC], f"{DB}.ds_t"),
                     ([f"{DB}.ds_t"], copy), ([f"{DB}.ds_t"], copy)], names
